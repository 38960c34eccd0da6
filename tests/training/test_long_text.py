"""training.long_text: the maximum length from the data, the long-ticket strategy from the
validation split, and both through ``python -m training train`` on a synthetic long-ticket set."""

from __future__ import annotations

import csv
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from training.data import TicketDataset
from training.export import fp32_onnx_path
from training.long_text import model_limit, select_long_text
from triage_core.artifact import MANIFEST_FILE, MODEL_FILE, load_manifest
from triage_core.inference import ArtifactClassifier
from triage_core.longtext import LongText

BANKING77 = Path(__file__).resolve().parents[2] / "data" / "banking77" / "train.csv"
WORDS = [
    *("account", "card", "payment", "transfer", "refund", "branch", "statement", "charge", "fee"),
    *("balance", "loan", "mortgage", "escrow", "credit", "report", "dispute", "debt", "collector"),
    *("letter", "phone", "call", "bank", "manager", "interest", "rate", "late", "notice"),
]


def long_tickets(n: int, seed: int, low: int = 40, high: int = 160) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randrange(low, high))) + "." for _ in range(n)]


@pytest.fixture
def artifact(tiny_artifact: Path, tmp_path: Path) -> Path:
    """The tiny model in fp32 (scores do not depend on batch neighbours) reading 32 tokens."""
    dst = Path(shutil.copytree(tiny_artifact, tmp_path / "model"))
    shutil.copyfile(fp32_onnx_path(tiny_artifact), dst / MODEL_FILE)
    data = json.loads((dst / MANIFEST_FILE).read_text("utf-8"))
    data.update(quantization="none", max_length=32)
    (dst / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    return dst


@pytest.mark.parametrize(
    "target",
    [LongText(strategy="head_tail"), LongText(strategy="windows", pooling="mean")],
    ids=lambda s: s.label(),
)
def test_the_strategy_that_fits_the_validation_labels_is_chosen(
    artifact: Path, tmp_path: Path, target: LongText
) -> None:
    """Validation tickets labelled by the model itself read with ``target``: that strategy is
    right on all of them, head truncation is not, so ``target`` is chosen (a tie goes to the
    earlier candidate: head, head_tail, windows-mean, windows-max), written into the manifest,
    and the artifact then answers those labels."""
    classifier = ArtifactClassifier(artifact)
    texts = [*long_tickets(60, 1), "my card", "refund please"]
    head_labels = classifier.predict_scores(texts).argmax(axis=1)
    classifier.use_long_text(target)
    own = classifier.predict_scores(texts).argmax(axis=1)
    assert (own != head_labels).sum() >= 3, "the strategies must disagree on some tickets"
    validation = TicketDataset(texts, [classifier.labels[i] for i in own])
    report = select_long_text(artifact, validation, tmp_path / "reports")
    rows = {row["strategy"]: row for row in report["candidates"]}
    assert set(rows) == {"head", "head_tail", "windows-mean", "windows-max"}
    assert rows[target.label()]["accuracy"] == 1.0 and rows["head"]["accuracy"] < 1.0
    assert report["winner"] == target.label() and report["chosen_on"] == "validation"
    assert report["validation_lengths"]["share_longer"] > 0.9
    assert load_manifest(artifact).long_text == target
    served = ArtifactClassifier(artifact).predict_scores(texts).argmax(axis=1)
    np.testing.assert_array_equal(served, own)
    assert json.loads((tmp_path / "reports" / "long_text.json").read_text())["winner"] == target.label()


def test_short_validation_tickets_keep_head(artifact: Path) -> None:
    validation = TicketDataset(["my card", "where is my refund"], ["card_arrival", "exchange_rate"])
    report = select_long_text(artifact, validation)
    assert "candidates" not in report and report["strategy"]["strategy"] == "head"
    assert load_manifest(artifact).long_text == LongText()


def test_model_limit_reads_the_position_embeddings(tmp_path: Path, tiny_base_model: Path) -> None:
    from transformers import BertConfig, RobertaConfig

    assert model_limit(str(tiny_base_model)) == 512
    BertConfig(max_position_embeddings=128).save_pretrained(tmp_path / "short")
    assert model_limit(str(tmp_path / "short")) == 128
    RobertaConfig(max_position_embeddings=514).save_pretrained(tmp_path / "roberta")
    assert model_limit(str(tmp_path / "roberta")) == 512  # two positions are RoBERTa's padding offset


def test_train_on_long_tickets_chooses_length_and_strategy(tiny_base_model: Path, tmp_path: Path) -> None:
    """``make train`` on long tickets with a subject and a body, read at 64 tokens: fine-tuning
    reads head + tail, the strategy and the shipped model come from validation, all in the
    reports and the artifact (the length from the data: the recipe test above)."""
    from training.__main__ import main

    rng = random.Random(5)
    topics = {"mortgage": "escrow", "credit_report": "dispute", "debt_collection": "collector"}
    path = tmp_path / "complaints.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["subject", "body", "product"])
        for i in range(90):
            product = list(topics)[i % 3]
            body = long_tickets(1, 100 + i, 60, 140)[0] + f" {topics[product]} problem number {i}."
            writer.writerow([f"complaint {i}" if rng.random() < 0.8 else "", body, product])
    out = tmp_path / "artifacts"
    argv = [
        "train", "--data", str(path), "--text-column", "subject,body", "--label-column", "product",
        "--base-model", str(tiny_base_model), "--epochs", "1", "--batch-size", "8", "--threads", "1",
        "--max-length", "64",
        "--output", str(out / "model"), "--work-dir", str(out / "work"), "--splits-dir", str(out / "splits"),
        "--reports-dir", str(out / "reports"), "--optimization-report", "false",
        "--validation-size", "0.2", "--test-size", "0.2",
    ]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads((out / "reports" / "train_summary.json").read_text())
    choices = {c["name"]: c for c in summary["recipe"]["choices"]}
    assert choices["max_length"]["source"] == "command line" and summary["config"]["max_length"] == 64
    # every ticket is longer than 64 tokens: fine-tuning reads head + tail (the auto recipe's rule),
    # and the strategies were compared on the validation split
    assert choices["truncation"]["source"] == "rule"
    assert choices["truncation"]["value"] == summary["config"]["truncation"] == "head_tail"
    long_text = summary["long_text"]
    assert [row["strategy"] for row in long_text["candidates"]] == [
        "head",
        "head_tail",
        "windows-mean",
        "windows-max",
    ]
    assert long_text["validation_lengths"]["share_longer"] == 1.0
    manifest = load_manifest(out / "model")
    assert manifest.max_length == 64 and manifest.long_text.label() == long_text["winner"]
    # The baseline was compared on the same validation and test tickets; the margin is reported
    # and what won on validation is what the artifact serves.
    baseline = summary["baseline"]
    assert set(baseline["margin"]) == {"validation", "test"}
    assert manifest.model == baseline["shipped"]
    assert json.loads((out / "reports" / "baseline.json").read_text())["choice"] == baseline["choice"]
    assert manifest.long_text.model_dump() == long_text["strategy"]
    metrics = json.loads((out / "model" / "metrics.json").read_text())
    assert metrics["counts"]["examples"] == summary["rows"]["test"]
    # the test split was scored with the chosen strategy and the shipped model
    assert metrics["model"]["long_text"] == long_text["winner"]
    assert metrics["model"]["served"] == baseline["shipped"]


def test_fine_tuning_reads_the_tokens_the_server_reads(tiny_hf_model: Path, tiny_artifact: Path) -> None:
    """``--truncation head_tail``: training's encoder keeps exactly the tokens the artifact's
    ``head_tail`` strategy keeps (one function, triage_core.longtext.head_tail_positions)."""
    from transformers import AutoTokenizer

    from training.batches import TextEncoder
    from training.modeling import load_classifier
    from triage_core.artifact import TOKENIZER_FILE
    from triage_core.inference import TicketTokenizer

    texts = [*long_tickets(5, 9, 80, 160), "short ticket", " ".join(["word"] * 62)]  # 64 tokens: fits exactly
    model = load_classifier(tiny_hf_model)
    encoder = TextEncoder(AutoTokenizer.from_pretrained(tiny_hf_model), model, 64, "head_tail")
    served = TicketTokenizer(
        tiny_artifact / TOKENIZER_FILE, 64, ["input_ids", "attention_mask", "token_type_ids"],
        LongText(strategy="head_tail"),
    ).encode(texts)  # fmt: skip
    encoded = encoder.encode(texts)
    assert encoded["input_ids"] == [list(e.ids) for e in served]
    assert [len(ids) for ids in encoded["input_ids"]][:5] == [64] * 5
    assert encoded["token_type_ids"] == [list(e.type_ids) for e in served]
    assert all(set(mask) == {1} for mask in encoded["attention_mask"])
    head = TextEncoder(AutoTokenizer.from_pretrained(tiny_hf_model), model, 64).encode(texts)
    assert head["input_ids"][5:] == encoded["input_ids"][5:]  # tickets that fit: the same
    assert head["input_ids"][0] != encoded["input_ids"][0]


def test_the_auto_recipe_reads_the_length_from_the_data(tiny_base_model: Path, minilm_path: Path) -> None:
    """The auto recipe's rules: Banking77 resolves to the measured 64 tokens with head truncation
    (its preset keeps 64 without reading the data); long tickets get the model's 512 and head +
    tail; --max-length and --truncation still decide."""
    from training.recipe import load_preset, profile_training_data, resolve_recipe
    from triage_core.preprocessing import PreprocessConfig

    with BANKING77.open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    banking = TicketDataset([r["text"] for r in rows], [r["category"] for r in rows])
    auto = load_preset("auto")
    profile = profile_training_data(banking, str(minilm_path), PreprocessConfig())
    recipe = resolve_recipe(auto, str(minilm_path), {}, profile)
    assert (recipe.config.max_length, recipe.config.truncation) == (64, "head")
    assert load_preset("banking77").train.get("max_length", 64) == 64

    long = TicketDataset(long_tickets(40, 3, 400, 600), ["a", "b"] * 20)
    profile = profile_training_data(long, str(tiny_base_model), PreprocessConfig(max_chars=40_000))
    recipe = resolve_recipe(auto, str(tiny_base_model), {}, profile)
    assert (recipe.config.max_length, recipe.config.truncation) == (512, "head_tail")
    given = {"max_length": 128, "truncation": "head"}
    recipe = resolve_recipe(auto, str(tiny_base_model), given, profile)
    assert (recipe.config.max_length, recipe.config.truncation) == (128, "head")


def test_preprocessing_makes_room_for_long_tickets(tiny_base_model: Path) -> None:
    """Tickets past preprocessing's 2,000-character cap: the cap is raised for what the
    strategies can read (8 characters x 512 tokens x 8 windows); short tickets change nothing."""
    from types import SimpleNamespace

    from training.long_text import make_room_for_long_tickets
    from training.pipeline import TrainRun
    from triage_core.preprocessing import PreprocessConfig

    run = TrainRun(
        data=Path("t.csv"), output=Path("o"), work_dir=Path("w"), splits_dir=Path("s"), reports_dir=Path("r")
    )
    long = SimpleNamespace(train=TicketDataset(long_tickets(10, 3, 400, 600), ["a", "b"] * 5))
    assert min(map(len, long.train.texts)) > 2000
    roomy = make_room_for_long_tickets(run, str(tiny_base_model), long)
    assert roomy.preprocessing == PreprocessConfig(max_chars=32768) and run.preprocessing.max_chars == 2000
    short = SimpleNamespace(train=TicketDataset(["my card", "a refund"], ["a", "b"]))
    assert make_room_for_long_tickets(run, str(tiny_base_model), short) is run


def test_a_handful_of_long_validation_tickets_keeps_head(artifact: Path) -> None:
    """1 long ticket in 200 (Banking77: 0.3 % of its tickets): compared and reported, not chosen on."""
    classifier = ArtifactClassifier(artifact)
    texts = [*(f"my card number {i} has not arrived" for i in range(199)), long_tickets(1, 4)[0]]
    classifier.use_long_text(LongText(strategy="head_tail"))
    own = classifier.predict_scores(texts).argmax(axis=1)
    report = select_long_text(artifact, TicketDataset(texts, [classifier.labels[i] for i in own]))
    assert len(report["candidates"]) == 4 and "too few" in report["reason"]
    assert report["strategy"]["strategy"] == "head" and load_manifest(artifact).long_text == LongText()
