"""Evaluate a serving artifact (the int8 ONNX model the endpoint runs) on labelled tickets.

Scores come from :class:`triage_core.inference.ArtifactClassifier`, the code the inference
server runs, so the report describes what the endpoint answers, preprocessing included.

Command line (also ``python -m training.evaluate``)::

    python -m training evaluate --model artifacts/model --data artifacts/splits/test.csv \\
        --out artifacts/eval [--text-column text --label-column category] [--noisy]

Writes ``<out>/metrics.json``, ``<out>/confusion_matrix.png`` and ``<out>/per_class_f1.png``;
with ``--noisy`` also ``<out>/noisy/`` (the same tickets wrapped in e-mail/chat noise) and a
clean-vs-noisy comparison in ``metrics.json`` and ``per_class_f1_clean_vs_noisy.png``.

Averages: macro = unweighted mean over the labels that occur in the evaluated data (a label of
the model absent from the data has no recall to measure); micro = over all predictions (equals
accuracy for single-label classification); weighted = weighted by support.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from training.noise import NOISY_SEED
from triage_core.inference import ArtifactClassifier

log = logging.getLogger(__name__)

HEADLINE = ("accuracy", "macro_f1", "micro_f1", "weighted_f1", "macro_precision", "macro_recall")


class EvaluationError(ValueError):
    """The data cannot be evaluated with this model (e.g. labels the model does not know)."""


def _prf(tp: np.ndarray, pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, ...]:
    precision = np.divide(tp, pred, out=np.zeros_like(tp, dtype=float), where=pred > 0)
    recall = np.divide(tp, true, out=np.zeros_like(tp, dtype=float), where=true > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return precision, recall, f1


def classification_report(
    y_true: np.ndarray, scores: np.ndarray, labels: list[str], top_confusions: int = 15
) -> dict[str, Any]:
    """All metrics from integer true labels and a [n, n_labels] score matrix (label order = ``labels``)."""
    n_labels = len(labels)
    y_pred = scores.argmax(axis=1)
    cm = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    precision, recall, f1 = _prf(tp, predicted, support)
    present = support > 0
    total = float(support.sum())
    micro_p, micro_r, micro_f1 = _prf(np.array([tp.sum()]), np.array([total]), np.array([total]))

    top3 = np.argsort(-scores, axis=1)[:, :3]
    off = cm.copy()
    np.fill_diagonal(off, 0)
    worst = np.argsort(-off, axis=None)[:top_confusions]
    confusions = [
        {"true": labels[i], "predicted": labels[j], "count": int(off[i, j])}
        for i, j in zip(*np.unravel_index(worst, off.shape), strict=True)
        if off[i, j] > 0
    ]
    weights = support / total
    return {
        "accuracy": float(tp.sum() / total),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "micro_precision": float(micro_p[0]),
        "micro_recall": float(micro_r[0]),
        "micro_f1": float(micro_f1[0]),
        "weighted_precision": float((precision * weights).sum()),
        "weighted_recall": float((recall * weights).sum()),
        "weighted_f1": float((f1 * weights).sum()),
        "top3_accuracy": float(np.mean([y in row for y, row in zip(y_true, top3, strict=True)])),
        "counts": {
            "examples": int(total),
            "correct": int(tp.sum()),
            "errors": int(total - tp.sum()),
            "labels_in_model": n_labels,
            "labels_in_data": int(present.sum()),
        },
        "per_class": {
            label: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
                "predicted": int(predicted[i]),
            }
            for i, label in enumerate(labels)
        },
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),  # rows: true label, columns: predicted, order = labels
        "top_confusions": confusions,
    }


BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0


def bootstrap_intervals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    n_labels: int,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap intervals of accuracy and macro-F1: the evaluated tickets resampled
    with replacement ``resamples`` times (seeded, so the same data gives the same interval). Each
    resample's macro-F1 averages over the labels that occur in its true labels, as the report's
    does. A difference between two models smaller than these intervals is not a difference."""
    rng = np.random.default_rng(seed)
    n = len(y_true)
    accuracy = np.empty(resamples)
    macro = np.empty(resamples)
    for r in range(resamples):
        idx = rng.integers(0, n, n)
        t, p = y_true[idx], y_pred[idx]
        right = t == p
        tp = np.bincount(t[right], minlength=n_labels).astype(float)
        support = np.bincount(t, minlength=n_labels).astype(float)
        predicted = np.bincount(p, minlength=n_labels).astype(float)
        _, _, f1 = _prf(tp, predicted, support)
        accuracy[r] = right.mean()
        macro[r] = f1[support > 0].mean()
    tail = 100 * (1 - confidence) / 2

    def interval(values: np.ndarray) -> list[float]:
        return [
            round(float(np.percentile(values, tail)), 4),
            round(float(np.percentile(values, 100 - tail)), 4),
        ]

    return {
        "method": f"percentile bootstrap over the evaluated tickets, {resamples} resamples, seed {seed}",
        "confidence": confidence,
        "accuracy": interval(accuracy),
        "macro_f1": interval(macro),
    }


