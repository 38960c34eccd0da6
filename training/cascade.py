"""The confidence cascade of an ensemble artifact, chosen on the validation split.

An ensemble serves ``weight * linear + (1 - weight) * transformer``; the linear model (TF-IDF +
logistic regression, numpy) costs about a tenth of MiniLM. A cascade serves the linear model's
scores alone for a ticket whose top linear score reaches a bar, and the ensemble for the others,
which are the only ones tokenized and run through ONNX Runtime (``triage_core.inference``: the
rule lives there, in the manifest's ``linear.cascade_bar``, for serving and evaluation alike).

The bar (:func:`choose_bar`): of the candidates in :data:`BARS`, the lowest (the most tickets
settled by the linear model) whose macro-F1 on the clean **and** the noisy validation split is at
most ``max_f1_loss - margin`` below the ensemble's without a cascade, and which sends at most
``max_review_increase`` more of the clean split to review than the ensemble, each at the threshold
the recipe's review policy would choose for its scores (the TF-IDF model's scores are less
peaked: on the released model the lowest bar within the F1 budget, 0.65, sent 26.4 % of validation
to review against the ensemble's 16.2 %; 0.80 sends 16.4 %). The noisy validation split
is ``python -m training evaluate --noisy --noise-pool select``'s: ``training.noise`` with the
``select`` pool and seed :data:`training.noise.NOISY_SEED`. The margin is the part of the loss
budget kept for the sampling noise of 1,000 validation tickets (docs/training.md, "The
confidence cascade").

Each candidate is judged by the rule applied to one pass of the served int8 artifact without a
cascade (:func:`score_validation` says why) and also scored as served (the artifact with that
bar, in its own batches), which the report shows beside it. Run by the training pipeline after
the linear baseline (so the review threshold is then chosen on the cascaded scores), or on a
trained artifact: ``python -m training cascade`` (``make cascade``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.recipe import CascadePolicy, ReviewPolicy
from triage_core.inference import cascade_settled, scores_from_logits

log = logging.getLogger(__name__)

REPORT_FILE = "cascade.json"
BARS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


@dataclass(frozen=True)
class SplitScores:
    """One validation set: labels, the linear model's scores, the served scores without a
    cascade (``ensemble``) and, when measured, with each candidate bar (``served``)."""

    y: np.ndarray
    linear: np.ndarray
    ensemble: np.ndarray
    served: dict[float, np.ndarray] | None = None


def cascade_scores(linear: np.ndarray, ensemble: np.ndarray, bar: float | None) -> np.ndarray:
    """The cascade rule on precomputed scores: the linear model's row where it settles the ticket."""
    return np.where(cascade_settled(linear, bar)[:, None], linear, ensemble)


def _macro_f1(y: np.ndarray, scores: np.ndarray, n_labels: int) -> float:
    from training.evaluate import classification_report

    return classification_report(y, scores, [str(i) for i in range(n_labels)])["macro_f1"]


def review_share(y: np.ndarray, scores: np.ndarray, review: ReviewPolicy) -> float:
    """The share of tickets the review policy's threshold, chosen on ``scores``, sends to review."""
    from training.evaluate import review_threshold

    top, correct = scores.max(axis=1), scores.argmax(axis=1) == y
    return review_threshold(top, correct, review.target_accuracy, review.max_review_share)["review_share"]


def choose_bar(
    splits: dict[str, SplitScores],
    policy: CascadePolicy,
    bars: tuple[float, ...] = BARS,
    review: ReviewPolicy | None = None,
) -> dict[str, Any]:
    """The lowest bar of ``bars`` whose macro-F1 on every split in ``splits`` (clean and noisy)
    is at most ``policy.allowed_loss`` below the ensemble's and, given the ``review`` policy,
    which sends at most ``policy.max_review_increase`` more of the clean split to review than the
    ensemble does; None when no bar is. Returns the choice and the table (per candidate and split:
    share settled by the linear model, macro-F1, its change; the clean split's review share)."""
    n_labels = next(iter(splits.values())).ensemble.shape[1]
    base = {name: _macro_f1(s.y, s.ensemble, n_labels) for name, s in splits.items()}
    clean = splits.get("clean")
    base_review = review_share(clean.y, clean.ensemble, review) if review and clean else None
    table = []
    for bar in sorted(bars):
        row: dict[str, Any] = {"bar": bar}
        passes = True
        if base_review is not None:
            share = review_share(clean.y, cascade_scores(clean.linear, clean.ensemble, bar), review)
            row["review_share"] = round(share, 4)
            passes = share - base_review <= policy.max_review_increase + 1e-12
        for name, s in splits.items():
            f1 = _macro_f1(s.y, cascade_scores(s.linear, s.ensemble, bar), n_labels)
            row[name] = {
                "skip_share": round(float(cascade_settled(s.linear, bar).mean()), 4),
                "macro_f1": round(f1, 4),
                "f1_change": round(f1 - base[name], 4),
            }
            if s.served is not None:
                served = _macro_f1(s.y, s.served[bar], n_labels)
                row[name]["served_macro_f1"] = round(served, 4)
                row[name]["served_f1_change"] = round(served - base[name], 4)
            passes &= f1 - base[name] >= -policy.allowed_loss - 1e-12  # unrounded decides
        row["passes"] = passes
        table.append(row)
    passing = [row["bar"] for row in table if row["passes"]]
    bar = passing[0] if passing else None
    rule = (
        f"the lowest bar whose macro-F1 on {' and '.join(splits)} validation loses at most "
        f"{policy.allowed_loss:.4f} (max_f1_loss {policy.max_f1_loss} - margin {policy.margin}) "
        "against the ensemble without a cascade"
    )
    if base_review is not None:
        rule += (
            f" and which sends at most {policy.max_review_increase:.1%} more of the clean split to review "
            f"(target accuracy {review.target_accuracy:.0%}; the ensemble: {base_review:.1%})"
        )
    return {
        "bar": bar,
        "rule": rule + " (the cascade rule on the ensemble's scores; served_* columns: the cascaded "
        "artifact in its own batches)",
        "policy": asdict(policy),
        "ensemble_macro_f1": {name: round(f1, 4) for name, f1 in base.items()},
        "ensemble_review_share": None if base_review is None else round(base_review, 4),
        "candidates": table,
    }


