"""Corrections under chaos (issue #24): reviewers' files dropped after a seed's results, their S3
events duplicated and held back like any other (:mod:`chaos.delivery`), and an independent check.

The workload (:func:`plan_corrections`): from the results the seed's uploads got, a file ``a``
(JSON Lines) with corrections that agree with the model, corrections that do not, a label the
model does not have and an id the results do not hold, uploaded **twice** (two versions, the same
lines); then, more than a second later (S3's ``LastModified`` has whole seconds), a file ``b``
(CSV) that gives some of the same tickets another label. Its events may overtake ``a``'s.

The checker (:func:`check_corrections`) knows only what the harness dropped, when S3 stored
each version (``LastModified``), the labels of the model and the results files. It reads the
documented outputs: each version's ``report.json`` and ``rejections.jsonl`` in the output bucket,
and the recorded corrections as ``make export-corrections`` writes them, with the accuracy
counters. Invariants:

1. every line of every version is accounted for once in its report (accepted + rejected =
   lines), the bad ones rejected with a reason, the good ones accepted;
2. each corrected ticket is recorded exactly once, with the label of its latest line by the
   documented rule (later ``LastModified``, then key, then line), whatever order the events came
   in and however often;
3. the recorded prediction is the model's label from the results, and the accuracy counters are
   the count of the recorded corrections (overall and per category).
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.checker import Violation

UNKNOWN_LABEL = "not_a_category_of_this_model"


@dataclass
class CorrectionFile:
    key: str
    lines: list[dict[str, str]]  # id, source, label, in file order
    bad: set[int]  # 1-based lines that must be rejected
    versions: list[tuple[str, str]] = field(default_factory=list)  # (version id, LastModified ISO)

    @property
    def body(self) -> bytes:
        if self.key.endswith(".csv"):
            out = io.StringIO()
            writer = csv.DictWriter(out, fieldnames=["id", "source", "label"], lineterminator="\r\n")
            writer.writeheader()
            writer.writerows(self.lines)
            return out.getvalue().encode("utf-8")
        return b"".join(json.dumps(line).encode() + b"\n" for line in self.lines)


def plan_corrections(
    seed: int, results: dict[str, dict[str, str]], labels: list[str]
) -> tuple[CorrectionFile, CorrectionFile]:
    """Files ``a`` and ``b`` for ``results`` (source key -> ticket id -> the model's label)."""
    rng = random.Random(f"corrections:{seed}")
    tickets = sorted((source, tid, label) for source, rows in results.items() for tid, label in rows.items())
    chosen = rng.sample(tickets, min(8, len(tickets)))
    a_lines, a_bad = [], set()
    for source, tid, predicted in chosen:
        label = predicted if rng.random() < 0.5 else rng.choice([x for x in labels if x != predicted])
        a_lines.append({"id": tid, "source": source, "label": label})
    if chosen:
        source = chosen[0][0]
        a_lines.append({"id": chosen[0][1], "source": source, "label": UNKNOWN_LABEL})
        a_bad.add(len(a_lines))
        a_lines.append({"id": "no-such-ticket", "source": source, "label": labels[0]})
        a_bad.add(len(a_lines))
    b_lines = []
    for source, tid, _ in chosen[: len(chosen) // 2]:
        b_lines.append({"id": tid, "source": source, "label": rng.choice(labels)})
    return (
        CorrectionFile(f"corrections/s{seed}/a.jsonl", a_lines, a_bad),
        CorrectionFile(f"corrections/s{seed}/b.csv", b_lines, set()),
    )


def expected_labels(files: list[CorrectionFile]) -> dict[tuple[str, str], str]:
    """(source, id) -> the label of its latest good line: later LastModified, then key, then line."""
    best: dict[tuple[str, str], tuple[tuple[str, str, int], str]] = {}
    for f in files:
        for _, modified in f.versions:
            for n, line in enumerate(f.lines, start=1):
                if n in f.bad:
                    continue
                order = (modified, f.key, n)
                ticket = (line["source"], line["id"])
                if ticket not in best or best[ticket][0] < order:
                    best[ticket] = (order, line["label"])
    return {ticket: label for ticket, (_, label) in best.items()}


def check_corrections(
    files: list[CorrectionFile],
    predicted: dict[str, dict[str, str]],
    recorded: list[dict[str, Any]],
    accuracy: dict[str, dict[str, int]],
    read: Callable[[str], bytes],
    output_bucket: str,
) -> list[Violation]:
    found: list[Violation] = []

    def bad(invariant: str, detail: str) -> None:
        found.append(Violation("corrections", invariant, detail))

    for f in files:
        for version, _ in f.versions:
            uri = f"s3://{output_bucket}/{f.key}/{version}/report.json"
            try:
                report = json.loads(read(uri))
                rejected = [json.loads(x) for x in read(report["rejections"]).splitlines() if x.strip()]
            except Exception as exc:  # a missing report is the violation, whatever the read raised
                bad("corrections_report", f"{uri}: {exc}")
                continue
            lines = [r.get("line") for r in rejected]
            if report.get("lines") != len(f.lines) or sum(report.get("outcomes", {}).values()) != len(
                f.lines
            ):
                bad("corrections_once", f"{uri}: {report.get('outcomes')} for {len(f.lines)} lines")
            if sorted(lines) != sorted(f.bad) or len(set(lines)) != len(lines):
                bad("corrections_once", f"{uri}: rejected lines {sorted(lines)}, expected {sorted(f.bad)}")
            if any(not str(r.get("error") or "").strip() for r in rejected):
                bad("reasons", f"{uri}: a rejection without a reason")
    want = expected_labels(files)
    got = Counter((r.get("source"), r.get("id")) for r in recorded)
    twice = [t for t, n in got.items() if n > 1]
    if twice or set(got) != set(want):
        bad("corrections_once", f"recorded {sorted(got)} (twice: {twice}), expected {sorted(want)}")
    counts: dict[str, Counter[str]] = {"ALL": Counter()}
    for row in recorded:
        ticket = (row.get("source"), row.get("id"))
        model = predicted.get(str(row.get("source")), {}).get(str(row.get("id")))
        if ticket in want and row.get("label") != want[ticket]:
            bad(
                "corrections_latest",
                f"{ticket}: recorded {row.get('label')!r}, the latest line says {want[ticket]!r}",
            )
        if row.get("predicted") != model:
            bad(
                "corrections_latest",
                f"{ticket}: predicted {row.get('predicted')!r}, the results say {model!r}",
            )
        right = int(row.get("label") == model)
        for name in ("ALL", str(row.get("label"))):
            counts.setdefault(name, Counter()).update(reviewed=1, correct=right)
    for name, c in counts.items():
        have = accuracy.get(name, {})
        if (have.get("reviewed", 0), have.get("correct", 0)) != (c["reviewed"], c["correct"]):
            bad("corrections_accuracy", f"{name}: counters {have}, the recorded corrections give {dict(c)}")
    return found
