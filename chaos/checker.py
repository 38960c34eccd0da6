"""The independent checker: what went in against what came out, and nothing in between.

Inputs: the uploads the harness made (source URI, version id, when) and, for each, the keys the
documented keying rules give its records (:attr:`chaos.workload.TicketFile.expected`). Outputs:
the messages read from the results topic (through a queue subscribed to it) with their arrival
times, and the ``results.jsonl`` / ``failures.jsonl`` objects those messages point at in the
output bucket. It never reads the jobs table, the chunks or the pipeline's own code.

Invariants, per upload:

1. exactly one results message, ``status`` ``complete`` or ``partial``;
2. every expected ticket key exactly once across its results and failures, no other key; a
   broken or duplicate record among the failures, never classified;
3. every failure carries a non-empty ``error``; every result a label and a score in [0, 1];
   ``complete`` means no failure and no error; the message's counts match the files; a file that
   fails as a whole is ``partial`` with an ``error`` and no tickets;
4. no job left open past its deadline: the message arrived by the latest time the deadline
   rules allow (:func:`latest_results_time`), judged by the wall clock;
5. integrity (issue #21): each result carries its own ticket's label. The checker scores every
   classified ticket's text on its own (:class:`ReferenceScorer`: ONNX Runtime on the served
   artifact, in this process, nothing of the pipeline in between) and requires the result's
   label to be that label, or a near-tie of it, and its score that label's score, both within
   :data:`NEAR_TIE` (docs/training.md: a ticket is a near-tie when the best label leads by less
   than 0.05; batching and int8 dynamic quantization move scores by far less). A result attached
   to another ticket's key would pass a presence check; it fails this one unless the two tickets
   score alike.
6. review (issue #24): a job with classified tickets has ``<review prefix><job>/review.jsonl``
   holding each flagged ticket of its results exactly once (``needs_review``, or a top score
   under the out-of-scope threshold, with the matching reason) and no other ticket.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NEAR_TIE = 0.05  # docs/training.md, "export gate": the margin under which a ticket is a near-tie
Scores = Callable[[Sequence[str]], list[dict[str, float]]]  # texts -> label -> score, per text


class ReferenceScorer:
    """The served model's scores for texts, computed here: ONNX Runtime on the artifact the
    inference server serves (``triage_core.inference``, which the server imports too; nothing of
    the pipeline: no reader, no chunk, no endpoint)."""

    def __init__(self, model_dir: Path):
        from triage_core.inference import ArtifactClassifier

        self._classifier = ArtifactClassifier(model_dir, intra_op_threads=1)

    def __call__(self, texts: Sequence[str]) -> list[dict[str, float]]:
        scores = self._classifier.predict_scores(list(texts))
        labels = self._classifier.labels
        return [{label: float(row[i]) for i, label in enumerate(labels)} for row in scores]


@dataclass(frozen=True)
class Expected:
    """One upload, as the harness made it."""

    label: str
    source: str  # s3://bucket/key
    version_id: str | None
    keys: dict[str, bool]  # ticket key -> must be a failure
    whole_file_error: bool
    uploaded_at: float  # wall clock
    latest_at: float  # its results message must have arrived by then (wall clock)
    texts: dict[str, str] = field(default_factory=dict)  # ticket key -> text (classified ones)


@dataclass(frozen=True)
class ReviewRule:
    """Where the review files are and what makes a ticket out of scope (the functions' settings)."""

    prefix: str  # "review/"
    out_of_scope_below: float


@dataclass(frozen=True)
class Arrived:
    arrived_at: float  # wall clock, when the harness read it from the queue
    message: dict[str, Any]


@dataclass(frozen=True)
class Violation:
    upload: str
    invariant: str  # one_message | exactly_once | reasons | deadline | integrity
    detail: str

    def __str__(self) -> str:
        return f"{self.upload}: [{self.invariant}] {self.detail}"


@dataclass
class CheckReport:
    violations: list[Violation] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)  # uploads with no results message by their deadline
    tickets: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def latest_results_time(
    uploaded_at: float,
    *,
    deadline_seconds: float,
    lease_seconds: float,
    speed: float,
    sweep_interval: float,
    dispatch_allowance: float,
) -> float:
    """When an upload's results message must have arrived at the latest (wall clock): its job's
    deadline is at most the deadline after its last invocation, which comes at most
    ``dispatch_allowance`` after the upload (event delays, Lambda's retries, a redrive); a finalizer
    that crashed holds the job for at most one lease; the sweeper looks every interval (twice: one
    sweep may be busy). Deadline and lease are in the handlers' virtual seconds."""
    return uploaded_at + dispatch_allowance + (deadline_seconds + lease_seconds) / speed + 2 * sweep_interval


