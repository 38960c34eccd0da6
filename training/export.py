"""Turn a fine-tuned Hugging Face classifier into the serving artifact.

Steps (each measured in the optimization report, see the README):

1. ``torch.onnx`` export (TorchScript-based exporter, opset 17) with dynamic batch and sequence
   axes; one output, ``logits``.
2. Graph optimisation with ONNX Runtime's transformer optimizer (attention, layer-norm, GELU and
   embedding fusions). Done *before* quantization so that the fused ``Attention`` nodes are
   quantized as a whole (``QAttention``); ONNX Runtime cannot fuse them any more once the
   MatMuls are quantized one by one. Falls back to the plain export if the optimizer does not
   recognise the architecture.
3. Dynamic int8 quantization (``onnxruntime.quantization.quantize_dynamic``): int8 weights,
   activations quantized at run time, so no calibration data is needed.

The served directory gets ``model.onnx`` (int8), ``tokenizer.json`` and ``triage_artifact.json``;
the fp32 ONNX model is kept next to it (``<output_dir>/../onnx-fp32/model.onnx``) for the
optimization report, never inside the served directory.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

from triage_core.artifact import (
    METRICS_FILE,
    MODEL_FILE,
    TOKENIZER_FILE,
    ArtifactManifest,
    load_manifest,
    write_manifest,
)
from triage_core.preprocessing import PreprocessConfig

log = logging.getLogger(__name__)

OPSET = 17
FP32_DIR_NAME = "onnx-fp32"
ONNX_INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids")
# ONNX Runtime's optimizer logs every fusion step on these loggers, and its quantizer logs one
# line per tensor on the root logger: dozens of INFO lines per export that say nothing new.
_CHATTY_ORT_LOGGERS = ("", "onnx_model", "onnx_model_bert", "fusion_base", "fusion_utils")


@contextlib.contextmanager
def _quiet_ort_logs() -> Iterator[None]:
    """Raise ONNX Runtime's chatty loggers (and the root logger) to ERROR for the duration."""
    loggers = [logging.getLogger(name) for name in _CHATTY_ORT_LOGGERS]
    saved = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, saved, strict=True):
            lg.setLevel(level)


def fp32_onnx_path(output_dir: Path) -> Path:
    """Where :func:`export_artifact` keeps the fp32 ONNX model of ``output_dir``."""
    return Path(output_dir).parent / FP32_DIR_NAME / MODEL_FILE


def _onnx_input_names(model, tokenizer) -> list[str]:
    """The inputs the model actually takes: the tokenizer's outputs that ``forward`` accepts.

    BERT takes ``token_type_ids``; DistilBERT and RoBERTa tokenizers do not produce them.
    """
    from training.modeling import input_names

    accepted = input_names(model)
    produced = set(tokenizer.model_input_names)
    names = [n for n in ONNX_INPUT_ORDER if n in accepted and n in produced]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise ValueError(f"model must take input_ids and attention_mask, got {names}")
    return names


def _check_labels(config, labels: list[str]) -> None:
    if config.num_labels != len(labels):
        raise ValueError(f"model has {config.num_labels} outputs but {len(labels)} labels were given")
    id2label = {int(k): v for k, v in (config.id2label or {}).items()}
    named = [id2label.get(i) for i in range(len(labels))]
    # Checkpoints without real names carry "LABEL_0"...; only compare real names.
    if all(n is not None and not n.startswith("LABEL_") for n in named) and named != list(labels):
        raise ValueError(f"labels are not in the model's id2label order: {named[:5]}... vs {labels[:5]}...")


