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
import types
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ClientError

from local_pipeline.aws import MotoServer, Names, Resources, create_jobs_table, provision
from ticket_pipeline import aggregation
from ticket_pipeline import jobs as J
from ticket_pipeline import results as results_module
from ticket_pipeline.aggregation import NotificationResult, handle_notification
from ticket_pipeline.jobs import JobStore
from ticket_pipeline.metrics import PipelineMetrics
from ticket_pipeline.notifications import AsyncInferenceNotification, error_notification, success_notification
from ticket_pipeline.results import Publisher, consolidate, finalize_for
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


def _log_records(filename: str) -> Iterator[list[logging.LogRecord]]:
    """The log records made in one module of the package (the Powertools child loggers share one
    stdlib logger)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.filename == filename:
                records.append(record)

    handler = Keep(logging.DEBUG)
    target = logging.getLogger(aggregation.logger.name)
    level = target.level
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    yield records
    target.removeHandler(handler)
    target.setLevel(level)


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    """The aggregation module's log records."""
    yield from _log_records("aggregation.py")


@pytest.fixture
def results_logged() -> Iterator[list[logging.LogRecord]]:
    """results.py's log records."""
    yield from _log_records("results.py")


def _job(stack: Stack, job_id: str = "job1", chunks: int = 2, ids: list[list[str]] | None = None) -> None:
    """A dispatched job: ``chunks`` chunks of two tickets each (or a chunk per list of ``ids``),
    submitted, none reported."""
    jobs = stack.jobs
    fields = {"status": J.DISPATCHING, "cursor": 0, "source": f"s3://in/{job_id}.jsonl", "version_id": "v1"}
    assert jobs.create_job(job_id, fields, CLOCK + 3600)
    tickets = ids if ids is not None else [[f"t{n}a", f"t{n}b"] for n in range(1, chunks + 1)]
    for n, ticket_ids in enumerate(tickets, start=1):
        chunk = {"chunk": n, "inference_id": J.inference_id_for(job_id, n), "ticket_ids": ticket_ids}
        jobs.put_chunk(job_id, chunk)  # as the dispatcher writes it
        jobs.mark_chunk_submitted(job_id, n, "2027-01-15T07:59:00.000Z", _out(stack, job_id, n), None)
    count = sum(map(len, tickets))
    done = {"cursor": count, "chunk_count": len(tickets), "tickets": count, "rejected": 0}
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
    else:  # the module's bucket is shared: an earlier case's object must not be read as this one's
        stack.s3.delete_object(Bucket=stack.names.output_bucket, Key="async-failures/job1-2.err")
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


PREDICTIONS = [
    {"id": "t1a", "index": 0, "label": "card_arrival", "score": 0.9, "needs_review": False},
    {"id": "t1b", "index": 1, "label": "lost_or_stolen_card", "score": 0.123456789, "needs_review": True},
]


