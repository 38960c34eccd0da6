"""Fan-in: once every chunk of a job has reported, write the consolidated results and publish.

Outputs under ``<RESULTS_PREFIX><job_id>/`` in the output bucket:

* ``results.jsonl``  one line per classified ticket: ``id``, ``label``, ``score``, ``needs_review``
* ``failures.jsonl`` one line per ticket that got no label: ``id``, ``error`` (plus ``record`` /
  ``source_id`` for records rejected before inference)
* ``summary.json``   counts per category, share needing review, failures with reasons, chunks

and one results message on the results topic (``status`` complete|partial, ``source``,
``results``, ``failures``, ``summary``, ``tickets``, ``failed``, ...).

Every ticket key of the job appears exactly once across results and failures: keys are unique
by construction (:mod:`.chunking`), each chunk contributes each of its keys once (from the
server's response, or as a failure when the response lacks it or the chunk failed), and the
whole finalization runs under the job's lease (:meth:`.jobs.JobStore.claim_finalization`, or
:meth:`.jobs.JobStore.claim_overdue` for the sweeper). The files are a pure function of the
job's DynamoDB items and S3 objects, so a takeover after a crash rewrites the same bytes.

Memory does not grow with the job: chunks are read one query page at a time, results and
failures are spooled to temporary files, and the keys already written (the exactly-once guard)
live in a :class:`.keys.KeyRegistry` on local disk.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from botocore.exceptions import BotoCoreError, ClientError

from ticket_pipeline import jobs as J
from ticket_pipeline.jobs import JobStore
from ticket_pipeline.keys import KeyRegistry
from ticket_pipeline.logs import child_logger
from ticket_pipeline.metrics import PipelineMetrics
from ticket_pipeline.review import ReviewRun, review_for
from ticket_pipeline.settings import AggregatorSettings
from ticket_pipeline.storage import ObjectNotFound, ObjectStore, ObjectUnreadable, S3Location

logger = child_logger()

MAX_REASON_CHARS = 300
SUMMARY_FAILURE_SAMPLE = 50
SUMMARY_FAILED_CHUNKS = 200
OUTPUT_READERS = 4


class Publisher:
    """Publishes JSON messages to an SNS topic (a boto3 SNS client underneath)."""

    def __init__(self, sns_client: Any):
        self.client = sns_client

    def publish(self, topic_arn: str, message: dict[str, Any]) -> str:
        resp = self.client.publish(
            TopicArn=topic_arn,
            Message=json.dumps(message, ensure_ascii=False),
            MessageAttributes={"status": {"DataType": "String", "StringValue": str(message.get("status"))}},
        )
        return resp.get("MessageId", "")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _short(reason: str) -> str:
    reason = " ".join(str(reason).split())
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…"


@dataclass
class _Accumulator:
    """Writes result/failure lines and refuses to emit a ticket key twice."""

    results: IO[bytes]
    failures: IO[bytes]
    seen: KeyRegistry
    categories: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    failure_sample: list[dict[str, Any]] = field(default_factory=list)
    succeeded: int = 0
    failed: int = 0
    needs_review: int = 0
    duplicates: int = 0
    # sees every classified ticket once, with the server's record (the review queue, review.py)
    observer: Observer | None = None

    def _claim(self, ticket_id: str) -> bool:
        if self.seen.claim(ticket_id, self.succeeded + self.failed) is not None:
            self.duplicates += 1
            logger.error("ticket key emitted twice; keeping the first", extra={"ticket_id": ticket_id})
            return False
        return True

    def ok(self, ticket_id: str, label: str, score: float, needs_review: bool) -> bool:
        if not self._claim(ticket_id):
            return False
        line = {
            "id": ticket_id,
            "label": label,
            "score": round(float(score), 6),
            "needs_review": needs_review,
        }
        self.results.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        self.succeeded += 1
        self.categories[label] += 1
        self.needs_review += bool(needs_review)
        return True

    def fail(self, ticket_id: str, error: str, **extra: Any) -> None:
        if not self._claim(ticket_id):
            return
        line = {"id": ticket_id, "error": _short(error), **{k: v for k, v in extra.items() if v is not None}}
        self.failures.write(json.dumps(line, ensure_ascii=False).encode("utf-8") + b"\n")
        self.failed += 1
        self.reasons[_reason_class(error)] += 1
        if len(self.failure_sample) < SUMMARY_FAILURE_SAMPLE:
            self.failure_sample.append({"id": ticket_id, "error": _short(error)})


# The reader names where a record is when its id cannot tell: ``... (line 7)``, ``(lines 3-5)``.
_WHERE = re.compile(r" \((?:line|lines|row) [0-9][0-9-]*\)$")


def _reason_class(error: str) -> str:
    """Group failures in the summary: duplicate-id messages differ only in the id, and the
    reader's per-record messages only in the line they name."""
    error = _short(error)
    if error.startswith("duplicate id "):
        return "duplicate id"
    return _WHERE.sub("", error)


