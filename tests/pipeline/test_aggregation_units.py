"""One async-inference notification through :func:`ticket_pipeline.aggregation.handle_notification`,
on moto's server (the jobs table, the output bucket, the results topic), without the Lambda
handler around it: what is recorded, what the outcome says, what is counted and logged, and
when a notification finalizes its job.

The pipeline's resources get names of their own (per module; the jobs table per test), so these
tests never reset the shared server (and can share one server between processes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from local_pipeline.aws import MotoServer, Names, Resources, create_jobs_table, provision
from ticket_pipeline import aggregation
from ticket_pipeline import jobs as J
from ticket_pipeline.aggregation import NotificationResult, handle_notification
from ticket_pipeline.jobs import JobStore
from ticket_pipeline.metrics import PipelineMetrics
from ticket_pipeline.notifications import AsyncInferenceNotification, error_notification, success_notification
from ticket_pipeline.results import Publisher
from ticket_pipeline.settings import AggregatorSettings
from ticket_pipeline.storage import ObjectStore
from ticket_pipeline.stores import Stores

CLOCK = 1_800_000_000.123  # 2027-01-15T08:00:00.123Z
CLOCK_ISO = "2027-01-15T08:00:00.123Z"
LEASE = 120


@dataclasses.dataclass
class Stack:
    deps: Stores
    settings: AggregatorSettings
    names: Names
    s3: Any
    sqs: Any
    results_queue_url: str

    @property
    def jobs(self) -> JobStore:
        return self.deps.jobs

    def results_messages(self) -> list[dict[str, Any]]:
        """The results messages published since the last call (received and deleted)."""
        resp = self.sqs.receive_message(QueueUrl=self.results_queue_url, MaxNumberOfMessages=10)
        messages = resp.get("Messages", [])
        for m in messages:
            self.sqs.delete_message(QueueUrl=self.results_queue_url, ReceiptHandle=m["ReceiptHandle"])
        return [json.loads(json.loads(m["Body"])["Message"]) for m in messages]


@pytest.fixture(scope="module")
def resources(moto_server: MotoServer) -> tuple[Resources, dict[str, Any]]:
    """Buckets, topics and queues of their own for this module (provisioning is the slow part)."""
    suffix = uuid.uuid4().hex[:10]
    names = Names(**{f.name: f"{getattr(Names(), f.name)}-{suffix}" for f in dataclasses.fields(Names)})
    clients = {s: moto_server.client(s) for s in ("s3", "sns", "sqs", "dynamodb")}
    return provision(clients["s3"], clients["sns"], clients["sqs"], clients["dynamodb"], names), clients


@pytest.fixture
def stack(resources: tuple[Resources, dict[str, Any]]) -> Iterator[Stack]:
    """A fresh jobs table, fresh counts and an empty results queue per test."""
    provisioned, clients = resources
    names = dataclasses.replace(provisioned.names, jobs_table=f"jobs-{uuid.uuid4().hex[:12]}")
    create_jobs_table(clients["dynamodb"], names.jobs_table)
    settings = AggregatorSettings.from_env(
        {
            "JOBS_TABLE": names.jobs_table,
            "OUTPUT_BUCKET": names.output_bucket,
            "RESULTS_TOPIC_ARN": provisioned.results_topic_arn,
            "FUNCTION_TIMEOUT_SECONDS": "60",
            "FINALIZE_LEASE_SECONDS": str(LEASE),
        }
    )
    deps = Stores(
        objects=ObjectStore(clients["s3"]),
        jobs=JobStore(clients["dynamodb"], names.jobs_table),
        publisher=Publisher(clients["sns"]),
        metrics=PipelineMetrics(),
    )
    stack = Stack(deps, settings, names, clients["s3"], clients["sqs"], provisioned.results_queue_url)
    while stack.results_messages():  # an earlier test's results message
        pass
    yield stack
    clients["dynamodb"].delete_table(TableName=names.jobs_table)


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """The aggregation module's log records (the Powertools child loggers share one stdlib
    logger; the records made in aggregation.py)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.filename == "aggregation.py":
                records.append(record)

    handler = Keep(logging.DEBUG)
    target = logging.getLogger(aggregation.logger.name)
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    yield records
    target.removeHandler(handler)
    target.setLevel(level)


