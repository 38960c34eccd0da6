"""Dispatcher logic: one uploaded file version -> chunks in S3 -> InvokeEndpointAsync per chunk.

A job is one object *version*: the S3 event names it (``versionId``; the ``sequencer`` where the
bucket is not versioned) and every read gets exactly that version, so two quick uploads to one
key are two jobs with their own tickets, and a duplicate event finds its job.

A run (each step safe to repeat: S3 delivers events at least once and Lambda retries failures):

1. Find or open the job. A new job first checks the file (known format, not empty, at most
   ``MAX_FILE_MB``); a file that fails a check, cannot be read or has no records becomes a
   *whole-file failure*: a job with zero tickets and an ``error``, finalized at once (results
   files + a ``partial`` results message), so nothing is skipped silently. A job past
   ``dispatching`` is a duplicate event: only chunks still pending are invoked.
2. Stream the records (:func:`read_records`, the one place that turns the object into records:
   ``triage_core.reader`` reads any accepted format, charset, compression and line ending, with
   the deployment's field map or the file's own from its S3 metadata, at most ``MAX_FILE_MB``
   once decompressed) through the :class:`.chunking.Chunker`. Each chunk goes out as soon as it is full
   (:class:`.submission.ChunkSubmitter`: object, item with its ticket keys, invocation);
   rejected records are spooled and written as one object per run. Nothing grows with the file
   in memory: the keys used so far live in a :class:`.keys.KeyRegistry` on local disk.
3. A file that needs longer than one Lambda run continues in the next. When the time left is
   down to the reserve, the run stops at a chunk boundary, records its position (``cursor``:
   the records already dispatched) with a conditional checkpoint, and invokes the dispatcher
   asynchronously with a continuation event. The next run re-reads the file from the start,
   replays the first ``cursor`` records (their keys only, so every later record gets the key it
   would have got in one pass) and carries on. Why a record cursor and not a byte offset: the
   reader is free to decode, decompress (gzip streams cannot seek) and detect encodings from
   the start of the file; re-reading costs a fraction of sending, and a version is immutable.
   A file still unfinished after ``MAX_DISPATCH_RUNS`` runs, or with more than
   ``MAX_TICKETS_PER_FILE`` records (a job is finalized in one invocation, which bounds its
   size), ends with an error naming the records that were not read.
4. The last run marks the job ``submitted`` (its chunk count is now final), pushes its deadline
   to ``now + RequestTTL + InvocationTimeout + margin`` and tries to finalize (a job whose
   tickets were all rejected has no chunk to wait for).
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ticket_pipeline import jobs as J
from ticket_pipeline.chunking import MAX_ID_CHARS, Chunker
from ticket_pipeline.jobs import JobStore
from ticket_pipeline.keys import KeyRegistry
from ticket_pipeline.logs import child_logger
from ticket_pipeline.metrics import PipelineMetrics
from ticket_pipeline.results import Publisher, finalize_for
from ticket_pipeline.settings import DispatcherSettings
from ticket_pipeline.storage import ObjectInfo, ObjectNotFound, ObjectStore, ObjectUnreadable, S3Location
from ticket_pipeline.submission import (
    INVOKED,
    REFUSED,
    ChunkSubmitter,
    RejectedSpool,
    invoke_chunk,
)
from triage_core.reader import TicketReader
from triage_core.reader import detect_format as detect_ticket_format
from triage_core.records import FieldMap, RecordFormatError, TicketRecord

logger = child_logger()

# Same per-record cap as the inference server (TRIAGE_MAX_RECORD_MB default): a larger record is
# rejected here with a clear reason instead of failing its whole chunk at the endpoint.
MAX_RECORD_BYTES = 8 * 1024 * 1024
JSONL = "application/jsonlines"


class WholeFileError(Exception):
    """The file as a whole cannot be processed; the message is the reason reported."""


class Continuation(Protocol):
    """Hands work to the next dispatcher run (on AWS: an asynchronous self-invocation)."""

    def __call__(self, event: dict[str, Any]) -> None: ...


@dataclass
class Deps:
    """What the dispatcher logic talks to (boto3 clients on AWS, moto/local stand-ins locally)."""

    objects: ObjectStore
    jobs: JobStore
    publisher: Publisher
    runtime: Any  # anything with invoke_endpoint_async(**kwargs): the sagemaker-runtime client
    continuation: Continuation | None = None  # None: never stop early (no next run to hand to)
    metrics: PipelineMetrics = field(default_factory=PipelineMetrics)
    clock: Callable[[], float] = time.time  # as in stores.Stores


@dataclass(frozen=True)
class Upload:
    """One uploaded object version, as its S3 event names it."""

    bucket: str
    key: str
    version_id: str | None = None  # absent (or "null") when the bucket is not versioned
    sequencer: str | None = None
    etag: str | None = None
    event_time: str = ""

    @property
    def versioned(self) -> bool:
        return bool(self.version_id) and self.version_id != "null"

    @property
    def token(self) -> str:
        """What tells this upload of the key from any other: the version id; without versioning
        S3's per-key ``sequencer``; moto-style events without either: eTag + event time."""
        if self.versioned:
            return f"v:{self.version_id}"
        return self.sequencer or f"{self.etag}|{self.event_time}"

    @property
    def location(self) -> S3Location:
        return S3Location(self.bucket, self.key, self.version_id if self.versioned else None)

    def as_event(self) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "version_id": self.version_id,
            "sequencer": self.sequencer,
            "etag": self.etag,
            "event_time": self.event_time,
        }