def _jsonl(data: bytes) -> list[Any]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]


def check(
    expected: list[Expected],
    arrived: list[Arrived],
    read: Callable[[str], bytes],
    output_bucket: str,
    score: Scores | None = None,
    review: ReviewRule | None = None,
) -> CheckReport:
    """Check every invariant; ``read(uri)`` returns an output object's bytes; ``score`` (a
    :class:`ReferenceScorer`) the served model's scores of texts (None: no integrity check)."""
    report = CheckReport()
    by_upload: dict[tuple[str, str | None], list[Arrived]] = defaultdict(list)
    for item in arrived:
        by_upload[(item.message.get("source"), item.message.get("version_id"))].append(item)
    known = {(e.source, e.version_id) for e in expected}
    for (source, version), items in by_upload.items():
        if (source, version) not in known:
            report.violations.append(
                Violation(
                    str(source), "one_message", f"{len(items)} results message(s) for no upload ({version})"
                )
            )
    for exp in expected:
        report.tickets += len(exp.keys)
        items = by_upload.get((exp.source, exp.version_id), [])
        if not items:
            report.stuck.append(exp.label)
            report.violations.append(Violation(exp.label, "deadline", "no results message"))
            continue
        if len(items) > 1:
            statuses = [i.message.get("status") for i in items]
            report.violations.append(
                Violation(exp.label, "one_message", f"{len(items)} results messages: {statuses}")
            )
        first = min(items, key=lambda i: i.arrived_at)
        if first.arrived_at > exp.latest_at:
            late = first.arrived_at - exp.latest_at
            report.violations.append(
                Violation(
                    exp.label,
                    "deadline",
                    f"results message {late:.1f} s after the latest time its deadline allows",
                )
            )
        for item in items:
            report.violations.extend(_check_message(exp, item.message, read, output_bucket, score, review))
            report.statuses[str(item.message.get("status"))] += 1
    return report


