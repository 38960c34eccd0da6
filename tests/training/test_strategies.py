"""Transfer-learning options on tiny random models: each runs and changes what it should."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.training.test_train import fast_config, tiny_dataset
from training.config import TrainConfig
from training.modeling import build_classifier, encoder_of, is_head_parameter, load_classifier
from training.train import parameter_groups, train

LABELS = sorted(["card_arrival", "exchange_rate", "top_up_failed"])


def _encoder_state(model) -> dict[str, np.ndarray]:
    return {
        k: v.detach().clone().numpy() for k, v in encoder_of(model).state_dict().items() if "pooler" not in k
    }


def _changed(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> list[str]:
    return [k for k in before if not np.array_equal(before[k], after[k])]


def test_frozen_encoder_does_not_move_then_unfreezes(tiny_base_model: Path, tmp_path: Path) -> None:
    from transformers import AutoModel

    initial = {
        k: v.numpy().copy() for k, v in AutoModel.from_pretrained(tiny_base_model).state_dict().items()
    }
    initial = {k: v for k, v in initial.items() if "pooler" not in k}
    snapshots: dict[int, dict[str, np.ndarray]] = {}
    heads: dict[int, np.ndarray] = {}

    def capture(epoch: int, model) -> None:
        snapshots[epoch] = _encoder_state(model)
        heads[epoch] = np.concatenate(
            [p.detach().numpy().ravel() for n, p in model.named_parameters() if is_head_parameter(model, n)]
        )

    config = fast_config(tiny_base_model, epochs=2, freeze_encoder_epochs=1, early_stopping_patience=0)
    result = train(config, tiny_dataset(), tiny_dataset(4, seed=1), tmp_path, on_epoch_end=capture)
    assert [r["encoder_frozen"] for r in result.history] == [True, False]
    assert _changed(initial, snapshots[1]) == []  # epoch 1: the encoder did not move ...
    assert len(_changed(initial, snapshots[2])) > len(initial) // 2  # ... epoch 2: it trains
    assert not np.array_equal(heads[1], heads[2])


def test_frozen_word_embeddings_stay_fixed_while_the_rest_trains(
    tiny_base_model: Path, tmp_path: Path
) -> None:
    from transformers import AutoModel

    base = AutoModel.from_pretrained(tiny_base_model)
    initial = {k: v.numpy().copy() for k, v in base.state_dict().items()}
    snapshots: dict[int, dict[str, np.ndarray]] = {}
    config = fast_config(
        tiny_base_model, epochs=2, head="mlp", freeze_embeddings=True, early_stopping_patience=0
    )
    result = train(
        config,
        tiny_dataset(),
        tiny_dataset(4, seed=1),
        tmp_path,
        on_epoch_end=lambda epoch, model: snapshots.setdefault(epoch, _encoder_state(model)),
    )
    changed = _changed({k: v for k, v in initial.items() if "pooler" not in k}, snapshots[2])
    assert "embeddings.word_embeddings.weight" not in changed
    assert "embeddings.position_embeddings.weight" in changed  # only the word matrix is fixed
    assert len(changed) > len(initial) // 2
    # the saved model is complete: its word embeddings are the base model's
    saved = load_classifier(result.model_dir)
    np.testing.assert_array_equal(
        encoder_of(saved).get_input_embeddings().weight.detach().numpy(),
        initial["embeddings.word_embeddings.weight"],
    )


def test_pooled_head_does_not_warn_about_the_unused_pooler(tiny_base_model: Path) -> None:
    """The base checkpoint's pooler is left out on purpose: no transformers load report for it."""
    import logging

    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    hf_logger = logging.getLogger("transformers")  # transformers does not propagate to the root
    hf_logger.addHandler(handler)
    try:
        build_classifier(str(tiny_base_model), LABELS, head="mlp")
        assert not [r for r in records if "LOAD REPORT" in r.getMessage()]
        build_classifier(str(tiny_base_model), LABELS, head="cls")  # a fresh classifier: MISSING
        assert [r for r in records if "LOAD REPORT" in r.getMessage() and "MISSING" in r.getMessage()]
    finally:
        hf_logger.removeHandler(handler)


