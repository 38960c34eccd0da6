"""The pipeline's own counts, as CloudWatch embedded metric format (EMF) through Powertools.

Each handler invocation gets one :class:`PipelineMetrics` (Powertools' ``EphemeralMetrics``:
nothing shared between invocations or threads, so concurrent handlers in the local stack do not
mix their counts) and publishes it once, at the end, as one EMF JSON line on stdout. On AWS,
Lambda sends stdout to CloudWatch Logs, which extracts the metrics (namespace
``POWERTOOLS_METRICS_NAMESPACE``, dimension ``service`` = ``POWERTOOLS_SERVICE_NAME``). The local
stack points :func:`set_output` at a file. The names below are the ones ``infra/metrics.py``
alarms on and graphs (a test keeps the two equal).
"""

from __future__ import annotations

import json
import os
import sys
import threading
from typing import TextIO

from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit

from ticket_pipeline.logs import service_name

try:  # Powertools >= 3.x (the layer may be older than the pinned package)
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled
except ImportError:  # pragma: no cover - depends on the layer version

    def is_metrics_disabled() -> bool:
        return os.environ.get("POWERTOOLS_METRICS_DISABLED", "false").lower() in ("1", "true")


DEFAULT_NAMESPACE = "TicketTriage"

METRIC_NAMES = (
    # dispatcher
    "FilesReceived",  # ticket files taken in (not duplicates of an event already handled)
    "WholeFileFailures",  # files rejected as a whole (unreadable, empty, wrong type, too large)
    "TicketsDispatched",  # tickets written into chunks and sent to the endpoint
    "ChunksSubmitted",  # InvokeEndpointAsync calls accepted
    "ChunksRejectedByEndpoint",  # InvokeEndpointAsync calls refused for good (ValidationError, ...)
    "RecordsRejected",  # records never sent (bad JSON, empty text, duplicate id, ...)
    "DispatchContinuations",  # a file handed to the next dispatcher run
    # aggregator, sweeper and dispatcher (whoever finalizes a job)
    "ResultsPublished",  # results messages published (one per job)
    "TicketsSucceeded",
    "TicketsFailed",
    "TicketsToReview",  # classified tickets flagged for review (needs_review or out of scope)
    "TicketsOutOfScope",  # of those, the ones whose top score is under OUT_OF_SCOPE_BELOW
    "ReviewMessagesPublished",  # messages on the review topic
    # per finalized file, one sample each (lambda/ticket_pipeline/review.py): CloudWatch's
    # Average over a period of 3600 s is the hourly figure
    "ReviewShare",  # flagged / classified tickets of the file
    "OutOfScopeShare",  # out of scope / classified tickets of the file
    "CategoryDrift",  # Jensen-Shannon distance of the file's predicted mix from the training mix
    # sweeper
    "OverdueJobs",  # jobs finalized partial because their deadline passed
    # aggregator
    "InvalidNotifications",  # messages on the success/error topics that are not SageMaker notifications
    "UnknownNotifications",  # notifications for an inference id or chunk this pipeline has no job for
    "LateNotifications",  # notifications for a job already finalized (e.g. by the sweeper): ignored
    "DuplicateNotifications",  # redeliveries of a notification already recorded
    # corrections
    "CorrectionsReceived",  # lines of correction files read
    "CorrectionsRecorded",  # lines recorded (first correction of a ticket, or superseding one)
    "CorrectionsRejected",  # lines rejected with a reason (rejections.jsonl)
    "ReviewedTickets",  # net change of the tickets with a recorded correction
    "ReviewedCorrect",  # net change of those the model had right (accuracy = sum / ReviewedTickets)
)

# What each function counts. A handler publishes every one of its counts on every invocation, 0
# included: an alarm and a graph then see a data point per run (0 when nothing happened) instead
# of no data, and every metric the stack watches exists from the first run on.
FINALIZING = (
    "ResultsPublished",
    "TicketsSucceeded",
    "TicketsFailed",
    # the review queue (review.py)
    "TicketsToReview",
    "TicketsOutOfScope",
    "ReviewMessagesPublished",
)
# Samples (one value per finalized file), not counts: published only when a file was finalized.
SAMPLES = ("ReviewShare", "OutOfScopeShare", "CategoryDrift")
DISPATCHER_COUNTS = (
    "FilesReceived",
    "WholeFileFailures",
    "TicketsDispatched",
    "ChunksSubmitted",
    "ChunksRejectedByEndpoint",
    "RecordsRejected",
    "DispatchContinuations",
    *FINALIZING,
)
AGGREGATOR_COUNTS = (
    *FINALIZING,
    "InvalidNotifications",
    "UnknownNotifications",
    "LateNotifications",
    "DuplicateNotifications",
)
SWEEPER_COUNTS = ("OverdueJobs", *FINALIZING)
CORRECTIONS_COUNTS = (
    "CorrectionsReceived",
    "CorrectionsRecorded",
    "CorrectionsRejected",
    "ReviewedTickets",
    "ReviewedCorrect",
)

_output: TextIO | None = None
_output_lock = threading.Lock()


def set_output(stream: TextIO | None) -> None:
    """Where published EMF lines go (``None``: stdout, what Lambda ships to CloudWatch Logs)."""
    global _output
    _output = stream


class PipelineMetrics:
    """Counts of one invocation, published as one EMF document."""

    def __init__(
        self, service: str | None = None, namespace: str | None = None, counts: tuple[str, ...] = ()
    ):
        """``counts``: the function's own counts, published even when they stay at 0."""
        self._emf = EphemeralMetrics(
            namespace=namespace or os.environ.get("POWERTOOLS_METRICS_NAMESPACE") or DEFAULT_NAMESPACE,
            service=service or service_name(),
        )
        self._lock = threading.Lock()
        for name in counts:
            self.count(name, 0)

    def count(self, name: str, value: int = 1) -> None:
        """Add ``value`` to a count (zero too: a graph then shows 0 rather than no data)."""
        if name not in METRIC_NAMES or name in SAMPLES:
            raise ValueError(f"unknown pipeline metric {name!r}: add it to METRIC_NAMES and infra/metrics.py")
        with self._lock:
            current = self._emf.metric_set.get(name, {}).get("Value", [])
            total = sum(current) + value
            self._emf.metric_set.pop(name, None)
            self._emf.add_metric(name=name, unit=MetricUnit.Count, value=total)

    def sample(self, name: str, value: float) -> None:
        """Add one value of a per-file measure (EMF keeps every value; CloudWatch's statistics
        over a period then give the per-hour figure)."""
        if name not in SAMPLES:
            raise ValueError(f"{name!r} is not a per-file sample: add it to SAMPLES and infra/metrics.py")
        with self._lock:
            self._emf.add_metric(name=name, unit=MetricUnit.NoUnit, value=value)

    @property
    def counts(self) -> dict[str, float]:
        with self._lock:
            return {name: sum(entry["Value"]) for name, entry in self._emf.metric_set.items()}

    def publish(self) -> dict | None:
        """Write the EMF document (one JSON line) and clear the counts; None when there was nothing."""
        with self._lock:
            if not self._emf.metric_set or is_metrics_disabled():
                return None
            document = self._emf.serialize_metric_set()
            self._emf.clear_metrics()
        line = json.dumps(document, separators=(",", ":"))
        with _output_lock:
            print(line, file=_output or sys.stdout, flush=True)
        return document
