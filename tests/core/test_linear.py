"""triage_core.linear: numpy TF-IDF + logistic regression from ``linear.npz`` gives scikit-learn's
own ``predict_proba`` on real tickets (Banking77, the same tickets in e-mail noise, odd text)."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.baseline import BaselineConfig, fit_baseline, save_linear
from training.noise import noisy_variant
from triage_core.artifact import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, ArtifactError, load_manifest
from triage_core.inference import ArtifactClassifier, scores_from_logits
from triage_core.linear import LINEAR_FILE, LinearModel, LinearSpec, char_ngrams, word_ngrams
from triage_core.preprocessing import PreprocessConfig, preprocess_batch

ROOT = Path(__file__).resolve().parents[2]
ODD = [
    "",
    "   \t\n  ",
    "Card   declined\t\tat  the\n\n\nshop!!",
    "ÜBER-Gebühr für Überweisung ß ẞ",
    "我的卡丢了 please block it",
    "😀😀 refund 😀 not showing",
    "a",
    "I I I I I I card card card",
]


@pytest.fixture(scope="module")
def banking() -> tuple[list[str], list[str], list[str], list[str]]:
    """600 training and 300 held-out tickets of 12 Banking77 labels, preprocessed."""
    with (ROOT / "data" / "banking77" / "train.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    keep = sorted({r["category"] for r in rows})[:12]
    rows = [r for r in rows if r["category"] in keep]
    random.Random(7).shuffle(rows)
    texts = preprocess_batch([r["text"] for r in rows[:900]], PreprocessConfig())
    labels = [r["category"] for r in rows[:900]]
    return texts[:600], labels[:600], texts[600:], labels[600:]


@pytest.fixture(scope="module")
def fitted(banking, tmp_path_factory: pytest.TempPathFactory):
    train_texts, train_labels, _, _ = banking
    model = fit_baseline(train_texts, train_labels, sorted(set(train_labels)), BaselineConfig())
    path = save_linear(model, tmp_path_factory.mktemp("linear") / LINEAR_FILE, list(model.classes_))
    return model, path


def test_numpy_scores_are_scikit_learns(banking, fitted) -> None:
    model, path = fitted
    _, _, held_out, _ = banking
    noisy = preprocess_batch(noisy_variant(held_out[:100], seed=3, pool="eval"), PreprocessConfig())
    texts = held_out + noisy + ODD
    linear = LinearModel(path, LinearSpec())
    ours = scores_from_logits(linear.logits(linear.features(texts)), "softmax")
    theirs = model.predict_proba(texts)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_array_equal(ours.argmax(axis=1), theirs.argmax(axis=1))


def test_analyzers_are_scikit_learns() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    for text in ODD[2:]:
        word = TfidfVectorizer(ngram_range=(1, 2)).build_analyzer()(text)
        char = TfidfVectorizer(analyzer="char", ngram_range=(3, 5)).build_analyzer()(text)
        assert word_ngrams(text, 1, 2) == word
        assert char_ngrams(text, 3, 5) == char


def linear_artifact(
    src: Path, dst: Path, linear_npz: Path, labels: list[str], kind: str, weight: float
) -> Path:
    shutil.copytree(src, dst)
    shutil.copyfile(linear_npz, dst / LINEAR_FILE)
    data = json.loads((dst / MANIFEST_FILE).read_text("utf-8"))
    data.update(labels=labels, model=kind, linear=LinearSpec(weight=weight).model_dump(mode="json"))
    (dst / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    return dst


def test_a_linear_artifact_needs_no_onnx_model(banking, fitted, tiny_artifact: Path, tmp_path: Path) -> None:
    model, path = fitted
    _, _, held_out, _ = banking
    labels = list(model.classes_)
    artifact = linear_artifact(tiny_artifact, tmp_path / "linear", path, labels, "linear", 1.0)
    (artifact / MODEL_FILE).unlink()
    (artifact / TOKENIZER_FILE).unlink()
    classifier = ArtifactClassifier(artifact)
    assert classifier.session is None and classifier.kind == "linear"
    raw = ["Hi,\n\nmy card payment was declined twice today.\n\nThanks, Anna", *held_out[:20]]
    np.testing.assert_allclose(
        classifier.predict_scores(raw, batch_size=4), model.predict_proba(classifier.clean(raw)), atol=1e-5
    )
    (artifact / LINEAR_FILE).unlink()
    with pytest.raises(ArtifactError, match=r"missing linear\.npz"):
        load_manifest(artifact)


def test_manifest_refuses_a_linear_model_without_its_settings(tiny_artifact: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_artifact, tmp_path / "m")
    data = json.loads((tmp_path / "m" / MANIFEST_FILE).read_text("utf-8"))
    data["model"] = "ensemble"
    (tmp_path / "m" / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    with pytest.raises(ArtifactError, match="needs the 'linear' settings"):
        load_manifest(tmp_path / "m")


def test_linear_labels_must_match_the_manifest(fitted, tiny_artifact: Path, tmp_path: Path) -> None:
    _, path = fitted
    labels = load_manifest(tiny_artifact).labels  # 5 labels; linear.npz scores 12
    artifact = linear_artifact(tiny_artifact, tmp_path / "e", path, labels, "ensemble", 0.5)
    with pytest.raises(ArtifactError, match=r"linear\.npz scores 12 labels, the manifest has 5"):
        ArtifactClassifier(artifact)


def test_two_labels_and_any_label_order(banking, tmp_path: Path) -> None:
    """scikit-learn keeps one logit for two labels; the artifact's label order need not be sorted."""
    texts, labels, held_out, _ = banking
    pair = sorted(set(labels))[:2]
    rows = [(t, y) for t, y in zip(texts, labels, strict=True) if y in pair]
    model = fit_baseline([t for t, _ in rows], [y for _, y in rows], pair, BaselineConfig())
    order = pair[::-1]
    path = save_linear(model, tmp_path / LINEAR_FILE, order)
    linear = LinearModel(path, LinearSpec())
    ours = scores_from_logits(linear.logits(linear.features(held_out)), "softmax")
    np.testing.assert_allclose(ours, model.predict_proba(held_out)[:, ::-1], atol=1e-5)