@dataclass(frozen=True)
class RunBudget:
    """How long this run may still work: it stops at a chunk boundary once only the reserve is left."""

    remaining_seconds: Callable[[], float] = lambda: math.inf
    reserve_seconds: float = 0.0

    def exhausted(self) -> bool:
        return self.remaining_seconds() <= self.reserve_seconds


@dataclass(frozen=True)
class DispatchResult:
    job_id: str
    source: str
    # submitted | continued | duplicate | in_progress | superseded | rejected_file | all_rejected
    outcome: str
    chunks: int = 0
    tickets: int = 0
    rejected: int = 0
    invoked: int = 0
    run: int | None = None
    version_id: str | None = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_id_for(bucket: str, key: str, token: str) -> str:
    """``<file stem>-<12 hex>``: readable in S3 listings, unique per upload, <= 37 chars."""
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-")[:24] or "file"
    digest = hashlib.sha256(f"{bucket}\n{key}\n{token}".encode()).hexdigest()[:12]
    return f"{stem}-{digest}"


def detect_format(key: str, content_type: str | None) -> str:
    """The records format of a file: by extension first (``.gz`` aside), then by content type."""
    try:
        return detect_ticket_format(key, content_type)
    except RecordFormatError as exc:
        raise WholeFileError(str(exc)) from None


@dataclass(frozen=True)
class Reading:
    """How the dispatcher read a job's file (its ``TICKET_FIELDS`` and ``MAX_FILE_MB``), recorded
    with the job so the sweeper, which has neither setting, reads the file again the same way."""

    fields: FieldMap
    max_file_bytes: int

    @classmethod
    def of_job(cls, meta: dict[str, Any]) -> Reading:
        """What the job recorded; a job recorded without it was read with the defaults."""
        default = DispatcherSettings.model_fields
        spec = meta.get("ticket_fields") or default["ticket_fields"].default
        max_bytes = meta.get("max_file_bytes") or int(default["max_file_mb"].default * 1024 * 1024)
        return cls(FieldMap.from_spec(spec), int(max_bytes))


def read_records(
    deps: Deps, source: S3Location, info: ObjectInfo, settings: DispatcherSettings | Reading
) -> Iterator[TicketRecord]:
    """The object's records, streamed: the one place that turns an S3 object into records.

    Deterministic for one object version and ``info``, which a continuing run relies on: it
    re-reads the file and replays the records already dispatched."""
    detect_format(source.key, info.content_type)
    return _guarded(
        TicketReader(
            deps.objects.iter_chunks(source),
            key=source.key,
            content_type=info.content_type,
            content_encoding=info.content_encoding,
            metadata=info.metadata,
            fields=settings.fields,
            max_record_chars=MAX_RECORD_BYTES,
            max_decoded_bytes=settings.max_file_bytes,
        )
    )


# What a bug in reading one record raises (never a storage error: those stay retryable).
_READER_BUGS = (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, UnicodeError)


def _guarded(records: TicketReader) -> Iterator[TicketRecord]:
    """The reader's records; an unexpected error in reading becomes a :class:`RecordFormatError`
    that says where reading stopped, so the job ends with an error and the records read so far
    instead of a crashed dispatcher that S3 retries into the DLQ while the job waits for its
    deadline (issue #21)."""
    iterator = iter(records)
    count = 0
    while True:
        try:
            record = next(iterator)
        except StopIteration:
            return
        except RecordFormatError:
            raise
        except _READER_BUGS as exc:
            logger.exception("the ticket reader failed", extra={"records_read": count})
            raise RecordFormatError(
                f"reading stopped after record {count:,}: {type(exc).__name__}: {exc}"
            ) from exc
        count += 1
        yield record


