"""``make bench``'s limit (b) on an ensemble artifact: the served model's engines alone do the
served model's whole work (their scores are ``ArtifactClassifier.predict_scores``', both halves of
the ensemble), the MiniLM-only limit of the earlier rounds is still reported under its own keys,
and the ratios in the last JSON line are the ones of those numbers."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks.serving import engine_calls, minilm_calls
from tests.conftest import TINY_LABELS
from tests.container.test_benchmark import run_benchmark
from training.baseline import BaselineConfig, fit_baseline, ship_linear
from training.cascade import store_bar
from triage_core.inference import ArtifactClassifier, Settled, scores_from_logits
from triage_core.preprocessing import PreprocessConfig, preprocess_batch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ensemble_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny transformer averaged with a TF-IDF model fit on Banking77 tickets of its labels."""
    with (ROOT / "data" / "banking77" / "train.csv").open(encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r["category"] in TINY_LABELS]
    texts = preprocess_batch([r["text"] for r in rows], PreprocessConfig())
    model = fit_baseline(texts, [r["category"] for r in rows], list(TINY_LABELS), BaselineConfig())
    artifact = tmp_path_factory.mktemp("ensemble") / "model"
    shutil.copytree(tiny_artifact, artifact)
    ship_linear(model, artifact, "ensemble", 0.3, BaselineConfig())
    return artifact


TEXTS = [
    "My card still hasn't arrived, when will it be delivered?",
    "Hi,\n\nI topped up 20 EUR but the top up failed twice.\n\nThanks, Anna",
    "exchange rate",
    "Where is my refund? It has been two weeks and it is not showing up on the statement",
    "lost my card",
] * 9


def test_the_engines_limit_computes_the_served_scores(ensemble_artifact: Path) -> None:
    classifier = ArtifactClassifier(ensemble_artifact, intra_op_threads=1)
    assert classifier.kind == "ensemble"
    outputs = np.concatenate([call() for call in engine_calls(classifier, TEXTS)])
    # the calls run length-sorted batches (the batcher's order): put the rows back in input order
    lengths = [len(item.ids) for item in classifier.encode(classifier.clean(TEXTS))]
    order = sorted(range(len(TEXTS)), key=lengths.__getitem__)
    served = classifier.predict_scores(TEXTS)
    np.testing.assert_array_equal(outputs, served[order])
    # the MiniLM-only limit runs model.onnx alone: not the served scores (no linear half)
    logits = np.concatenate([call()[0] for call in minilm_calls(classifier, TEXTS)])
    minilm = scores_from_logits(logits, "softmax")
    assert minilm.shape == outputs.shape
    assert not np.allclose(minilm, outputs, atol=1e-3)


def test_a_cascade_limit_is_its_engines_work(ensemble_artifact: Path, tmp_path: Path) -> None:
    """With ``linear.cascade_bar`` the linear model settles some tickets in ``encode``: the limit's
    calls still give the served scores, and hold the linear logits of every ticket besides."""
    plain = ArtifactClassifier(ensemble_artifact, intra_op_threads=1)
    features = plain.linear.features(plain.clean(TEXTS))
    top = scores_from_logits(plain.linear.logits(features), "softmax").max(axis=1)
    cascade = tmp_path / "cascade"
    shutil.copytree(ensemble_artifact, cascade)
    store_bar(cascade, float(np.median(top)))  # about half the tickets settled
    classifier = ArtifactClassifier(cascade, intra_op_threads=1)
    items = classifier.encode(classifier.clean(TEXTS))
    settled = sum(type(item) is Settled for item in items)
    assert 0 < settled < len(TEXTS)
    calls = engine_calls(classifier, TEXTS)
    batches = -(-len(TEXTS) // 32)
    assert len(calls) == 2 * batches  # run() per batch, then the linear logits per batch
    outputs = np.concatenate([call() for call in calls[:batches]])
    order = sorted(range(len(TEXTS)), key=[len(item.ids) for item in items].__getitem__)
    np.testing.assert_array_equal(outputs, classifier.predict_scores(TEXTS)[order])
    logits = np.concatenate([call() for call in calls[batches:]])
    np.testing.assert_array_equal(logits, classifier.linear.logits(features))


def test_the_benchmark_reports_both_limits_for_an_ensemble(ensemble_artifact: Path) -> None:
    summary = run_benchmark(ensemble_artifact, "--skip-baseline", "--long-lengths", "")
    layouts = (summary["limit_one_session_tps"], summary["limit_session_per_core_tps"])
    assert summary["limit_minilm_tps"] > 0 and summary["limit_minilm_email_tps"] > 0 and min(layouts) > 0
    # the best of (b) and of the interleaved rounds after (c) (five by default, each with its ratios)
    assert summary["limit_tps"] >= max(layouts)
    assert len(summary["server_vs_limit_rounds"]) == 5 and all(
        len(r) == 2 for r in summary["server_vs_limit_rounds"]
    )
    assert abs(summary["server_vs_limit_best"] - summary["server_tps"] / summary["limit_tps"]) < 0.01
    ratio = summary["server_tps"] / summary["limit_minilm_tps"]
    assert abs(summary["server_vs_limit_minilm"] - ratio) < 0.01
    ratio = summary["server_email_tps"] / summary["limit_minilm_email_tps"]
    assert abs(summary["server_vs_limit_minilm_email"] - ratio) < 0.01
    # the server's own work per ticket against the engines', and the ceiling it puts on the ratio
    for suffix in ("", "_email"):
        parts = ("read_us", "clean_us", "encode_us", "linear_us", "respond_us", "engine_us")
        read, clean, encode, linear, respond, engine = (summary[k + suffix] for k in parts)
        assert min(read, clean, encode, respond, engine) > 0 and linear == 0  # no cascade here
        ceiling = engine / (engine + read + clean + encode + respond)
        assert summary["prepare_ceiling" + suffix] == pytest.approx(ceiling, abs=0.01)
