"""training.baseline: the linear baseline is fit, compared on validation and test, and what wins
on validation ships and is served (the real server process)."""

from __future__ import annotations

import csv
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from tests.container.serverproc import start_server, stop_server
from training.baseline import (
    REPORT_FILE,
    BaselineConfig,
    choose_model,
    fit_baseline,
    probabilities,
    run_baseline,
    ship_linear,
)
from training.data import TicketDataset
from training.export import fp32_onnx_path
from triage_core.artifact import MODEL_FILE, load_manifest, write_manifest
from triage_core.inference import ArtifactClassifier
from triage_core.linear import LINEAR_FILE
from triage_core.preprocessing import PreprocessConfig, preprocess_batch

BANKING77 = Path(__file__).resolve().parents[2] / "data" / "banking77" / "train.csv"
FILLER = [
    "please",
    "help",
    "me",
    "today",
    "with",
    "this",
    "thing",
    "I",
    "have",
    "a",
    "question",
    "about",
    "my",
    "account",
    "thanks",
]
KEYWORDS = {
    "card_arrival": ["delivery", "arrive", "post"],
    "lost_or_stolen_card": ["stolen", "lost", "thief"],
    "exchange_rate": ["rate", "euro", "conversion"],
    "top_up_failed": ["topup", "reload", "declined"],
    "refund_not_showing_up": ["refund", "merchant", "return"],
}


def keyword_tickets(n_per_label: int, seed: int) -> TicketDataset:
    """Tickets whose label is given away by a keyword: a linear model's home ground."""
    rng = random.Random(seed)
    texts, labels = [], []
    for label, words in KEYWORDS.items():
        for i in range(n_per_label):
            filler = rng.sample(FILLER, 6)
            filler.insert(rng.randrange(7), rng.choice(words))
            texts.append(" ".join(filler) + f" {seed}-{i}")
            labels.append(label)
    return TicketDataset(texts, labels)


# --- the choice on validation ---------------------------------------------------------------
def confident_where(right: np.ndarray, y: np.ndarray, n_labels: int = 3) -> np.ndarray:
    """Confident (0.9) on the right label where ``right``, else a mild 0.55 on a wrong one."""
    p = np.full((len(y), n_labels), 0.05)
    for i, label in enumerate(y):
        if right[i]:
            p[i, label] = 0.9
        else:
            p[i, (label + 1) % n_labels] = 0.55
            p[i, label] = 0.4
    return p / p.sum(axis=1, keepdims=True)


def test_choose_model_takes_what_wins_on_validation() -> None:
    y = np.arange(100) % 3
    rows = np.arange(100)
    transformer = confident_where(rows < 60, y)
    linear = confident_where(rows >= 40, y)
    # Each alone is right on 60 tickets; averaged, each one's confident answers win.
    model, weight, table = choose_model(y, transformer, linear)
    assert model == "ensemble" and 0 < weight < 1
    assert max(r["accuracy"] for r in table) == 1.0 and [r["weight"] for r in table] == sorted(
        r["weight"] for r in table
    )
    assert choose_model(y, confident_where(rows < 90, y), confident_where(rows < 50, y))[:2] == (
        "transformer",
        0.0,
    )
    assert choose_model(y, confident_where(rows < 50, y), confident_where(rows < 90, y))[:2] == (
        "linear",
        1.0,
    )
    # Without mixtures (a sigmoid transformer): only the two single models are candidates.
    assert choose_model(y, transformer, linear, ensemble=False)[0] == "transformer"  # tie: transformer


# --- end to end: fit, compare, ship, serve ----------------------------------------------------
@pytest.fixture
def artifact(tiny_artifact: Path, tmp_path: Path) -> Path:
    copy = Path(shutil.copytree(tiny_artifact, tmp_path / "model"))
    (tmp_path / "onnx-fp32").symlink_to(fp32_onnx_path(tiny_artifact).parent)
    return copy