def _records_of(doc: Any) -> list[Any] | None:
    """The output records a whole JSON document holds: a list, or a list under a known key."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        for key in ("predictions", "results", "outputs"):
            if isinstance(doc.get(key), list):
                return doc[key]
    return None


def _json_records(lines: Iterator[bytes]) -> list[Any]:
    """Server output: JSON Lines (Accept application/jsonlines); tolerate one JSON document with
    a list (Accept application/json) too, on one line or over several (pretty-printed, or one
    element a line: a line that parses alone does not make the document JSON Lines)."""
    raw = [line for line in lines if line.strip()]
    parsed: list[Any] = []
    for line in raw:
        try:
            parsed.append(json.loads(line))
        except (json.JSONDecodeError, UnicodeDecodeError):
            parsed.append(None)
    if len(parsed) == 1 and (records := _records_of(parsed[0])) is not None:
        return records
    if len(raw) > 1 and any(p is None for p in parsed):  # lines that are not JSON alone: one document?
        try:
            records = _records_of(json.loads(b"".join(raw)))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return parsed
        return parsed if records is None else records
    return parsed


def _read_output(chunk: dict[str, Any], objects: ObjectStore) -> list[Any] | Exception:
    """A succeeded chunk's output records, or why they cannot be read."""
    try:
        return _json_records(objects.iter_lines(S3Location.parse(chunk.get("output_location", ""))))
    except (ObjectNotFound, ObjectUnreadable, ValueError) as exc:
        return exc


def _with_outputs(
    chunks: Iterable[dict[str, Any]], objects: ObjectStore, threads: int = OUTPUT_READERS
) -> Iterator[tuple[dict[str, Any], list[Any] | Exception | None]]:
    """The chunks in order, each with its output read ahead by a few threads (reading outputs one
    after the other would spend most of a big job's finalization waiting on S3)."""
    window: deque[tuple[dict[str, Any], Future | None]] = deque()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="output") as pool:
        for chunk in chunks:
            succeeded = chunk.get("state") == J.SUCCEEDED
            window.append((chunk, pool.submit(_read_output, chunk, objects) if succeeded else None))
            if len(window) > 2 * threads:
                done, future = window.popleft()
                yield done, future.result() if future else None
        while window:
            done, future = window.popleft()
            yield done, future.result() if future else None


def _consume_success(chunk: dict[str, Any], records: list[Any] | Exception, acc: _Accumulator) -> None:
    expected: list[str] = list(chunk.get("ticket_ids") or [])
    if isinstance(records, Exception):
        for ticket_id in expected:
            acc.fail(ticket_id, f"async output unavailable: {records}")
        return
    by_index: dict[int, dict[str, Any]] = {}
    for position, record in enumerate(records):
        if isinstance(record, dict):
            index = record.get("index", position)
            if isinstance(index, int) and index not in by_index:
                by_index[index] = record
    for index, ticket_id in enumerate(expected):
        record = by_index.get(index)
        if record is None:
            acc.fail(ticket_id, "the model server returned no prediction for this ticket")
        elif record.get("id") not in (ticket_id, None):
            acc.fail(ticket_id, f"prediction for index {index} carries id {record.get('id')!r}")
        elif record.get("error"):
            acc.fail(ticket_id, f"rejected by the model server: {record['error']}")
        elif not isinstance(record.get("label"), str) or not isinstance(record.get("score"), (int, float)):
            acc.fail(ticket_id, "prediction without label/score")
        else:
            claimed = acc.ok(
                ticket_id, record["label"], record["score"], bool(record.get("needs_review", False))
            )
            if claimed and acc.observer is not None:
                acc.observer(chunk, index, ticket_id, record)
    if len(by_index) > len(expected):
        logger.warning(
            "output has more records than the chunk", extra={"chunk": chunk["chunk"], "extra": len(records)}
        )