def dispatch_upload(
    upload: Upload,
    *,
    deps: Deps,
    settings: DispatcherSettings,
    budget: RunBudget | None = None,
    clock: Callable[[], float] = time.time,
    cursor: int | None = None,
) -> DispatchResult:
    """Handle an upload's S3 event (``cursor`` None) or a continuation (``cursor``: where the run
    that handed off stopped)."""
    budget = budget or RunBudget()
    source = upload.location
    job_id = job_id_for(upload.bucket, upload.key, upload.token)
    log = {"job_id": job_id, "source": source.uri, "version_id": source.version_id}
    meta = deps.jobs.get_job(job_id)
    if meta is None:
        if cursor is not None:
            logger.error("continuation for a job that does not exist; ignored", extra=log)
            return DispatchResult(job_id, source.uri, "superseded", version_id=source.version_id)
        opened = _open_job(job_id, upload, deps, settings, clock, budget)
        if isinstance(opened, DispatchResult):
            return opened
        meta = opened
    if meta["status"] != J.DISPATCHING:
        return _already_dispatched(job_id, source, meta, deps, settings, clock, budget)
    at = int(meta.get("cursor", 0))
    if (cursor is None and at > 0) or (cursor is not None and cursor != at):
        # Another run owns the job (a duplicate or stale event). If the run that checkpointed at
        # ``at`` died before invoking its successor, send the continuation again.
        if meta.get("handoff_cursor") != at and deps.continuation is not None:
            logger.warning(
                "re-sending the continuation of an interrupted dispatch", extra={**log, "cursor": at}
            )
            _hand_off(job_id, upload, at, deps)
        logger.info(
            "dispatch in progress in another run", extra={**log, "cursor": at, "event_cursor": cursor}
        )
        return DispatchResult(job_id, source.uri, "in_progress", version_id=source.version_id)
    return _run(job_id, upload, meta, deps, settings, budget, clock)


def _open_job(
    job_id: str,
    upload: Upload,
    deps: Deps,
    settings: DispatcherSettings,
    clock: Callable[[], float],
    budget: RunBudget,
) -> dict[str, Any] | DispatchResult:
    source = upload.location
    try:
        info = deps.objects.head(source)
        if info.size == 0:
            raise WholeFileError("file is empty")
        if info.size > settings.max_file_bytes:
            raise WholeFileError(
                f"file is {info.size / 1048576:.1f} MB, "
                f"more than MAX_FILE_MB={settings.max_file_mb:g}; split it"
            )
    except (ObjectNotFound, ObjectUnreadable) as exc:
        return _whole_file_failure(job_id, upload, f"file unreadable: {exc}", deps, settings, clock, budget)
    except WholeFileError as exc:
        return _whole_file_failure(job_id, upload, str(exc), deps, settings, clock, budget)
    now = clock()
    fields = {
        "source": source.uri,
        "version_id": source.version_id,
        "etag": info.etag,
        "content_type": info.content_type,
        # what the reader needs to read the file the same way in every run
        "content_encoding": info.content_encoding,
        "metadata": info.metadata,
        "ticket_fields": settings.ticket_fields,
        "max_file_bytes": settings.max_file_bytes,
        "size": info.size,
        "status": J.DISPATCHING,
        "cursor": 0,
        "next_chunk": 1,
        "run": 0,
        "tickets": 0,
        "rejected": 0,
        "submitted_at": _iso(now),
        "chunk_size": settings.chunk_size,
        "expires_at": deps.jobs.expires_at(now),
    }
    if deps.jobs.create_job(job_id, fields, now + settings.job_deadline_seconds):
        deps.metrics.count("FilesReceived")
    return deps.jobs.get_job(job_id) or {**fields, "job_id": job_id}