def _job(stack: Stack, job_id: str = "job1", chunks: int = 2) -> None:
    """A dispatched job: ``chunks`` chunks of two tickets each, submitted, none reported."""
    jobs = stack.jobs
    fields = {"status": J.DISPATCHING, "cursor": 0, "source": f"s3://in/{job_id}.jsonl", "version_id": "v1"}
    assert jobs.create_job(job_id, fields, CLOCK + 3600)
    for n in range(1, chunks + 1):
        jobs.put_chunk(job_id, {"chunk": n, "ticket_ids": [f"t{n}a", f"t{n}b"]})
        jobs.mark_chunk_submitted(job_id, n, "2027-01-15T07:59:00.000Z", _out(stack, job_id, n), None)
    done = {"cursor": 2 * chunks, "chunk_count": chunks, "tickets": 2 * chunks, "rejected": 0}
    assert jobs.finish_dispatch(job_id, 0, {**done, "submitted_at": "2027-01-15T07:59:00.000Z"}, CLOCK + 3600)


def _out(stack: Stack, job_id: str, n: int) -> str:
    return f"s3://{stack.names.output_bucket}/async-results/{job_id}-{n}.out"


def _succeeded(stack: Stack, job_id: str, n: int, write_output: bool = True) -> AsyncInferenceNotification:
    """The endpoint's documented success notification, its output written first."""
    location = _out(stack, job_id, n)
    if write_output:
        lines = [
            {"id": f"t{n}{s}", "index": i, "label": "card_arrival", "score": 0.9, "needs_review": False}
            for i, s in enumerate("ab")
        ]
        body = "".join(json.dumps(line) + "\n" for line in lines).encode()
        stack.s3.put_object(Bucket=stack.names.output_bucket, Key=location.split("/", 3)[3], Body=body)
    message = success_notification(
        **_envelope(job_id, n), output_location=location, response_content_type="application/jsonlines"
    )
    return AsyncInferenceNotification.model_validate(message)


def _failed(
    job_id: str, n: int, reason: str = "ModelError: boom", location: str | None = None
) -> AsyncInferenceNotification:
    message = error_notification(**_envelope(job_id, n), failure_location=location, failure_reason=reason)
    return AsyncInferenceNotification.model_validate(message)


def _envelope(job_id: str, n: int) -> dict[str, str]:
    """The fields a success and an error notification of chunk ``n`` share."""
    return {
        "inference_id": J.inference_id_for(job_id, n),
        "endpoint_name": "ep",
        "input_location": f"s3://in/chunks/{job_id}/{n}.jsonl",
        "received_time": "2027-01-15T07:59:00.000Z",
        "event_time": "2027-01-15T07:59:30.000Z",
        "region": "us-east-1",
        "content_type": "application/jsonlines",
        "accept": "application/jsonlines",
    }


def _handle(
    stack: Stack, notification: AsyncInferenceNotification, clock: float = CLOCK
) -> NotificationResult:
    return handle_notification(notification, deps=stack.deps, settings=stack.settings, clock=lambda: clock)


def _counts(stack: Stack) -> dict[str, float]:
    return stack.deps.metrics.counts


def test_an_id_this_pipeline_did_not_issue_is_unknown_and_touches_nothing(
    stack: Stack, logged: list[logging.LogRecord]
):
    _job(stack)
    notification = AsyncInferenceNotification.model_validate(
        {"inferenceId": "11111111-2222-3333-4444-555555555555", "invocationStatus": "Completed"}
    )
    result = _handle(stack, notification)
    assert result == NotificationResult("11111111-2222-3333-4444-555555555555", "unknown")
    assert result.as_dict() == {"inference_id": "11111111-2222-3333-4444-555555555555", "outcome": "unknown"}
    assert _counts(stack) == {"UnknownNotifications": 1}
    assert stack.jobs.get_job("job1")["reported"] == 0
    [record] = logged
    assert record.levelno == logging.ERROR
    assert record.getMessage() == "notification for an inference id this pipeline did not issue"
    assert record.id == "11111111-2222-3333-4444-555555555555"


