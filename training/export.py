"""Turn a fine-tuned Hugging Face classifier into the serving artifact.

Steps (each measured in the optimization report, see docs/training.md):

1. ``torch.onnx`` export (TorchScript-based exporter, opset 17) with dynamic batch and sequence
   axes; one output, ``logits``.
2. Graph optimisation with ONNX Runtime's transformer optimizer (attention, layer-norm, GELU and
   embedding fusions). Done *before* quantization so that the fused ``Attention`` nodes are
   quantized as a whole (``QAttention``); ONNX Runtime cannot fuse them any more once the
   MatMuls are quantized one by one. Falls back to the plain export if the optimizer does not
   recognise the architecture.
3. Dynamic int8 quantization (``onnxruntime.quantization.quantize_dynamic``): int8 weights,
   activations quantized at run time, so no calibration data is needed.

4. A parity gate on validation batches (:func:`check_parity`): the fine-tuned torch model vs the
   fp32 ONNX graph (same math: scores within ``1e-3``) and the fp32 graph vs the int8 model the
   server runs (argmax agreement, and macro-F1 over the labels that occur in the validation
   labels). An fp32 graph past tolerance is not the fine-tuned model: the export raises
   :class:`ExportError` and leaves no servable artifact; ``python -m training train`` then exits
   non-zero with that one-line message. An int8 model past tolerance is not shipped with a
   warning: :func:`choose_served_model` tries per-channel int8, then serves the fp32 model, and
   the manifest (``quantization``, ``quantization_reason``) and ``export_report.json``
   (``served``) say which model is served and why.

The artifact is built in a staging directory and moved to ``output_dir`` only once it passed
the gate. The served directory gets ``model.onnx`` (the served model), ``tokenizer.json`` and
``triage_artifact.json``; the fp32 ONNX model and ``export_report.json`` (the parity numbers,
and a warning when the optimizer fell back to the unfused graph) are kept next to it
(``<output_dir>/../onnx-fp32/``), never inside the served directory.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from triage_core.artifact import (
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
EXPORT_REPORT = "export_report.json"
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


def optimize_onnx(src: Path, dst: Path, config) -> str | None:
    """Fuse transformer subgraphs with ORT's offline optimizer. On failure ``dst`` is a copy of
    ``src`` (still correct, slower) and the reason is returned: the export report carries it."""
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
        return None
    except Exception as exc:  # the optimizer is best-effort: the plain graph is still correct
        reason = (
            f"ONNX Runtime transformer optimizer failed ({type(exc).__name__}: {exc}); "
            "the unfused graph is served"
        )
        log.warning(reason)
        shutil.copyfile(src, dst)
        return reason


def quantize_int8(src: Path, dst: Path, per_channel: bool = False, reduce_range: bool = False) -> None:
    """Dynamic int8 quantization: int8 weights, uint8 activations quantized per batch at run time.

    ``reduce_range`` (7-bit weights) is ONNX Runtime's remedy for u8s8 saturation on AVX2/AVX-512
    CPUs without VNNI; measured on this (AVX2) machine it lost accuracy on its own and only
    matched the default together with ``per_channel`` (docs/training.md, "Optimization report"),
    so both stay off by default.
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


class ExportError(RuntimeError):
    """The exported model does not behave like the fine-tuned one; the message says how."""


@dataclass(frozen=True)
class ParityTolerance:
    """How far the exported models may drift, measured on validation batches."""

    # torch fp32 vs ONNX fp32: the same computation (fused kernels aside), scores in [0, 1]
    fp32_max_score_diff: float = 1e-3
    # ONNX fp32 vs ONNX int8 (served): share of tickets with the same top label, among those
    # fp32 decides by at least ``decisive_margin`` (a near-tie flipping is rounding, not a defect)
    int8_min_agreement: float = 0.95
    decisive_margin: float = 0.05
    # ... and, with at least ``min_labelled_rows`` labelled tickets, macro-F1 lost by int8, in
    # points (1.0 = 0.01); on fewer, one ticket moves macro-F1 by points: reported, not gated
    int8_max_macro_f1_drop_points: float = 1.0
    min_labelled_rows: int = 100