def _already_dispatched(
    job_id: str,
    source: S3Location,
    meta: dict[str, Any],
    deps: Deps,
    settings: DispatcherSettings,
    clock: Callable[[], float],
    budget: RunBudget,
) -> DispatchResult:
    """A duplicate event for a job that is past dispatching: invoke what is still pending (a run
    that died between writing and invoking a chunk), then try to finalize."""
    invoked = 0
    if meta["status"] == J.SUBMITTED:
        for chunk in deps.jobs.pending_chunks(job_id):
            if invoke_chunk(job_id, chunk, deps, settings, clock) == INVOKED:
                invoked += 1
        if invoked:
            logger.warning("resumed a partly submitted job", extra={"job_id": job_id, "invoked": invoked})
            deps.metrics.count("ChunksSubmitted", invoked)
    logger.info(
        "duplicate S3 event: job already dispatched", extra={"job_id": job_id, "status": meta["status"]}
    )
    finalize_for(job_id, deps, settings, clock, time_left=budget.remaining_seconds)
    return DispatchResult(
        job_id,
        source.uri,
        "duplicate",
        chunks=int(meta.get("chunk_count", 0)),
        invoked=invoked,
        version_id=source.version_id,
    )


def _run(
    job_id: str,
    upload: Upload,
    meta: dict[str, Any],
    deps: Deps,
    settings: DispatcherSettings,
    budget: RunBudget,
    clock: Callable[[], float],
) -> DispatchResult:
    source = upload.location
    start = int(meta.get("cursor", 0))
    run = int(meta.get("run", 0)) + 1
    info = _recorded_info(meta, source)
    log = {"job_id": job_id, "source": source.uri, "run": run, "cursor": start}
    can_continue = deps.continuation is not None and run < settings.max_dispatch_runs
    error: str | None = None
    stopped = False
    with (
        KeyRegistry() as keys,
        RejectedSpool() as spool,
        ChunkSubmitter(job_id, upload.bucket, deps, settings, clock) as submitter,
    ):
        chunker = Chunker(settings.chunk_size, keys, first_chunk=int(meta.get("next_chunk", 1)))
        try:
            if start and not upload.versioned:
                _check_unchanged(deps, source, info)
            for record in read_records(deps, source, info, settings):
                if chunker.replayed < start:
                    chunker.replay(record)
                    continue
                if start + chunker.records >= settings.max_tickets_per_file:
                    limit = settings.max_tickets_per_file
                    error = (
                        f"file has more than MAX_TICKETS_PER_FILE={limit:,} records: "
                        f"the first {limit:,} were processed, the rest not read; split it"
                    )
                    break
                chunk, rejected = chunker.add(record)
                if rejected is not None:
                    spool.write(rejected)
                if chunk is not None:
                    submitter.submit(chunk)
                if chunker.at_boundary and deps.continuation is not None and budget.exhausted():
                    stopped = True
                    if not can_continue:
                        error = (
                            "file too large: not finished after "
                            f"MAX_DISPATCH_RUNS={settings.max_dispatch_runs} "
                            f"dispatcher runs; records after {start + chunker.records:,} were not read"
                        )
                    break
        except WholeFileError as exc:
            error = str(exc)
        except RecordFormatError as exc:
            error = f"wrong format: {exc}"
        except (ObjectNotFound, ObjectUnreadable) as exc:
            error = f"file unreadable: {exc}"
        if chunker.replayed < start and error is None:
            error = (
                f"the file has fewer records ({chunker.replayed:,}) than were already dispatched ({start:,})"
            )
        last = chunker.finish()  # None when the run stopped at a boundary
        if last is not None:
            submitter.submit(last)
        submitter.drain()
        # An object of this run's own: two runs at one position (a duplicate event) must not
        # overwrite each other's; the one whose checkpoint or finish wins registers its object.
        part = spool.save(
            deps.objects,
            S3Location(
                settings.output_bucket,
                f"{settings.results_prefix}{job_id}/rejected/{run:03d}-{uuid.uuid4().hex[:12]}.jsonl",
            ),
        )
    cursor = start + chunker.records
    rejected_total = int(meta.get("rejected", 0)) + chunker.rejected
    deps.metrics.count("TicketsDispatched", submitter.tickets_invoked)
    deps.metrics.count("ChunksSubmitted", submitter.counts[INVOKED])
    deps.metrics.count("ChunksRejectedByEndpoint", submitter.counts[REFUSED])
    deps.metrics.count("RecordsRejected", chunker.rejected)
    deadline = clock() + settings.job_deadline_seconds
    progress = {
        "cursor": cursor,
        "next_chunk": chunker.next_chunk,
        "run": run,
        "tickets": cursor,
        "rejected": rejected_total,
    }
    result = {
        "chunks": chunker.next_chunk - 1,
        "tickets": cursor,
        "rejected": rejected_total,
        "invoked": submitter.counts[INVOKED],
        "run": run,
        "version_id": source.version_id,
    }
    if stopped and error is None:
        if chunker.records == 0:
            error = "no progress: the run's time went into re-reading the records already dispatched"
        elif not deps.jobs.checkpoint(job_id, start, progress, deadline, rejected_part=part):
            logger.warning("another run checkpointed this job first; stopping", extra=log)
            return DispatchResult(job_id, source.uri, "superseded", **result)
        else:
            _hand_off(job_id, upload, cursor, deps)
            deps.metrics.count("DispatchContinuations")
            logger.info(
                "run stopped at the reserve; the next run continues", extra={**log, "next_cursor": cursor}
            )
            return DispatchResult(job_id, source.uri, "continued", **result)
    if cursor == 0 and error is None:
        error = "file has no ticket records"
    done = {**progress, "chunk_count": chunker.next_chunk - 1, "error": error}
    if not deps.jobs.finish_dispatch(job_id, start, done, deadline, rejected_part=part):
        logger.warning("another run finished this job first", extra=log)
        return DispatchResult(job_id, source.uri, "superseded", **result)
    if error:
        logger.error(
            "ticket file rejected" + (" as a whole" if cursor == 0 else " part-way"),
            extra={**log, "reason": error},
        )
    if cursor == 0:
        deps.metrics.count("WholeFileFailures")
    logger.info("job submitted", extra={**log, **result})
    finalize_for(job_id, deps, settings, clock, time_left=budget.remaining_seconds)
    if cursor == 0:
        outcome = "rejected_file"
    elif chunker.next_chunk == 1:
        outcome = "all_rejected"
    else:
        outcome = "submitted"
    return DispatchResult(job_id, source.uri, outcome, error=error, **result)


