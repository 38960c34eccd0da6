"""triage_core.linear's batched TF-IDF (tries over symbol codes, one sort per batch) on texts
Hypothesis generates: the same feature indices, in the same order, and the same float32 values,
bit for bit, as the per-ticket implementation it replaced (kept below as the reference, with one
change since issue #23: each vectorizer's features in index order, scikit-learn's order, where
they used to come in order of first appearance, and its norms summed in scikit-learn's order),
and the same vectors as the fitted scikit-learn ``FeatureUnion`` of ``TfidfVectorizer`` (an
independent computation): each vectorizer's float64 values bit for bit, the union's float32 ones
to rounding."""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.baseline import BaselineConfig, fit_baseline, save_linear
from triage_core.linear import LINEAR_FILE, Features, LinearModel, LinearSpec, char_ngrams, word_ngrams
from triage_core.preprocessing import PreprocessConfig, preprocess_batch

ROOT = Path(__file__).resolve().parents[2]


# --- the per-ticket implementation before the batched one (git: triage_core/linear.py, ad87fb8; since
# issue #23 in index order, scikit-learn's): its
# analyzers stay in triage_core.linear (test_linear.py checks them against scikit-learn's) ---
def _tfidf(grams: list[str], vocabulary: dict[str, int], idf: np.ndarray, offset: int):
    counts = Counter(g for g in grams if g in vocabulary)
    if not counts:
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    index = np.fromiter((vocabulary[g] for g in counts), np.int64, len(counts))
    order = np.argsort(index)  # scikit-learn's order: CountVectorizer sorts each row's indices
    index = index[order]
    values = (1.0 + np.log(np.fromiter(counts.values(), np.float64, len(counts))[order])) * idf[index]
    squares = 0.0  # one after another in index order, as scikit-learn's inplace_csr_row_normalize_l2
    for value in values.tolist():
        squares += value * value
    return index + offset, values / np.sqrt(squares)


def reference_features(model: LinearModel, text: str) -> tuple[np.ndarray, np.ndarray]:
    spec, offset = model.spec, len(model.word_vocabulary)
    wi, wv = _tfidf(word_ngrams(text, *spec.word_ngrams), model.word_vocabulary, model.word_idf, 0)
    ci, cv = _tfidf(char_ngrams(text, *spec.char_ngrams), model.char_vocabulary, model.char_idf, offset)
    return np.concatenate((wi, ci)), np.concatenate((wv, cv)).astype(np.float32)


# --- a small fitted model -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory):
    """scikit-learn's pipeline fit on 500 Banking77 tickets of 10 labels, its ``linear.npz``
    loaded, and the corpus (Hypothesis draws words from it)."""
    with (ROOT / "data" / "banking77" / "train.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    keep = sorted({r["category"] for r in rows})[:10]
    rows = [r for r in rows if r["category"] in keep]
    random.Random(11).shuffle(rows)
    texts = preprocess_batch([r["text"] for r in rows[:500]], PreprocessConfig())
    labels = [r["category"] for r in rows[:500]]
    model = fit_baseline(texts, labels, sorted(set(labels)), BaselineConfig())
    path = save_linear(model, tmp_path_factory.mktemp("linear") / LINEAR_FILE, list(model.classes_))
    return model, LinearModel(path, LinearSpec()), texts, path


WORDS = ["card", "Card", "CARD", "refund", "top", "up", "my", "the", "i", "a", "pin", "ATM", "çà", "ß"]
PIECES = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from([" ", "  ", "\t", "\n\n", " \t ", ".", "!?", "'", "-", "_", "2", "10"]),
    st.text(max_size=6),  # any code point but lone surrogates: umlauts, CJK, emoji, controls
    # lower() changes the length; NUL; a lone surrogate (a JSON body may carry one)
    st.sampled_from(["İ", "ẞ", "ǅ", "ﬀ", "\u0130", "😀", "\x00", "\ud800"]),
)
TEXT = st.lists(PIECES, max_size=40).map("".join)