def _jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def _finalized_with_output(stack: Stack, job_id: str, body: bytes | None) -> dict[str, Any]:
    """A one-chunk job (``t1a``, ``t1b``) whose output object holds ``body`` (None: no object),
    finalized by its success notification; the results message."""
    _job(stack, job_id, chunks=1)
    if body is not None:
        key = _out(stack, job_id, 1).split("/", 3)[3]
        stack.s3.put_object(Bucket=stack.names.output_bucket, Key=key, Body=body)
    assert _handle(stack, _succeeded(stack, job_id, 1, write_output=False)).finalized is not None
    [message] = stack.results_messages()
    return message


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(_jsonl(PREDICTIONS), id="json-lines"),
        pytest.param(_jsonl(PREDICTIONS[::-1]), id="json-lines-out-of-order"),  # matched by "index"
        pytest.param(  # no "index": matched by position
            _jsonl([{k: v for k, v in p.items() if k != "index"} for p in PREDICTIONS]), id="no-index"
        ),
        pytest.param(  # a second record for index 0 (t1b's): the first one for an index is kept
            _jsonl([PREDICTIONS[0], {**PREDICTIONS[1], "index": 0}, PREDICTIONS[1]]), id="index-twice"
        ),
        pytest.param(json.dumps(PREDICTIONS).encode(), id="json-array"),
        *[
            pytest.param(json.dumps({k: PREDICTIONS}).encode(), id=f"json-{k}")
            for k in ("predictions", "results", "outputs")
        ],
        pytest.param(json.dumps(PREDICTIONS, indent=2).encode(), id="pretty-printed-array"),
        pytest.param(
            json.dumps({"predictions": PREDICTIONS}, indent=2).encode(), id="pretty-printed-predictions"
        ),
        # one element a line: the last line parses alone, the document is still one array
        pytest.param(
            b"[\n" + b",\n".join(json.dumps(p).encode() for p in PREDICTIONS) + b"\n]\n", id="element-a-line"
        ),
        pytest.param(b"[" + b",\n".join(json.dumps(p).encode() for p in PREDICTIONS) + b"]", id="two-lines"),
    ],
)
def test_a_chunks_output_is_read_in_every_shape_a_server_writes(stack: Stack, body: bytes):
    """results.py reads the model's output as JSON Lines, as one JSON array or object holding the
    array (on one line or over several), and matches each record to its ticket by ``index`` (its
    position without one); each ticket's line carries its own label, its score to six decimals,
    and the summary and message count the tickets needing review."""
    job_id = f"job{uuid.uuid4().hex[:8]}"  # an output object of its own in the module's bucket
    message = _finalized_with_output(stack, job_id, body)
    assert message["status"] == "complete"
    assert [json.loads(line) for line in _read_s3(stack, message["results"]).splitlines()] == [
        {"id": "t1a", "label": "card_arrival", "score": 0.9, "needs_review": False},
        {"id": "t1b", "label": "lost_or_stolen_card", "score": 0.123457, "needs_review": True},
    ]
    assert _read_s3(stack, message["failures"]) == b""
    summary = json.loads(_read_s3(stack, message["summary"]))
    assert (summary["needs_review"], summary["needs_review_share"], message["needs_review"]) == (1, 0.5, 1)


def test_an_output_document_of_another_shape_fails_every_ticket_of_its_chunk(stack: Stack):
    job_id = f"job{uuid.uuid4().hex[:8]}"
    message = _finalized_with_output(stack, job_id, json.dumps({"other": PREDICTIONS}, indent=2).encode())
    assert message["status"] == "partial" and _read_s3(stack, message["results"]) == b""
    failures = [json.loads(line) for line in _read_s3(stack, message["failures"]).splitlines()]
    assert failures == [
        {"id": i, "error": "the model server returned no prediction for this ticket"} for i in ("t1a", "t1b")
    ]


@pytest.mark.parametrize("case", ["output gone", "no output location", "failed without a reason"])
def test_a_chunk_without_a_readable_output_or_a_reason_fails_each_ticket_with_why(stack: Stack, case: str):
    """A succeeded chunk whose output object is gone (deleted before the finalization) or whose
    item has no output location, and a failed chunk without a reason: each ticket still ends up
    in the failures, with an error that says why."""
    job_id = f"job{uuid.uuid4().hex[:8]}"
    errors = {
        "output gone": f"async output unavailable: {_out(stack, job_id, 1)} does not exist",
        "no output location": "async output unavailable: not an S3 URI: ''",
        "failed without a reason": "async invocation failed",
    }
    if case == "output gone":
        message = _finalized_with_output(stack, job_id, None)
    else:
        _job(stack, job_id, chunks=1)
        state = J.SUCCEEDED if case == "no output location" else J.FAILED
        outcome = J.ChunkOutcome(state=state, reported_at=CLOCK_ISO, notification_status="Completed")
        assert stack.jobs.record_chunk_outcome(job_id, 1, outcome) is J.Recorded.RECORDED
        assert finalize_for(job_id, stack.deps, stack.settings, clock=lambda: CLOCK) is not None
        [message] = stack.results_messages()
    failures = [json.loads(line) for line in _read_s3(stack, message["failures"]).splitlines()]
    assert failures == [{"id": i, "error": errors[case]} for i in ("t1a", "t1b")]