def test_layer_wise_lr_decay_groups(tiny_base_model: Path) -> None:
    model = build_classifier(str(tiny_base_model), LABELS)
    config = TrainConfig(
        base_model=str(tiny_base_model), learning_rate=1e-3, head_learning_rate=1e-2, layer_lr_decay=0.5
    )
    groups = parameter_groups(model, config)
    by_depth: dict[object, set[float]] = {}
    for group in groups:
        by_depth.setdefault(group["depth"], set()).add(group["lr"])
    # 2 layers: embeddings x0.25, layer 0 x0.5, layer 1 x1; BERT's pretrained pooler above the
    # layers at the encoder's top rate, not in the head; the fresh classifier at its own rate
    assert by_depth == {0: {2.5e-4}, 1: {5e-4}, 2: {1e-3}, 3: {1e-3}, "head": {1e-2}}
    names = {n for g in groups if g["depth"] == 0 for n in g["names"]}
    assert names and all("embeddings" in n for n in names)
    assert {n for g in groups if g["depth"] == 3 for n in g["names"]} == {
        "bert.pooler.dense.weight",
        "bert.pooler.dense.bias",
    }
    assert {n for g in groups if g["depth"] == "head" for n in g["names"]} == {
        "classifier.weight",
        "classifier.bias",
    }
    covered = sum(len(g["params"]) for g in groups)
    assert covered == len(list(model.parameters()))
    flat = parameter_groups(model, TrainConfig(base_model=str(tiny_base_model), learning_rate=1e-3))
    assert {g["lr"] for g in flat if g["depth"] != "head"} == {1e-3}  # decay 1.0 = off


@pytest.mark.parametrize("head", ["mean", "mlp"])
def test_pooled_heads_train_save_load_and_export(head: str, tiny_base_model: Path, tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer

    from training.export import export_artifact
    from triage_core.inference import ArtifactClassifier
    from triage_core.preprocessing import PreprocessConfig

    model = build_classifier(str(tiny_base_model), LABELS, head=head, hidden=16)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    batch = tokenizer(["my card", "a longer ticket about the rate"], padding=True, return_tensors="pt")
    assert model(**batch).logits.shape == (2, len(LABELS))
    widths = [m.out_features for m in model.head if isinstance(m, torch.nn.Linear)]
    assert widths == ([len(LABELS)] if head == "mean" else [16, len(LABELS)])

    config = fast_config(tiny_base_model, head=head, head_hidden=16, noisy_augmentation=0.0)
    result = train(config, tiny_dataset(), tiny_dataset(4, seed=1), tmp_path / "work")
    loaded = load_classifier(result.model_dir)
    texts = ["my card has not arrived", "what exchange rate do you use"]
    with torch.no_grad():
        logits = loaded(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    artifact = export_artifact(
        result.model_dir, tmp_path / "model", LABELS, 32, PreprocessConfig(), quantize=False
    )
    served = ArtifactClassifier(artifact).predict_scores(texts)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(served, expected, atol=1e-4)  # same head in ONNX, no torch needed


def test_one_vs_rest_artifact_scores_are_per_class_sigmoids(tiny_base_model: Path, tmp_path: Path) -> None:
    """CLI --loss ovr -> manifest scoring=sigmoid -> the server's code path returns sigmoids."""
    import torch
    from transformers import AutoTokenizer

    from tests.training.test_train import _write_csv
    from training.__main__ import main
    from triage_core.inference import ArtifactClassifier

    data_file = _write_csv(tmp_path / "tickets.csv", tiny_dataset(20))
    out = tmp_path / "a"
    argv = ["train", "--data", str(data_file), "--base-model", str(tiny_base_model), "--epochs", "1",
            "--batch-size", "8", "--max-length", "32", "--threads", "1", "--loss", "ovr",
            "--output", str(out / "model"), "--work-dir", str(out / "work"),
            "--splits-dir", str(out / "splits"), "--reports-dir", str(out / "reports"),
            "--optimization-report", "false", "--evaluate", "false"]  # fmt: skip
    assert main(argv) == 0
    classifier = ArtifactClassifier(out / "model")
    assert classifier.manifest.scoring == "sigmoid"
    texts = ["my card has not arrived", "top up failed", "hello"]
    scores = classifier.predict_scores(texts)
    assert scores.shape == (3, 3) and ((scores > 0) & (scores < 1)).all()
    assert not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3)  # independent per-class scores
    # = sigmoid of the fine-tuned torch model's logits (int8: loose tolerance)
    model = load_classifier(out / "work" / "hf_model")
    tokenizer = AutoTokenizer.from_pretrained(out / "work" / "hf_model")
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits)), atol=0.05)
    # the server's batch path (ArtifactClassifier.run) uses the same scoring
    run_scores = classifier.run(classifier.tokenizer.encode(classifier.clean(texts[:1])))
    np.testing.assert_allclose(run_scores, scores[:1], atol=0.02)  # int8: per-batch activation scale
    prediction = classifier.top_k(scores, k=3)[0]
    assert prediction.label == LABELS[int(scores[0].argmax())]