def file_keys(deps: Any, meta: dict[str, Any]) -> Iterator[tuple[str, int, str | None, str | None]]:
    """Every record of a job's file as the dispatcher keys it: (key, record number, its own id,
    why it is rejected or None). For a job whose dispatch never finished, so its finalizer can
    account for the records no run sent (:func:`.results.consolidate`); ``deps.objects`` reads."""
    where = S3Location.parse(meta["source"])
    source = S3Location(where.bucket, where.key, meta.get("version_id"))
    info = _recorded_info(meta, source)
    with KeyRegistry() as keys:
        chunker = Chunker(1, keys)
        for record in read_records(deps, source, info, Reading.of_job(meta)):
            key, rejected = chunker.replay(record)
            yield key, record.index + 1, record.id[:MAX_ID_CHARS] if record.id is not None else None, rejected


def _recorded_info(meta: dict[str, Any], source: S3Location) -> ObjectInfo:
    """The object as the job's first run saw it (what every later reader of the file reads by)."""
    return ObjectInfo(
        int(meta.get("size", 0)),
        meta.get("content_type"),
        meta.get("etag"),
        source.version_id,
        meta.get("content_encoding"),
        dict(meta.get("metadata") or {}),
    )


def _check_unchanged(deps: Deps, source: S3Location, info: ObjectInfo) -> None:
    """Without versioning, a continuing run must read the same bytes as the first one."""
    now = deps.objects.head(source)
    if info.etag and now.etag != info.etag:
        raise WholeFileError(
            "the file was overwritten while it was being dispatched (the input bucket is not versioned); "
            "upload it again"
        )


def _hand_off(job_id: str, upload: Upload, cursor: int, deps: Deps) -> None:
    assert deps.continuation is not None
    deps.continuation({"continuation": {**upload.as_event(), "job_id": job_id, "cursor": cursor}})
    deps.jobs.mark_handed_off(job_id, cursor)


def _whole_file_failure(
    job_id: str,
    upload: Upload,
    reason: str,
    deps: Deps,
    settings: DispatcherSettings,
    clock: Callable[[], float],
    budget: RunBudget,
) -> DispatchResult:
    source = upload.location
    now = clock()
    logger.error(
        "ticket file rejected as a whole", extra={"job_id": job_id, "source": source.uri, "reason": reason}
    )
    created = deps.jobs.create_job(
        job_id,
        {
            "source": source.uri,
            "version_id": source.version_id,
            "status": J.SUBMITTED,
            "chunk_count": 0,
            "tickets": 0,
            "rejected": 0,
            "error": reason,
            "submitted_at": _iso(now),
            "expires_at": deps.jobs.expires_at(now),
        },
        now + settings.job_deadline_margin_seconds,
    )
    if created:
        deps.metrics.count("FilesReceived")
        deps.metrics.count("WholeFileFailures")
    finalize_for(job_id, deps, settings, clock, time_left=budget.remaining_seconds)
    return DispatchResult(job_id, source.uri, "rejected_file", error=reason, version_id=source.version_id)