def score_validation(
    artifact_dir: Path, validation, bars: tuple[float, ...] = BARS
) -> dict[str, SplitScores]:
    """The served int8 artifact on the clean and the noisy validation split (the ``select`` pool,
    as ``training evaluate --noise-pool select``): without a cascade, and with each bar of
    ``bars`` as served (in its own batches).

    Why the bar is decided on the rule applied to one pass of the ensemble, not on the served
    passes: int8 dynamic quantization scales each batch's activations by that batch's range, so a
    ticket's scores depend on the tickets batched with it. On the released model's validation
    split, batch sizes 8-128 alone move macro-F1 over 0.9243-0.9314 (0.7 point): more than the
    budget. The rule on one pass compares like with like (the same scores, only the cascade's
    decisions differ); the served columns and ``batch_spread`` show the batching noise beside it."""
    from training.noise import NOISY_SEED, noisy_variant
    from triage_core.inference import ArtifactClassifier

    classifier = ArtifactClassifier(artifact_dir)
    index = {label: i for i, label in enumerate(classifier.labels)}
    y = np.array([index[label] for label in validation.labels])
    sets = {
        "clean": list(validation.texts),
        "noisy": noisy_variant(list(validation.texts), seed=NOISY_SEED, pool="select"),
    }
    out = {}
    for name, texts in sets.items():
        features = classifier.linear.features(classifier.clean(texts))
        linear = scores_from_logits(classifier.linear.logits(features), "softmax")
        classifier.use_cascade_bar(None)
        ensemble = classifier.predict_scores(texts)
        served = {}
        for bar in bars:
            classifier.use_cascade_bar(bar)
            served[bar] = classifier.predict_scores(texts)
        out[name] = SplitScores(y, linear, ensemble, served)
    return out


def batch_spread(artifact_dir: Path, validation, sizes: tuple[int, ...] = (8, 16, 32, 64, 128)):
    """Macro-F1 of the artifact without a cascade on the clean validation split at several batch
    sizes: how much batching alone moves the served int8 scores' quality."""
    from triage_core.inference import ArtifactClassifier

    classifier = ArtifactClassifier(artifact_dir)
    classifier.use_cascade_bar(None)
    index = {label: i for i, label in enumerate(classifier.labels)}
    y = np.array([index[label] for label in validation.labels])
    n = len(classifier.labels)
    return {
        str(size): round(_macro_f1(y, classifier.predict_scores(list(validation.texts), size), n), 4)
        for size in sizes
    }


def store_bar(artifact_dir: Path, bar: float | None) -> None:
    """Write ``linear.cascade_bar`` into the artifact's manifest (validated on the way)."""
    from triage_core.artifact import edited_manifest

    with edited_manifest(artifact_dir) as manifest:
        manifest["linear"]["cascade_bar"] = bar


