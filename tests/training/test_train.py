"""Fine-tuning on a tiny random BERT: one epoch writes a loadable model; config, weights, batches."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from training.config import TrainConfig, resolve_base_model
from training.data import TicketDataset
from training.train import (
    CONFIG_FILE,
    HISTORY_FILE,
    class_weights,
    length_grouped_batches,
    minority_oversample,
    train,
)

TOPICS = {
    "card_arrival": ["my card has not arrived", "when will my new card come", "still waiting for the card"],
    "exchange_rate": ["what exchange rate do you use", "is the euro rate fair", "currency conversion rate"],
    "top_up_failed": ["my top up failed", "top-up did not go through", "could not add money by top up"],
}


def tiny_dataset(per_label: int = 12, seed: int = 0) -> TicketDataset:
    rng = random.Random(seed)
    texts, labels = [], []
    for label, phrases in TOPICS.items():
        for i in range(per_label):
            texts.append(f"{rng.choice(phrases)} {rng.choice(['please', 'today', 'again', ''])} #{i}".strip())
            labels.append(label)
    return TicketDataset(texts, labels)


def fast_config(base: Path, **overrides) -> TrainConfig:
    values = {
        "base_model": str(base),
        "epochs": 1,
        "batch_size": 8,
        "max_length": 32,
        "learning_rate": 5e-4,
        "threads": 1,
        # A random tiny model has no word embeddings worth keeping: it must learn them (the
        # default freezes the pretrained ones; test_strategies covers that option).
        "freeze_embeddings": False,
    }
    values.update(overrides)
    return TrainConfig(**values)


def test_one_epoch_writes_a_loadable_classifier(tiny_base_model: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from training.modeling import load_classifier

    data = tiny_dataset()
    labels = data.label_names
    result = train(fast_config(tiny_base_model), data, tiny_dataset(4, seed=1), tmp_path)
    assert result.labels == labels
    model = load_classifier(result.model_dir)  # whatever the default head is
    assert [model.config.id2label[i] for i in range(len(labels))] == labels
    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    assert tokenizer.is_fast
    logits = model(**tokenizer(["my card has not arrived"], return_tensors="pt")).logits
    assert logits.shape == (1, len(labels))

    history = [json.loads(line) for line in (tmp_path / HISTORY_FILE).read_text().splitlines()]
    assert len(history) == 1 == len(result.history)
    record = history[0]
    assert record["epoch"] == 1 and 0.0 <= record["val_macro_f1"] <= 1.0
    assert record["train_loss"] > 0 and record["noisy_rows"] > 0  # noisy augmentation on by default
    assert TrainConfig.load(tmp_path / CONFIG_FILE) == fast_config(tiny_base_model)


def test_tiny_model_learns_a_separable_task(tiny_base_model: Path, tmp_path: Path) -> None:
    data = tiny_dataset(16)
    config = fast_config(tiny_base_model, epochs=8, learning_rate=2e-3, noisy_augmentation=0.0)
    result = train(config, data, data, tmp_path)
    assert result.best_val_macro_f1 > 0.8  # chance is 1/3
    best = max(result.history, key=lambda record: record["val_macro_f1"])
    assert result.best_epoch == best["epoch"]


def test_early_stopping_stops_when_validation_does_not_improve(tiny_base_model: Path, tmp_path: Path) -> None:
    config = fast_config(
        tiny_base_model, epochs=5, learning_rate=1e-9, head_learning_rate=1e-9, early_stopping_patience=1
    )
    result = train(config, tiny_dataset(), tiny_dataset(4, seed=1), tmp_path)
    assert len(result.history) == 2  # epoch 2 did not beat epoch 1: stop
    assert result.best_epoch == 1


def test_unknown_training_label_is_an_error(tiny_base_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in the label list"):
        train(fast_config(tiny_base_model), tiny_dataset(), tiny_dataset(), tmp_path, labels=["a", "b"])


def test_class_weights_balance_the_classes() -> None:
    labels = ["a"] * 6 + ["b"] * 3 + ["c"] * 1
    weights = class_weights(labels, ["a", "b", "c"])
    np.testing.assert_allclose(weights, [10 / 18, 10 / 9, 10 / 3], rtol=1e-6)
    counts = np.array([6, 3, 1])
    np.testing.assert_allclose(weights * counts, [10 / 3] * 3, rtol=1e-6)  # equal total weight


def test_length_grouped_batches_cover_every_row_once_with_similar_lengths() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(3, 60) for _ in range(1000)]
    batches = length_grouped_batches(lengths, batch_size=16, group_batches=10, rng=random.Random(1))
    flat = sorted(i for batch in batches for i in batch)
    assert flat == list(range(1000))
    spread = np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])
    assert spread < 10  # random batches of 16 would spread ~50 tokens
    again = length_grouped_batches(lengths, batch_size=16, group_batches=10, rng=random.Random(1))
    assert again == batches


def test_minority_oversampling_tops_up_small_labels_with_noisy_copies() -> None:
    texts = ["big"] * 10 + ["small one"] * 2
    labels = ["big"] * 10 + ["small"] * 2
    new_texts, new_labels = minority_oversample(texts, labels, 5, random.Random(0))
    assert new_labels.count("small") == 5 and new_labels.count("big") == 10
    assert all("small one" in t for t in new_texts[12:])
    assert minority_oversample(texts, labels, 0, random.Random(0)) == (texts, labels)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("learning_rate", 0.0),
        ("max_length", 4),
        ("warmup_ratio", 1.0),
        ("label_smoothing", -0.1),
        ("noisy_augmentation", 1.5),
        ("early_stopping_patience", -1),
        ("batch_size", 0),
    ],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        TrainConfig(**{field: value})


def test_config_round_trip_and_default_base_model(tmp_path: Path) -> None:
    config = TrainConfig(epochs=3, class_weights=False)
    assert TrainConfig.load(config.save(tmp_path / "c.json")) == config
    assert Path(resolve_base_model(config.base_model), "config.json").is_file()
    assert resolve_base_model("distilbert-base-uncased") == "distilbert-base-uncased"


def _write_csv(path: Path, data: TicketDataset) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        writer.writerows(zip(data.texts, data.labels, strict=True))
    return path


def test_cli_train_builds_a_serving_artifact(tiny_base_model: Path, tmp_path: Path) -> None:
    """load -> split -> fine-tune -> export: the artifact classifies with ONNX Runtime."""
    from training.__main__ import main
    from triage_core.inference import ArtifactClassifier

    data_file = _write_csv(tmp_path / "tickets.csv", tiny_dataset(20))
    out = tmp_path / "artifacts"
    argv = [
        "train",
        "--data", str(data_file),
        "--base-model", str(tiny_base_model),
        "--epochs", "1",
        "--batch-size", "8",
        "--max-length", "32",
        "--threads", "1",
        "--output", str(out / "model"),
        "--work-dir", str(out / "work"),
        "--splits-dir", str(out / "splits"),
        "--reports-dir", str(out / "reports"),
        "--optimization-report", "false",
    ]  # fmt: skip
    assert main(argv) == 0
    assert {p.name for p in (out / "splits").iterdir()} >= {"train.csv", "validation.csv", "test.csv"}
    summary = json.loads((out / "reports" / "train_summary.json").read_text())
    assert summary["rows"] == {"train": 48, "validation": 6, "test": 6}
    assert summary["config"]["epochs"] == 1
    classifier = ArtifactClassifier(out / "model")
    assert classifier.labels == sorted(TOPICS)
    assert classifier.manifest.max_length == 32
    # the drift reference: the training split's labels as written to splits/train.csv
    with open(out / "splits" / "train.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    column = next(c for c in rows[0] if c != "text")
    trained = {label: sum(r[column] == label for r in rows) for label in classifier.labels}
    assert classifier.manifest.training_mix == trained and sum(trained.values()) == 48
    scores = classifier.predict_scores(["Hi, my card has not arrived. Sent from my iPhone"])
    assert scores.shape == (1, 3) and abs(float(scores.sum()) - 1.0) < 1e-4
    assert (out / "reports" / "train.log").read_text().count("epoch 1/1") == 1

    # the served artifact was evaluated on the clean and the noisy test split
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    assert {"accuracy", "macro_f1", "micro_f1", "per_class", "noisy", "clean_vs_noisy"} <= set(metrics)
    # chosen on validation, reported on test: the review threshold and the selection statement
    review = metrics["review_threshold"]
    assert review["chosen_on"] == "validation" and 0 <= review["threshold"] <= 1
    assert set(review["test"]) == {"accepted_accuracy", "review_share", "accepted_accuracy_interval_95"}
    # ... and deployed with the artifact: the manifest carries it, the server reads it from there
    assert ArtifactClassifier(out / "model").manifest.review_threshold == review["threshold"]
    assert "chosen on the validation split" in metrics["selection"]
    # the recipe that fits this (non-Banking77) file: auto, written where a person looks for it
    assert summary["recipe"]["preset"] == "auto"
    sources = {c["name"]: c["source"] for c in summary["recipe"]["choices"]}
    assert sources["epochs"] == "command line" and sources["class_weights"] == "rule"
    saved = json.loads((out / "work" / "train_config.json").read_text())
    assert saved["recipe"] == summary["recipe"] and saved["noisy_augmentation"] == 0.0
    assert TrainConfig.load(out / "work" / "train_config.json").to_dict() == summary["config"]
    assert "recipe (preset auto)" in (out / "reports" / "train.log").read_text()
    # the review policy travels with the threshold; the curve is in the report and drawn
    manifest = ArtifactClassifier(out / "model").manifest
    assert (manifest.review_target_accuracy, manifest.review_max_share) == (0.95, 0.5)
    assert review["validation_curve"][-1]["coverage"] == 1.0 and review["test_curve"]
    assert (out / "reports" / "test" / "review_coverage.png").is_file()
    assert any("rests on 6 validation tickets" in w for w in review["warnings"])
    # the cascade step ran after the baseline: an ensemble's bar, chosen on validation, is in the manifest
    cascade = summary["cascade"]
    assert cascade["chosen_on"] == "validation" and (out / "reports" / "cascade.json").is_file()
    bar = manifest.linear.cascade_bar if manifest.linear is not None else None
    assert bar == cascade["bar"] and (manifest.model == "ensemble" or bar is None)
    # the served model and why; the test score with its bootstrap interval
    assert summary["export"]["served"]["model"] in ("int8", "int8 per-channel", "fp32")
    assert manifest.quantization_reason == summary["export"]["served"]["reason"]
    low, high = metrics["confidence_intervals"]["macro_f1"]
    assert low <= metrics["macro_f1"] <= high
    load_report = json.loads((out / "reports" / "data_report.json").read_text())["load_report"]
    assert load_report["dropped_model_input_duplicates"] == 0 and "conflicting_model_inputs" in load_report
    assert summary["export"]["parity"]["passed"] and summary["export"]["parity"]["texts"] == 6
    assert metrics["noisy"]["macro_f1"] == summary["test_noisy"]["macro_f1"]
    assert metrics["training"]["best_epoch"] == 1
    for part in ("test", "test/noisy"):
        assert {"metrics.json", "confusion_matrix.png", "per_class_f1.png"} <= {
            p.name for p in (out / "reports" / part).iterdir()
        }

    # `evaluate` is the evaluation helper's command, reached through the same CLI
    eval_out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(out / "model"), "--data", str(out / "splits" / "test.csv")]
    assert main([*argv, "--out", str(eval_out)]) == 0
    assert json.loads((eval_out / "metrics.json").read_text())["macro_f1"] == metrics["macro_f1"]

    tar = out / "model.tar.gz"
    assert main(["package", "--model", str(out / "model"), "--output", str(tar)]) == 0
    import tarfile

    with tarfile.open(tar) as archive:
        assert {"model.onnx", "tokenizer.json", "triage_artifact.json"} <= set(archive.getnames())


@pytest.mark.slow
def test_default_base_model_learns_banking77_subset(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The real MiniLM with the default hyperparameters, on 15 Banking77 intents x 40 rows.

    Opt-in (``pytest -m slow``): 1-2.5 minutes on this machine's 2 cores, depending on their load.
    """
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("real-model training: run with pytest -m slow")
    from training.data import load_tickets

    data = load_tickets()
    labels = data.label_names[:15]
    rng = random.Random(0)
    train_rows, val_rows = [], []
    for label in labels:
        rows = [t for t, y in zip(data.texts, data.labels, strict=True) if y == label]
        rng.shuffle(rows)
        train_rows += [(t, label) for t in rows[:40]]
        val_rows += [(t, label) for t in rows[40:50]]
    train_data = TicketDataset([t for t, _ in train_rows], [y for _, y in train_rows])
    val_data = TicketDataset([t for t, _ in val_rows], [y for _, y in val_rows])
    result = train(TrainConfig(epochs=3), train_data, val_data, tmp_path, labels=labels)
    assert result.best_val_macro_f1 > 0.6  # chance: 1/15


