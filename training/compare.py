"""``python -m training.compare`` (``make compare-models``): score one golden file with the running
and the candidate artifact before anyone deploys the candidate.

Both artifacts are scored by :class:`triage_core.inference.ArtifactClassifier`, the code the
server runs, on the tickets :mod:`triage_core.reader` reads from the file (the same reader as the
dispatcher and the server: CSV, JSON Lines or JSON, any field map). The report:

* **agreement**: the share of tickets both artifacts give the same top category;
* **per category**: how many tickets each predicts for it, and which flips (running -> candidate)
  are most frequent;
* **review share**: the share of tickets each artifact sends to review, each with its own review
  threshold (the one its manifest carries, as the server uses it; ``--review-threshold`` stands for
  a deployment's ``triage:reviewThreshold`` override and then applies to both);
* with labels in the file (``--label-column``): accuracy, macro F1 and per-category F1 of both.

The last line printed is one JSON object of all of it. The exit status is 1 when a gate given on
the command line is crossed (``--min-agreement``, ``--max-review-share``, ``--max-review-increase``,
``--max-f1-drop``), 2 when the input cannot be read, 0 otherwise: a release script can gate on it.

Records the reader rejects (no text, a broken row) are not scored by either artifact: their count
and reasons are in the report, so no ticket of the golden file goes unaccounted for.
"""

from __future__ import annotations

import argparse
import json
import sys
import tarfile
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from triage_core.artifact import ArtifactError, resolve_review_threshold
from triage_core.inference import ArtifactClassifier
from triage_core.reader import read_tickets
from triage_core.records import FieldMap, RecordFormatError

DEFAULT_GOLDEN = "artifacts/splits/test.csv"
DEFAULT_RUNNING = "artifacts/model"
DEFAULT_LABEL_COLUMN = "category"  # training.data's default (not imported: it pulls in the trainer)
PASSED, GATE_FAILED, INPUT_ERROR = 0, 1, 2


class CompareError(ValueError):
    """The golden file or an artifact cannot be read."""


@dataclass(frozen=True)
class Golden:
    """The readable tickets of the golden file, their labels (None: unlabeled) and the rejected."""

    indices: list[int]
    texts: list[str]
    labels: list[str | None]
    rejected: list[dict[str, Any]]

    @property
    def labeled(self) -> bool:
        return any(label is not None for label in self.labels)


def read_golden(path: Path, fields: FieldMap, label_column: str | None) -> Golden:
    """Tickets through the shared reader; labels by a second pass that reads ``label_column`` as
    the text field (a file without that column has no labels)."""
    data = path.read_bytes()
    try:
        records = list(read_tickets([data], key=path.name, fields=fields))
    except RecordFormatError as exc:
        raise CompareError(f"{path}: {exc}") from exc
    labels_by_index: dict[int, str] = {}
    if label_column:
        try:
            label_fields = FieldMap(fields.id, (label_column,))
            for record in read_tickets([data], key=path.name, fields=label_fields):
                if record.ok and record.text and record.text.strip():
                    labels_by_index[record.index] = record.text.strip()
        except RecordFormatError:  # no such column: an unlabeled file
            labels_by_index = {}
    good = [r for r in records if r.ok]
    return Golden(
        indices=[r.index for r in good],
        texts=[r.text for r in good],
        labels=[labels_by_index.get(r.index) for r in good],
        rejected=[{"index": r.index, "id": r.id, "error": r.error} for r in records if not r.ok],
    )


def open_artifact(location: str, workdir: Path, s3_client: Any = None) -> Path:
    """An artifact directory from a directory, a ``model.tar.gz`` (what the endpoint's
    ``ModelDataUrl`` points at) or an ``s3://`` URI of one."""
    if location.startswith("s3://"):
        bucket, _, key = location[len("s3://") :].partition("/")
        if not bucket or not key:
            raise CompareError(f"{location}: an S3 URI must name an object, s3://<bucket>/<key>")
        if s3_client is None:
            import boto3  # only for an s3:// artifact

            s3_client = boto3.client("s3")
        archive = workdir / f"{len(list(workdir.iterdir()))}-model.tar.gz"
        s3_client.download_file(bucket, key, str(archive))
        return open_artifact(str(archive), workdir)
    path = Path(location)
    if path.is_dir():
        return path
    if path.is_file() and tarfile.is_tarfile(path):
        target = workdir / f"{len(list(workdir.iterdir()))}-{path.name.split('.')[0]}"
        with tarfile.open(path) as archive:
            archive.extractall(target, filter="data")  # refuses links and paths out of the target
        return target
    raise CompareError(f"{location}: not an artifact directory, a model.tar.gz or an s3:// URI of one")