# Used when the caller has no validation texts (a model exported on its own): real-looking
# tickets of different lengths, e-mail noise included.
SAMPLE_TICKETS = (
    "my card has not arrived yet",
    "What exchange rate do you use for euro payments?",
    "Hi,\n\nmy top up by bank transfer failed twice today, why?\n\nThanks,\nAnna",
    "I was charged twice for the same coffee",
    "how do I change my PIN",
    "My refund from the shop is still not showing up in the app after 10 days",
    "card payment declined at the supermarket",
    "Can I get a virtual card for online shopping?",
    "Why is there an extra fee on my ATM withdrawal abroad? I thought it was free.",
    "lost my card on the train, please block it",
    "Where can I see my account statement for March",
    "the transfer to my landlord is pending since Monday",
)


def _macro_f1(y_true: list[int], y_pred: np.ndarray) -> float:
    """Macro-F1 over the labels that occur in ``y_true``: a label that only occurs as a
    prediction has no recall to measure, and counted it would turn one flipped ticket in a small
    validation split into a drop of points (issue #20)."""
    from sklearn.metrics import f1_score

    present = sorted(set(y_true))
    return float(f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0))


def check_parity(
    hf_model_dir: Path,
    artifact_dir: Path,
    fp32_path: Path,
    texts: list[str],
    labels: list[str] | None = None,
    tolerance: ParityTolerance | None = None,
    batch_size: int = 32,
) -> dict[str, Any]:
    """Compare torch, fp32 ONNX and the served int8 artifact on ``texts`` (raw tickets: the
    artifact's preprocessing and tokenizer apply, in the server's batches). Returns the numbers
    with ``passed`` and, when it did not pass, ``failures`` (one sentence each)."""
    import onnxruntime as ort
    import torch

    from training.modeling import load_classifier
    from triage_core.inference import ArtifactClassifier, scores_from_logits

    tolerance = tolerance or ParityTolerance()
    classifier = ArtifactClassifier(artifact_dir)
    scoring = classifier.manifest.scoring
    encodings = classifier.tokenizer.encode(classifier.clean(list(texts)))
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    fp32_session = ort.InferenceSession(str(fp32_path), providers=["CPUExecutionProvider"])
    model = load_classifier(hf_model_dir).eval()
    n_labels = len(classifier.labels)
    scores = {name: np.zeros((len(texts), n_labels), dtype=np.float32) for name in ("torch", "fp32", "int8")}
    with torch.inference_mode():
        for idx in batches:
            feed = classifier.tokenizer.pad([encodings[i] for i in idx])
            torch_logits = model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()
            scores["torch"][idx] = scores_from_logits(torch_logits, scoring)
            scores["fp32"][idx] = scores_from_logits(fp32_session.run(["logits"], feed)[0], scoring)
            scores["int8"][idx] = classifier.run([encodings[i] for i in idx])
    top = {name: s.argmax(axis=1) for name, s in scores.items()}
    ranked = np.sort(scores["fp32"], axis=1)
    decisive = (ranked[:, -1] - ranked[:, -2]) >= tolerance.decisive_margin
    report: dict[str, Any] = {
        "texts": len(texts),
        "tolerance": asdict(tolerance),
        "torch_vs_fp32": {
            "max_score_diff": float(np.abs(scores["torch"] - scores["fp32"]).max()),
            "agreement": float(np.mean(top["torch"] == top["fp32"])),
        },
        "fp32_vs_int8": {
            "max_score_diff": float(np.abs(scores["fp32"] - scores["int8"]).max()),
            "agreement": float(np.mean(top["fp32"] == top["int8"])),
            "decisive_rows": int(decisive.sum()),
            "decisive_agreement": float(np.mean(top["fp32"][decisive] == top["int8"][decisive]))
            if decisive.any()
            else 1.0,
        },
    }
    fp32_failures, int8_failures = [], []
    if report["torch_vs_fp32"]["max_score_diff"] > tolerance.fp32_max_score_diff:
        fp32_failures.append(
            f"fp32 ONNX scores differ from torch by {report['torch_vs_fp32']['max_score_diff']:.2g} "
            f"(tolerance {tolerance.fp32_max_score_diff:g}): the exported graph is not the fine-tuned model"
        )
    if report["fp32_vs_int8"]["decisive_agreement"] < tolerance.int8_min_agreement:
        int8_failures.append(
            f"int8 changes the top label of {1 - report['fp32_vs_int8']['decisive_agreement']:.1%} of the "
            f"{int(decisive.sum())} validation tickets fp32 decides clearly "
            f"(tolerance {1 - tolerance.int8_min_agreement:.1%})"
        )
    if labels is not None:
        index = {label: i for i, label in enumerate(classifier.labels)}
        rows = [i for i, label in enumerate(labels) if label in index]
        y = [index[labels[i]] for i in rows]
        f1 = {name: _macro_f1(y, top[name][rows]) for name in ("fp32", "int8")}
        drop = 100 * (f1["fp32"] - f1["int8"])
        report["fp32_vs_int8"].update(
            {
                "fp32_macro_f1": f1["fp32"],
                "int8_macro_f1": f1["int8"],
                "macro_f1_drop_points": drop,
                "macro_f1_labels": len(set(y)),  # the labels that occur in the validation labels
            }
        )
        if drop > tolerance.int8_max_macro_f1_drop_points and len(rows) >= tolerance.min_labelled_rows:
            int8_failures.append(
                f"int8 loses {drop:.2f} macro-F1 points on the validation tickets "
                f"(tolerance {tolerance.int8_max_macro_f1_drop_points:g})"
            )
    report["fp32_passed"] = not fp32_failures
    report["passed"] = not (fp32_failures or int8_failures)
    if fp32_failures or int8_failures:
        report["failures"] = fp32_failures + int8_failures
    return report