@pytest.mark.parametrize(
    ("base_model", "message"),
    [
        ("./no/such/model", r"^base model './no/such/model': no such directory; pass a directory"),
        ("/tmp", r"^base model '/tmp': /tmp has no config.json, so it is not a Hugging Face model directory"),
        ("not a valid id!!", r"^base model 'not a valid id!!': not a local directory and not a valid hub id"),
        # the test session runs with HF_HUB_OFFLINE=1 (conftest), as `make train` does
        ("distilbert-base-uncased", r"^base model 'distilbert-base-uncased' is not in the local Hugging Face "
         r"cache and offline mode is on \(HF_HUB_OFFLINE=1\)"),
    ],
)  # fmt: skip
def test_unusable_base_model_is_one_actionable_line(base_model: str, message: str) -> None:
    """Real transformers / huggingface_hub calls behind each message."""
    from training.config import ModelSourceError, check_base_model

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    with pytest.raises(ModelSourceError, match=message) as caught:
        check_base_model(base_model)
    assert "\n" not in str(caught.value)


def test_cli_stops_on_a_bad_base_model_before_reading_data(tmp_path: Path) -> None:
    import subprocess
    import sys

    argv = ["train", "--base-model", "./no/such/model", "--data", str(tmp_path / "missing.csv")]
    proc = subprocess.run(
        [sys.executable, "-m", "training", *argv, "--output", str(tmp_path / "run" / "model")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("base model './no/such/model': no such directory")
    assert not (tmp_path / "run" / "splits").exists()  # no data was read or split


@pytest.mark.parametrize(
    ("base_model", "family", "learning_rate", "warmup", "max_length"),
    [
        ("all-MiniLM-L6-v2", "minilm", 1e-4, 0.06, 64),
        ("sentence-transformers/all-MiniLM-L12-v2", "minilm", 1e-4, 0.06, 64),
        ("bert-base-uncased", "bert", 3e-5, 0.1, 128),
        ("distilbert-base-uncased", "distilbert", 5e-5, 0.1, 128),
        ("roberta-base", "roberta", 2e-5, 0.06, 128),
        ("FacebookAI/roberta-large", "roberta", 2e-5, 0.06, 128),
    ],
)
def test_base_model_picks_its_family_preset(
    base_model: str, family: str, learning_rate: float, warmup: float, max_length: int
) -> None:
    from training.__main__ import build_parser, config_from_args
    from training.config import model_family

    assert model_family(base_model) == family
    config = config_from_args(build_parser().parse_args(["train", "--base-model", base_model]))
    assert (config.learning_rate, config.warmup_ratio, config.max_length) == (
        learning_rate,
        warmup,
        max_length,
    )
    if family != "minilm":  # the published recipes: one rate for all weights, the HF head, nothing frozen
        assert config.head == "cls" and config.head_learning_rate == 0.0 and not config.freeze_embeddings
    # an explicit option wins over the preset
    config = config_from_args(
        build_parser().parse_args(["train", "--base-model", base_model, "--learning-rate", "7e-5"])
    )
    assert config.learning_rate == 7e-5 and config.max_length == max_length


def test_local_model_family_comes_from_its_config(tiny_base_model: Path, minilm_path: Path) -> None:
    from training.config import model_family

    assert model_family(str(minilm_path)) == "minilm"  # a BERT of width 384
    assert model_family(str(tiny_base_model)) == "bert"