def evaluate_artifact(
    artifact_dir: str | Path,
    texts: list[str],
    labels: list[str],
    batch_size: int = 32,
    classifier: ArtifactClassifier | None = None,
) -> dict[str, Any]:
    """Evaluate the served artifact on raw ``texts`` with true ``labels``.

    Raises :class:`EvaluationError` if a label is not one of the model's labels.
    """
    if len(texts) != len(labels):
        raise EvaluationError(f"{len(texts)} texts but {len(labels)} labels")
    if not texts:
        raise EvaluationError("nothing to evaluate: no texts")
    classifier = classifier or ArtifactClassifier(artifact_dir)
    index = {label: i for i, label in enumerate(classifier.labels)}
    unknown = sorted(set(labels) - set(index))
    if unknown:
        shown = ", ".join(repr(u) for u in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise EvaluationError(
            f"{len(unknown)} label(s) in the data are unknown to the model in {artifact_dir}: {shown}. "
            f"The model knows {len(index)} labels, e.g. {classifier.labels[:5]}; check --label-column "
            "and that the data and the model use the same label names."
        )
    started = time.perf_counter()
    scores = classifier.predict_scores(texts, batch_size=batch_size)
    seconds = time.perf_counter() - started
    y_true = np.array([index[y] for y in labels])
    report = classification_report(y_true, scores, classifier.labels)
    report["confidence_intervals"] = bootstrap_intervals(
        y_true, scores.argmax(axis=1), len(classifier.labels)
    )
    manifest = classifier.manifest
    report["model"] = {
        "artifact": str(artifact_dir),
        "base_model": manifest.base_model,
        "quantization": manifest.quantization,
        "max_length": manifest.max_length,
        "long_text": manifest.long_text.label(),
        "served": manifest.model,  # transformer, linear or ensemble (training.baseline)
        "scoring": manifest.scoring,
    }
    report["inference"] = {
        "seconds": round(seconds, 3),
        "tickets_per_second": round(len(texts) / seconds, 1) if seconds > 0 else None,
        "batch_size": batch_size,
        "mean_top_score": float(scores.max(axis=1).mean()),
    }
    return report


def review_curve(top_scores: np.ndarray, correct: np.ndarray, target_accuracy: float) -> dict[str, float]:
    """The lowest threshold t such that tickets with top score >= t are right at least
    ``target_accuracy`` of the time (1.0 = review everything if no t reaches it)."""
    order = np.argsort(-top_scores)
    cumulative = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
    # only where a run of equal scores ends: a threshold accepts every ticket of its score, so a
    # prefix that stops inside a run of ties is no threshold's accepted set (it let the accepted
    # tickets fall under the target when tied scores were wrong)
    ranked = top_scores[order]
    run_ends = np.append(ranked[1:] != ranked[:-1], True)
    ok = np.nonzero((cumulative >= target_accuracy) & run_ends)[0]
    if len(ok) == 0:
        return {"threshold": 1.0, "accepted_accuracy": float("nan"), "review_share": 1.0}
    last = int(ok[-1])  # the largest accepted set that still meets the target
    threshold = float(top_scores[order][last])
    accepted = top_scores >= threshold
    return {
        "threshold": round(threshold, 4),
        "accepted_accuracy": float(correct[accepted].mean()),
        "review_share": float(1 - accepted.mean()),
    }


# The accuracy of the auto-accepted validation tickets should be known within this many points
# (95 % confidence) for the threshold chosen on it to mean something.
REVIEW_ACCURACY_MARGIN = 0.02
Z_95 = 1.959964


def min_validation_tickets(target_accuracy: float, margin: float = REVIEW_ACCURACY_MARGIN) -> int:
    """Tickets needed to measure an accuracy near ``target_accuracy`` within ``margin`` at 95 %
    confidence (normal approximation: z² t(1 − t) / margin²; 189 for 0.98, 457 for 0.95), and
    at least 100. Fewer validation tickets: the review threshold rests on a handful of them."""
    t = min(max(target_accuracy, 0.0), 1.0)
    return max(100, math.ceil(Z_95**2 * t * (1 - t) / margin**2))


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (95 % by default); None for n = 0."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


def coverage_curve(top_scores: np.ndarray, correct: np.ndarray, points: int = 101) -> list[dict[str, float]]:
    """Accuracy of the auto-accepted tickets against the share accepted (coverage), from
    accepting only the highest-scored ticket to accepting all: one point per 1/(points - 1) of
    coverage, each with the threshold that accepts it (the lowest accepted top score)."""
    n = len(top_scores)
    order = np.argsort(-top_scores, kind="stable")
    right = np.cumsum(correct[order])
    curve = []
    for k in sorted({max(1, math.ceil(c * n)) for c in np.linspace(0.0, 1.0, points)}):
        curve.append(
            {
                "threshold": round(float(top_scores[order][k - 1]), 4),
                "coverage": round(k / n, 4),
                "review_share": round(1 - k / n, 4),
                "accepted_accuracy": round(float(right[k - 1] / k), 4),
            }
        )
    return curve


def review_threshold(
    top_scores: np.ndarray, correct: np.ndarray, target_accuracy: float, max_review_share: float = 1.0
) -> dict[str, Any]:
    """The review threshold for a target accuracy on auto-accepted tickets and a ceiling on the
    share sent to review.

    The rule: the lowest threshold whose accepted tickets reach ``target_accuracy``
    (:func:`review_curve`), if it sends at most ``max_review_share`` to review. Otherwise the
    target cannot be met within the ceiling, and the ceiling wins: the threshold that sends
    ``max_review_share`` to review (people can review only so many tickets; the accuracy that
    share gets is reported, with a warning). With no ceiling (1.0) an unreachable target sends
    every ticket to review, as before. Warnings also name a validation split below
    :func:`min_validation_tickets`.
    """
    n = len(top_scores)
    choice: dict[str, Any] = dict(review_curve(top_scores, correct, target_accuracy))
    warnings: list[str] = []
    met = not math.isnan(choice["accepted_accuracy"])
    target_met = met and choice["review_share"] <= max_review_share + 1e-12
    if target_met:
        choice["rule"] = "target: the lowest threshold whose accepted tickets reach the target accuracy"
    elif max_review_share >= 1.0:
        choice["rule"] = "target not reachable at any threshold and no ceiling: every ticket to review"
        warnings.append(
            f"no threshold reaches {target_accuracy:.1%} accuracy on the accepted validation tickets"
        )
    else:
        accepted_count = max(1, math.ceil((1 - max_review_share) * n - 1e-9))
        order = np.argsort(-top_scores, kind="stable")
        # rounded down to the 4 decimals the manifest keeps: the server accepts at least these
        threshold = math.floor(float(top_scores[order][accepted_count - 1]) * 1e4) / 1e4
        accepted = top_scores >= threshold
        choice = {
            "threshold": threshold,
            "accepted_accuracy": float(correct[accepted].mean()),
            "review_share": float(1 - accepted.mean()),
            "rule": "ceiling: the target cannot be met within the review ceiling, so the threshold "
            "sends the ceiling's share to review",
        }
        needed = (
            f"it needs {choice_share(top_scores, correct, target_accuracy):.1%} to review"
            if met
            else "no threshold reaches it"
        )
        warnings.append(
            f"target {target_accuracy:.1%} cannot be met with at most {max_review_share:.0%} of tickets "
            f"to review ({needed}): the threshold {threshold:.3f} sends {choice['review_share']:.1%} to "
            f"review and the accepted tickets are right {choice['accepted_accuracy']:.1%} of the time "
            "on validation"
        )
    accepted = top_scores >= choice["threshold"] if choice["review_share"] < 1.0 else np.zeros(n, dtype=bool)
    minimum = min_validation_tickets(target_accuracy)
    if n < minimum:
        warnings.append(
            f"the review threshold rests on {n} validation tickets; measuring {target_accuracy:.0%} "
            f"accuracy within ±{REVIEW_ACCURACY_MARGIN:.0%} (95 % confidence) needs at least {minimum}: "
            "add labelled tickets or a larger --validation-size"
        )
    choice.update(
        {
            "target_accuracy": target_accuracy,
            "max_review_share": max_review_share,
            "target_met": bool(target_met),
            "validation_tickets": n,
            "min_validation_tickets": minimum,
            "accepted_tickets": int(accepted.sum()),
            "accepted_accuracy_interval_95": wilson_interval(
                int(correct[accepted].sum()), int(accepted.sum())
            ),
            "warnings": warnings,
        }
    )
    return choice


def choice_share(top_scores: np.ndarray, correct: np.ndarray, target_accuracy: float) -> float:
    """The review share the target accuracy alone needs (1.0 if no threshold reaches it)."""
    return float(review_curve(top_scores, correct, target_accuracy)["review_share"])


def headline(report: dict[str, Any]) -> dict[str, float]:
    return {k: round(report[k], 4) for k in HEADLINE if k in report}


def write_evaluation(report: dict[str, Any], out_dir: str | Path, title: str = "") -> dict[str, Path]:
    """Write ``metrics.json``, ``confusion_matrix.png`` and ``per_class_f1.png`` into ``out_dir``."""
    from training.plots import plot_confusion_matrix, plot_per_class_f1

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"metrics": out_dir / "metrics.json"}
    paths["metrics"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    paths["confusion_matrix"] = plot_confusion_matrix(report, out_dir / "confusion_matrix.png", title=title)
    paths["per_class_f1"] = plot_per_class_f1(
        report, out_dir / "per_class_f1.png", title=f"{title} per-class F1 (worst first)".strip()
    )
    return paths


def compare_reports(clean: dict[str, Any], noisy: dict[str, Any]) -> dict[str, Any]:
    """Clean vs noisy headline metrics side by side, and the classes that suffer most."""
    rows = {k: {"clean": round(clean[k], 4), "noisy": round(noisy[k], 4)} for k in HEADLINE}
    for row in rows.values():
        row["delta"] = round(row["noisy"] - row["clean"], 4)
    drops = sorted(
        (
            (label, m["f1"] - noisy["per_class"][label]["f1"])
            for label, m in clean["per_class"].items()
            if m["support"] > 0
        ),
        key=lambda item: -item[1],
    )
    return {
        "metrics": rows,
        "largest_f1_drops": [{"label": label, "f1_drop": round(d, 4)} for label, d in drops[:10]],
    }


def format_table(rows: dict[str, dict[str, float]], columns: list[str]) -> str:
    """A small Markdown table: one row per metric."""
    lines = ["| metric | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(f"{row[c]:.4f}" for c in columns) + " |")
    return "\n".join(lines)


# --- command line ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training evaluate",
        description="Evaluate a serving artifact (int8 ONNX, as served) on a labelled CSV/JSONL file.",
    )
    parser.add_argument("--model", type=Path, required=True, help="artifact directory (artifacts/model)")
    parser.add_argument("--data", type=Path, required=True, help="CSV or JSON Lines with text and label")
    parser.add_argument("--out", type=Path, required=True, help="directory for metrics.json and plots")
    parser.add_argument("--text-column", "--text_column", default="text")
    parser.add_argument("--label-column", "--label_column", default="category")
    parser.add_argument("--encoding", default="utf-8")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=32)
    parser.add_argument(
        "--noisy",
        action="store_true",
        help="also evaluate the same tickets wrapped in e-mail/chat noise (training.noise, --noise-pool)",
    )
    parser.add_argument("--noise-seed", "--noise_seed", type=int, default=NOISY_SEED)
    parser.add_argument(
        "--noise-pool",
        "--noise_pool",
        choices=("select", "eval"),
        default="eval",
        help="the held-out noise pool: 'eval' for the test split (default), 'select' for the "
        "validation split (the pool that ranks candidates)",
    )
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Load the data, evaluate, write the report(s). Returns the clean report."""
    from training.data import DataError, load_tickets
    from training.plots import plot_per_class_f1
    from triage_core.artifact import ArtifactError

    try:
        data = load_tickets(args.data, args.text_column, args.label_column, args.encoding, min_examples=1)
        classifier = ArtifactClassifier(args.model)
        report = evaluate_artifact(args.model, data.texts, data.labels, args.batch_size, classifier)
        noisy = None
        if args.noisy:
            from training.noise import noisy_variant

            noisy_texts = noisy_variant(data.texts, seed=args.noise_seed, pool=args.noise_pool)
            noisy = evaluate_artifact(args.model, noisy_texts, data.labels, args.batch_size, classifier)
    except (DataError, ArtifactError, EvaluationError) as exc:
        raise SystemExit(f"evaluate: {exc}") from None

    report["data"] = {k: v for k, v in data.report.items() if k not in ("support",)}
    if noisy is not None:
        noisy["data"] = {**report["data"], "noise": {"pool": args.noise_pool, "seed": args.noise_seed}}
        write_evaluation(noisy, args.out / "noisy", title="Noisy tickets:")
        report["noisy"] = {**headline(noisy), "report": "noisy/metrics.json"}
        report["clean_vs_noisy"] = compare_reports(report, noisy)
        plot_per_class_f1(
            report,
            args.out / "per_class_f1_clean_vs_noisy.png",
            title="Per-class F1: clean vs noisy tickets (sorted by clean F1)",
            compare=noisy,
        )
    write_evaluation(report, args.out)

    if noisy is None:
        print(format_table({k: {"value": v} for k, v in headline(report).items()}, ["value"]))
    else:
        print(format_table(report["clean_vs_noisy"]["metrics"], ["clean", "noisy", "delta"]))
    ci = report["confidence_intervals"]
    print(
        f"95% bootstrap intervals ({len(data.texts)} tickets): macro-F1 {ci['macro_f1']}, "
        f"accuracy {ci['accuracy']}"
    )
    print(f"wrote {args.out / 'metrics.json'} and plots ({len(data.texts)} tickets)")
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
