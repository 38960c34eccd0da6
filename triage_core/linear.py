"""The linear model of an artifact: TF-IDF (word and character n-grams) + logistic regression.

Training (``training/baseline.py``) fits it with scikit-learn; serving computes the same
probabilities with numpy and numba (:mod:`triage_core.linear_kernels`) from ``linear.npz``
(the serving image has neither scikit-learn nor scipy). The file holds, with ``allow_pickle=False``:

=================  ==============================================================================
``word_terms``     unicode array: the word n-gram of feature ``i`` (its ``vocabulary_`` inverted)
``word_idf``       float64 array: the word vectorizer's ``idf_``
``char_terms``     unicode array: the character n-gram of each character feature
``char_idf``       float64 array: the character vectorizer's ``idf_``
``coef``           float32 [word + char features, labels]: ``LogisticRegression.coef_`` transposed,
                   word features first (the order of the ``FeatureUnion``)
``intercept``      float32 [labels]: ``intercept_``
=================  ==============================================================================

The analyzers are scikit-learn's ``TfidfVectorizer`` (1.x) ones, re-implemented: lowercase; words
are ``(?u)\\b\\w\\w+\\b`` matches joined by a space into n-grams; characters are n-grams of the
text with runs of whitespace collapsed to one space (``analyzer="char"``). Each vectorizer's
vector is ``1 + log(count)`` (sublinear tf) times idf, L2-normalised; the union concatenates
them; scores are the softmax of ``x @ coef + intercept`` (multinomial logistic regression).
``tests/core/test_linear.py`` checks this against scikit-learn's ``predict_proba`` on real text.

Serving computes a batch of tickets at once (this runs for every ticket, on the server's hot
path): the terms are tries over symbol codes (each word, or each character, the vocabulary uses);
a compiled loop (:mod:`triage_core.linear_kernels`, numba) walks them from every position of each
ticket and counts each ticket's features; another turns both vectorizers' counts into the
union's rows (values and norms, with numpy's ``1 + log(count)`` by table). The result is the
per-ticket computation's bit for bit: each vectorizer's features of a ticket in
index order, as scikit-learn keeps them (``CountVectorizer._count_vocab`` ends with
``X.sort_indices()``), the norm's squares summed one after another in that order, as
scikit-learn's ``inplace_csr_row_normalize_l2`` does (``tests/core/test_linear_features.py``
checks both against a per-ticket reference and the union's float64 rows byte for byte against
scikit-learn's ``FeatureUnion`` on generated text). Until
issue #23 the features came in order of first appearance and each norm was one ``np.dot``
(another summation order): scores moved by float rounding at most. The walk was numpy too until
its fifth pass: every position stepped the full n-gram range and every occurrence was sorted
(docs/benchmarks.md).

Why not ONNX (skl2onnx): its converter raises ``NotImplementedError`` for character analyzers
(onnx/sklearn-onnx pull request #1211, open), and the whitespace collapsing above has no ONNX
``StringNormalizer`` equivalent (onnx/sklearn-onnx issue #446).
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from triage_core.trie import Trie

LINEAR_FILE = "linear.npz"
_WORD = re.compile(r"(?u)\b\w\w+\b")
_SPACES = re.compile(r"\s\s+")
FEATURE_BATCH = 256  # texts featurized together: the work is per batch, a bigger one gains nothing


class LinearSpec(BaseModel):
    """The manifest's ``linear`` entry: the vectorizers' settings (what ``linear.npz`` was fit with)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    word_ngrams: tuple[int, int] = (1, 2)
    char_ngrams: tuple[int, int] = (3, 5)
    sublinear_tf: Literal[True] = True
    weight: float = Field(
        1.0, ge=0, le=1, description="share of the linear model's scores in the shipped ones"
    )
    cascade_bar: float | None = Field(
        None,
        ge=0,
        le=1,
        description="(ensemble) a ticket whose top linear score is at least this is served the linear "
        "model's scores and never reaches model.onnx; None: every ticket gets the ensemble "
        "(training chooses it on the validation split, training/cascade.py)",
    )


def word_ngrams(text: str, low: int, high: int) -> list[str]:
    """The word analyzer on one text (the definition; serving computes a batch at once in
    :meth:`LinearModel.features`, tested against this)."""
    tokens = _WORD.findall(text.lower())
    grams = list(tokens) if low == 1 else []
    for n in range(max(low, 2), min(high, len(tokens)) + 1):
        grams.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    return grams


