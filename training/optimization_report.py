"""torch fp32 vs ONNX fp32 vs ONNX int8, measured in one run on the same texts.

For every variant: file size, macro-F1 (and accuracy) on the given labelled texts, throughput
and latency for length-sorted batches of 32 and for one ticket at a time. Preprocessing and
tokenization are shared (the artifact's code, done once and timed separately), so the timings
compare the models. All variants run in this process with the same thread count, in rotating
rounds (see :func:`_measure`), so load from other processes affects them alike.

The served int8 model must keep macro-F1 within 0.5 points of fp32; the report states the
delta and ``int8_within_tolerance``.

Command line::

    python -m training.optimization_report --hf-model artifacts/work/model --model artifacts/model \\
        --data artifacts/splits/test.csv --out artifacts/reports
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from triage_core.inference import ArtifactClassifier, scores_from_logits
from triage_core.longtext import LongText

log = logging.getLogger(__name__)

TOLERANCE_POINTS = 0.5  # allowed macro-F1 loss of int8 vs fp32, in points (0.5 = 0.005)
REPORT_JSON = "optimization_report.json"
REPORT_MD = "optimization_report.md"

RunFn = Callable[[dict[str, np.ndarray]], np.ndarray]  # padded feed -> logits


def _file_size(path: Path) -> int:
    return (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )


def _torch_weights(hf_model_dir: Path) -> Path:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (hf_model_dir / name).is_file():
            return hf_model_dir / name
    return hf_model_dir


def _torch_runner(hf_model_dir: Path, threads: int) -> RunFn:
    import torch

    from training.modeling import load_classifier

    torch.set_num_threads(threads)
    model = load_classifier(hf_model_dir).eval()

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits.numpy()

    return run


def _onnx_runner(onnx_path: Path, threads: int) -> RunFn:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run(feed: dict[str, np.ndarray]) -> np.ndarray:
        return session.run(["logits"], feed)[0]

    return run


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _timed(run: RunFn, feeds: list[dict[str, np.ndarray]]) -> tuple[list[float], list[np.ndarray]]:
    times, outputs = [], []
    for feed in feeds:
        t0 = time.perf_counter()
        outputs.append(run(feed))
        times.append((time.perf_counter() - t0) * 1000)
    return times, outputs


def _measure(
    runners: dict[str, RunFn],
    batches: list[dict[str, np.ndarray]],
    singles: list[dict[str, np.ndarray]],
    n_batched: int,
    repeats: int,
    settle_seconds: float = 0.3,
) -> tuple[dict[str, list[np.ndarray]], dict[str, dict[str, Any]]]:
    """Logits of every batch per variant, plus timings.

    Rounds: in each of ``repeats`` rounds every variant runs one full pass over the batches and
    over the single tickets, in a rotating variant order. Each batch's and each ticket's time is
    its fastest round, so a burst of load from other processes on this shared machine does not
    count against whichever variant happened to run then.
    Variants are not interleaved call by call: torch's OpenMP threads and ONNX Runtime's
    spinning worker threads would then slow each other down (measured: torch single-ticket
    latency x2). A short pause between variants lets the previous runtime's threads go idle.
    """
    names = list(runners)
    repeats = max(1, repeats)
    for run in runners.values():
        run(batches[0])  # warm-up: first-run allocations and kernel selection
    batch_ms: dict[str, list[list[float]]] = {name: [] for name in names}
    single_ms: dict[str, list[list[float]]] = {name: [] for name in names}
    outputs: dict[str, list[np.ndarray]] = {}
    for attempt in range(repeats):
        for k in range(len(names)):
            name = names[(attempt + k) % len(names)]
            time.sleep(settle_seconds)
            runners[name](batches[0])  # first call after the pause: not timed
            times, logits = _timed(runners[name], batches)
            batch_ms[name].append(times)
            outputs.setdefault(name, logits)
            single_ms[name].append(_timed(runners[name], singles)[0])
    timings: dict[str, dict[str, Any]] = {}
    for name in names:
        # Per batch / per ticket, the fastest round: the least disturbed by other processes.
        best_batches = np.min(np.asarray(batch_ms[name]), axis=0).tolist()
        best_singles = np.min(np.asarray(single_ms[name]), axis=0).tolist() or [float("nan")]
        timings[name] = {
            "batch32_tickets_per_s": round(n_batched / (sum(best_batches) / 1000), 1),
            "batch32_p50_ms": round(_percentile(best_batches, 50), 2),
            "batch32_p95_ms": round(_percentile(best_batches, 95), 2),
            "single_tickets_per_s": round(1000 / statistics.fmean(best_singles), 1),
            "single_p50_ms": round(_percentile(best_singles, 50), 2),
            "single_p95_ms": round(_percentile(best_singles, 95), 2),
        }
    return outputs, timings


def optimization_report(
    hf_model_dir: str | Path,
    fp32_onnx: str | Path,
    artifact_dir: str | Path,
    texts: list[str],
    labels: list[str],
    out_dir: str | Path,
    batch_size: int = 32,
    single_tickets: int = 200,
    repeats: int = 3,
    threads: int = 0,
    extra_onnx: dict[str, Path] | None = None,
) -> dict[str, Any]:
    """Measure torch fp32 (``hf_model_dir``), ONNX fp32 (``fp32_onnx``) and the served ONNX int8
    (``artifact_dir``) on the same texts; write JSON + Markdown into ``out_dir``.

    ``extra_onnx`` adds more ONNX files (same inputs/outputs) to compare, e.g. an unfused or a
    per-channel quantized graph.
    """
    from training.evaluate import EvaluationError, classification_report

    hf_model_dir, artifact_dir, out_dir = Path(hf_model_dir), Path(artifact_dir), Path(out_dir)
    threads = threads or os.cpu_count() or 1
    classifier = ArtifactClassifier(artifact_dir, intra_op_threads=threads)
    classifier.use_long_text(LongText())  # the transformer's graphs, row for row: head truncation
    index = {label: i for i, label in enumerate(classifier.labels)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        raise EvaluationError(f"labels unknown to the model: {unknown[:10]}")
    y_true = np.array([index[y] for y in labels])

    t0 = time.perf_counter()
    encodings = classifier.tokenizer.encode(classifier.clean(texts))
    prep_seconds = time.perf_counter() - t0
    order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
    batch_idx = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches = [classifier.tokenizer.pad([encodings[i] for i in idx]) for idx in batch_idx]
    singles = [classifier.tokenizer.pad([encodings[i]]) for i in range(min(single_tickets, len(texts)))]

    variants: dict[str, tuple[Path, Callable[[], RunFn]]] = {
        "torch fp32": (_torch_weights(hf_model_dir), lambda: _torch_runner(hf_model_dir, threads)),
        "onnx fp32": (Path(fp32_onnx), lambda: _onnx_runner(Path(fp32_onnx), threads)),
        "onnx int8 (served)": (
            artifact_dir / "model.onnx",
            lambda: _onnx_runner(artifact_dir / "model.onnx", threads),
        ),
    }
    for name, path in (extra_onnx or {}).items():
        variants[name] = (Path(path), lambda p=Path(path): _onnx_runner(p, threads))

    log.info("optimization report: measuring %s on %d tickets", ", ".join(variants), len(texts))
    runners = {name: make_runner() for name, (_, make_runner) in variants.items()}
    outputs, timings = _measure(runners, batches, singles, len(texts), repeats)
    results: dict[str, dict[str, Any]] = {}
    predictions: dict[str, np.ndarray] = {}
    for name, (path, _) in variants.items():
        scores = np.empty((len(texts), len(index)), dtype=np.float32)
        for idx, logits in zip(batch_idx, outputs[name], strict=True):
            scores[idx] = scores_from_logits(logits, classifier.manifest.scoring)
        metrics = classification_report(y_true, scores, classifier.labels)
        predictions[name] = scores.argmax(axis=1)
        results[name] = {
            "file": str(path),
            "size_mb": round(_file_size(path) / 1e6, 2),
            "macro_f1": round(metrics["macro_f1"], 4),
            "accuracy": round(metrics["accuracy"], 4),
            **timings[name],
        }

    int8, torch_fp32, onnx_fp32 = results["onnx int8 (served)"], results["torch fp32"], results["onnx fp32"]
    delta_torch = round((int8["macro_f1"] - torch_fp32["macro_f1"]) * 100, 2)
    delta_onnx = round((int8["macro_f1"] - onnx_fp32["macro_f1"]) * 100, 2)
    within = delta_torch >= -TOLERANCE_POINTS and delta_onnx >= -TOLERANCE_POINTS
    report: dict[str, Any] = {
        "examples": len(texts),
        "labels": len(index),
        "threads": threads,
        "batch_size": batch_size,
        "repeats": max(1, repeats),
        "single_ticket_sample": len(singles),
        "preprocess_tokenize_tickets_per_s": round(len(texts) / prep_seconds, 1) if prep_seconds else None,
        "variants": results,
        "int8_vs_fp32": {
            "macro_f1_delta_points_vs_torch_fp32": delta_torch,
            "macro_f1_delta_points_vs_onnx_fp32": delta_onnx,
            "argmax_agreement_vs_torch_fp32": round(
                float(np.mean(predictions["onnx int8 (served)"] == predictions["torch fp32"])), 4
            ),
            "tolerance_points": TOLERANCE_POINTS,
            "int8_within_tolerance": within,
            "size_ratio_vs_onnx_fp32": round(int8["size_mb"] / onnx_fp32["size_mb"], 3),
            "batch32_speedup_vs_torch_fp32": round(
                int8["batch32_tickets_per_s"] / torch_fp32["batch32_tickets_per_s"], 2
            ),
            "single_speedup_vs_torch_fp32": round(
                int8["single_tickets_per_s"] / torch_fp32["single_tickets_per_s"], 2
            ),
        },
    }
    if not within:
        log.warning(
            "int8 macro-F1 is %.2f points below fp32 (tolerance %.1f)",
            -min(delta_torch, delta_onnx),
            TOLERANCE_POINTS,
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / REPORT_MD).write_text(format_markdown(report), encoding="utf-8")
    report["paths"] = {"json": str(out_dir / REPORT_JSON), "markdown": str(out_dir / REPORT_MD)}
    return report


def format_markdown(report: dict[str, Any]) -> str:
    head = (
        "| variant | size (MB) | macro-F1 | accuracy | batch 32: tickets/s | batch 32: p50 ms "
        "| single: tickets/s | single: p50 ms | single: p95 ms |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    )
    rows = "".join(
        f"| {name} | {v['size_mb']:.1f} | {v['macro_f1']:.4f} | {v['accuracy']:.4f} "
        f"| {v['batch32_tickets_per_s']:.0f} | {v['batch32_p50_ms']:.1f} | {v['single_tickets_per_s']:.0f} "
        f"| {v['single_p50_ms']:.2f} | {v['single_p95_ms']:.2f} |\n"
        for name, v in report["variants"].items()
    )
    c = report["int8_vs_fp32"]
    verdict = "within" if c["int8_within_tolerance"] else "**OUTSIDE**"
    return (
        f"# Optimization report\n\n"
        f"{report['examples']} tickets, {report['labels']} labels, {report['threads']} threads, "
        f"same process, {report['repeats']} rotating rounds. Batch: length-sorted batches of "
        f"{report['batch_size']} over all tickets; single: one ticket at a time over "
        f"{report['single_ticket_sample']} tickets; each time is the fastest of the rounds. "
        f"Model time only: preprocessing + tokenization (shared by all variants) runs at "
        f"{report['preprocess_tokenize_tickets_per_s']} tickets/s.\n\n"
        + head
        + rows
        + f"\nint8 vs fp32 macro-F1: {c['macro_f1_delta_points_vs_torch_fp32']:+.2f} points vs torch, "
        f"{c['macro_f1_delta_points_vs_onnx_fp32']:+.2f} vs ONNX fp32 ({verdict} the "
        f"{c['tolerance_points']} point tolerance); argmax agreement with torch "
        f"{c['argmax_agreement_vs_torch_fp32']:.2%}; size x{c['size_ratio_vs_onnx_fp32']}; "
        f"speed-up vs torch: x{c['batch32_speedup_vs_torch_fp32']} (batch 32), "
        f"x{c['single_speedup_vs_torch_fp32']} (single ticket).\n"
    )


def run_optimization_report(
    hf_model_dir: str | Path,
    artifact_dir: str | Path,
    texts: list[str],
    labels: list[str],
    out_dir: str | Path,
    **kwargs: Any,
) -> Path:
    """Entry point of ``python -m training train``: fp32 ONNX from the export's standard place.
    Returns the Markdown report's path."""
    from training.export import fp32_onnx_path

    report = optimization_report(
        hf_model_dir, fp32_onnx_path(Path(artifact_dir)), artifact_dir, texts, labels, out_dir, **kwargs
    )
    log.info("optimization report:\n%s", format_markdown(report))
    return Path(report["paths"]["markdown"])


def main(argv: list[str] | None = None) -> int:
    from training.data import load_tickets
    from training.export import fp32_onnx_path

    parser = argparse.ArgumentParser(prog="python -m training.optimization_report", description=__doc__)
    parser.add_argument("--hf-model", type=Path, required=True, help="fine-tuned HF model directory")
    parser.add_argument("--model", type=Path, required=True, help="serving artifact directory")
    parser.add_argument(
        "--fp32-onnx", type=Path, default=None, help="default: <model>/../onnx-fp32/model.onnx"
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="category")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--extra-onnx", nargs="*", default=[], metavar="NAME=PATH")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data = load_tickets(args.data, args.text_column, args.label_column, min_examples=1)
    extra = dict(item.split("=", 1) for item in args.extra_onnx)
    report = optimization_report(
        args.hf_model,
        args.fp32_onnx or fp32_onnx_path(args.model),
        args.model,
        data.texts,
        data.labels,
        args.out,
        threads=args.threads,
        repeats=args.repeats,
        extra_onnx={k: Path(v) for k, v in extra.items()},
    )
    print(format_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