def test_ovr_loss_learns_and_class_weights_apply(tiny_base_model: Path, tmp_path: Path) -> None:
    import torch

    from training.train import _Loss

    config = fast_config(tiny_base_model, loss="ovr", label_smoothing=0.0)
    logits = torch.tensor([[2.0, -2.0, -2.0], [-2.0, 2.0, -2.0]])
    y = torch.tensor([0, 1])
    plain = _Loss(config, 3, None)(logits, y, [0, 1])
    expected = (
        torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.nn.functional.one_hot(y, 3).float(), reduction="sum"
        )
        / 2
    )
    assert torch.isclose(plain, expected)
    weighted = _Loss(config, 3, torch.tensor([1.0, 0.0, 1.0]))(logits, y, [0, 1])
    per_row = torch.nn.functional.binary_cross_entropy_with_logits(
        logits[:1], torch.nn.functional.one_hot(y[:1], 3).float(), reduction="sum"
    )
    assert torch.isclose(weighted, per_row)  # row 1 has weight 0

    data = tiny_dataset(16)
    # the default (mlp) head under one-vs-rest needs a few more epochs than [CLS] on this tiny task
    config = fast_config(tiny_base_model, epochs=8, learning_rate=2e-3, loss="ovr", noisy_augmentation=0.0)
    assert train(config, data, data, tmp_path).best_val_macro_f1 > 0.8