def test_a_success_is_recorded_with_its_output_and_time(stack: Stack, logged: list[logging.LogRecord]):
    _job(stack)
    result = _handle(stack, _succeeded(stack, "job1", 1))
    assert result == NotificationResult("job1-c00001", "recorded", "job1", 1, None)
    assert result.as_dict() == {
        "inference_id": "job1-c00001",
        "outcome": "recorded",
        "job_id": "job1",
        "chunk": 1,
    }
    chunk = stack.jobs.get_chunk("job1", 1)
    assert {k: chunk.get(k) for k in ("state", "reported_at", "notification_status", "output_location")} == {
        "state": J.SUCCEEDED,
        "reported_at": CLOCK_ISO,
        "notification_status": "Completed",
        "output_location": _out(stack, "job1", 1),
    }
    assert "failure_reason" not in chunk and "failure_location" not in chunk
    assert stack.jobs.get_job("job1")["status"] == J.SUBMITTED  # one chunk still out
    assert _counts(stack) == {}
    [record] = logged
    assert (record.levelno, record.getMessage()) == (logging.INFO, "chunk reported")
    assert (record.job_id, record.chunk, record.inference_id, record.state) == (
        "job1",
        1,
        "job1-c00001",
        J.SUCCEEDED,
    )


def test_a_failure_is_recorded_with_its_reason(stack: Stack):
    _job(stack)
    failure = "s3://out/async-failures/job1-2.err"
    result = _handle(
        stack, _failed("job1", 2, "ClientError: Received server error (500) from model", failure)
    )
    assert result == NotificationResult("job1-c00002", "recorded", "job1", 2, None)
    chunk = stack.jobs.get_chunk("job1", 2)
    assert (chunk["state"], chunk["notification_status"], chunk["failure_reason"]) == (
        J.FAILED,
        "Failed",
        "ClientError: Received server error (500) from model",
    )
    assert chunk["reported_at"] == CLOCK_ISO
    assert chunk["failure_location"] == failure
    assert "output_location" not in chunk


def test_a_completed_notification_without_output_is_a_failed_chunk(stack: Stack):
    _job(stack)
    notification = AsyncInferenceNotification.model_validate(
        {"inferenceId": "job1-c00001", "invocationStatus": "Completed"}
    )
    assert _handle(stack, notification).outcome == "recorded"
    chunk = stack.jobs.get_chunk("job1", 1)
    assert chunk["state"] == J.FAILED
    assert chunk["failure_reason"] == "notification reported Completed without an outputLocation"


def test_the_last_notification_finalizes_the_job_once(stack: Stack, logged: list[logging.LogRecord]):
    _job(stack)
    assert _handle(stack, _succeeded(stack, "job1", 1)).finalized is None
    result = _handle(stack, _failed("job1", 2))
    assert result == NotificationResult("job1-c00002", "recorded", "job1", 2, "partial")
    assert result.as_dict()["finalized"] == "partial"
    job = stack.jobs.get_job("job1")
    assert (job["status"], job["succeeded"], job["failed"]) == (J.PARTIAL, 2, 2)
    [message] = stack.results_messages()
    assert (message["job_id"], message["status"], message["tickets"], message["failed"]) == (
        "job1",
        "partial",
        4,
        2,
    )
    assert _counts(stack) == {"ResultsPublished": 1, "TicketsSucceeded": 2, "TicketsFailed": 2}

    # the same notification again: a duplicate, and nothing is published twice
    again = _handle(stack, _failed("job1", 2))
    assert again == NotificationResult("job1-c00002", "duplicate", "job1", 2, None)
    assert stack.results_messages() == []
    assert _counts(stack)["ResultsPublished"] == 1