def export_onnx_fp32(hf_model_dir: Path, onnx_path: Path, max_length: int) -> tuple[list[str], object]:
    """Export the HF model to an fp32 ONNX file. Returns (input names, HF config)."""
    import torch
    from transformers import AutoTokenizer

    from training.modeling import load_classifier

    tokenizer = AutoTokenizer.from_pretrained(hf_model_dir, use_fast=True)
    # Eager attention exports to plain MatMul/Softmax, the pattern ORT's optimizer fuses.
    # Any head (training.modeling): the wrapper below exports only its ``logits``, so a custom
    # head is a few more ONNX nodes and the server needs no change.
    model = load_classifier(hf_model_dir, attn_implementation="eager")
    model.eval()
    names = _onnx_input_names(model, tokenizer)

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.inner(**dict(zip(names, inputs, strict=True))).logits

    # Two rows of different lengths so padding and the mask are part of the traced graph.
    sample = tokenizer(
        ["a short ticket", "a somewhat longer support ticket about a card payment"],
        padding=True,
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    args = tuple(sample[n] for n in names)
    dynamic_axes = {n: {0: "batch", 1: "sequence"} for n in names}
    dynamic_axes["logits"] = {0: "batch"}
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            LogitsOnly(model),
            args,
            str(onnx_path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    return names, model.config


def optimize_onnx(src: Path, dst: Path, config) -> bool:
    """Fuse transformer subgraphs with ORT's offline optimizer. False (and ``dst`` = copy) if it fails."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_heads", 0))
        hidden = int(getattr(config, "hidden_size", 0) or getattr(config, "dim", 0))
        with _quiet_ort_logs():
            optimized = optimize_model(
                str(src), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=1, use_gpu=False
            )
            optimized.save_model_to_file(str(dst))
        log.info("graph fusions: %s", optimized.get_fused_operator_statistics())
        return True
    except Exception as exc:  # the optimizer is best-effort: the plain graph is still correct
        log.warning("ONNX Runtime transformer optimizer failed (%s); keeping the unfused graph", exc)
        shutil.copyfile(src, dst)
        return False


def quantize_int8(src: Path, dst: Path, per_channel: bool = False, reduce_range: bool = False) -> None:
    """Dynamic int8 quantization: int8 weights, uint8 activations quantized per batch at run time.

    ``reduce_range`` (7-bit weights) is ONNX Runtime's remedy for u8s8 saturation on AVX2/AVX-512
    CPUs without VNNI; measured on this (AVX2) machine it lost accuracy on its own and only
    matched the default together with ``per_channel`` (README, "Evaluation and the serving
    artifact"), so both stay off by default.
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_ort_logs():
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            # Fused com.microsoft nodes defeat ONNX shape inference; their outputs are float32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def save_tokenizer_json(hf_model_dir: Path, path: Path, max_length: int) -> None:
    """Write the fast tokenizer as a bare ``tokenizer.json``: no padding, head truncation."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_model_dir, use_fast=True)
    backend = tokenizer.backend_tokenizer
    backend.no_padding()
    backend.enable_truncation(max_length=max_length)
    backend.save(str(path))


def export_artifact(
    hf_model_dir: Path,
    output_dir: Path,
    labels: list[str],
    max_length: int,
    preprocessing: PreprocessConfig,
    scoring: str = "softmax",
    base_model: str = "",
    quantize: bool = True,
    optimize: bool = True,
    per_channel: bool = False,
    reduce_range: bool = False,
) -> Path:
    """Export ``hf_model_dir`` (a ``save_pretrained`` directory with a fast tokenizer) to the
    serving artifact in ``output_dir``. Returns ``output_dir``.

    ``labels[i]`` must be the class of logit ``i``. An existing ``metrics.json`` in
    ``output_dir`` is removed: it described a different model.
    """
    hf_model_dir, output_dir = Path(hf_model_dir), Path(output_dir)
    from transformers import AutoConfig

    _check_labels(AutoConfig.from_pretrained(hf_model_dir), labels)  # before minutes of work
    output_dir.mkdir(parents=True, exist_ok=True)
    fp32_path = fp32_onnx_path(output_dir)
    with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp:
        raw = Path(tmp) / "raw.onnx"
        names, config = export_onnx_fp32(hf_model_dir, raw, max_length)
        fp32_path.parent.mkdir(parents=True, exist_ok=True)
        if optimize:
            optimize_onnx(raw, fp32_path, config)
        else:
            shutil.copyfile(raw, fp32_path)
    if quantize:
        quantize_int8(fp32_path, output_dir / MODEL_FILE, per_channel=per_channel, reduce_range=reduce_range)
    else:
        shutil.copyfile(fp32_path, output_dir / MODEL_FILE)
    save_tokenizer_json(hf_model_dir, output_dir / TOKENIZER_FILE, max_length)
    manifest = ArtifactManifest(
        labels=list(labels),
        scoring=scoring,
        max_length=max_length,
        onnx_inputs=names,
        preprocessing=preprocessing,
        base_model=base_model,
        quantization="int8" if quantize else "none",
    )
    write_manifest(output_dir, manifest)
    (output_dir / METRICS_FILE).unlink(missing_ok=True)
    load_manifest(output_dir)  # fail here, not in the container, if something is missing
    return output_dir


def pack_model_tar(artifact_dir: Path, tar_path: Path) -> Path:
    """Pack an artifact as SageMaker's ``model.tar.gz`` (``ModelDataUrl``).

    The files sit at the archive root (no folder): SageMaker extracts the archive into
    ``/opt/ml/model``, which the container reads as ``MODEL_DIR``.
    """
    artifact_dir, tar_path = Path(artifact_dir), Path(tar_path)
    load_manifest(artifact_dir)
    files = sorted(p for p in artifact_dir.iterdir() if p.is_file())
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tar_path, "w:gz") as tar:
        for path in files:
            tar.add(path, arcname=path.name, recursive=False)
    return tar_path