def _failure_detail(chunk: dict[str, Any], objects: ObjectStore) -> str:
    reason = chunk.get("failure_reason") or "async invocation failed"
    location = chunk.get("failure_location")
    if not location:
        return reason
    try:
        body = objects.read_bytes(S3Location.parse(location), limit=600).decode("utf-8", "replace")
    except (ObjectNotFound, ObjectUnreadable, ValueError):
        return reason
    body = " ".join(body.split())
    if not body:
        return reason
    try:
        detail = json.loads(body).get("error") or body
    except (json.JSONDecodeError, AttributeError):
        detail = body
    return f"{reason} (model response: {detail})"


def _account_for_undispatched(meta: dict[str, Any], file_keys: FileKeys | None, acc: _Accumulator) -> str:
    """Fail every record of the file that no chunk or rejected part accounts for; the job's error."""
    dispatched = int(meta.get("cursor", 0))
    if file_keys is not None:
        try:
            records = not_sent = 0
            for key, number, source_id, rejected in file_keys(meta):
                records += 1
                if key not in acc.seen:
                    acc.fail(key, rejected or NOT_DISPATCHED, record=number, source_id=source_id)
                    not_sent += 1
        except (ObjectNotFound, ObjectUnreadable, ValueError) as exc:  # ValueError: RecordFormatError
            logger.error("cannot read the file again to account for its records", extra={"error": str(exc)})
        else:
            return (
                f"dispatch did not finish: {records - not_sent:,} of the file's {records:,} records were "
                f"dispatched, the other {not_sent:,} are in the failures (not dispatched); re-upload the file"
            )
    return (
        f"dispatch did not finish: only the first {dispatched:,} records of the file were read (the "
        "dispatcher gave up; see its dead-letter queue); re-upload the file"
    )


@dataclass(frozen=True)
class FinalReport:
    job_id: str
    status: str
    message: dict[str, Any]
    summary: dict[str, Any]


def _unreported_reason(meta: dict[str, Any], state: str | None) -> str:
    if meta.get("overdue_at"):
        deadline = meta.get(J.DEADLINE_ATTRIBUTE)
        when = _iso(deadline) if deadline else "its deadline"
        return (
            f"no notification received by the job deadline {when} (chunk state {state}): the async "
            "request expired or its notification was lost; the job was finalized by the sweeper"
        )
    return f"chunk never reported (state {state})"


# (chunk item, position in the chunk, ticket key, the server's record) of each classified ticket
Observer = Callable[[dict[str, Any], int, str, dict[str, Any]], None]

# (key, record number, source id, why the record is rejected or None) for every record of a file
FileKeys = Callable[[dict[str, Any]], Iterable[tuple[str, int, str | None, str | None]]]

NOT_DISPATCHED = (
    "not dispatched: the dispatcher had not sent this record when the job's deadline passed "
    "(its event failed every attempt; see the dispatcher's dead-letter queue); re-upload the file"
)