def assert_same_as_reference(linear: LinearModel, texts: list[str]) -> None:
    ours = linear.features(texts)
    assert len(ours) == len(texts)
    for text, row in zip(texts, ours, strict=True):
        ids, values = reference_features(linear, text)
        assert row.ids.dtype == ids.dtype and row.values.dtype == values.dtype
        np.testing.assert_array_equal(row.ids, ids)  # same features in the same order
        assert row.values.tobytes() == values.tobytes()  # bit for bit
    reference = linear.logits([Features(*reference_features(linear, text)) for text in texts])
    assert linear.logits(ours).tobytes() == reference.tobytes()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, max_size=12), corpus_picks=st.lists(st.integers(0, 499), max_size=6))
def test_batched_features_are_the_per_ticket_ones_bit_for_bit(fitted, texts, corpus_picks) -> None:
    _, linear, corpus, _ = fitted
    batch = texts + [corpus[i] for i in corpus_picks]
    random.Random(len(batch)).shuffle(batch)
    assert_same_as_reference(linear, batch)


def test_real_tickets_in_big_and_single_batches(fitted) -> None:
    """The corpus in one call (batches of 256 inside), and tickets one at a time."""
    _, linear, corpus, _ = fitted
    assert_same_as_reference(linear, corpus)
    for text in corpus[:20]:
        assert_same_as_reference(linear, [text])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, min_size=1, max_size=8))
def test_features_are_scikit_learns_vectors(fitted, texts) -> None:
    model, linear, _, _ = fitted
    theirs = model.named_steps["tfidf"].transform(texts).tocsr()
    for r, row in enumerate(linear.features(texts)):
        start, end = theirs.indptr[r], theirs.indptr[r + 1]
        expected = dict(zip(theirs.indices[start:end].tolist(), theirs.data[start:end], strict=True))
        assert row.ids.tolist() == theirs.indices[start:end].tolist()  # the same features, in their order
        got = dict(zip(row.ids.tolist(), row.values, strict=True))
        for index, value in expected.items():
            assert got[index] == pytest.approx(value, rel=1e-6, abs=1e-7)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(TEXT, min_size=1, max_size=8), corpus_picks=st.lists(st.integers(0, 499), max_size=6))
def test_the_union_s_float64_rows_are_scikit_learns_bit_for_bit(fitted, texts, corpus_picks) -> None:
    """Before the float32 cast, the rows are the fitted ``FeatureUnion``'s ``transform``, exactly:
    the same features in the same order (each ticket's words, then its characters), the same
    float64 values (each vectorizer's norm its squares summed in index order, as
    ``inplace_csr_row_normalize_l2`` does), the same row bounds."""
    model, linear, corpus, _ = fitted
    batch = texts + [corpus[i] for i in corpus_picks]
    theirs = model.named_steps["tfidf"].transform(batch).tocsr()
    ids, values, bounds = linear.union_rows(batch)
    assert bounds.tolist() == theirs.indptr.tolist()
    assert ids.tolist() == theirs.indices.tolist()
    assert values.dtype == theirs.data.dtype and values.tobytes() == theirs.data.tobytes()


@settings(max_examples=300, deadline=None)
@given(
    terms=st.lists(
        st.lists(st.integers(1, 5), min_size=1, max_size=4), min_size=1, max_size=40, unique_by=tuple
    ),
    tickets=st.lists(st.lists(st.integers(0, 5), max_size=30), max_size=6),
    ngrams=st.sampled_from([(1, 1), (1, 2), (2, 3), (3, 4), (1, 4)]),
)
def test_the_compiled_walk_counts_what_a_counter_of_slices_counts(terms, tickets, ngrams) -> None:
    """``count_ngrams`` (numba) against the definition: every slice of ``low`` to ``high``
    symbols of a ticket that is a term, counted with ``collections.Counter``; terms that are
    prefixes of others, symbols no term has (0), empty tickets."""
    from collections import Counter

    from triage_core.linear_kernels import count_ngrams
    from triage_core.trie import Trie

    low, high = ngrams
    trie = Trie(terms, base=6)
    index = {tuple(term): i for i, term in enumerate(terms)}
    expected = []
    for t, codes in enumerate(tickets):
        grams = Counter(
            tuple(codes[i : i + n]) for n in range(low, high + 1) for i in range(len(codes) - n + 1)
        )
        expected += sorted((t, index[g], c) for g, c in grams.items() if g in index)
    flat = np.array([c for codes in tickets for c in (*codes, 0)], np.int64)
    lengths = np.array([len(codes) for codes in tickets], np.int64)
    got = count_ngrams(flat, lengths, low, high, trie.arrays, len(terms))
    assert list(zip(*(a.tolist() for a in got), strict=True)) == expected


