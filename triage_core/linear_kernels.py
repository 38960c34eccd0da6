r"""The linear model's inner loops, compiled (numba): each ticket's in-vocabulary n-grams counted
(the TF-IDF featurizer), and the logits of sparse TF-IDF rows.

:mod:`triage_core.linear` gives it a batch of tickets as symbol codes (each character the
vocabulary uses; 0: anything else and the separator after each ticket), or as the code points of
the lowercased texts for the words, which :func:`count_word_ngrams` splits into words itself
(scikit-learn's ``(?u)\b\w\w+\b``: runs of two or more word characters) and looks up in a trie
of the vocabulary's words; and the vocabulary as a trie over those codes
(:class:`triage_core.trie.Trie`: ``(slots, base, shift)``). For every
position of a ticket the kernel walks the trie one symbol at a time, stopping at the first
symbol no term continues with (most walks end after one or two steps), and counts the terms it
passes. Out come each ticket's features in index order with their counts; :func:`tfidf_union`
turns both vectorizers' counts into the union's TF-IDF rows (the values stay scikit-learn's bit
for bit: the same float64 operations in the same order).

Why compiled (issue #23): the same work in numpy had to walk every position the full ``high``
steps and sort every occurrence of every n-gram of the batch, and cost a third of the server's
own time per ticket; a loop that stops early and reads each ticket's features back from a
bitmap in index order runs in a third of the time, without the GIL (``nogil``) beside ONNX
Runtime; splitting words here too saves the regular expression and a dictionary lookup per word
in Python. numba compiles it on first use and keeps the machine code in its cache
(``__pycache__`` beside this file, or ``NUMBA_CACHE_DIR``).

:func:`sparse_logits`: ``x @ coef + intercept`` row by row, each feature's coefficient row added
in place (numpy gathered every ticket's rows into a temporary matrix first and ran one product
per ticket from Python: twice the time, most of it memory traffic and call overhead).

This module is imported only where a linear model is loaded (not by the Lambdas, which read the
manifest's ``linear`` settings through :mod:`triage_core.linear` without numba).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from triage_core.trie import Trie, transition

# The index of a word's lowest set bit by de Bruijn multiplication (Leiserson, Prokop and Randall,
# "Using de Bruijn Sequences to Index a 1 in a Computer Word", 1998): numba has no count of
# trailing zeros for uint64 that works on every target.
_DE_BRUIJN = np.uint64(0x03F79D71B4CB0A89)
_BIT_INDEX = np.zeros(64, np.int64)
for _bit in range(64):
    _BIT_INDEX[((1 << _bit) * 0x03F79D71B4CB0A89 % (1 << 64)) >> 58] = _bit


@njit(inline="always")
def _pop_lowest(word: np.uint64, bit_index: np.ndarray) -> tuple[int, np.uint64]:
    """The index of the lowest set bit of ``word`` (not 0) and ``word`` without that bit."""
    bit = word & (~word + np.uint64(1))
    return bit_index[np.int64((bit * _DE_BRUIJN) >> np.uint64(58))], word ^ bit


@njit
def _count_ticket(codes, start, end, low, high, trie, count, marks, summary) -> None:
    """Count the terms among the ``low``- to ``high``-grams of ``codes[start:end]`` into
    ``count`` and mark them in ``marks`` and ``summary``."""
    one = np.uint64(1)
    for i in range(start, end):
        state = 1
        for j in range(i, min(end, i + high)):
            step = transition(trie, state, codes[j])
            if step == 0:
                break
            state = step >> 32
            if j - i + 1 >= low:
                f = (step & 0xFFFFFFFF) - 1
                if f >= 0:
                    if count[f] == 0:
                        marks[f >> 6] |= one << np.uint64(f & 63)
                        summary[f >> 12] |= one << np.uint64((f >> 6) & 63)
                    count[f] += 1


@njit
def _emit(t, count, marks, summary, out_ticket, out_feature, out_count, written) -> int:
    """Write ticket ``t``'s marked features in index order with their counts, clear them, and
    return the new number of rows written."""
    bit_index = _BIT_INDEX
    for s in range(len(summary)):
        upper = summary[s]
        summary[s] = 0
        while upper:
            bit, upper = _pop_lowest(upper, bit_index)
            w = s * 64 + bit
            lower = marks[w]
            marks[w] = 0
            while lower:
                bit, lower = _pop_lowest(lower, bit_index)
                f = w * 64 + bit
                out_ticket[written] = t
                out_feature[written] = f
                out_count[written] = count[f]
                count[f] = 0
                written += 1
    return written


@njit
def _buffers(lengths, width, n_features):
    """The output rows (enough for every ticket's distinct features) and the per-ticket scratch:
    ``count`` of each feature, ``marks`` (bit f: feature f occurs), ``summary`` (bit w: marks[w]
    is not 0)."""
    capacity = 0
    for t in range(len(lengths)):
        capacity += min(lengths[t] * width, n_features)
    out = (np.empty(capacity, np.int64), np.empty(capacity, np.int64), np.empty(capacity, np.int64))
    marks = np.zeros((n_features + 63) // 64, np.uint64)
    return out, np.zeros(n_features, np.int64), marks, np.zeros((len(marks) + 63) // 64, np.uint64)


@njit(cache=True, nogil=True)
def count_ngrams(codes, lengths, low, high, trie, n_features):
    """``(ticket, feature, count)`` of every in-vocabulary n-gram (``low`` <= n <= ``high``) of
    each ticket, sorted by ticket then feature.

    ``codes``: the tickets' symbol codes one after another, each ticket followed by one 0;
    ``lengths``: each ticket's number of symbols. ``trie``: ``(slots, base, shift)``
    (:class:`~triage_core.trie.Trie`; state 1: the empty prefix).

    A ticket's distinct features are marked in a bitmap (one bit per feature, and one bit per
    64-feature word of it in a summary) and read back in index order: no sort (sorting each
    ticket's features cost more than walking the trie).
    """
    (out_ticket, out_feature, out_count), count, marks, summary = _buffers(
        lengths, high - low + 1, n_features
    )
    written = 0
    start = 0
    for t in range(len(lengths)):
        end = start + lengths[t]
        _count_ticket(codes, start, end, low, high, trie, count, marks, summary)
        written = _emit(t, count, marks, summary, out_ticket, out_feature, out_count, written)
        start = end + 1
    return out_ticket[:written], out_feature[:written], out_count[:written]


@njit(cache=True, nogil=True)
def count_word_ngrams(points, lengths, is_word, letters, words, low, high, trie, n_features):
    """:func:`count_ngrams` for the word analyzer, from the lowercased texts' code points
    (``points``, each text followed by one 0; ``lengths``: each text's number of code points).

    A word is a run of two or more code points ``c`` with ``is_word[c]`` (``str.isalnum() or
    '_'``: what ``\\w`` matches in Python's ``re`` for ``str``), the matches of
    ``(?u)\\b\\w\\w+\\b``. Its symbol code is found by walking ``words``, a trie of the
    vocabulary's words over their letters (``letters[c]``: the letter code of code point ``c``,
    the last entry for every code point above; 0: a letter no word has), whose term index is the
    word's symbol code minus 1; a word not in it is 0. The word n-grams are then counted over
    those codes with ``trie``."""
    top = len(letters) - 1
    (out_ticket, out_feature, out_count), count, marks, summary = _buffers(
        lengths, high - low + 1, n_features
    )
    codes = np.empty((lengths.max() if len(lengths) else 0) // 2 + 1, np.int64)  # words of a text, at most
    written = 0
    start = 0
    for t in range(len(lengths)):
        end = start + lengths[t]
        n_words = 0
        i = start
        while i < end:
            if not is_word[points[i]]:
                i += 1
                continue
            j = i
            step = 1 << 32  # the root, no term
            while j < end and is_word[points[j]]:
                if step != 0:
                    step = transition(words, step >> 32, letters[min(points[j], top)])
                j += 1
            if j - i >= 2:
                codes[n_words] = step & 0xFFFFFFFF  # the word's term index + 1; 0: not a word
                n_words += 1
            i = j
        _count_ticket(codes, 0, n_words, low, high, trie, count, marks, summary)
        written = _emit(t, count, marks, summary, out_ticket, out_feature, out_count, written)
        start = end + 1
    return out_ticket[:written], out_feature[:written], out_count[:written]


@njit
def _normalize(values, start, end) -> None:
    """``values[start:end] /= ||values[start:end]||``, the squares summed one after another, as
    scikit-learn's ``inplace_csr_row_normalize_l2`` does (a row of zeros is left alone)."""
    squares = 0.0
    for k in range(start, end):
        squares += values[k] * values[k]
    if squares != 0.0:
        norm = np.sqrt(squares)
        for k in range(start, end):
            values[k] /= norm


@njit(cache=True, nogil=True)
def tfidf_union(words, chars, n_tickets, word_idf, char_idf, tf):
    """The TF-IDF rows of a batch from the two vectorizers' counts (``(ticket, feature, count)``
    of :func:`count_word_ngrams` and :func:`count_ngrams`), as the ``FeatureUnion`` of the two
    ``TfidfVectorizer`` makes them: per ticket its word features, then its character ones (their
    indices after the words'), each ``tf[count] * idf[feature]`` (``tf``: ``1 + log(count)``,
    numpy's, by count), each vectorizer's part L2-normalized on its own. Returns ``(ids, values,
    bounds)``: float64 values, ticket ``t``'s rows at ``bounds[t]:bounds[t + 1]``."""
    word_ticket, word_feature, word_count = words
    char_ticket, char_feature, char_count = chars
    offset = len(word_idf)
    size = len(word_ticket) + len(char_ticket)
    ids, values = np.empty(size, np.int64), np.empty(size, np.float64)
    bounds = np.empty(n_tickets + 1, np.int64)
    w = a = b = 0
    for t in range(n_tickets):
        bounds[t] = w
        start = w
        while a < len(word_ticket) and word_ticket[a] == t:
            ids[w] = word_feature[a]
            values[w] = tf[word_count[a]] * word_idf[word_feature[a]]
            a += 1
            w += 1
        _normalize(values, start, w)
        start = w
        while b < len(char_ticket) and char_ticket[b] == t:
            ids[w] = char_feature[b] + offset
            values[w] = tf[char_count[b]] * char_idf[char_feature[b]]
            b += 1
            w += 1
        _normalize(values, start, w)
    bounds[n_tickets] = w
    return ids, values, bounds


@njit(cache=True, nogil=True)
def sparse_logits(ids, values, bounds, coef, intercept):
    """``values @ coef[ids] + intercept`` for each row ``r``, whose features are
    ``ids[bounds[r]:bounds[r + 1]]`` with ``values[...]`` (float32, summed in feature order)."""
    n_rows = len(bounds) - 1
    n_labels = coef.shape[1]
    out = np.empty((n_rows, n_labels), np.float32)
    for r in range(n_rows):
        for j in range(n_labels):
            out[r, j] = intercept[j]
        for k in range(bounds[r], bounds[r + 1]):
            value, row = values[k], ids[k]
            for j in range(n_labels):
                out[r, j] += value * coef[row, j]
    return out


def compile_now() -> None:
    """Compile (or load from numba's cache) the kernels now: the image build calls this, so
    that a container's first request does not wait seconds for LLVM."""
    empty = np.zeros(0, np.int64)
    trie = Trie([], 1).arrays
    count_ngrams(empty, empty, 1, 1, trie, 0)
    count_word_ngrams(np.frombuffer(b"", np.uint32), empty, np.zeros(1, np.bool_), empty, trie, 1, 1, trie, 0)
    rows = (empty, empty, empty)
    tfidf_union(rows, rows, 0, np.zeros(0), np.zeros(0), np.zeros(1))
    sparse_logits(
        empty,
        np.zeros(0, np.float32),
        np.zeros(1, np.int64),
        np.zeros((0, 1), np.float32),
        np.zeros(1, np.float32),
    )
