"""The linear model of an artifact: TF-IDF (word and character n-grams) + logistic regression.

Training (``training/baseline.py``) fits it with scikit-learn; serving computes the same
probabilities with numpy alone from ``linear.npz`` (the serving image has neither scikit-learn
nor scipy). The file holds, with ``allow_pickle=False``:

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

Why not ONNX (skl2onnx): its converter raises ``NotImplementedError`` for character analyzers
(onnx/sklearn-onnx pull request #1211, open), and the whitespace collapsing above has no ONNX
``StringNormalizer`` equivalent (onnx/sklearn-onnx issue #446).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

LINEAR_FILE = "linear.npz"
_WORD = re.compile(r"(?u)\b\w\w+\b")
_SPACES = re.compile(r"\s\s+")


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


def _tfidf(grams: list[str], vocabulary: dict[str, int], idf: np.ndarray, offset: int):
    counts = Counter(g for g in grams if g in vocabulary)
    if not counts:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    index = np.fromiter((vocabulary[g] for g in counts), np.int64, len(counts))
    values = (1.0 + np.log(np.fromiter(counts.values(), np.float64, len(counts)))) * idf[index]
    return index + offset, values / np.sqrt(values @ values)


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
        spec, offset = self.spec, len(self.word_vocabulary)
        out = []
        for text in texts:
            wi, wv = _tfidf(word_ngrams(text, *spec.word_ngrams), self.word_vocabulary, self.word_idf, 0)
            ci, cv = _tfidf(char_ngrams(text, *spec.char_ngrams), self.char_vocabulary, self.char_idf, offset)
            out.append(Features(np.concatenate((wi, ci)), np.concatenate((wv, cv)).astype(np.float32)))
        return out

    def logits(self, rows: Sequence[Features]) -> np.ndarray:
        out = np.tile(self.intercept, (len(rows), 1))
        for r, row in enumerate(rows):
            if len(row.ids):
                out[r] += row.values @ self.coef[row.ids]
        return out