def char_ngrams(text: str, low: int, high: int) -> list[str]:
    text = _SPACES.sub(" ", text.lower())
    grams = list(text) if low == 1 else []
    for n in range(max(low, 2), min(high, len(text)) + 1):
        grams.extend(text[i : i + n] for i in range(len(text) - n + 1))
    return grams


class Features:
    """One ticket's TF-IDF vector (feature indices and values). ``ids`` are the indices: the
    batcher sorts by their count, which is what a row costs."""

    __slots__ = ("ids", "values")

    def __init__(self, ids: np.ndarray, values: np.ndarray):
        self.ids = ids
        self.values = values


class FeatureBatch:
    """The TF-IDF rows of a batch of tickets, flat: ticket ``t``'s feature indices and float32
    values at ``bounds[t]:bounds[t + 1]`` of ``ids`` and ``values``. What the linear logits
    take without a Python object per ticket (a cascade scores every ticket this way)."""

    __slots__ = ("bounds", "ids", "values")

    def __init__(self, ids: np.ndarray, values: np.ndarray, bounds: np.ndarray):
        self.ids, self.values, self.bounds = ids, values, bounds

    def rows(self) -> list[Features]:
        """One :class:`Features` per ticket (views of the flat arrays)."""
        ids, values = self.ids, self.values
        return [Features(ids[a:b], values[a:b]) for a, b in pairwise(self.bounds.tolist())]

    @classmethod
    def of(cls, rows: Sequence[Features]) -> FeatureBatch:
        bounds = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(row.ids) for row in rows], out=bounds[1:])
        if not rows:
            return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), bounds)
        ids = np.concatenate([row.ids for row in rows]).astype(np.int64, copy=False)
        values = np.concatenate([row.values for row in rows]).astype(np.float32, copy=False)
        return cls(ids, values, bounds)


class _Part:
    """One vectorizer of the union (words or characters): its trie, idf and n-gram range."""

    def __init__(self, trie: Trie, idf: np.ndarray, ngrams: tuple[int, int]):
        self.trie, self.idf, (self.low, self.high) = trie, idf, ngrams


@functools.cache
def _word_characters() -> np.ndarray:
    """``table[c]``: code point ``c`` is what ``\\w`` matches in Python's ``re`` for ``str``
    (``str.isalnum()`` or ``_``), for every code point (1.1 MB, built once per process)."""
    table = np.fromiter((chr(c).isalnum() for c in range(sys.maxunicode + 1)), np.bool_, sys.maxunicode + 1)
    table[ord("_")] = True
    return table


def _symbol_table(alphabet: Sequence[str]) -> np.ndarray:
    """``table[ord(ch)]``: the symbol code (1, 2, ...) of each character of the sorted
    ``alphabet``, 0 for any other; the last entry stands for every code point above."""
    top = ord(alphabet[-1]) + 1 if alphabet else 0
    table = np.zeros(top + 1, np.int64)
    table[[ord(ch) for ch in alphabet]] = np.arange(1, len(alphabet) + 1)
    return table