def test_the_baseline_wins_ships_and_is_served(
    artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    train, validation, test = keyword_tickets(30, 1), keyword_tickets(10, 2), keyword_tickets(10, 3)
    with caplog.at_level(logging.WARNING, logger="training.baseline"):
        report = run_baseline(artifact, train, validation, test, PreprocessConfig(), tmp_path / "reports")
    assert report["shipped"] == "linear" and report["choice"]["linear_weight"] == 1.0
    assert report["validation"]["linear"]["macro_f1"] == 1.0
    assert report["margin"]["test"]["macro_f1"] < -0.3  # transformer minus baseline
    assert not report["transformer_wins_on_validation"]
    assert any("DOES NOT BEAT THE LINEAR BASELINE" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "reports" / REPORT_FILE).is_file()
    manifest = load_manifest(artifact)
    assert manifest.model == "linear" and (artifact / LINEAR_FILE).is_file()

    # The real server answers with the baseline's own probabilities (scikit-learn, fit again).
    model = fit_baseline(
        preprocess_batch(train.texts, PreprocessConfig()), train.labels, manifest.labels, BaselineConfig()
    )
    tickets = [*test.texts[::7], "Hi team,\n\nmy refund from the merchant is missing.\n\nThanks, Ann"]
    expected = probabilities(model, preprocess_batch(tickets, PreprocessConfig()), manifest.labels)
    body = b"".join(orjson.dumps({"id": f"t{i}", "text": t}) + b"\n" for i, t in enumerate(tickets))
    server = start_server(artifact, tmp_path / "server.log")
    try:
        resp = server.invoke(body, "application/jsonlines", "application/jsonlines", **{"X-Top-K": "1"})
        toolkit = server.invoke(orjson.dumps({"inputs": tickets[-1]}), "application/json")
    finally:
        stop_server(server)
    assert resp.status == 200, resp.body
    lines = resp.jsonl()
    assert [line["id"] for line in lines] == [f"t{i}" for i in range(len(tickets))]
    assert [line["label"] for line in lines] == [manifest.labels[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose([line["score"] for line in lines], expected.max(axis=1), atol=1e-5)
    assert lines[-1]["label"] == "refund_not_showing_up"
    assert toolkit.status == 200 and toolkit.json()[0]["label"] == "refund_not_showing_up"


def test_the_transformer_wins_and_the_artifact_is_unchanged(
    artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Banking77 tickets labelled by the transformer itself: it is right on all of them, the
    linear model cannot be, so nothing ships besides the transformer and nothing is shouted."""
    shutil.copyfile(fp32_onnx_path(artifact), artifact / MODEL_FILE)  # scores batch-independent
    classifier = ArtifactClassifier(artifact)
    labels = classifier.labels
    with BANKING77.open(encoding="utf-8") as handle:
        pool = [row["text"] for row in csv.DictReader(handle)][:5000]
    own = classifier.predict_scores(pool).argmax(axis=1)
    by_label: dict[str, list[str]] = {label: [] for label in labels}
    for text, i in zip(pool, own, strict=True):
        if len(by_label[labels[i]]) < 60:
            by_label[labels[i]].append(text)
    assert sum(map(bool, by_label.values())) >= 3  # the tiny model predicts most labels somewhere
    parts: list[tuple[list[str], list[str]]] = [([], []), ([], []), ([], [])]
    for label, texts in by_label.items():
        for j, text in enumerate(texts):  # 3 of 5 to training (all of a rare label), 1 each to the others
            part = parts[0] if len(texts) < 5 or j % 5 < 3 else parts[1 + j % 5 - 3]
            part[0].append(text)
            part[1].append(label)
    train, validation, test = (TicketDataset(texts, ys) for texts, ys in parts)
    before = (artifact / "triage_artifact.json").read_bytes()
    with caplog.at_level(logging.WARNING, logger="training.baseline"):
        report = run_baseline(artifact, train, validation, test, PreprocessConfig())
    assert report["shipped"] == "transformer" and report["choice"]["linear_weight"] == 0.0
    assert report["validation"]["transformer"]["macro_f1"] == 1.0
    assert report["margin"]["validation"]["macro_f1"] > 0 and report["transformer_wins_on_validation"]
    assert not any("DOES NOT BEAT" in r.getMessage() for r in caplog.records)
    assert (artifact / "triage_artifact.json").read_bytes() == before
    assert not (artifact / LINEAR_FILE).exists()


@pytest.mark.parametrize("long_text", [None, {"strategy": "windows", "pooling": "max"}])
def test_an_ensemble_artifact_averages_the_two_models(artifact: Path, long_text: dict | None) -> None:
    if long_text is not None:  # long tickets scored window by window, then averaged in
        manifest = load_manifest(artifact)
        write_manifest(artifact, manifest.model_validate({**manifest.model_dump(), "long_text": long_text}))
    train = keyword_tickets(20, 4)
    model = fit_baseline(
        preprocess_batch(train.texts, PreprocessConfig()), train.labels, sorted(KEYWORDS), BaselineConfig()
    )
    texts = [*keyword_tickets(3, 5).texts, " ".join(keyword_tickets(4, 6).texts)]  # the last: several windows
    transformer = ArtifactClassifier(artifact).predict_scores(texts)
    ship_linear(model, artifact, "ensemble", 0.3, BaselineConfig())
    ensemble = ArtifactClassifier(artifact)
    assert ensemble.kind == "ensemble" and load_manifest(artifact).linear.weight == 0.3
    expected = 0.3 * probabilities(model, ensemble.clean(texts), ensemble.labels) + 0.7 * transformer
    np.testing.assert_allclose(ensemble.predict_scores(texts), expected, atol=1e-5)


def test_a_one_vs_rest_transformer_is_compared_but_not_replaced(artifact: Path, tmp_path: Path) -> None:
    """Sigmoid scores are a promise to clients (independent per-class scores, the toolkit's
    function_to_apply): the linear model's softmax cannot keep it, so it is reported only."""
    manifest = load_manifest(artifact)
    write_manifest(artifact, manifest.model_validate({**manifest.model_dump(), "scoring": "sigmoid"}))
    train, validation, test = keyword_tickets(30, 1), keyword_tickets(10, 2), keyword_tickets(10, 3)
    report = run_baseline(artifact, train, validation, test, PreprocessConfig())
    assert not report["transformer_wins_on_validation"] and "sigmoids" in report["not_shipped"]
    assert report["shipped"] == "transformer" and load_manifest(artifact).model == "transformer"
    assert [row["weight"] for row in report["choice"]["candidates"]] == [0.0, 1.0]