def test_failures_are_written_as_utf8_and_the_summary_samples_the_first_fifty(stack: Stack):
    """A help desk's own ids and the model's reason keep their characters in failures.jsonl
    (UTF-8, not ``\\u`` escapes); the summary lists the first 50 failures and counts them all."""
    ids = [f"Ticket-ü-{i:02}" for i in range(51)]
    _job(stack, ids=[ids])
    assert _handle(stack, _failed("job1", 1, "ModelError: Zeitüberschreitung")).finalized == "partial"
    [message] = stack.results_messages()
    body = _read_s3(stack, message["failures"])
    expected = [{"id": i, "error": "ModelError: Zeitüberschreitung"} for i in ids]
    assert body == b"".join(json.dumps(f, ensure_ascii=False).encode() + b"\n" for f in expected)
    summary = json.loads(_read_s3(stack, message["summary"]))
    assert summary["failures_sample"] == expected[:50]
    assert (summary["failed"], summary["failure_reasons"]) == (51, {"ModelError: Zeitüberschreitung": 51})


def test_a_finalized_jobs_summary_message_and_record_in_full(
    stack: Stack, results_logged: list[logging.LogRecord]
):
    """What a finalization writes, every field: the summary (counts, categories and failure
    reasons by count then name, the failed chunks, when the job was submitted and when its last
    chunk reported), the results message and its ``status`` attribute, and the job's record."""
    _job(stack, ids=[["a", "b", "c", "d", "e", "f"], ["g", "h"]])
    predictions = [
        {"id": i, "label": label, "score": 0.5, "needs_review": i == "b"}
        for i, label in (("a", "zebra"), ("b", "zebra"), ("c", "beta"), ("d", "alpha"))
    ]
    predictions += [{"id": "e", "error": "text too long"}, {"id": "other"}]
    key = _out(stack, "job1", 1).split("/", 3)[3]
    stack.s3.put_object(Bucket=stack.names.output_bucket, Key=key, Body=_jsonl(predictions))
    assert _handle(stack, _succeeded(stack, "job1", 1, write_output=False), clock=CLOCK + 5).finalized is None
    assert _handle(stack, _failed("job1", 2, "ModelError: boom"), clock=CLOCK).finalized == "partial"

    received = stack.sqs.receive_message(
        QueueUrl=stack.results_queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    )
    [envelope] = [json.loads(m["Body"]) for m in received["Messages"]]
    message = json.loads(envelope["Message"])
    base = f"s3://{stack.names.output_bucket}/results/job1/"
    assert message == {
        "status": "partial",
        "job_id": "job1",
        "source": "s3://in/job1.jsonl",
        "version_id": "v1",
        "results": base + "results.jsonl",
        "failures": base + "failures.jsonl",
        "summary": base + "summary.json",
        "tickets": 8,
        "failed": 4,
        "succeeded": 4,
        "needs_review": 1,
    }
    assert envelope["MessageAttributes"] == {"status": {"Type": "String", "Value": "partial"}}
    failures = [
        {"id": "e", "error": "rejected by the model server: text too long"},
        {"id": "f", "error": "prediction for index 5 carries id 'other'"},
        {"id": "g", "error": "ModelError: boom"},
        {"id": "h", "error": "ModelError: boom"},
    ]
    assert json.loads(_read_s3(stack, message["summary"])) == {
        "job_id": "job1",
        "source": "s3://in/job1.jsonl",
        "version_id": "v1",
        "status": "partial",
        "error": None,
        "overdue": False,
        "tickets": 8,
        "succeeded": 4,
        "failed": 4,
        "needs_review": 1,
        "needs_review_share": 0.25,
        "categories": {"zebra": 2, "alpha": 1, "beta": 1},
        "failure_reasons": {
            "ModelError: boom": 2,
            "prediction for index 5 carries id 'other'": 1,
            "rejected by the model server: text too long": 1,
        },
        "failures_sample": failures,
        "chunks": {"total": 2, "succeeded": 1, "failed": 1},
        "failed_chunks": [
            {"chunk": 2, "inference_id": "job1-c00002", "tickets": 2, "reason": "ModelError: boom"}
        ],
        "submitted_at": "2027-01-15T07:59:00.000Z",
        "completed_at": "2027-01-15T08:00:05.123Z",  # the later of the two reports
        "processing_seconds": 65.123,
        "results": base + "results.jsonl",
        "failures": base + "failures.jsonl",
    }
    assert [json.loads(line) for line in _read_s3(stack, message["failures"]).splitlines()] == failures
    job = stack.jobs.get_job("job1")
    assert job is not None
    recorded = {k: job.get(k) for k in ("status", "finished_at", "succeeded", "failed", "results_message_id")}
    assert recorded == {
        "status": "partial",
        "finished_at": CLOCK_ISO,
        "succeeded": 4,
        "failed": 4,
        "results_message_id": envelope["MessageId"],
    }
    locations = {k: job.get(f"{k}_location") for k in ("results", "failures", "summary")}
    assert locations == {k: message[k] for k in ("results", "failures", "summary")}
    [logged] = [r for r in results_logged if r.getMessage() == "job finalized"]
    assert (logged.job_id, logged.status, logged.tickets, logged.failed) == ("job1", "partial", 8, 4)