class LinearModel:
    """``linear.npz`` loaded: features and probabilities for cleaned ticket texts."""

    def __init__(self, path: str | Path, spec: LinearSpec):
        with np.load(path, allow_pickle=False) as data:
            word_terms, char_terms = data["word_terms"].tolist(), data["char_terms"].tolist()
            self.word_idf = data["word_idf"].astype(np.float64)
            self.char_idf = data["char_idf"].astype(np.float64)
            self.coef = np.ascontiguousarray(data["coef"], dtype=np.float32)
            self.intercept = data["intercept"].astype(np.float32)
        self.spec = spec
        self.word_vocabulary = {t: i for i, t in enumerate(word_terms)}
        self.char_vocabulary = {t: i for i, t in enumerate(char_terms)}
        # Symbol codes for the tries: each word and each character the terms use gets 1, 2, ...
        # (0: anything else, which no term contains). A word's code is found by a trie of the
        # words over their letters.
        from triage_core import linear_kernels  # numba: not in the Lambdas' packages
        from triage_core.trie import Trie

        self._count_words, self._count_chars = linear_kernels.count_word_ngrams, linear_kernels.count_ngrams
        self._logits, self._union = linear_kernels.sparse_logits, linear_kernels.tfidf_union
        tokens = sorted({token for term in word_terms for token in term.split(" ")})
        token_code = {token: code for code, token in enumerate(tokens, 1)}
        letters = sorted({ch for token in tokens for ch in token})
        self._letters = _symbol_table(letters)
        self._words = Trie(
            [self._letters[[ord(ch) for ch in token]].tolist() for token in tokens], len(letters) + 1
        )
        alphabet = sorted({ch for term in char_terms for ch in term})
        self._char_code = _symbol_table(alphabet)
        self._word_part = _Part(
            Trie([[token_code[t] for t in term.split(" ")] for term in word_terms], len(tokens) + 1),
            self.word_idf,
            spec.word_ngrams,
        )
        self._char_part = _Part(
            Trie(
                [self._char_code[[ord(ch) for ch in term]].tolist() for term in char_terms], len(alphabet) + 1
            ),
            self.char_idf,
            spec.char_ngrams,
        )
        n_features = len(word_terms) + len(char_terms)
        if len(self.word_idf) != len(word_terms) or len(self.char_idf) != len(char_terms):
            raise ValueError("linear.npz: idf and terms differ in length")
        if self.coef.shape[0] != n_features or self.coef.shape[1] != len(self.intercept):
            raise ValueError(
                f"linear.npz: coef is {self.coef.shape}, expected [{n_features}, {len(self.intercept)}]"
            )

    @property
    def n_labels(self) -> int:
        return len(self.intercept)

    def features(self, texts: Sequence[str]) -> list[Features]:
        """TF-IDF vectors of cleaned texts, one :class:`Features` per text."""
        return self.feature_batch(texts).rows()

    def feature_batch(self, texts: Sequence[str]) -> FeatureBatch:
        """TF-IDF rows of cleaned texts (float32), computed :data:`FEATURE_BATCH` at a time."""
        if len(texts) <= FEATURE_BATCH:  # the server's slices
            ids, values, bounds = self.union_rows(texts)
            return FeatureBatch(ids, values.astype(np.float32), bounds)
        ids, values, bounds = [], [], [np.zeros(1, np.int64)]
        for start in range(0, len(texts), FEATURE_BATCH):
            part_ids, part_values, part_bounds = self.union_rows(texts[start : start + FEATURE_BATCH])
            ids.append(part_ids)
            values.append(part_values.astype(np.float32))
            bounds.append(part_bounds[1:] + bounds[-1][-1])
        return FeatureBatch(np.concatenate(ids), np.concatenate(values), np.concatenate(bounds))

    def union_rows(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The TF-IDF rows of a batch as the fitted ``FeatureUnion`` transforms it, float64 and
        bit for bit: ``(ids, values, bounds)`` (:func:`~triage_core.linear_kernels.tfidf_union`
        from the two compiled counts)."""
        lowered = [text.lower() for text in texts]
        n_tickets = len(texts)
        lengths = np.fromiter(map(len, lowered), np.int64, n_tickets)
        # each text followed by a 0 (the kernels read no further than a text's length)
        points = np.frombuffer(("\0".join(lowered) + "\0").encode("utf-32-le", "surrogatepass"), np.uint32)
        word, char = self._word_part, self._char_part
        words = self._count_words(
            points, lengths, _word_characters(), self._letters, self._words.arrays,
            word.low, word.high, word.trie.arrays, len(word.idf),
        )  # fmt: skip
        collapsed = [_SPACES.sub(" ", text) for text in lowered]
        char_lengths = np.fromiter(map(len, collapsed), np.int64, n_tickets)
        points = np.frombuffer(("\0".join(collapsed) + "\0").encode("utf-32-le", "surrogatepass"), np.uint32)
        chars = self._char_code[np.minimum(points, len(self._char_code) - 1)]
        chars[np.cumsum(char_lengths + 1) - 1] = 0  # the separators, whatever the alphabet
        counted = self._count_chars(chars, char_lengths, char.low, char.high, char.trie.arrays, len(char.idf))
        # sublinear tf, 1 + log(count), by numpy for every count up to the largest one
        most = max(int(words[2].max(initial=0)), int(counted[2].max(initial=0)))
        tf = np.empty(most + 1, np.float64)
        tf[1:] = 1.0 + np.log(np.arange(1, most + 1, dtype=np.float64))
        return self._union(words, counted, n_tickets, word.idf, char.idf, tf)

    def logits(self, rows: Sequence[Features] | FeatureBatch) -> np.ndarray:
        """``x @ coef + intercept`` of TF-IDF rows, float32
        (:func:`~triage_core.linear_kernels.sparse_logits`: each feature's coefficients added in turn)."""
        batch = rows if isinstance(rows, FeatureBatch) else FeatureBatch.of(rows)
        return self._logits(batch.ids, batch.values, batch.bounds, self.coef, self.intercept)