def test_the_last_notification_without_its_reserve_of_time_does_not_publish(stack: Stack):
    """Lambda may stop the function between the publish and the record of the finished job; so
    the handler hands its invocation's time left to the finalization, which publishes only with
    the reserve left, else gives the lease back and fails for the event's retry (which publishes
    once)."""
    from ticket_pipeline.results import OutOfTime

    _job(stack)
    assert _handle(stack, _succeeded(stack, "job1", 1)).finalized is None
    reserve = stack.settings.reserve_seconds
    with pytest.raises(OutOfTime):
        handle_notification(
            _succeeded(stack, "job1", 2),
            deps=stack.deps,
            settings=stack.settings,
            clock=lambda: CLOCK,
            time_left=lambda: reserve - 1,
        )
    assert stack.results_messages() == []
    assert stack.jobs.get_job("job1")["lease_until"] == 0  # released, not left to expire
    retried = handle_notification(
        _succeeded(stack, "job1", 2), deps=stack.deps, settings=stack.settings, clock=lambda: CLOCK
    )
    assert retried.finalized == "complete"
    assert len(stack.results_messages()) == 1


def test_a_notification_after_the_sweeper_finalized_is_late(stack: Stack, logged: list[logging.LogRecord]):
    _job(stack)
    assert stack.jobs.claim_overdue("job1", CLOCK + 3601, LEASE)  # the deadline passed
    result = _handle(stack, _succeeded(stack, "job1", 1), clock=CLOCK + 3602)
    assert result == NotificationResult("job1-c00001", "late", "job1", 1)
    assert result.as_dict() == {
        "inference_id": "job1-c00001",
        "outcome": "late",
        "job_id": "job1",
        "chunk": 1,
    }
    assert stack.jobs.get_chunk("job1", 1)["state"] == J.CHUNK_SUBMITTED
    assert _counts(stack) == {"LateNotifications": 1}
    [record] = logged
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "late notification for a job already finalized; ignored"
    assert (record.job_id, record.chunk, record.inference_id, record.state) == (
        "job1",
        1,
        "job1-c00001",
        J.SUCCEEDED,
    )


def test_all_chunks_succeeding_completes_the_job(stack: Stack):
    _job(stack, chunks=1)
    result = _handle(stack, _succeeded(stack, "job1", 1))
    assert (result.outcome, result.finalized) == ("recorded", "complete")
    assert stack.jobs.get_job("job1")["status"] == J.COMPLETE


def test_a_duplicate_is_counted_and_ignored(stack: Stack, logged: list[logging.LogRecord]):
    _job(stack)
    _handle(stack, _succeeded(stack, "job1", 1))
    logged.clear()
    result = _handle(stack, _failed("job1", 1), clock=CLOCK + 5)
    assert result == NotificationResult("job1-c00001", "duplicate", "job1", 1, None)
    chunk = stack.jobs.get_chunk("job1", 1)
    assert (chunk["state"], chunk["reported_at"]) == (J.SUCCEEDED, CLOCK_ISO)
    assert stack.jobs.get_job("job1")["reported"] == 1
    assert _counts(stack) == {"DuplicateNotifications": 1}
    [record] = logged
    assert (record.levelno, record.getMessage()) == (logging.INFO, "duplicate notification ignored")
    assert (record.job_id, record.chunk, record.inference_id) == ("job1", 1, "job1-c00001")


def test_a_duplicate_finishes_the_work_of_a_crashed_finalizer(stack: Stack):
    """The last notification's finalizer crashed after claiming the lease; SNS redelivers it
    after the lease ran out: the duplicate takes over and finalizes."""
    _job(stack, chunks=1)
    assert stack.jobs.record_chunk_outcome(
        "job1", 1, J.ChunkOutcome(J.SUCCEEDED, CLOCK_ISO, "Completed", _out(stack, "job1", 1))
    )
    assert stack.jobs.claim_finalization("job1", CLOCK, LEASE)  # ... and then the crash
    _succeeded(stack, "job1", 1)  # the output is there
    early = _handle(stack, _succeeded(stack, "job1", 1), clock=CLOCK + 10)
    assert early == NotificationResult("job1-c00001", "duplicate", "job1", 1, None)  # lease still live
    result = _handle(stack, _succeeded(stack, "job1", 1), clock=CLOCK + LEASE + 1)
    assert result == NotificationResult("job1-c00001", "duplicate", "job1", 1, "complete")
    assert stack.jobs.get_job("job1")["status"] == J.COMPLETE
    assert len(stack.results_messages()) == 1