def test_the_summary_lists_the_first_200_failed_chunks_and_counts_them_all(stack: Stack):
    meta = {"job_id": "big", "chunk_count": 201, "tickets": 201, "submitted_at": "2027-01-15T07:59:00.000Z"}
    chunks = [
        {"chunk": n, "state": J.FAILED, "ticket_ids": [f"t{n}"], "failure_reason": f"ModelError: {n}"}
        for n in range(1, 202)
    ]
    report = consolidate(meta, chunks, stack.deps.objects, stack.names.output_bucket, "results/")
    assert report.summary["chunks"] == {"total": 201, "succeeded": 0, "failed": 201}
    assert [c["chunk"] for c in report.summary["failed_chunks"]] == list(range(1, 201))
    assert report.message["failed"] == 201


def test_chunks_that_account_for_fewer_tickets_than_the_job_has_never_make_it_complete(stack: Stack):
    """Every chunk succeeded, but the job was dispatched with one ticket more than its chunks hold:
    ``partial``, with the job's own count, never ``complete``."""
    location = _out(stack, "short", 1)
    stack.s3.put_object(
        Bucket=stack.names.output_bucket, Key=location.split("/", 3)[3], Body=_jsonl(PREDICTIONS)
    )
    meta = {"job_id": "short", "chunk_count": 1, "tickets": 3}
    chunk = {"chunk": 1, "state": J.SUCCEEDED, "ticket_ids": ["t1a", "t1b"], "output_location": location}
    report = consolidate(meta, [chunk], stack.deps.objects, stack.names.output_bucket, "results/")
    assert (report.status, report.message["tickets"], report.message["succeeded"]) == ("partial", 3, 2)
    right = consolidate({**meta, "tickets": 2}, [chunk], stack.deps.objects, stack.names.output_bucket, "r/")
    assert (right.status, right.summary["tickets"]) == ("complete", 2)


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def _one_attempt_dynamodb(moto_server: MotoServer):
    """A DynamoDB client on moto's server that makes one attempt: what the handler sees of an
    error once botocore's own retries are spent."""
    return boto3.client(
        "dynamodb",
        endpoint_url=moto_server.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}),
    )


THROTTLED = json.dumps(
    {
        "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
        "message": "The level of configured provisioned throughput for the table was exceeded.",
    }
).encode()


