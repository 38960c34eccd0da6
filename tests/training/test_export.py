"""Export + quantize: the artifact loads, has the documented format and scores like torch."""

from __future__ import annotations

import csv
import shutil
import tarfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import TINY_LABELS
from training.export import export_artifact, fp32_onnx_path, pack_model_tar, quantize_int8
from triage_core.artifact import MANIFEST_FILE, MODEL_FILE, TOKENIZER_FILE, load_manifest
from triage_core.inference import ArtifactClassifier, scores_from_logits
from triage_core.preprocessing import PreprocessConfig, preprocess

DATA = Path(__file__).resolve().parents[2] / "data" / "banking77" / "train.csv"


@pytest.fixture(scope="module")
def texts() -> list[str]:
    """Real support queries of very different lengths, plus an e-mail-style ticket."""
    with DATA.open(encoding="utf-8") as f:
        rows = [row["text"] for _, row in zip(range(60), csv.DictReader(f), strict=False)]
    rows.append(
        "Hi team,\n\nmy card payment was declined twice today 😠 why?\n\n"
        "Thanks,\nAnna\n--\nSent from my phone"
    )
    return rows


def torch_scores(hf_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    """Softmax of the torch model on the same preprocessed, truncated texts."""
    import torch
    from transformers import AutoTokenizer

    from training.modeling import load_classifier

    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = load_classifier(hf_dir).eval()
    batch = tokenizer(
        [preprocess(t, PreprocessConfig()) for t in texts],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    with torch.no_grad():
        return torch.softmax(model(**batch).logits, dim=-1).numpy()


def test_artifact_files_and_manifest(tiny_artifact: Path, tiny_labels: list[str]) -> None:
    files = sorted(p.name for p in tiny_artifact.iterdir())
    assert files == sorted([MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE])
    manifest = load_manifest(tiny_artifact)
    assert manifest.labels == tiny_labels
    assert manifest.max_length == 32
    assert manifest.onnx_inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert manifest.quantization == "int8"
    assert manifest.scoring == "softmax"
    assert manifest.base_model == "tiny-random-bert"
    # The fp32 model is kept for the optimization report, outside the served directory.
    assert fp32_onnx_path(tiny_artifact).is_file()
    assert fp32_onnx_path(tiny_artifact).parent != tiny_artifact


def test_onnx_graph_interface(tiny_artifact: Path, tiny_labels: list[str]) -> None:
    model = onnx.load(str(tiny_artifact / MODEL_FILE))
    inputs = {i.name: i for i in model.graph.input}
    assert list(inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for tensor in inputs.values():
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        dims = tensor.type.tensor_type.shape.dim
        assert [d.dim_param for d in dims] == ["batch", "sequence"]  # both axes dynamic
    (output,) = model.graph.output
    assert output.name == "logits"
    assert output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert output.type.tensor_type.shape.dim[1].dim_value == len(tiny_labels)
    # Quantized: int8 weights and integer ops in the served graph.
    int8 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert int8
    assert any(
        n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul", "QAttention") for n in model.graph.node
    )


def test_int8_is_smaller_than_fp32(tiny_artifact: Path) -> None:
    int8 = (tiny_artifact / MODEL_FILE).stat().st_size
    fp32 = fp32_onnx_path(tiny_artifact).stat().st_size
    assert int8 < 0.4 * fp32


def test_quantization_does_not_flood_the_log(
    tiny_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """ONNX Runtime's quantizer logs one INFO line per tensor on the root logger; export mutes it
    for the call and restores the levels afterwards."""
    import logging

    root_level = logging.getLogger().level
    with caplog.at_level(logging.INFO):
        quantize_int8(fp32_onnx_path(tiny_artifact), tmp_path / "int8.onnx")
    assert (tmp_path / "int8.onnx").stat().st_size < fp32_onnx_path(tiny_artifact).stat().st_size
    assert not [r for r in caplog.records if "Quantization parameters" in r.getMessage()]
    assert logging.getLogger().level == root_level


def test_fp32_onnx_matches_torch(tiny_artifact: Path, tiny_hf_model: Path, texts: list[str]) -> None:
    """Same texts, same tokenization: the exported (and graph-optimised) fp32 model is the torch model."""
    expected = torch_scores(tiny_hf_model, texts, max_length=32)
    classifier = ArtifactClassifier(tiny_artifact)
    session = ort.InferenceSession(str(fp32_onnx_path(tiny_artifact)), providers=["CPUExecutionProvider"])
    encodings = classifier.tokenizer.encode(classifier.clean(texts))
    (logits,) = session.run(["logits"], classifier.tokenizer.pad(encodings))
    np.testing.assert_allclose(scores_from_logits(logits, "softmax"), expected, atol=1e-4)


def test_int8_artifact_agrees_with_torch(tiny_artifact: Path, tiny_hf_model: Path, texts: list[str]) -> None:
    expected = torch_scores(tiny_hf_model, texts, max_length=32)
    got = ArtifactClassifier(tiny_artifact).predict_scores(texts)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    agreement = float(np.mean(got.argmax(1) == expected.argmax(1)))
    assert agreement >= 0.85, agreement
    assert np.abs(got - expected).max() < 0.1


def test_label_count_mismatch_is_rejected_before_export(tiny_hf_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="5 outputs but 3 labels"):
        export_artifact(tiny_hf_model, tmp_path / "m", ["a", "b", "c"], 32, PreprocessConfig())
    assert not (tmp_path / "m").exists()


def test_label_order_must_match_id2label(tiny_hf_model: Path, tiny_labels: list[str], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="id2label order"):
        export_artifact(tiny_hf_model, tmp_path / "m", list(reversed(tiny_labels)), 32, PreprocessConfig())


def test_model_tar_gz_layout(tiny_artifact: Path, tmp_path: Path) -> None:
    tar_path = pack_model_tar(tiny_artifact, tmp_path / "model.tar.gz")
    with tarfile.open(tar_path) as tar:
        names = sorted(tar.getnames())
        assert names == sorted([MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE])  # at the root, no folder
        tar.extractall(tmp_path / "opt-ml-model", filter="data")
    classifier = ArtifactClassifier(tmp_path / "opt-ml-model")
    assert classifier.predict_scores(["where is my card?"]).shape == (1, 5)


def test_pack_refuses_a_non_artifact(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ValueError, match="not a model artifact"):
        pack_model_tar(tmp_path, tmp_path / "model.tar.gz")


def test_distilbert_without_token_type_ids(tmp_path: Path, minilm_path: Path) -> None:
    """Architectures whose tokenizer has no token_type_ids get a two-input graph."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64, num_labels=3, initializer_range=0.2
    )
    hf_dir = tmp_path / "hf"
    DistilBertForSequenceClassification(config).save_pretrained(hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.model_input_names = ["input_ids", "attention_mask"]  # what DistilBERT tokenizers declare
    tokenizer.save_pretrained(hf_dir)

    out = export_artifact(hf_dir, tmp_path / "model", ["x", "y", "z"], 16, PreprocessConfig())
    assert load_manifest(out).onnx_inputs == ["input_ids", "attention_mask"]
    texts = ["my card has not arrived yet", "exchange rate", "a " * 400]
    expected = torch_scores(hf_dir, texts, max_length=16)
    got = ArtifactClassifier(out).predict_scores(texts)
    assert got.shape == (3, 3)
    assert np.abs(got - expected).max() < 0.1
    shutil.rmtree(tmp_path / "onnx-fp32")


def test_parity_gate_passes_and_is_reported(tiny_artifact: Path) -> None:
    from training.export import export_report

    report = export_report(tiny_artifact)
    parity = report["parity"]
    assert parity["passed"] and report["optimized"] and report["warnings"] == []
    assert parity["torch_vs_fp32"]["max_score_diff"] < 1e-3
    assert (
        parity["fp32_vs_int8"]["decisive_agreement"] >= 0.95 and parity["fp32_vs_int8"]["decisive_rows"] > 0
    )
    assert parity["texts"] > 10


def test_export_past_tolerance_fails_and_leaves_no_artifact(tiny_hf_model: Path, tmp_path: Path) -> None:
    """A gate that demands bit-identical fp32 scores: the fused ONNX graph is not bit-identical to
    torch, so the export stops with the measured difference and serves nothing."""
    from training.export import ExportError, ParityTolerance, export_report

    out = tmp_path / "model"
    with pytest.raises(
        ExportError, match=r"parity gate: fp32 ONNX scores differ from torch by .* \(tolerance 1e-12\)"
    ):
        export_artifact(
            tiny_hf_model,
            out,
            list(TINY_LABELS),
            32,
            PreprocessConfig(),
            tolerance=ParityTolerance(fp32_max_score_diff=1e-12),
        )
    assert not out.exists() and not list(tmp_path.glob(".model-staging-*"))
    assert export_report(out)["parity"]["passed"] is False  # the numbers stay for a person to read


def test_int8_gate_uses_validation_labels(tiny_hf_model: Path, tmp_path: Path, texts: list[str]) -> None:
    from training.export import ParityTolerance, export_report

    labels = [TINY_LABELS[i % len(TINY_LABELS)] for i in range(len(texts))]
    loose = ParityTolerance(int8_min_agreement=0.8, int8_max_macro_f1_drop_points=100, min_labelled_rows=1)
    export_artifact(
        tiny_hf_model, tmp_path / "ok", list(TINY_LABELS), 32, PreprocessConfig(), parity_texts=texts,
        parity_labels=labels, tolerance=loose,
    )  # fmt: skip
    parity = export_report(tmp_path / "ok")["parity"]
    assert parity["texts"] == len(texts) and "macro_f1_drop_points" in parity["fp32_vs_int8"]
    assert parity["fp32_vs_int8"]["macro_f1_labels"] == len(TINY_LABELS)


def test_int8_past_tolerance_serves_fp32_and_says_why(
    tiny_hf_model: Path, tmp_path: Path, texts: list[str]
) -> None:
    """An int8 model past the gate is not shipped with a warning: per-channel int8 is tried, then
    the fp32 model is served, and the manifest and the export report say so."""
    from training.export import ParityTolerance, export_report

    out = tmp_path / "strict"
    export_artifact(
        tiny_hf_model, out, list(TINY_LABELS), 32, PreprocessConfig(), parity_texts=texts,
        tolerance=ParityTolerance(int8_min_agreement=1.01),  # no int8 model can pass
    )  # fmt: skip
    report = export_report(out)
    assert report["parity"]["passed"] and report["served"]["model"] == "fp32"
    assert [a["model"] for a in report["served"]["attempts"]] == ["int8", "int8 per-channel"]
    assert not any(a["passed"] for a in report["served"]["attempts"])
    manifest = load_manifest(out)
    assert manifest.quantization == "none" and "int8 changes the top label" in manifest.quantization_reason
    assert (out / MODEL_FILE).read_bytes() == fp32_onnx_path(out).read_bytes()
    # what the server runs is the fp32 graph: it scores like torch
    served = ArtifactClassifier(out).predict_scores(texts[:8])
    np.testing.assert_allclose(served, torch_scores(tiny_hf_model, texts[:8], 32), atol=1e-4)


def test_served_model_decision() -> None:
    """int8 if it passes; per-channel int8 if per-tensor fails and it passes; else fp32; an fp32
    graph that is not the fine-tuned model fails whatever is served."""
    from training.export import choose_served_model

    def parity(passed: bool, fp32_passed: bool = True) -> dict:
        failures = (
            [] if passed else ["int8 loses 2.00 macro-F1 points on the validation tickets (tolerance 1)"]
        )
        return {"passed": passed, "fp32_passed": fp32_passed, "failures": failures, "texts": 500,
                "fp32_vs_int8": {}}  # fmt: skip

    calls: list[str] = []
    steps = {
        "requantize": lambda channel: calls.append(f"requantize per_channel={channel}"),
        "serve_fp32": lambda: calls.append("serve fp32"),
    }
    _, served = choose_served_model(
        parity(True), lambda: parity(True), quantize=True, per_channel=False, **steps
    )
    assert served["model"] == "int8" and calls == []
    _, served = choose_served_model(
        parity(False), lambda: parity(True), quantize=True, per_channel=False, **steps
    )
    assert served["model"] == "int8 per-channel" and calls == ["requantize per_channel=True"]
    assert "per-tensor int8 failed the gate (int8 loses 2.00" in served["reason"]
    calls.clear()
    final, served = choose_served_model(
        parity(False), lambda: parity(False), quantize=True, per_channel=False, **steps
    )
    assert served["model"] == "fp32" and calls == ["requantize per_channel=True", "serve fp32"]
    assert final["passed"] and "fp32 served instead" in served["reason"]
    calls.clear()
    final, served = choose_served_model(
        parity(False, fp32_passed=False), lambda: parity(True), quantize=True, per_channel=False, **steps
    )
    assert served["model"] is None and not final["passed"] and calls == []


def test_macro_f1_counts_only_the_labels_of_the_validation_split() -> None:
    """Issue #20: one flipped ticket in a small validation split, predicted as a label that has
    no validation ticket, read as a drop of points and refused a good model."""
    from sklearn.metrics import f1_score

    from training.export import _macro_f1

    y_true = [0] * 10 + [1] * 10 + [2] * 10  # label 3 has no validation ticket
    fp32 = np.array(y_true)
    int8 = fp32.copy()
    int8[0] = 3  # one ticket flips to the absent label
    drop = 100 * (_macro_f1(y_true, fp32) - _macro_f1(y_true, int8))
    assert drop == pytest.approx(100 * (1 - (2 * 0.9 / 1.9 + 2) / 3))  # label 0: recall 0.9, 1.75 points
    over_predictions = 100 * (1 - f1_score(y_true, int8, average="macro"))  # what the gate used to count
    assert over_predictions > 25 and drop < 2


def test_optimizer_failure_is_a_reported_fallback(tmp_path: Path) -> None:
    from training.export import optimize_onnx

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx graph")
    reason = optimize_onnx(broken, tmp_path / "out.onnx", config=None)
    assert reason and reason.startswith("ONNX Runtime transformer optimizer failed")
    assert (tmp_path / "out.onnx").read_bytes() == broken.read_bytes()


def test_model_tar_gz_is_readable_by_anyone_whatever_the_umask(tiny_artifact: Path, tmp_path: Path) -> None:
    """Issue #10: packed under umask 077 the files were 0600, unreadable by the container's
    non-root user. Members are root-owned 0644 with one mtime, and the archive is reproducible."""
    import os
    import time

    old = os.umask(0o077)
    try:
        artifact = tmp_path / "artifact"
        artifact.mkdir()
        for path in tiny_artifact.iterdir():
            (artifact / path.name).write_bytes(path.read_bytes())  # created 0600 under this umask
        assert all((p.stat().st_mode & 0o777) == 0o600 for p in artifact.iterdir())
        first = pack_model_tar(artifact, tmp_path / "a" / "model.tar.gz")
        time.sleep(1.1)
        os.utime(artifact / MODEL_FILE)  # a newer mtime on the host changes nothing
        second = pack_model_tar(artifact, tmp_path / "b" / "model.tar.gz")
    finally:
        os.umask(old)
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as tar:
        members = tar.getmembers()
        assert {m.name for m in members} == {MODEL_FILE, TOKENIZER_FILE, MANIFEST_FILE}
        for member in members:
            assert member.isfile() and member.mode == 0o644
            assert (member.uid, member.gid, member.uname, member.gname) == (0, 0, "root", "root")
            assert member.mtime == 0
        tar.extractall(tmp_path / "opt-ml-model", filter="data")
    for path in (tmp_path / "opt-ml-model").iterdir():
        assert path.stat().st_mode & 0o004, f"{path.name} is not world-readable"