@dataclass(frozen=True)
class Scored:
    """One artifact's top category and top score per ticket, and the threshold it reviews below."""

    labels: list[str]
    top_scores: np.ndarray
    threshold: float
    threshold_from: str
    model_labels: list[str]

    @property
    def review(self) -> np.ndarray:
        return self.top_scores < self.threshold


def score(directory: Path, texts: list[str], review_threshold: float | None, batch_size: int = 32) -> Scored:
    classifier = ArtifactClassifier(directory)
    scores = classifier.predict_scores(texts, batch_size=batch_size)
    best = scores.argmax(axis=1) if len(texts) else np.zeros(0, dtype=int)
    manifest = classifier.manifest
    threshold, source = resolve_review_threshold(
        review_threshold, manifest.review_threshold, "--review-threshold"
    )
    return Scored(
        labels=[classifier.labels[i] for i in best],
        top_scores=scores.max(axis=1) if len(texts) else np.zeros(0),
        threshold=threshold,
        threshold_from=source,
        model_labels=list(classifier.labels),
    )


def f1_by_label(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """F1 of each label (scikit-learn's; 0 when it has neither support nor predictions right)."""
    from sklearn.metrics import f1_score

    if not labels:
        return {}
    scores = f1_score(truth, predicted, labels=list(labels), average=None, zero_division=0)
    return {label: float(value) for label, value in zip(labels, scores, strict=True)}


def compare(golden: Golden, running: Scored, candidate: Scored, top: int = 10) -> dict[str, Any]:
    n = len(golden.texts)
    same = [r == c for r, c in zip(running.labels, candidate.labels, strict=True)]
    flips = Counter((r, c) for r, c in zip(running.labels, candidate.labels, strict=True) if r != c)
    running_counts, candidate_counts = Counter(running.labels), Counter(candidate.labels)
    categories = sorted(set(running_counts) | set(candidate_counts) | {x for x in golden.labels if x})
    report: dict[str, Any] = {
        "tickets": n + len(golden.rejected),
        "scored": n,
        "rejected": len(golden.rejected),
        "rejected_records": golden.rejected[:20],
        "agreement": sum(same) / n if n else None,
        "changed": n - sum(same),
        "review_share": {
            "running": float(running.review.mean()) if n else None,
            "candidate": float(candidate.review.mean()) if n else None,
        },
        "review_threshold": {
            "running": {"value": running.threshold, "from": running.threshold_from},
            "candidate": {"value": candidate.threshold, "from": candidate.threshold_from},
        },
        "flips": [{"from": r, "to": c, "tickets": k} for (r, c), k in flips.most_common(top)],
        "labels_only_in": {
            "running": sorted(set(running.model_labels) - set(candidate.model_labels)),
            "candidate": sorted(set(candidate.model_labels) - set(running.model_labels)),
        },
    }
    per_category = []
    labeled = [i for i, label in enumerate(golden.labels) if label is not None]
    if labeled:
        truth = [golden.labels[i] for i in labeled]
        scores = {}
        for name, scored in (("running", running), ("candidate", candidate)):
            predicted = [scored.labels[i] for i in labeled]
            f1 = f1_by_label(truth, predicted, categories)
            present = [label for label in categories if label in set(truth)]
            scores[name] = {
                "accuracy": sum(t == p for t, p in zip(truth, predicted, strict=True)) / len(truth),
                "macro_f1": sum(f1[label] for label in present) / len(present),
                "f1": f1,
            }
        report["labeled"] = len(labeled)
        report["accuracy"] = {name: s["accuracy"] for name, s in scores.items()}
        report["macro_f1"] = {name: s["macro_f1"] for name, s in scores.items()}
        support = Counter(truth)
    for label in categories:
        row: dict[str, Any] = {
            "category": label,
            "running": running_counts.get(label, 0),
            "candidate": candidate_counts.get(label, 0),
        }
        row["change"] = row["candidate"] - row["running"]
        if labeled:
            row["support"] = support.get(label, 0)
            row["f1_running"] = scores["running"]["f1"][label]
            row["f1_candidate"] = scores["candidate"]["f1"][label]
        per_category.append(row)
    per_category.sort(key=lambda r: (-abs(r["change"]), r["category"]))
    report["per_category"] = per_category
    return report


def gates(report: dict[str, Any], args: argparse.Namespace) -> list[str]:
    """The gates the report crosses, each as a sentence (empty: passed)."""
    failed = []
    agreement, review = report["agreement"], report["review_share"]
    if args.min_agreement is not None and (agreement is None or agreement < args.min_agreement):
        failed.append(f"agreement {agreement} is below --min-agreement {args.min_agreement}")
    if args.max_review_share is not None and (review["candidate"] or 0) > args.max_review_share:
        failed.append(f"candidate review share {review['candidate']:.4f} exceeds {args.max_review_share}")
    if args.max_review_increase is not None and review["candidate"] is not None:
        increase = review["candidate"] - review["running"]
        if increase > args.max_review_increase:
            failed.append(f"review share rises by {increase:.4f}, above {args.max_review_increase}")
    if args.max_f1_drop is not None and "macro_f1" in report:
        drop = report["macro_f1"]["running"] - report["macro_f1"]["candidate"]
        if drop > args.max_f1_drop:
            failed.append(f"macro F1 drops by {drop:.4f}, above --max-f1-drop {args.max_f1_drop}")
    return failed


def render(report: dict[str, Any], rows: int) -> str:
    """The human part: a summary, the per-category table (largest changes first), the top flips."""
    lines = [
        f"golden tickets: {report['tickets']} ({report['scored']} scored, {report['rejected']} rejected by "
        "the reader)",
        f"agreement: {report['agreement']:.4f} ({report['changed']} tickets change category)"
        if report["agreement"] is not None
        else "agreement: n/a (nothing scored)",
    ]
    for name in ("running", "candidate"):
        share, threshold = report["review_share"][name], report["review_threshold"][name]
        shown = f"{share:.4f}" if share is not None else "n/a"
        lines.append(f"review share {name}: {shown} (threshold {threshold['value']}, {threshold['from']})")
    if "macro_f1" in report:
        lines.append(
            f"labeled tickets: {report['labeled']}; accuracy running {report['accuracy']['running']:.4f} "
            f"candidate {report['accuracy']['candidate']:.4f}; macro F1 running "
            f"{report['macro_f1']['running']:.4f} candidate {report['macro_f1']['candidate']:.4f}"
        )
    labeled = "macro_f1" in report
    header = f"{'category':40} {'running':>8} {'candidate':>9} {'change':>7}"
    header += f" {'support':>8} {'F1 run':>7} {'F1 cand':>7}" if labeled else ""
    lines += ["", header]
    for row in report["per_category"][:rows]:
        line = f"{row['category'][:40]:40} {row['running']:8d} {row['candidate']:9d} {row['change']:+7d}"
        if labeled:
            line += f" {row['support']:8d} {row['f1_running']:7.3f} {row['f1_candidate']:7.3f}"
        lines.append(line)
    if len(report["per_category"]) > rows:
        lines.append(f"... {len(report['per_category']) - rows} more categories in the JSON line")
    if report["flips"]:
        lines += ["", "most frequent changes (running -> candidate):"]
        lines += [f"  {f['tickets']:5d}  {f['from']} -> {f['to']}" for f in report["flips"]]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--golden", default=DEFAULT_GOLDEN, help=f"ticket file (default {DEFAULT_GOLDEN})")
    parser.add_argument("--candidate", required=True, help="artifact dir, model.tar.gz or s3:// URI")
    parser.add_argument(
        "--running", default=DEFAULT_RUNNING, help=f"the deployed artifact (default {DEFAULT_RUNNING})"
    )
    parser.add_argument("--id-column", default="id")
    parser.add_argument("--text-column", default="text", help="comma-separated fields are joined")
    parser.add_argument(
        "--label-column", default=DEFAULT_LABEL_COLUMN, help="'' for none; a file without it is unlabeled"
    )
    parser.add_argument("--review-threshold", type=float, help="override both artifacts' thresholds")
    parser.add_argument("--min-agreement", type=float, help="gate: fail below this agreement")
    parser.add_argument("--max-review-share", type=float, help="gate: fail above this candidate share")
    parser.add_argument("--max-review-increase", type=float, help="gate: fail if the share rises more")
    parser.add_argument("--max-f1-drop", type=float, help="gate (labeled files): fail if macro F1 drops more")
    parser.add_argument("--rows", type=int, default=25, help="table rows printed (the JSON has all)")
    parser.add_argument("--top-flips", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        fields = FieldMap.parse(args.id_column, args.text_column)
        golden = read_golden(Path(args.golden), fields, args.label_column or None)
        with tempfile.TemporaryDirectory(prefix="compare-models-") as tmp:
            workdir = Path(tmp)
            running = score(
                open_artifact(args.running, workdir), golden.texts, args.review_threshold, args.batch_size
            )
            candidate = score(
                open_artifact(args.candidate, workdir), golden.texts, args.review_threshold, args.batch_size
            )
    except (CompareError, ArtifactError, OSError, ValueError) as exc:
        print(f"compare-models: {exc}", file=sys.stderr)
        return INPUT_ERROR
    report = compare(golden, running, candidate, top=args.top_flips)
    report["golden"], report["running"], report["candidate"] = args.golden, args.running, args.candidate
    failed = gates(report, args)
    report["gates_failed"] = failed
    print(render(report, args.rows))
    for sentence in failed:
        print(f"GATE FAILED: {sentence}")
    print(json.dumps(report, sort_keys=True))
    return GATE_FAILED if failed else PASSED


if __name__ == "__main__":
    sys.exit(main())