def _completion_throttled(
    stack: Stack, moto_server: MotoServer, times: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[Stores, list[int], list[float]]:
    """Stores whose jobs table answers the job's completion (the UpdateItem that removes the lease)
    with DynamoDB's throttling error ``times`` times, as the handler sees it once botocore's own
    retries are spent (a client with one attempt); the attempts made and the back-off slept (the
    sleeps are recorded, not waited: results.py's ``time`` is replaced for the test)."""
    client = _one_attempt_dynamodb(moto_server)
    attempts: list[int] = []

    def respond(request: Any, **_: Any) -> AWSResponse | None:
        if b"REMOVE lease_until" not in request.body:
            return None
        attempts.append(1)
        if len(attempts) > times:
            return None
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(THROTTLED))

    client.meta.events.register_first("before-send.dynamodb.UpdateItem", respond)
    slept: list[float] = []
    monkeypatch.setattr(results_module, "time", types.SimpleNamespace(sleep=slept.append))
    deps = dataclasses.replace(stack.deps, jobs=JobStore(client, stack.names.jobs_table))
    _job(stack, chunks=1)
    key = _out(stack, "job1", 1).split("/", 3)[3]
    stack.s3.put_object(Bucket=stack.names.output_bucket, Key=key, Body=_jsonl(PREDICTIONS))
    outcome = J.ChunkOutcome(J.SUCCEEDED, CLOCK_ISO, "Completed", output_location=_out(stack, "job1", 1))
    assert stack.jobs.record_chunk_outcome("job1", 1, outcome) is J.Recorded.RECORDED
    return deps, attempts, slept


def test_recording_the_finished_job_is_retried_with_back_off_after_the_publish(
    stack: Stack,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    results_logged: list[logging.LogRecord],
):
    """The message is out: a throttled completion is retried, waiting 0.05 s and doubling up to
    2 s, until it is recorded (never given back: a second finalizer would publish again)."""
    deps, attempts, slept = _completion_throttled(stack, moto_server, 8, monkeypatch)
    report = finalize_for("job1", deps, stack.settings, clock=lambda: CLOCK, time_left=lambda: 60.0)
    assert report is not None and len(stack.results_messages()) == 1
    assert (len(attempts), slept) == (9, [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])
    assert stack.jobs.get_job("job1")["status"] == "complete"
    retries = [r for r in results_logged if r.levelno == logging.WARNING]
    assert [(r.getMessage(), r.job_id) for r in retries] == [
        ("recording the finished job failed; retrying", "job1")
    ] * 8
    assert all("ProvisionedThroughputExceeded" in r.error for r in retries)


def test_recording_the_finished_job_stops_retrying_when_the_invocation_runs_out_of_time(
    stack: Stack,
    moto_server: MotoServer,
    monkeypatch: pytest.MonkeyPatch,
    results_logged: list[logging.LogRecord],
):
    """A retry is tried only with twice its wait plus a second left: at 1.25 s left, after the
    waits of 0.05 and 0.1 s, the third failure (whose wait would be 0.2 s) is raised; the job
    stays ``finalizing`` with its lease, the message out once."""
    deps, attempts, slept = _completion_throttled(stack, moto_server, 99, monkeypatch)
    left = iter([60.0, *[1.25] * 9])  # the publish with time to spare; then 1.25 s left
    with pytest.raises(ClientError, match="ProvisionedThroughputExceeded"):
        finalize_for("job1", deps, stack.settings, clock=lambda: CLOCK, time_left=lambda: next(left))
    assert (len(attempts), slept) == (3, [0.05, 0.1])
    assert len(stack.results_messages()) == 1
    job = stack.jobs.get_job("job1")
    assert (job["status"], job["lease_until"]) == ("finalizing", int(CLOCK) + LEASE)
    [error] = [r for r in results_logged if r.levelno == logging.ERROR]
    assert (
        error.getMessage()
        == "results published but the job could not be recorded as finished; its lease will run out"
    )
    assert error.job_id == "job1" and "ProvisionedThroughputExceeded" in error.error


