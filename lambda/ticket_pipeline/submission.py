"""What a dispatcher run writes as it reads: chunks (object, item, invocation) and rejected records.

Chunks are sent as soon as they fill, by a small thread pool: each chunk takes four sequential
AWS calls (PutObject, PutItem, InvokeEndpointAsync, UpdateItem), and chunks are independent, so
``DISPATCH_THREADS`` of them are in flight at once. At most twice that many chunks wait or run,
so memory stays bounded by the chunk size, not the file size. Rejected records are spooled to a
temporary file (memory up to a small threshold, then ``/tmp``) and written once per run.
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from ticket_pipeline import jobs as J
from ticket_pipeline.chunking import Chunk, Rejected
from ticket_pipeline.jobs import ChunkOutcome
from ticket_pipeline.logs import child_logger
from ticket_pipeline.review import TOP_K
from ticket_pipeline.settings import DispatcherSettings
from ticket_pipeline.storage import S3Location

logger = child_logger()

JSONL = "application/jsonlines"
# Errors from InvokeEndpointAsync that will not go away on retry.
PERMANENT_INVOKE_ERRORS = {"ValidationError", "ValidationException", "ModelError", "ParamValidationError"}
INVOKED, REFUSED, ALREADY_SUBMITTED = "invoked", "refused", "already_submitted"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def chunk_location(settings: DispatcherSettings, bucket: str, job_id: str, number: int) -> S3Location:
    """Chunks live in the bucket of the file they come from, under ``CHUNK_PREFIX``."""
    return S3Location(bucket, f"{settings.chunk_prefix}{job_id}/{number:05d}.jsonl")


def error_code(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def invoke_chunk(
    job_id: str, chunk: dict[str, Any], deps: Any, settings: DispatcherSettings, clock: Callable[[], float]
) -> str:
    """``InvokeEndpointAsync`` for one pending chunk item; a request the API refuses for good
    fails the chunk (with the reason) instead of blocking the job. Transient errors (throttling,
    5xx after botocore's own retries) propagate, so Lambda retries the run."""
    request = {
        "EndpointName": settings.endpoint_name,
        "InputLocation": chunk["input_location"],
        "ContentType": JSONL,
        "Accept": JSONL,
        # the review queue lists each flagged ticket's best labels (review.py)
        "CustomAttributes": f"top_k={TOP_K}",
        "InferenceId": chunk["inference_id"],
        "RequestTTLSeconds": settings.request_ttl_seconds,
        "InvocationTimeoutSeconds": settings.invocation_timeout_seconds,
    }
    try:
        response = deps.runtime.invoke_endpoint_async(**request)
    except Exception as exc:
        code = error_code(exc)
        if code not in PERMANENT_INVOKE_ERRORS:
            raise
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
        return REFUSED
    deps.jobs.mark_chunk_submitted(
        job_id,
        chunk["chunk"],
        _iso(clock()),
        response.get("OutputLocation", ""),
        response.get("FailureLocation"),
    )
    return INVOKED


class ChunkSubmitter:
    """Writes and invokes chunks on a bounded thread pool; :meth:`drain` waits for all of them and
    raises the first error (the run then fails and Lambda retries it: every step is idempotent)."""

    def __init__(
        self,
        job_id: str,
        bucket: str,
        deps: Any,
        settings: DispatcherSettings,
        clock: Callable[[], float] = time.time,
    ):
        self.job_id = job_id
        self.bucket = bucket
        self.deps = deps
        self.settings = settings
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.tickets_invoked = 0
        self._pool = ThreadPoolExecutor(max_workers=settings.dispatch_threads, thread_name_prefix="chunk")
        self._slots = threading.BoundedSemaphore(2 * settings.dispatch_threads)
        self._lock = threading.Lock()
        self._error: BaseException | None = None

    def submit(self, chunk: Chunk) -> None:
        if self._error is not None:
            raise self._error
        self._slots.acquire()
        future = self._pool.submit(self._send, chunk)
        future.add_done_callback(self._done)

    def _send(self, chunk: Chunk) -> tuple[str, int]:
        location = chunk_location(self.settings, self.bucket, self.job_id, chunk.number)
        self.deps.objects.put_bytes(location, chunk.body, JSONL)
        item = {
            "chunk": chunk.number,
            "inference_id": J.inference_id_for(self.job_id, chunk.number),
            "input_location": location.uri,
            "ticket_ids": chunk.ticket_ids,
            "tickets": len(chunk.ticket_ids),
        }
        existing = self.deps.jobs.put_chunk(self.job_id, item)
        if existing not in (None, J.PENDING):  # a retried run: this chunk went out before
            return ALREADY_SUBMITTED, 0
        outcome = invoke_chunk(self.job_id, item, self.deps, self.settings, self.clock)
        return outcome, len(chunk.ticket_ids) if outcome == INVOKED else 0

    def _done(self, future: Future) -> None:
        try:
            outcome, tickets = future.result()
        except BaseException as exc:
            with self._lock:
                self._error = self._error or exc
        else:
            with self._lock:
                self.counts[outcome] += 1
                self.tickets_invoked += tickets
        finally:
            self._slots.release()

    def drain(self) -> None:
        self._pool.shutdown(wait=True)
        if self._error is not None:
            raise self._error

    def __enter__(self) -> ChunkSubmitter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class RejectedSpool:
    """The rejected records of one run, as JSON Lines, spooled to disk past a few megabytes."""

    def __init__(self, max_memory: int = 4 * 1024 * 1024):
        self._file = tempfile.SpooledTemporaryFile(max_size=max_memory)  # noqa: SIM115 - closed by close()
        self.count = 0

    def write(self, rejected: Rejected) -> None:
        self._file.write(json.dumps(rejected.as_failure(), ensure_ascii=False).encode("utf-8") + b"\n")
        self.count += 1

    def save(self, objects: Any, location: S3Location) -> str | None:
        """Upload the run's rejected records (if any); returns their URI."""
        if not self.count:
            return None
        objects.put_file(location, self._file, JSONL)
        return location.uri

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RejectedSpool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