def _check_message(
    exp: Expected,
    message: dict[str, Any],
    read: Callable[[str], bytes],
    output_bucket: str,
    scorer: Scores | None = None,
    review: ReviewRule | None = None,
) -> list[Violation]:
    found: list[Violation] = []

    def bad(invariant: str, detail: str) -> None:
        found.append(Violation(exp.label, invariant, detail))

    status = message.get("status")
    if status not in ("complete", "partial"):
        bad("one_message", f"status {status!r}")
    rows: dict[str, list[dict[str, Any]]] = {}
    for name in ("results", "failures"):
        uri = str(message.get(name, ""))
        if not uri.startswith(f"s3://{output_bucket}/"):
            bad("exactly_once", f"{name} {uri!r} is not in the output bucket")
            return found
        try:
            rows[name] = _jsonl(read(uri))
        except Exception as exc:  # a missing or unreadable output is a violation, not a crash
            bad("exactly_once", f"cannot read {name} {uri}: {exc}")
            return found
    results, failures = rows["results"], rows["failures"]
    ids = [r.get("id") for r in results] + [f.get("id") for f in failures]
    seen: set[Any] = set()
    twice = sorted({str(i) for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    if twice:
        bad("exactly_once", f"keys more than once: {twice[:5]}")
    missing = sorted(set(exp.keys) - set(ids))
    extra = sorted(str(i) for i in set(ids) - set(exp.keys))
    if missing:
        bad("exactly_once", f"{len(missing)} keys in neither results nor failures: {missing[:5]}")
    if extra:
        bad("exactly_once", f"{len(extra)} keys that no record should have: {extra[:5]}")
    classified = sorted(r.get("id") for r in results if exp.keys.get(r.get("id")))
    if classified:
        bad("exactly_once", f"broken or duplicate records classified: {classified[:5]}")
    no_reason = [f.get("id") for f in failures if not str(f.get("error") or "").strip()]
    if no_reason:
        bad("reasons", f"{len(no_reason)} failures without a reason: {no_reason[:5]}")
    for row in results:
        score = row.get("score")
        if not (isinstance(row.get("label"), str) and row["label"]) or not (
            isinstance(score, (int, float)) and 0 <= score <= 1
        ):
            bad("reasons", f"result without a label and score: {row}")
            break
    if status == "complete" and (failures or message.get("error")):
        bad("reasons", f"complete with {len(failures)} failures and error {message.get('error')!r}")
    if (message.get("tickets"), message.get("failed"), message.get("succeeded")) != (
        len(ids),
        len(failures),
        len(results),
    ):
        bad(
            "exactly_once",
            f"message counts tickets={message.get('tickets')} failed={message.get('failed')} "
            f"succeeded={message.get('succeeded')} but the files hold {len(results)} results, "
            f"{len(failures)} failures",
        )
    if exp.whole_file_error and not (status == "partial" and message.get("error") and not ids):
        bad("reasons", f"a file that fails as a whole came out {status} with {len(ids)} tickets")
    if scorer is not None:
        found.extend(Violation(exp.label, "integrity", d) for d in check_labels(exp.texts, results, scorer))
    if review is not None and results:
        uri = f"s3://{output_bucket}/{review.prefix}{message.get('job_id')}/review.jsonl"
        try:
            queued = _jsonl(read(uri))
        except Exception as exc:  # a missing review file is a violation, not a crash
            bad("review", f"cannot read {uri}: {exc}")
        else:
            found.extend(Violation(exp.label, "review", d) for d in check_review(results, queued, review))
    return found


def check_review(results: list[dict[str, Any]], queued: list[dict[str, Any]], rule: ReviewRule) -> list[str]:
    """The review file against the results: every flagged ticket once, with its reason; no other."""
    expected = {
        r["id"]: "out_of_scope" if r.get("score", 1) < rule.out_of_scope_below else "low_confidence"
        for r in results
        if r.get("needs_review") or r.get("score", 1) < rule.out_of_scope_below
    }
    wrong = []
    ids = [row.get("id") for row in queued]
    seen: set[Any] = set()
    twice = sorted({str(i) for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
    if twice:
        wrong.append(f"tickets queued more than once: {twice[:5]}")
    missing = sorted(set(expected) - set(ids))
    if missing:
        wrong.append(f"{len(missing)} flagged tickets not in the review file: {missing[:5]}")
    extra = sorted(str(i) for i in set(ids) - set(expected))
    if extra:
        wrong.append(f"{len(extra)} tickets in the review file that are not flagged: {extra[:5]}")
    reasons = sorted(
        str(row.get("id"))
        for row in queued
        if row.get("id") in expected and row.get("reason") != expected[row["id"]]
    )
    if reasons:
        wrong.append(f"{len(reasons)} queued with the wrong reason: {reasons[:5]}")
    return wrong


def check_labels(texts: dict[str, str], results: list[dict[str, Any]], score: Scores) -> list[str]:
    """Each result whose key has a known text: its label and score are what the served model
    gives that text (within :data:`NEAR_TIE`). Returns what is wrong, one line per result."""
    rows = [r for r in results if isinstance(r.get("id"), str) and r["id"] in texts]
    if not rows:
        return []
    reference = score([texts[r["id"]] for r in rows])
    wrong = []
    for row, expected in zip(rows, reference, strict=True):
        label, served = row.get("label"), row.get("score")
        best = max(expected, key=expected.__getitem__)
        own = expected.get(label) if isinstance(label, str) else None
        if own is None or expected[best] - own > NEAR_TIE:
            wrong.append(
                f"{row['id']!r} came back {label!r}; its text scores {best!r} {expected[best]:.3f}"
                + (f", {label!r} {own:.3f}" if own is not None else "")
            )
        elif not isinstance(served, (int, float)) or abs(served - own) > NEAR_TIE:
            wrong.append(f"{row['id']!r} came back {label!r} {served}; its text scores it {own:.3f}")
    return wrong