def test_the_review_queue_sees_each_classified_ticket_once_through_the_finalization(
    stack: Stack, resources: tuple[Resources, dict[str, Any]]
):
    """results.py's review hook (issue #21, fourth mutation pass) with a review topic configured:
    every classified ticket is shown to the review run once (a ticket key in two chunks is
    classified once, so it is flagged once), the flagged ones are written to review.jsonl with
    the text their chunk holds and published to the review topic (its SQS subscriber receives
    them), the counts go to the metrics; the results message is published as without review."""
    provisioned, clients = resources
    settings = AggregatorSettings.from_env(
        {
            "JOBS_TABLE": stack.names.jobs_table,
            "OUTPUT_BUCKET": stack.names.output_bucket,
            "RESULTS_TOPIC_ARN": provisioned.results_topic_arn,
            "REVIEW_TOPIC_ARN": provisioned.review_topic_arn,
            "OUT_OF_SCOPE_BELOW": "0.2",
            "FUNCTION_TIMEOUT_SECONDS": "60",
            "FINALIZE_LEASE_SECONDS": str(LEASE),
        }
    )
    reviewed = dataclasses.replace(stack, settings=settings)
    sqs, review_url = clients["sqs"], provisioned.review_queue_url
    while sqs.receive_message(QueueUrl=review_url, MaxNumberOfMessages=10).get("Messages"):
        sqs.purge_queue(QueueUrl=review_url)  # another test's review messages
    job_id = f"job{uuid.uuid4().hex[:8]}"
    bucket = stack.names.output_bucket
    texts = {"a": "my card arrived", "b": "is my card late", "c": "what is the weather", "d": "pin?"}
    tickets = [["a", "b", "c"], ["c", "d"]]  # "c" twice: the second is a duplicate
    top = [{"label": "card_arrival", "score": 0.45}, {"label": "card_delivery_estimate", "score": 0.3}]
    top += [{"label": "lost_or_stolen_card", "score": 0.1}, {"label": "pin_blocked", "score": 0.05}]
    outputs = [
        [
            {"id": "a", "index": 0, "label": "card_arrival", "score": 0.9, "needs_review": False},
            {
                "id": "b",
                "index": 1,
                "label": "card_arrival",
                "score": 0.45,
                "needs_review": True,
                "top_k": top,
            },
            {"id": "c", "index": 2, "label": "pin_blocked", "score": 0.1, "needs_review": True},
        ],
        [
            {"id": "c", "index": 0, "label": "pin_blocked", "score": 0.1, "needs_review": True},
            {"id": "d", "index": 1, "label": "change_pin", "score": 0.5, "needs_review": True},
        ],
    ]
    jobs = stack.jobs
    fields = {"status": J.DISPATCHING, "cursor": 0, "source": f"s3://in/{job_id}.jsonl", "version_id": "v1"}
    assert jobs.create_job(job_id, fields, CLOCK + 3600)
    for n, (ids, output) in enumerate(zip(tickets, outputs, strict=True), start=1):
        key = f"chunks/{job_id}/{n}.jsonl"
        body = "".join(json.dumps({"id": i, "text": texts[i]}) + "\n" for i in ids)
        stack.s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
        chunk = {"chunk": n, "inference_id": J.inference_id_for(job_id, n), "ticket_ids": ids}
        jobs.put_chunk(job_id, {**chunk, "input_location": f"s3://{bucket}/{key}"})
        jobs.mark_chunk_submitted(job_id, n, "2027-01-15T07:59:00.000Z", _out(stack, job_id, n), None)
        stack.s3.put_object(Bucket=bucket, Key=_out(stack, job_id, n).split("/", 3)[3], Body=_jsonl(output))
    done = {"cursor": 5, "chunk_count": 2, "tickets": 5, "rejected": 0}
    assert jobs.finish_dispatch(job_id, 0, {**done, "submitted_at": "2027-01-15T07:59:00.000Z"}, CLOCK + 3600)
    assert _handle(reviewed, _succeeded(stack, job_id, 1, write_output=False)).finalized is None
    assert _handle(reviewed, _succeeded(stack, job_id, 2, write_output=False)).finalized is not None

    [message] = stack.results_messages()
    summary = json.loads(_read_s3(stack, message["summary"]))
    assert (summary["succeeded"], summary["needs_review"]) == (4, 3)
    low = "top score {:.4f} is below the review threshold"
    expected = [
        {
            "id": "b",
            "text": "is my card late",
            "labels": top[:3],
            "reason": "low_confidence",
            "why": low.format(0.45),
        },
        {
            "id": "c",
            "text": "what is the weather",
            "labels": [{"label": "pin_blocked", "score": 0.1}],
            "reason": "out_of_scope",
            "why": "top score 0.1000 is below the out-of-scope threshold 0.2",
        },
        {
            "id": "d",
            "text": "pin?",
            "labels": [{"label": "change_pin", "score": 0.5}],
            "reason": "low_confidence",
            "why": low.format(0.5),
        },
    ]
    review_key = f"review/{job_id}/review.jsonl"
    written = stack.s3.get_object(Bucket=bucket, Key=review_key)["Body"].read()
    assert [json.loads(line) for line in written.splitlines()] == expected
    received = sqs.receive_message(QueueUrl=review_url, MaxNumberOfMessages=10).get("Messages", [])
    [review] = [json.loads(json.loads(m["Body"])["Message"]) for m in received]
    assert review["items"] == expected
    assert (review["type"], review["job_id"], review["flagged"], review["out_of_scope"]) == (
        "review",
        job_id,
        3,
        1,
    )
    assert (review["review"], review["results"]) == (f"s3://{bucket}/{review_key}", message["results"])
    counts = _counts(stack)
    assert (counts["TicketsToReview"], counts["TicketsOutOfScope"], counts["ReviewMessagesPublished"]) == (
        3,
        1,
        1,
    )