def choose_served_model(
    parity: dict[str, Any],
    check: Callable[[], dict[str, Any]],
    requantize: Callable[[bool], None],
    serve_fp32: Callable[[], None],
    quantize: bool,
    per_channel: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The int8-vs-fp32 decision, after the first gate (``parity``, of the int8 model in the
    staging directory): int8 if it passed; else per-channel int8 (``requantize(True)``, then
    ``check()``) if the first was per-tensor and that passes; else the fp32 model
    (``serve_fp32()``), whose gate is torch vs fp32, which ``parity`` already measured. An fp32
    graph that is not the fine-tuned model fails the export whatever is served. Returns (the
    served model's parity, ``{"model", "reason", "attempts"}``)."""

    def attempt(name: str, result: dict[str, Any]) -> dict[str, Any]:
        return {"model": name, "passed": result["passed"], "failures": result.get("failures", []),
                "fp32_vs_int8": result["fp32_vs_int8"]}  # fmt: skip

    if not quantize:
        return parity, {"model": "fp32", "reason": "quantization off (quantize=False)", "attempts": []}
    first = "int8 per-channel" if per_channel else "int8"
    attempts = [attempt(first, parity)]
    if parity["passed"]:
        reason = f"{first} passed the parity gate on {parity['texts']} validation tickets"
        return parity, {"model": first, "reason": reason, "attempts": attempts}
    if not parity["fp32_passed"]:
        return parity, {"model": None, "reason": "the fp32 graph failed the gate", "attempts": attempts}
    why = "; ".join(parity["failures"])
    if not per_channel:
        requantize(True)
        second = check()
        attempts.append(attempt("int8 per-channel", second))
        if second["passed"]:
            reason = f"per-tensor int8 failed the gate ({why}); per-channel int8 passed it"
            return second, {"model": "int8 per-channel", "reason": reason, "attempts": attempts}
        why += "; per-channel int8: " + "; ".join(second["failures"])
    serve_fp32()
    # The served graph is the one the first gate compared with torch (and passed): its numbers
    # stand; fp32_vs_int8 keeps what int8 measured, the reason it is not served.
    final = {**parity, "passed": True, "failures": []}
    reason = f"int8 failed the parity gate ({why}): fp32 served instead"
    return final, {"model": "fp32", "reason": reason, "attempts": attempts}


def export_report(output_dir: Path) -> dict[str, Any]:
    """The ``export_report.json`` that :func:`export_artifact` wrote for ``output_dir``."""
    return json.loads((fp32_onnx_path(output_dir).parent / EXPORT_REPORT).read_text("utf-8"))


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
    parity_texts: list[str] | None = None,
    parity_labels: list[str] | None = None,
    tolerance: ParityTolerance | None = None,
) -> Path:
    """Export ``hf_model_dir`` (a ``save_pretrained`` directory with a fast tokenizer) to the
    serving artifact in ``output_dir``. Returns ``output_dir``.

    ``labels[i]`` must be the class of logit ``i``. ``parity_texts`` (and their labels), the
    validation split in ``make train``, feed the parity gate (:data:`SAMPLE_TICKETS` if None);
    :class:`ExportError` if it fails. An existing ``metrics.json`` in ``output_dir`` is removed:
    it described a different model.
    """
    hf_model_dir, output_dir = Path(hf_model_dir), Path(output_dir)
    from transformers import AutoConfig

    _check_labels(AutoConfig.from_pretrained(hf_model_dir), labels)  # before minutes of work
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    fp32_path = fp32_onnx_path(output_dir)
    warnings: list[str] = []
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}-staging-", dir=output_dir.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="onnx-export-") as tmp:
            raw = Path(tmp) / "raw.onnx"
            names, config = export_onnx_fp32(hf_model_dir, raw, max_length)
            fp32_path.parent.mkdir(parents=True, exist_ok=True)
            if optimize:
                fallback = optimize_onnx(raw, fp32_path, config)
                if fallback:
                    warnings.append(fallback)
            else:
                shutil.copyfile(raw, fp32_path)
        if quantize:
            quantize_int8(fp32_path, staging / MODEL_FILE, per_channel=per_channel, reduce_range=reduce_range)
        else:
            shutil.copyfile(fp32_path, staging / MODEL_FILE)
        save_tokenizer_json(hf_model_dir, staging / TOKENIZER_FILE, max_length)
        manifest = ArtifactManifest(
            labels=list(labels),
            scoring=scoring,
            max_length=max_length,
            onnx_inputs=names,
            preprocessing=preprocessing,
            base_model=base_model,
            quantization="int8" if quantize else "none",
        )
        write_manifest(staging, manifest)
        load_manifest(staging)  # fail here, not in the container, if something is missing
        texts = list(parity_texts) if parity_texts else list(SAMPLE_TICKETS)

        def check() -> dict[str, Any]:
            return check_parity(
                hf_model_dir, staging, fp32_path, texts, parity_labels if parity_texts else None, tolerance
            )

        def requantize(channel: bool) -> None:
            quantize_int8(fp32_path, staging / MODEL_FILE, per_channel=channel, reduce_range=reduce_range)

        def serve_fp32() -> None:
            shutil.copyfile(fp32_path, staging / MODEL_FILE)
            write_manifest(staging, manifest.model_copy(update={"quantization": "none"}))

        parity, served = choose_served_model(check(), check, requantize, serve_fp32, quantize, per_channel)
        if served["model"] is not None:
            current = load_manifest(staging)
            write_manifest(staging, current.model_copy(update={"quantization_reason": served["reason"]}))
        report = {
            "parity": parity,
            "served": served,
            "optimized": optimize and not warnings,
            "warnings": warnings,
        }
        (fp32_path.parent / EXPORT_REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if not parity["passed"]:
            raise ExportError("export failed the parity gate: " + "; ".join(parity["failures"]))
        if quantize and served["model"] != "int8":
            log.warning("export: %s", served["reason"])
        if output_dir.exists():
            shutil.rmtree(output_dir)
        staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "parity on %d tickets: torch vs fp32 max score diff %.1e; served %s (%s)",
        parity["texts"],
        parity["torch_vs_fp32"]["max_score_diff"],
        served["model"],
        served["reason"],
    )
    return output_dir