def select_cascade(
    artifact_dir: Path,
    validation,
    policy: CascadePolicy,
    reports_dir: Path | None = None,
    review: ReviewPolicy | None = None,
) -> dict[str, Any]:
    """The pipeline step: choose the bar on validation (with the ``review`` policy the review
    threshold will be chosen by, when given), write it into the manifest, score the
    cascaded artifact on validation (clean and noisy). Only an ensemble artifact has a cascade;
    any other (or ``policy.enabled`` false) keeps its manifest as it is. Writes
    ``<reports>/cascade.json``."""
    from triage_core.artifact import load_manifest

    manifest = load_manifest(artifact_dir)
    if manifest.model != "ensemble":
        report: dict[str, Any] = {
            "bar": None,
            "reason": f"the artifact is {manifest.model!r}, not an ensemble",
        }
    elif not policy.enabled:
        store_bar(artifact_dir, None)
        report = {"bar": None, "reason": "cascade off (preset or --cascade off)"}
    else:
        splits = score_validation(artifact_dir, validation)
        report = choose_bar(splits, policy, review=review)
        report["batch_spread_clean_macro_f1"] = batch_spread(artifact_dir, validation)
        store_bar(artifact_dir, report["bar"])
        log.info("%s", describe(report))
    report["chosen_on"] = "validation"
    if reports_dir is not None:
        Path(reports_dir).mkdir(parents=True, exist_ok=True)
        (Path(reports_dir) / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return report


def describe(report: dict[str, Any]) -> str:
    lines = [f"cascade bar {report['bar']} ({report['rule']}):"]
    for row in report["candidates"]:
        cells = []
        for name in report["ensemble_macro_f1"]:
            cell = row[name]
            served = cell.get("served_f1_change")
            cells.append(
                f"{name} skip {cell['skip_share']:.1%} F1 {cell['macro_f1']:.4f} "
                f"({100 * cell['f1_change']:+.2f} pt"
                + (f"; served {100 * served:+.2f}" if served is not None else "")
                + ")"
            )
        if "review_share" in row:
            cells.append(f"review {row['review_share']:.1%}")
        verdict = "" if row["passes"] else "  (refused)"
        lines.append(f"  bar {row['bar']:.2f}: {'  '.join(cells)}{verdict}")
    if "batch_spread_clean_macro_f1" in report:
        lines.append(f"  no cascade, clean, by batch size: {report['batch_spread_clean_macro_f1']}")
    return "\n".join(lines)


# --- command line: on a trained artifact -------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m training cascade",
        description="Choose the confidence cascade of a trained ensemble artifact on its validation "
        "split (clean and noisy), write it into the manifest, then re-choose the review threshold "
        "on the cascaded scores with the policy the manifest records.",
    )
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"), help="artifact directory")
    parser.add_argument(
        "--splits-dir", type=Path, default=Path("artifacts/splits"), help="has validation.csv"
    )
    parser.add_argument("--reports-dir", type=Path, default=None, help="default: <model>/../reports")
    add_policy_arguments(parser)
    return parser


def add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    d = CascadePolicy()
    parser.add_argument(
        "--cascade",
        choices=("on", "off"),
        default=None,
        help="confidence cascade of an ensemble (training.cascade; preset [cascade] enabled, default on)",
    )
    parser.add_argument(
        "--cascade-max-f1-loss",
        type=float,
        default=None,
        help=f"macro-F1 (0-1) the cascade may lose on clean and noisy validation (default {d.max_f1_loss})",
    )
    parser.add_argument(
        "--cascade-margin",
        type=float,
        default=None,
        help=f"part of that budget kept for the validation split's sampling noise (default {d.margin})",
    )
    parser.add_argument(
        "--cascade-max-review-increase",
        type=float,
        default=None,
        help="share of the clean validation tickets (0-1) the cascade may add to the review queue "
        f"(default {d.max_review_increase}; 1: not considered)",
    )


def policy_given(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--cascade*`` options that were given, as :class:`CascadePolicy` fields."""
    given: dict[str, Any] = {}
    if args.cascade is not None:
        given["enabled"] = args.cascade == "on"
    if args.cascade_max_f1_loss is not None:
        given["max_f1_loss"] = args.cascade_max_f1_loss
    if args.cascade_margin is not None:
        given["margin"] = args.cascade_margin
    if args.cascade_max_review_increase is not None:
        given["max_review_increase"] = args.cascade_max_review_increase
    return given


def run(args: argparse.Namespace) -> dict[str, Any]:
    from training.data import DataError, load_tickets
    from training.review_threshold import choose_review_threshold, store_review_threshold
    from triage_core.artifact import ArtifactError, load_manifest

    try:
        policy = CascadePolicy(**policy_given(args))
        manifest = load_manifest(args.model)
        validation = load_tickets(args.splits_dir / "validation.csv", min_examples=1)
    except (ValueError, DataError, ArtifactError) as exc:
        raise SystemExit(f"cascade: {exc}") from None
    reports = args.reports_dir or args.model.parent / "reports"
    review = None
    if manifest.review_threshold is not None:  # the policy the artifact's threshold was chosen by
        review = ReviewPolicy(
            target_accuracy=manifest.review_target_accuracy or ReviewPolicy.target_accuracy,
            max_review_share=manifest.review_max_share if manifest.review_max_share is not None else 1.0,
        )
    report = select_cascade(args.model, validation, policy, reports, review)
    before = manifest.linear.cascade_bar if manifest.linear is not None else None
    if review is not None and report["bar"] != before:  # new served scores, new threshold
        choice = choose_review_threshold(args.model, validation, review)
        store_review_threshold(args.model, choice)
        report["review_threshold"] = {k: v for k, v in choice.items() if k != "validation_curve"}
        (reports / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(describe(report) if "candidates" in report else f"cascade: {report.get('reason')}")
    return report


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