def test_a_job_record_that_cannot_be_read_gives_the_lease_back_with_dynamodbs_own_error(
    stack: Stack, moto_server: MotoServer
):
    """The claim succeeded, then reading the job's record (GetItem) is throttled: the
    finalization raises DynamoDB's own error (for the invocation's retry, not an error of its
    clean-up, with or without a review topic), gives the lease back, and publishes nothing."""
    client = _one_attempt_dynamodb(moto_server)

    def respond(request: Any, **_: Any) -> AWSResponse | None:
        if b'"META"' not in request.body:
            return None
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(THROTTLED))

    client.meta.events.register_first("before-send.dynamodb.GetItem", respond)
    deps = dataclasses.replace(stack.deps, jobs=JobStore(client, stack.names.jobs_table))
    _job(stack, chunks=1)
    outcome = J.ChunkOutcome(J.SUCCEEDED, CLOCK_ISO, "Completed", output_location=_out(stack, "job1", 1))
    assert stack.jobs.record_chunk_outcome("job1", 1, outcome) is J.Recorded.RECORDED
    with pytest.raises(ClientError) as raised:
        finalize_for("job1", deps, stack.settings, clock=lambda: CLOCK, time_left=lambda: 60.0)
    assert raised.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    job = stack.jobs.get_job("job1")
    assert (job["status"], float(job["lease_until"])) == (J.FINALIZING, 0)
    assert stack.results_messages() == []


def test_a_prediction_without_needs_review_is_not_to_review(stack: Stack):
    """A server that does not say ``needs_review`` leaves the ticket out of the review counts:
    its result line says ``false`` (results.py's default)."""
    predictions = [{k: v for k, v in p.items() if k != "needs_review"} for p in PREDICTIONS]
    message = _finalized_with_output(stack, f"job{uuid.uuid4().hex[:8]}", _jsonl(predictions))
    results = [json.loads(line) for line in _read_s3(stack, message["results"]).splitlines()]
    assert [r["needs_review"] for r in results] == [False, False]
    summary = json.loads(_read_s3(stack, message["summary"]))
    assert (summary["needs_review"], message["needs_review"]) == (0, 0)