def _normalized(info: tarfile.TarInfo, mtime: int) -> tarfile.TarInfo:
    """Owner root, mode 0644 (0755 for directories), one fixed mtime: readable by the container
    whether it runs as root or not, and the same archive for the same files."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mode = 0o755 if info.isdir() else 0o644
    info.mtime = mtime
    return info


def pack_model_tar(artifact_dir: Path, tar_path: Path) -> Path:
    """Pack an artifact as SageMaker's ``model.tar.gz`` (``ModelDataUrl``).

    The files sit at the archive root (no folder): SageMaker extracts the archive into
    ``/opt/ml/model``, which the container reads as ``MODEL_DIR``. Modes, owner and mtimes are
    normalised (the packing host's umask must not decide whether a non-root container can read
    its model) and the gzip header carries no time or name: the same artifact packs to the same
    bytes. The mtime is ``SOURCE_DATE_EPOCH`` when set (reproducible-builds.org), else 0.
    """
    artifact_dir, tar_path = Path(artifact_dir), Path(tar_path)
    load_manifest(artifact_dir)
    files = sorted(p for p in artifact_dir.iterdir() if p.is_file())
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        tar_path.open("wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in files:
            tar.add(path, arcname=path.name, recursive=False, filter=lambda info: _normalized(info, mtime))
    return tar_path
