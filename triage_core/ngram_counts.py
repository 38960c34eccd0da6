"""The TF-IDF featurizer's inner loop, compiled: each ticket's in-vocabulary n-grams, counted.

:mod:`triage_core.linear` gives it a batch of tickets as symbol codes (each word, or each
character, that the vocabulary uses; 0: anything else and the separator after each ticket) and
its vocabulary as a trie over those codes (:class:`triage_core.linear._Trie`). For every
position of a ticket the kernel walks the trie one symbol at a time, stopping at the first
symbol no term continues with (most walks end after one or two steps), and counts the terms it
passes. Out come each ticket's features in index order with their counts: the TF-IDF values and
norms are computed from them in numpy by the caller, exactly as before (the values stay
scikit-learn's bit for bit).

Why compiled (issue #23): the same work in numpy had to walk every position the full ``high``
steps and sort every occurrence of every n-gram of the batch, and cost a third of the server's
own time per ticket; a loop that stops early and reads each ticket's features back from a
bitmap in index order runs in a third of the time, without the GIL (``nogil``) beside ONNX
Runtime. numba compiles it on first use and keeps the
machine code in its cache (``__pycache__`` beside this file, or ``NUMBA_CACHE_DIR``).

This module is imported only where a linear model is loaded (not by the Lambdas, which read the
manifest's ``linear`` settings through :mod:`triage_core.linear` without numba).
"""

from __future__ import annotations

import numpy as np
from numba import njit

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


@njit(cache=True, nogil=True)
def count_ngrams(
    codes: np.ndarray,
    lengths: np.ndarray,
    low: int,
    high: int,
    base: int,
    dense: bool,
    table: np.ndarray,
    keys: np.ndarray,
    children: np.ndarray,
    feature: np.ndarray,
    n_features: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ticket, feature, count)`` of every in-vocabulary n-gram (``low`` <= n <= ``high``) of
    each ticket, sorted by ticket then feature.

    ``codes``: the tickets' symbol codes one after another, each ticket followed by one 0;
    ``lengths``: each ticket's number of symbols. The trie (state 1: the empty prefix, 0: dead):
    the child of ``state`` by ``code`` is ``table[state * base + code]`` when ``dense``, else
    ``children[i]`` where ``keys[i] == state * base + code`` (``keys`` sorted, ending with a
    sentinel larger than any key); ``feature[state]``: the index of the term ending there, or -1.

    A ticket's distinct features are marked in a bitmap (one bit per feature, and one bit per
    64-feature word of it in a summary) and read back in index order: no sort (sorting each
    ticket's features cost more than walking the trie).
    """
    bit_index = _BIT_INDEX
    one = np.uint64(1)
    n_tickets = len(lengths)
    width = high - low + 1
    capacity = 0
    for t in range(n_tickets):
        capacity += min(lengths[t] * width, n_features)  # distinct features of one ticket, at most
    out_ticket = np.empty(capacity, np.int64)
    out_feature = np.empty(capacity, np.int64)
    out_count = np.empty(capacity, np.int64)
    count = np.zeros(n_features, np.int64)  # the ticket's count of each feature, 0 again after it
    marks = np.zeros((n_features + 63) // 64, np.uint64)  # bit f: feature f occurs in the ticket
    summary = np.zeros((len(marks) + 63) // 64, np.uint64)  # bit w: marks[w] is not 0
    last = len(keys) - 1
    written = 0
    start = 0
    for t in range(n_tickets):
        end = start + lengths[t]
        for i in range(start, end):
            state = 1
            for j in range(i, min(end, i + high)):
                key = state * base + codes[j]
                if dense:
                    state = table[key]
                else:
                    lo, hi = 0, last
                    while lo < hi:
                        mid = (lo + hi) >> 1
                        if keys[mid] < key:
                            lo = mid + 1
                        else:
                            hi = mid
                    state = children[lo] if keys[lo] == key else 0
                if state == 0:
                    break
                if j - i + 1 >= low:
                    f = feature[state]
                    if f >= 0:
                        if count[f] == 0:
                            marks[f >> 6] |= one << np.uint64(f & 63)
                            summary[f >> 12] |= one << np.uint64((f >> 6) & 63)
                        count[f] += 1
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
        start = end + 1
    return out_ticket[:written], out_feature[:written], out_count[:written]


def compile_now() -> None:
    """Compile (or load from numba's cache) :func:`count_ngrams` now: the image build calls this,
    so that a container's first request does not wait ~1.5 s for LLVM."""
    empty = np.zeros(0, np.int64)
    count_ngrams(empty, empty, 1, 1, 1, True, np.zeros(1, np.int32), empty, empty, empty, 0)
