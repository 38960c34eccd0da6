"""Dispatcher logic: one dropped ticket file -> chunks in S3 -> InvokeEndpointAsync per chunk.

Steps (each safe to repeat: S3 delivers events at least once and Lambda retries failures):

1. Work out the job id from the object (bucket, key, upload token): a duplicate event maps to
   the same job. A job past ``dispatching`` with no pending chunk is a duplicate: nothing to do.
2. Check the file: known format (by extension, else content type), not empty, at most
   ``MAX_FILE_MB``. A file that fails a check, cannot be read, or has no records becomes a
   *whole-file failure*: a job with zero tickets and an ``error``, finalized at once (results
   files + a ``partial`` results message), so nothing is skipped silently.
3. Stream the records (``triage_core.reader``: any accepted format, charset, compression and
   line ending; the deployment's field map, or the file's own from its S3 metadata; at most
   ``MAX_FILE_MB`` once decompressed) into chunks of ``CHUNK_SIZE`` tickets, writing
   each chunk to ``<CHUNK_PREFIX><job>/<n>.jsonl`` as it fills; rejected records go to
   ``<RESULTS_PREFIX><job>/rejected.jsonl`` in the output bucket.
4. Record the job (META: source, chunk count, tickets, submission time) and one item per chunk
   (its ticket keys, so a failed chunk can list exactly which tickets failed), then mark the job
   ``submitted``: from then on its chunk count is final.
5. ``InvokeEndpointAsync`` every chunk still pending. A request the API rejects (e.g.
   ValidationError) marks that chunk failed instead of retrying forever.
6. Try to finalize (a job whose tickets were all rejected has no chunk to wait for).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ticket_pipeline import jobs as J
from ticket_pipeline.chunking import Chunk, Chunker, ChunkPlan
from ticket_pipeline.jobs import ChunkOutcome, JobStore
from ticket_pipeline.logs import child_logger
from ticket_pipeline.results import Publisher, finalize_for
from ticket_pipeline.settings import DispatcherSettings
from ticket_pipeline.storage import ObjectNotFound, ObjectStore, ObjectUnreadable, S3Location
from triage_core.reader import TicketReader
from triage_core.reader import detect_format as detect_ticket_format
from triage_core.records import RecordFormatError

logger = child_logger()

# Same per-record cap as the inference server (TRIAGE_MAX_RECORD_MB default): a larger record is
# rejected here with a clear reason instead of failing its whole chunk at the endpoint.
MAX_RECORD_BYTES = 8 * 1024 * 1024
JSONL = "application/jsonlines"
# Errors from InvokeEndpointAsync that will not go away on retry.
_PERMANENT_INVOKE_ERRORS = {"ValidationError", "ValidationException", "ModelError", "ParamValidationError"}


class WholeFileError(Exception):
    """The file as a whole cannot be processed; the message is the reason reported."""


@dataclass
class Deps:
    """What the dispatcher logic talks to (boto3 clients on AWS, moto/local stand-ins locally)."""

    objects: ObjectStore
    jobs: JobStore
    publisher: Publisher
    runtime: Any  # anything with invoke_endpoint_async(**kwargs): the sagemaker-runtime client


@dataclass(frozen=True)
class DispatchResult:
    job_id: str
    source: str
    outcome: str  # submitted | resumed | duplicate | rejected_file | all_rejected | skipped
    chunks: int = 0
    tickets: int = 0
    rejected: int = 0
    invoked: int = 0
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


def dispatch_object(
    bucket: str,
    key: str,
    token: str,
    *,
    deps: Deps,
    settings: DispatcherSettings,
    clock: Callable[[], float] = time.time,
) -> DispatchResult:
    source = S3Location(bucket, key)
    job_id = job_id_for(bucket, key, token)
    log = {"job_id": job_id, "source": source.uri}
    existing = deps.jobs.get_job(job_id)
    if existing is not None and existing.get("status") != J.DISPATCHING:
        pending = [c for c in deps.jobs.list_chunks(job_id) if c.get("state") == J.PENDING]
        if not pending:
            logger.info("duplicate S3 event: job already dispatched", extra=log)
            finalize_for(job_id, deps, settings, clock)
            return DispatchResult(job_id, source.uri, "duplicate", chunks=int(existing.get("chunk_count", 0)))
        logger.warning("resuming a partly submitted job", extra={**log, "pending": len(pending)})
        invoked = _invoke_chunks(job_id, pending, deps, settings, clock)
        finalize_for(job_id, deps, settings, clock)
        return DispatchResult(
            job_id, source.uri, "resumed", chunks=int(existing["chunk_count"]), invoked=invoked
        )

    now = clock()
    try:
        plan = _read_and_chunk(source, job_id, deps, settings)
    except WholeFileError as exc:
        logger.error("ticket file rejected as a whole", extra={**log, "reason": str(exc)})
        return _whole_file_failure(job_id, source, str(exc), deps, settings, clock)

    rejected_location = None
    if plan.rejected:
        loc = S3Location(settings.output_bucket, f"{settings.results_prefix}{job_id}/rejected.jsonl")
        body = b"".join(
            json.dumps(r.as_failure(), ensure_ascii=False).encode("utf-8") + b"\n" for r in plan.rejected
        )
        deps.objects.put_bytes(loc, body, JSONL)
        rejected_location = loc.uri

    deps.jobs.create_job(
        job_id,
        {
            "source": source.uri,
            "status": J.DISPATCHING,
            "chunk_count": len(plan.chunks),
            "tickets": plan.tickets,
            "rejected": len(plan.rejected),
            "rejected_location": rejected_location,
            "submitted_at": _iso(now),
            "chunk_size": settings.chunk_size,
            "expires_at": deps.jobs.expires_at(now),
        },
    )
    chunk_items = [
        {
            "chunk": chunk.number,
            "inference_id": J.inference_id_for(job_id, chunk.number),
            "input_location": chunk_location(settings, source.bucket, job_id, chunk.number).uri,
            "ticket_ids": chunk.ticket_ids,
            "tickets": len(chunk.ticket_ids),
        }
        for chunk in plan.chunks
    ]
    deps.jobs.put_chunks(job_id, chunk_items)
    deps.jobs.mark_job_submitted(job_id)
    logger.info(
        "job recorded",
        extra={**log, "chunks": len(plan.chunks), "tickets": plan.tickets, "rejected": len(plan.rejected)},
    )
    invoked = _invoke_chunks(job_id, deps.jobs.list_chunks(job_id), deps, settings, clock)
    finalize_for(job_id, deps, settings, clock)
    return DispatchResult(
        job_id,
        source.uri,
        "submitted" if plan.chunks else "all_rejected",
        chunks=len(plan.chunks),
        tickets=plan.tickets,
        rejected=len(plan.rejected),
        invoked=invoked,
    )


def chunk_location(settings: DispatcherSettings, bucket: str, job_id: str, number: int) -> S3Location:
    """Chunks live in the bucket of the file they come from, under ``CHUNK_PREFIX``."""
    return S3Location(bucket, f"{settings.chunk_prefix}{job_id}/{number:05d}.jsonl")


def _read_and_chunk(source: S3Location, job_id: str, deps: Deps, settings: DispatcherSettings) -> ChunkPlan:
    try:
        info = deps.objects.head(source)
    except (ObjectNotFound, ObjectUnreadable) as exc:
        raise WholeFileError(f"file unreadable: {exc}") from exc
    size = info.size
    if size == 0:
        raise WholeFileError("file is empty")
    if size > settings.max_file_bytes:
        raise WholeFileError(
            f"file is {size / 1048576:.1f} MB, more than MAX_FILE_MB={settings.max_file_mb:g}; split it"
        )
    detect_format(source.key, info.content_type)

    def write_chunk(chunk: Chunk) -> None:
        deps.objects.put_bytes(
            chunk_location(settings, source.bucket, job_id, chunk.number), chunk.body, JSONL
        )

    chunker = Chunker(settings.chunk_size, write_chunk)
    try:
        reader = TicketReader(
            deps.objects.iter_chunks(source),
            key=source.key,
            content_type=info.content_type,
            content_encoding=info.content_encoding,
            metadata=info.metadata,
            fields=settings.fields,
            max_record_chars=MAX_RECORD_BYTES,
            max_decoded_bytes=settings.max_file_bytes,
        )
        for record in reader:
            chunker.add(record)
    except RecordFormatError as exc:
        raise WholeFileError(f"wrong format: {exc}") from exc
    except (ObjectNotFound, ObjectUnreadable) as exc:
        raise WholeFileError(f"file unreadable: {exc}") from exc
    plan = chunker.finish()
    if plan.records == 0:
        raise WholeFileError("file has no ticket records")
    return plan


def _invoke_chunks(
    job_id: str,
    chunks: list[dict[str, Any]],
    deps: Deps,
    settings: DispatcherSettings,
    clock: Callable[[], float],
) -> int:
    invoked = 0
    for chunk in chunks:
        if chunk.get("state") != J.PENDING:
            continue
        request = {
            "EndpointName": settings.endpoint_name,
            "InputLocation": chunk["input_location"],
            "ContentType": JSONL,
            "Accept": JSONL,
            "InferenceId": chunk["inference_id"],
            "RequestTTLSeconds": settings.request_ttl_seconds,
            "InvocationTimeoutSeconds": settings.invocation_timeout_seconds,
        }
        try:
            response = deps.runtime.invoke_endpoint_async(**request)
        except Exception as exc:
            code = _error_code(exc)
            if code not in _PERMANENT_INVOKE_ERRORS:
                raise  # throttling/5xx after botocore's own retries: let Lambda retry the event
            logger.error(
                "InvokeEndpointAsync rejected a chunk",
                extra={"job_id": job_id, "chunk": chunk["chunk"], "code": code, "error": str(exc)},
            )
            deps.jobs.record_chunk_outcome(
                job_id,
                chunk["chunk"],
                ChunkOutcome(
                    state=J.FAILED,
                    reported_at=_iso(clock()),
                    notification_status="NotSubmitted",
                    failure_reason=f"InvokeEndpointAsync rejected the request ({code}): {exc}",
                ),
            )
            continue
        deps.jobs.mark_chunk_submitted(
            job_id,
            chunk["chunk"],
            _iso(clock()),
            response.get("OutputLocation", ""),
            response.get("FailureLocation"),
        )
        invoked += 1
    return invoked


def _error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def _whole_file_failure(
    job_id: str,
    source: S3Location,
    reason: str,
    deps: Deps,
    settings: DispatcherSettings,
    clock: Callable[[], float],
) -> DispatchResult:
    now = clock()
    deps.jobs.create_job(
        job_id,
        {
            "source": source.uri,
            "status": J.SUBMITTED,
            "chunk_count": 0,
            "tickets": 0,
            "rejected": 0,
            "error": reason,
            "submitted_at": _iso(now),
            "expires_at": deps.jobs.expires_at(now),
        },
    )
    finalize_for(job_id, deps, settings, clock)
    return DispatchResult(job_id, source.uri, "rejected_file", error=reason)