@settings(max_examples=200, deadline=None)
@given(
    n_features=st.integers(1, 60),
    n_labels=st.integers(1, 9),
    row_sizes=st.lists(st.integers(0, 12), max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_sparse_logits_are_numpy_s_dense_product(n_features, n_labels, row_sizes, seed) -> None:
    """``sparse_logits`` (numba, float32) against ``x @ coef + intercept`` in float64 on the
    rows made dense: equal to float32 rounding; rows without features get the intercept."""
    from triage_core.linear_kernels import sparse_logits

    rng = np.random.default_rng(seed)
    coef = rng.normal(size=(n_features, n_labels)).astype(np.float32)
    intercept = rng.normal(size=n_labels).astype(np.float32)
    rows = [np.sort(rng.choice(n_features, min(size, n_features), replace=False)) for size in row_sizes]
    values = [rng.random(len(ids)).astype(np.float32) for ids in rows]
    dense = np.zeros((len(rows), n_features))
    for r, (ids, vals) in enumerate(zip(rows, values, strict=True)):
        dense[r, ids] = vals
    bounds = np.concatenate(([0], np.cumsum([len(ids) for ids in rows]))).astype(np.int64)
    flat_ids = np.concatenate([np.zeros(0, np.int64), *rows]).astype(np.int64)
    got = sparse_logits(flat_ids, np.concatenate([np.zeros(0, np.float32), *values]), bounds, coef, intercept)
    expected = dense @ coef.astype(np.float64) + intercept
    assert got.dtype == np.float32 and got.shape == (len(rows), n_labels)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_the_kernel_s_word_characters_are_what_python_s_re_calls_w() -> None:
    """Every code point (surrogates included): ``_word_characters()[c]`` is ``re``'s ``\\w`` on
    ``chr(c)``, the owner of the word analyzer's ``(?u)\\b\\w\\w+\\b`` (scikit-learn's
    ``token_pattern``), which the kernel splits words by."""
    import re
    import sys

    from triage_core.linear import _word_characters

    word = re.compile(r"\w")
    expected = [word.match(chr(c)) is not None for c in range(sys.maxunicode + 1)]
    assert _word_characters().tolist() == expected


@settings(max_examples=200, deadline=None)
@given(
    base=st.sampled_from([2, 50, 1_353, 1 << 20]),
    transitions=st.dictionaries(
        st.tuples(st.integers(1, 1 << 20), st.integers(0, (1 << 20) - 1)),
        st.tuples(st.integers(2, (1 << 31) - 1), st.integers(-1, (1 << 31) - 1)),
        max_size=300,
    ),
    absent=st.lists(st.tuples(st.integers(1, 1 << 20), st.integers(0, (1 << 20) - 1)), max_size=30),
)
def test_the_hash_table_finds_every_transition_and_nothing_else(base, transitions, absent) -> None:
    """``hash_slots`` and the kernels' ``transition`` against a dict: each (state, code) finds its
    (child, term), any other finds nothing; collisions, a table of one transition, none."""
    from triage_core.trie import hash_slots, transition

    table = {state * base + code % base: value for (state, code), value in transitions.items()}
    keys = np.array(list(table), np.int64)
    children = np.array([child for child, _ in table.values()], np.int64)
    ends = np.array([end for _, end in table.values()], np.int64)
    slots, shift = hash_slots(keys, children, ends)
    assert len(slots) >= 2 * len(table)  # at most half full: short probes
    for key, (child, end) in table.items():
        state, code = divmod(key, base)
        assert transition((slots, base, shift), state, code) == child << 32 | end + 1
    for state, code in absent:
        if state * base + code % base not in table:
            assert transition((slots, base, shift), state, code % base) == 0