@pytest.mark.parametrize("number", [9, None])
def test_a_chunk_or_job_the_table_does_not_know_is_unknown(
    stack: Stack, logged: list[logging.LogRecord], number: int | None
):
    _job(stack)
    job_id, chunk = ("job1", 9) if number else ("other", 1)
    result = _handle(stack, _failed(job_id, chunk))
    assert result == NotificationResult(J.inference_id_for(job_id, chunk), "unknown", job_id, chunk)
    assert result.as_dict() == {
        "inference_id": J.inference_id_for(job_id, chunk),
        "outcome": "unknown",
        "job_id": job_id,
        "chunk": chunk,
    }
    assert _counts(stack) == {"UnknownNotifications": 1}
    assert stack.jobs.get_job("job1")["reported"] == 0
    [record] = logged
    assert (record.levelno, record.getMessage()) == (
        logging.ERROR,
        "notification for an unknown job or chunk",
    )
    assert (record.job_id, record.chunk) == (job_id, chunk)


def _read_s3(stack: Stack, uri: str) -> bytes:
    bucket, key = uri[len("s3://") :].split("/", 1)
    return stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.mark.parametrize(
    "body, detail",
    [
        (b'{"error": "the model ran out of memory"}', " (model response: the model ran out of memory)"),
        (b'{"message":\n  "not the error field"}', ' (model response: {"message": "not the error field"})'),
        (b"Internal\n\n  server error", " (model response: Internal server error)"),
        (b"[1, 2]", " (model response: [1, 2])"),  # JSON, but not an object
        (b"  \n ", ""),  # nothing to add
        (None, ""),  # the failure object is gone
        (b"model \xff crashed", " (model response: model \ufffd crashed)"),  # not UTF-8: replaced
        (b" " * 600 + b"after the first 600 bytes", ""),  # only the first 600 bytes are read
        # a long response: the reason is cut at 300 characters, the last one "…"
        (
            b'{"error": "' + b"x" * 900 + b'"}',
            (' (model response: {"error": "' + "x" * 900)[: 299 - len("ModelError: boom")] + "…",
        ),
    ],
)
def test_a_finalized_job_writes_every_ticket_once_with_the_models_own_error(
    stack: Stack, body: bytes | None, detail: str
):
    """results.py: the result lines as the API documents them, and each failed ticket with the
    chunk's reason and what the model wrote to its failure location (bounded, whitespace folded)."""
    _job(stack)
    failure = f"s3://{stack.names.output_bucket}/async-failures/job1-2.err"
    if body is not None:
        stack.s3.put_object(Bucket=stack.names.output_bucket, Key="async-failures/job1-2.err", Body=body)
    assert _handle(stack, _succeeded(stack, "job1", 1)).finalized is None
    assert _handle(stack, _failed("job1", 2, "ModelError: boom", failure)).finalized == "partial"
    [message] = stack.results_messages()
    results = [json.loads(line) for line in _read_s3(stack, message["results"]).splitlines()]
    assert results == [
        {"id": f"t1{s}", "label": "card_arrival", "score": 0.9, "needs_review": False} for s in "ab"
    ]
    failures = [json.loads(line) for line in _read_s3(stack, message["failures"]).splitlines()]
    assert [(f["id"], f["error"]) for f in failures] == [
        (f"t2{s}", "ModelError: boom" + detail) for s in "ab"
    ]
    summary = json.loads(_read_s3(stack, message["summary"]))
    assert (summary["succeeded"], summary["failed"], summary["categories"]) == (2, 2, {"card_arrival": 2})
