"""Reviewers' corrections folded into the training split (``make train CORRECTIONS=...``).

Where they come from: the corrections Lambda records one correction per ticket in the jobs table
(``lambda/ticket_pipeline/corrections.py``) with the ticket's text (the text the reviewer gave,
else read from the ticket file it came in); ``make export-corrections`` writes them as JSON Lines
(``id``, ``source``, ``label``, ``predicted``, ``text``, ``order``, ...) to a local file or an S3
location. ``--corrections`` takes that file, a folder of such files (``*.jsonl``, ``*.csv``) or
an ``s3://bucket/key`` / ``s3://bucket/prefix/``. A file of your own needs ``text`` and
``label`` per row.

What folding does (:func:`fold_corrections`), on the *model input* (the text as preprocessing
leaves it, the key :func:`training.data.dedupe_model_inputs` de-duplicates on):

* corrections of the same input are one: same label, one row; different labels, the latest
  (``order``, else file order) wins and the conflict is counted;
* an input that is in the **validation or test split is not used** (counted as
  ``held_out``): the corrections never touch the splits the model is chosen and scored on, so
  validation scores before and after are comparable;
* a training row with that input takes the correction's label (``relabelled``; ``confirmed``
  when it already had it); rows sharing the input become one;
* any other correction is a new training row (``added``);
* a row without text or with a label the training data does not have is skipped, counted by
  reason. Nothing is dropped silently: every row read is in exactly one count.

The report (``<reports>/corrections_report.json``) has these counts, per category too, and the
validation macro-F1 of the run (and of the previous run on the same splits, when its
``train_summary.json`` is there) once training has run.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training.data import Splits, TicketDataset

REPORT_FILE = "corrections_report.json"
COUNTS = ("relabelled", "confirmed", "added", "held_out", "merged", "conflicts", "train_rows_merged")


@dataclass(frozen=True)
class CorrectionRow:
    text: str | None
    label: str | None
    order: str  # later wins: the recorded order, else the position in the files read
    origin: str  # file and line, for the report's examples


def _rows_of(name: str, data: bytes) -> Iterable[dict[str, Any]]:
    content = data.decode("utf-8-sig")
    if name.endswith(".csv"):
        yield from csv.DictReader(io.StringIO(content))
        return
    for line in content.splitlines():
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = {}
            yield row if isinstance(row, dict) else {}


def _files(location: str) -> list[tuple[str, bytes]]:
    if location.startswith("s3://"):
        import boto3

        bucket, _, key = location[len("s3://") :].partition("/")
        s3 = boto3.client("s3")
        keys = [key]
        if not key or key.endswith("/"):
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key)
            keys = sorted(
                o["Key"]
                for p in pages
                for o in p.get("Contents", [])
                if o["Key"].endswith((".jsonl", ".csv"))
            )
        return [(f"s3://{bucket}/{k}", s3.get_object(Bucket=bucket, Key=k)["Body"].read()) for k in keys]
    path = Path(location)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".csv"))
        if not found:
            raise SystemExit(f"no .jsonl or .csv corrections in {path}")
        return [(str(p), p.read_bytes()) for p in found]
    if not path.is_file():
        raise SystemExit(f"corrections not found: {location}")
    return [(str(path), path.read_bytes())]


def read_corrections(location: str) -> list[CorrectionRow]:
    """Every row of the corrections at ``location`` (a file, a folder, an S3 key or prefix)."""
    rows = []
    for name, data in _files(location):
        for n, row in enumerate(_rows_of(name, data), start=1):
            text, label = row.get("text"), row.get("label")
            rows.append(
                CorrectionRow(
                    text=text if isinstance(text, str) and text.strip() else None,
                    label=label.strip() if isinstance(label, str) and label.strip() else None,
                    order=str(row.get("order") or f"~{len(rows):09d}"),
                    origin=f"{name}:{n}",
                )
            )
    return rows


def fold_corrections(
    splits: Splits, rows: list[CorrectionRow], normalize: Callable[[str], str]
) -> tuple[Splits, dict[str, Any]]:
    """``splits`` with the corrections folded into the training split (validation and test are
    the same objects), and the report of what changed."""
    labels = set(splits.label_names)
    counts: Counter[str] = Counter({k: 0 for k in COUNTS})
    skipped: Counter[str] = Counter()
    per_category: dict[str, Counter[str]] = defaultdict(Counter)
    held_out_inputs = {normalize(t) for part in (splits.validation, splits.test) for t in part.texts}
    latest: dict[str, CorrectionRow] = {}
    for row in rows:
        if row.text is None:
            skipped["no text"] += 1
            continue
        if row.label not in labels:
            skipped[f"label not in the training data: {row.label!r}"] += 1
            continue
        key = normalize(row.text)
        if key in held_out_inputs:
            counts["held_out"] += 1
            continue
        previous = latest.get(key)
        if previous is not None:
            counts["merged"] += 1  # one row per model input
            if previous.label != row.label:
                counts["conflicts"] += 1
            if previous.order > row.order:
                continue
        latest[key] = row
    texts: list[str] = []
    out_labels: list[str] = []
    kept: set[str] = set()
    for text, label in zip(splits.train.texts, splits.train.labels, strict=True):
        key = normalize(text)
        correction = latest.get(key)
        if correction is None:
            texts.append(text)
            out_labels.append(label)
            continue
        if key in kept:  # another training row with this input: the corrected one stands for it
            counts["train_rows_merged"] += 1
            continue
        kept.add(key)
        if label == correction.label:
            counts["confirmed"] += 1
        else:
            counts["relabelled"] += 1
            per_category[label]["relabelled_from"] += 1
            per_category[str(correction.label)]["relabelled_to"] += 1
        texts.append(text)
        out_labels.append(str(correction.label))
    for key, correction in latest.items():
        if key not in kept:
            counts["added"] += 1
            per_category[str(correction.label)]["added"] += 1
            texts.append(str(correction.text))
            out_labels.append(str(correction.label))
    train = TicketDataset(
        texts,
        out_labels,
        splits.train.text_column,
        splits.train.label_column,
        {**splits.train.report, "corrections": dict(counts)},
    )
    report = {
        "rows_read": len(rows),
        **dict(counts),
        "skipped": dict(skipped),
        "train_rows_before": len(splits.train),
        "train_rows_after": len(train),
        "validation_rows": len(splits.validation),
        "test_rows": len(splits.test),
        "per_category": {k: dict(v) for k, v in sorted(per_category.items())},
        "support_after": train.support(),
    }
    return Splits(train, splits.validation, splits.test, splits.info), report


def accounted(report: dict[str, Any]) -> int:
    """How many rows read the report accounts for, each exactly once: used (relabelled, confirmed,
    added), held out, merged into another correction of the same input, or skipped. A report is
    whole when this equals ``rows_read``."""
    used = report["relabelled"] + report["confirmed"] + report["added"]
    return used + report["held_out"] + report["merged"] + sum(report["skipped"].values())


def previous_validation_score(reports_dir: Path) -> float | None:
    """The best validation macro-F1 of the previous run in ``reports_dir`` (its
    ``train_summary.json``, read before this run replaces it): on the same validation split, as
    the splits are re-used for the same source rows and seed and corrections never enter them."""
    previous = reports_dir / "train_summary.json"
    try:
        value = json.loads(previous.read_text("utf-8")).get("best_val_macro_f1")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None