def consolidate(
    meta: dict[str, Any],
    chunks: Iterable[dict[str, Any]],
    objects: ObjectStore,
    bucket: str,
    prefix: str,
    file_keys: FileKeys | None = None,
    observer: Observer | None = None,
) -> FinalReport:
    """Build and write results.jsonl, failures.jsonl and summary.json for a job.

    A job whose dispatch never finished (the sweeper finalizes it at its deadline) has records no
    chunk holds: with ``file_keys`` (the file read again, every record keyed as the dispatcher
    keys them) each of those goes to the failures too, so every ticket of the file is accounted
    for; without it, or when the file cannot be read any more, the error says how many were read."""
    job_id = meta["job_id"]
    base = f"{prefix}{job_id}/"
    results_loc = S3Location(bucket, base + "results.jsonl")
    failures_loc = S3Location(bucket, base + "failures.jsonl")
    summary_loc = S3Location(bucket, base + "summary.json")
    spool = 32 * 1024 * 1024
    with (
        tempfile.SpooledTemporaryFile(max_size=spool) as results_f,
        tempfile.SpooledTemporaryFile(max_size=spool) as failures_f,
        KeyRegistry() as seen,
    ):
        acc = _Accumulator(results_f, failures_f, seen, observer=observer)
        for part in meta.get("rejected_parts") or []:
            for line in objects.iter_lines(S3Location.parse(part)):
                if line.strip():
                    row = json.loads(line)
                    acc.fail(
                        row["id"], row["error"], record=row.get("record"), source_id=row.get("source_id")
                    )
        failed_chunks: list[dict[str, Any]] = []
        total_chunks = succeeded_chunks = failed_count = 0
        completed = _parse_iso(meta.get("submitted_at"))
        for chunk, records in _with_outputs(chunks, objects):
            total_chunks += 1
            reported = _parse_iso(chunk.get("reported_at"))
            if reported is not None:
                completed = max(completed or reported, reported)
            state = chunk.get("state")
            if state == J.SUCCEEDED:
                succeeded_chunks += 1
                _consume_success(chunk, records, acc)
                continue
            reason = _failure_detail(chunk, objects) if state == J.FAILED else _unreported_reason(meta, state)
            failed_count += 1
            if len(failed_chunks) < SUMMARY_FAILED_CHUNKS:
                failed_chunks.append(
                    {
                        "chunk": chunk["chunk"],
                        "inference_id": chunk.get("inference_id"),
                        "tickets": len(chunk.get("ticket_ids") or []),
                        "reason": _short(reason),
                    }
                )
            for ticket_id in chunk.get("ticket_ids") or []:
                acc.fail(ticket_id, reason)
        error = meta.get("error")
        if "chunk_count" not in meta and not error:  # the sweeper finalized a job still dispatching
            error = _account_for_undispatched(meta, file_keys, acc)
        accounted = acc.succeeded + acc.failed
        expected = int(meta.get("tickets", 0)) if "chunk_count" in meta else accounted
        if accounted != expected:
            logger.error("ticket accounting mismatch", extra={"expected": expected, "accounted": accounted})
        status = J.COMPLETE if acc.failed == 0 and not error and accounted == expected else J.PARTIAL
        submitted = _parse_iso(meta.get("submitted_at"))
        summary = {
            "job_id": job_id,
            "source": meta.get("source"),
            "version_id": meta.get("version_id"),
            "status": status,
            "error": error,
            "overdue": bool(meta.get("overdue_at")),
            "tickets": expected,
            "succeeded": acc.succeeded,
            "failed": acc.failed,
            "needs_review": acc.needs_review,
            "needs_review_share": round(acc.needs_review / acc.succeeded, 4) if acc.succeeded else 0.0,
            "categories": dict(sorted(acc.categories.items(), key=lambda kv: (-kv[1], kv[0]))),
            "failure_reasons": dict(sorted(acc.reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
            "failures_sample": acc.failure_sample,
            "chunks": {"total": total_chunks, "succeeded": succeeded_chunks, "failed": failed_count},
            "failed_chunks": failed_chunks,
            "submitted_at": meta.get("submitted_at"),
            "completed_at": _iso(completed) if completed else None,
            "processing_seconds": round(completed - submitted, 3) if completed and submitted else None,
            "results": results_loc.uri,
            "failures": failures_loc.uri,
        }
        objects.put_file(results_loc, results_f, "application/jsonlines")
        objects.put_file(failures_loc, failures_f, "application/jsonlines")
    body = json.dumps(summary, indent=2, ensure_ascii=False).encode("utf-8")
    objects.put_bytes(summary_loc, body, "application/json")
    message = {
        "status": status,
        "job_id": job_id,
        "source": meta.get("source"),
        "version_id": meta.get("version_id"),
        "results": results_loc.uri,
        "failures": failures_loc.uri,
        "summary": summary_loc.uri,
        "tickets": expected,
        "failed": acc.failed,
        "succeeded": acc.succeeded,
        "needs_review": acc.needs_review,
    }
    if meta.get("version_id") is None:
        message.pop("version_id")
    if error:
        message["error"] = error
    return FinalReport(job_id, status, message, summary)


class OutOfTime(RuntimeError):
    """Too little of the invocation is left to publish the results and record the job as finished."""


def finalize_job(
    job_id: str,
    *,
    jobs: JobStore,
    objects: ObjectStore,
    publisher: Publisher,
    output_bucket: str,
    results_prefix: str,
    results_topic_arn: str,
    lease_seconds: int,
    clock: Callable[[], float] = time.time,
    overdue: bool = False,
    time_left: Callable[[], float] = lambda: math.inf,
    reserve_seconds: float = 0.0,
    file_keys: FileKeys | None = None,
    review: Callable[[dict[str, Any]], ReviewRun] | None = None,
) -> FinalReport | None:
    """Finalize the job if it is ready (or, ``overdue``, past its deadline) and nobody else is doing
    it. None: not (yet) ours to do.

    The results message is published only with at least ``reserve_seconds`` of the invocation
    left (``time_left``): Lambda stopping the function between the publish and the completion
    record would leave the job ``finalizing`` with its message out, and whoever takes the lease
    over would publish a second one. With less time left the lease is released and
    :class:`OutOfTime` raised: the invocation fails, and its retry (or the next notification, or
    the sweeper) finalizes the job."""
    claim = jobs.claim_overdue if overdue else jobs.claim_finalization
    if not claim(job_id, clock(), lease_seconds):
        return None
    run: ReviewRun | None = None
    try:
        meta = jobs.get_job(job_id)
        if meta is None:  # pragma: no cover - the claim just updated it
            raise LookupError(f"job {job_id} vanished")
        run = review(meta) if review is not None else None
        report = consolidate(
            meta, jobs.iter_chunks(job_id), objects, output_bucket, results_prefix, file_keys,
            observer=run.observe if run is not None else None,
        )  # fmt: skip
        if run is not None:
            run.write()
        if time_left() < reserve_seconds:
            raise OutOfTime(
                f"{time_left():.1f} s left, less than the {reserve_seconds:g} s kept to publish the results "
                f"of job {job_id} and record it as finished; released for the next attempt"
            )
        review_ids = run.publish(report.message) if run is not None else []  # before the results
        message_id = publisher.publish(results_topic_arn, report.message)
        if run is not None:
            run.count(len(review_ids))
    except Exception:
        jobs.release_finalization(job_id)
        raise
    finally:
        if run is not None:
            run.close()
    # The message is out: the lease is never given back from here on (whoever took it next would
    # publish again). Record the job as finished, retrying what AWS answers with a transient error.
    _record_finished(
        jobs,
        job_id,
        report.status,
        {
            "finished_at": _iso(clock()),
            "results_location": report.message["results"],
            "failures_location": report.message["failures"],
            "summary_location": report.message["summary"],
            "succeeded": report.message["succeeded"],
            "failed": report.message["failed"],
            "results_message_id": message_id,
        },
        time_left,
    )
    logger.info(
        "job finalized", extra={k: report.message[k] for k in ("job_id", "status", "tickets", "failed")}
    )
    return report


def _record_finished(
    jobs: JobStore, job_id: str, status: str, fields: dict[str, Any], time_left: Callable[[], float]
) -> None:
    """``complete_job`` after the publish, retried with back-off while the invocation has time: a
    throttled or failed write here must not end in the lease running out and a second publish."""
    delay = 0.05
    while True:
        try:
            jobs.complete_job(job_id, status, fields)
            return
        except (ClientError, BotoCoreError) as exc:
            if time_left() < 2 * delay + 1:
                logger.error(
                    "results published but the job could not be recorded as finished; its lease will run out",
                    extra={"job_id": job_id, "error": str(exc)},
                )
                raise
            logger.warning(
                "recording the finished job failed; retrying", extra={"job_id": job_id, "error": str(exc)}
            )
            time.sleep(delay)
            delay = min(2 * delay, 2.0)


def finalize_for(
    job_id: str,
    deps: Any,
    settings: AggregatorSettings,
    clock: Callable[[], float] = time.time,
    overdue: bool = False,
    time_left: Callable[[], float] = lambda: math.inf,
    file_keys: FileKeys | None = None,
) -> FinalReport | None:
    """:func:`finalize_job` with a handler's stores (``deps.jobs/objects/publisher``) and settings,
    counted in ``deps.metrics``.

    Three functions finalize: the aggregator when the last chunk reports, the dispatcher when
    nothing reached the endpoint (every record or every submission rejected), the sweeper when
    a job's deadline has passed (``overdue``).
    """
    report = finalize_job(
        job_id,
        jobs=deps.jobs,
        objects=deps.objects,
        publisher=deps.publisher,
        output_bucket=settings.output_bucket,
        results_prefix=settings.results_prefix,
        results_topic_arn=settings.results_topic_arn,
        lease_seconds=settings.finalize_lease_seconds,
        clock=clock,
        overdue=overdue,
        time_left=time_left,
        reserve_seconds=settings.reserve_seconds,
        file_keys=file_keys,
        review=review_for(settings, deps),
    )
    if report is not None:
        metrics: PipelineMetrics = deps.metrics
        metrics.count("ResultsPublished")
        metrics.count("TicketsSucceeded", report.message["succeeded"])
        metrics.count("TicketsFailed", report.message["failed"])
    return report