def test_mlm_stage_updates_the_encoder(tiny_base_model: Path, tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    from training.stages import load_unlabeled_texts, mlm_adapt

    encoder = AutoModel.from_pretrained(tiny_base_model, add_pooling_layer=False)
    before = {k: v.detach().clone().numpy() for k, v in encoder.state_dict().items()}
    tokenizer = AutoTokenizer.from_pretrained(tiny_base_model)
    dump = tmp_path / "unlabeled.txt"
    dump.write_text("\n".join(tiny_dataset(20).texts) + "\n\n", encoding="utf-8")
    texts = load_unlabeled_texts(dump)
    assert len(texts) == 60
    stats = mlm_adapt(
        encoder, str(tiny_base_model), tokenizer, texts,
        epochs=1, learning_rate=1e-3, batch_size=16, max_length=32,
    )  # fmt: skip
    after = {k: v.detach().numpy() for k, v in encoder.state_dict().items()}
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert any("encoder.layer.0." in k for k in changed) and any("embeddings" in k for k in changed)
    assert stats["steps"] == 4

    # through train(): the user's own unlabeled file
    config = fast_config(tiny_base_model, mlm_epochs=1.0, mlm_data=str(dump))
    result = train(config, tiny_dataset(), tiny_dataset(4, seed=1), tmp_path / "work")
    assert result.stages["mlm"]["texts"] == 60


def test_contrastive_stage_changes_the_encoder(tiny_base_model: Path, tmp_path: Path) -> None:
    from transformers import AutoModel, AutoTokenizer

    from training.stages import contrastive_stage

    encoder = AutoModel.from_pretrained(tiny_base_model)
    before = {k: v.detach().clone().numpy() for k, v in encoder.state_dict().items() if "pooler" not in k}
    data = tiny_dataset()
    y = [LABELS.index(label) for label in data.labels]
    stats = contrastive_stage(
        encoder, AutoTokenizer.from_pretrained(tiny_base_model), data.texts, y,
        epochs=1, learning_rate=1e-3, batch_size=8, max_length=32,
    )  # fmt: skip
    after = {k: v.detach().numpy() for k, v in encoder.state_dict().items() if "pooler" not in k}
    assert len([k for k in before if not np.array_equal(before[k], after[k])]) > len(before) // 2
    assert stats["steps"] == 12  # 36 anchors / 3 labels per step

    config = fast_config(tiny_base_model, contrastive_epochs=0.5, head="mean")
    result = train(config, data, tiny_dataset(4, seed=1), tmp_path)
    assert result.stages["contrastive"]["steps"] == 6


def test_distillation_trains_one_student_from_seed_teachers(tiny_base_model: Path, tmp_path: Path) -> None:
    import torch

    from training.train import _Loss

    config = fast_config(tiny_base_model, distill_seeds=[7], distill_alpha=0.7, noisy_augmentation=0.0)
    result = train(config, tiny_dataset(), tiny_dataset(4, seed=1), tmp_path)
    assert result.stages["distill"]["teachers"] == [str(tmp_path / "teachers" / "seed-7" / "hf_model")]
    assert result.model_dir == tmp_path / "hf_model" and (result.model_dir / "model.safetensors").is_file()
    assert load_classifier(result.model_dir).config.num_labels == 3

    # alpha=1: the loss is the temperature-scaled KL to the teachers' soft labels only
    soft = torch.tensor([[0.7, 0.2, 0.1]])
    loss = _Loss(TrainConfig(distill_alpha=1.0, distill_temperature=2.0), 3, None, soft)
    logits = torch.tensor([[1.0, 0.0, -1.0]])
    kl = (soft * (soft.log() - torch.log_softmax(logits / 2, dim=-1))).sum() * 4
    assert torch.isclose(loss(logits, torch.tensor([2]), [0]), kl)

    with pytest.raises(ValueError, match="distillation"):
        TrainConfig(distill_seeds=[1], loss="ovr")


def test_config_validates_strategy_options() -> None:
    for bad in (
        {"head": "pooler"},
        {"loss": "bce"},
        {"freeze_encoder_epochs": 5, "epochs": 5},
        {"layer_lr_decay": 0.0},
        {"mlm_epochs": -1},
        {"contrastive_temperature": 0},
    ):
        with pytest.raises(ValueError, match="invalid training config"):
            TrainConfig(**bad)
    config = TrainConfig(distill_teachers=[Path("/x")], distill_seeds=["3"], loss="softmax")
    assert config.distill_teachers == ["/x"] and config.distill_seeds == [3]
    assert TrainConfig(loss="ovr").scoring == "sigmoid" and TrainConfig().scoring == "softmax"


def test_experiment_command_writes_one_table(tiny_base_model: Path, tmp_path: Path) -> None:
    from tests.training.test_train import _write_csv
    from training.__main__ import main

    data_file = _write_csv(tmp_path / "tickets.csv", tiny_dataset(20))
    out = tmp_path / "exp"
    argv = ["experiment", "--set", "smoke", "--data", str(data_file),
            "--splits-dir", str(tmp_path / "splits"), "--base-model", str(tiny_base_model),
            "--output", str(out), "--threads", "1",
            "--batch-size", "8", "--max-length", "32"]  # fmt: skip
    assert main(argv) == 0
    table = json.loads((out / "results.json").read_text())
    names = [row["name"] for row in table["rows"]]
    assert names == ["baseline", "mean-head", "ovr"]
    for row in table["rows"]:
        assert 0 <= row["val_macro_f1"] <= 1 and 0 <= row["val_noisy_macro_f1"] <= 1
        assert row["served_mb"] > 0 and row["train_seconds"] > 0
        assert row["validation_rows"] == 6 and "test_rows" not in row  # chosen on validation only
    markdown = (out / "results.md").read_text()
    assert "| baseline |" in markdown and "validation split" in markdown
    # rows are ranked by validation macro-F1
    val = sorted((r["val_macro_f1"] for r in table["rows"]), reverse=True)
    ordered = [line for line in markdown.splitlines() if line[:4] in ("| 1 ", "| 2 ", "| 3 ")]
    assert [float(line.split("|")[4]) for line in ordered] == pytest.approx(val)
    assert json.loads((out / "ovr" / "model" / "triage_artifact.json").read_text())["scoring"] == "sigmoid"
    # resumable: a second run re-uses finished rows
    shutil.rmtree(out / "mean-head" / "work")
    assert main([*argv, "--rows", "baseline,mean-head"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in again["rows"]] == ["baseline", "mean-head", "ovr"]


def test_noise_experiment_compares_the_auto_recipe_with_neutral_noise(
    tiny_base_model: Path, tmp_path: Path
) -> None:
    """`make experiment SET=noise TICKETS=...`: whether noise helps this data is measured on its
    validation split, from the auto recipe, with domain-neutral noise only."""
    from tests.training.test_train import _write_csv
    from training.__main__ import main

    data_file = _write_csv(tmp_path / "tickets.csv", tiny_dataset(20))
    out = tmp_path / "exp"
    argv = ["experiment", "--set", "noise", "--rows", "auto,neutral-noise-0.15", "--data", str(data_file),
            "--splits-dir", str(tmp_path / "splits"), "--base-model", str(tiny_base_model), "--epochs", "1",
            "--output", str(out), "--threads", "1", "--batch-size", "8", "--max-length", "32"]  # fmt: skip
    assert main(argv) == 0
    rows = {r["name"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert set(rows) == {"auto", "neutral-noise-0.15"}
    auto, noisy = rows["auto"]["config"], rows["neutral-noise-0.15"]["config"]
    assert auto["noisy_augmentation"] == 0.0 and auto["class_weights"] is False  # balanced tiny data
    assert noisy["noisy_augmentation"] == 0.15 and noisy["noise_context"] == "neutral"
    assert "mean of the clean and the noisy validation macro-F1" in (out / "results.md").read_text()
