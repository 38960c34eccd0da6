"""Aggregator logic: one SageMaker async notification -> chunk outcome recorded once -> maybe fan in.

A notification for a job that is already finalized (the sweeper finalized it at its deadline,
or it arrived after everything else) is *late*: counted and ignored, never a second
finalization. Notifications for unknown inference ids or chunks are counted as unknown.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ticket_pipeline import jobs as J
from ticket_pipeline.jobs import ChunkOutcome, Recorded
from ticket_pipeline.logs import child_logger
from ticket_pipeline.notifications import AsyncInferenceNotification
from ticket_pipeline.results import finalize_for
from ticket_pipeline.settings import AggregatorSettings
from ticket_pipeline.stores import Stores

logger = child_logger()


Deps = Stores  # objects, jobs, publisher, metrics


@dataclass(frozen=True)
class NotificationResult:
    inference_id: str
    outcome: str  # recorded | duplicate | late | unknown
    job_id: str | None = None
    chunk: int | None = None
    finalized: str | None = None  # the job's final status if this notification completed it

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def handle_notification(
    notification: AsyncInferenceNotification,
    *,
    deps: Deps,
    settings: AggregatorSettings,
    clock: Callable[[], float] = time.time,
    time_left: Callable[[], float] = lambda: math.inf,
) -> NotificationResult:
    inference_id = notification.inferenceId
    parsed = J.parse_inference_id(inference_id)
    if parsed is None:
        logger.error(
            "notification for an inference id this pipeline did not issue", extra={"id": inference_id}
        )
        deps.metrics.count("UnknownNotifications")
        return NotificationResult(inference_id, "unknown")
    job_id, number = parsed
    log = {"job_id": job_id, "chunk": number, "inference_id": inference_id}
    now = datetime.fromtimestamp(clock(), UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if notification.succeeded:
        outcome = ChunkOutcome(
            state=J.SUCCEEDED,
            reported_at=now,
            notification_status=notification.invocationStatus,
            output_location=notification.output_location,
        )
    else:
        outcome = ChunkOutcome(
            state=J.FAILED,
            reported_at=now,
            notification_status=notification.invocationStatus,
            failure_location=notification.failure_location,
            failure_reason=notification.failure_description,
        )
    recorded = deps.jobs.record_chunk_outcome(job_id, number, outcome)
    if recorded is Recorded.UNKNOWN:
        logger.error("notification for an unknown job or chunk", extra=log)
        deps.metrics.count("UnknownNotifications")
        return NotificationResult(inference_id, "unknown", job_id, number)
    if recorded is Recorded.LATE:
        logger.warning(
            "late notification for a job already finalized; ignored", extra={**log, "state": outcome.state}
        )
        deps.metrics.count("LateNotifications")
        return NotificationResult(inference_id, "late", job_id, number)
    if recorded is Recorded.RECORDED:
        logger.info("chunk reported", extra={**log, "state": outcome.state})
    else:
        logger.info("duplicate notification ignored", extra=log)
        deps.metrics.count("DuplicateNotifications")
    # Also after a duplicate: if an earlier finalizer crashed, its lease has run out by now.
    report = finalize_for(job_id, deps, settings, clock, time_left=time_left)
    return NotificationResult(
        inference_id,
        recorded.value,
        job_id,
        number,
        report.status if report else None,
    )
