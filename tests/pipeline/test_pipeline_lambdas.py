"""The two Lambda handlers against moto's real server over loopback (real boto3): S3 events as
Lambda receives them, SNS-wrapped SageMaker notifications, DynamoDB conditional writes and
transactions, the results topic. The async endpoint is the local stand-in's HTTP front, not
started, so the tests play the endpoint's part (write outputs, send notifications)."""

from __future__ import annotations

import threading

import pytest
from pipeline_helpers import (
    Aws,
    Context,
    check_exactly_once,
    complete,
    drop,
    fail,
    jsonl,
    notify,
    queued,
    s3_put_event,
)

from local_pipeline.async_endpoint import AsyncEndpoint
from local_pipeline.aws import patched_environ
from ticket_pipeline import dispatcher


def test_dispatcher_chunks_records_and_invokes_with_the_documented_parameters(
    aws: Aws, endpoint: AsyncEndpoint
):
    out = drop(aws, "incoming/batch one+two (1).jsonl", jsonl(7))
    (job,) = out["jobs"]
    assert job["outcome"] == "submitted" and job["chunks"] == 3 and job["tickets"] == 7
    requests = queued(endpoint)
    assert len(requests) == 3
    for n, request in enumerate(requests, start=1):
        assert request.inference_id.endswith(f"-c{n:05d}") and len(request.inference_id) <= 64
        assert request.input_location == f"s3://{aws.names.input_bucket}/chunks/{job['job_id']}/{n:05d}.jsonl"
        assert request.content_type == request.accept == "application/jsonlines"
        assert (request.ttl_seconds, request.timeout_seconds) == (3600, 60)
    chunk = aws.read_jsonl(requests[0].input_location)
    assert chunk == [{"id": f"t{i}", "text": f"ticket number {i}"} for i in range(3)]
    meta = aws.jobs().get_job(job["job_id"])
    assert meta["source"] == f"s3://{aws.names.input_bucket}/incoming/batch one+two (1).jsonl"
    assert meta["chunk_count"] == 3 and meta["status"] == "submitted" and meta["expires_at"] > 0
    chunks = aws.jobs().list_chunks(job["job_id"])
    assert [c["ticket_ids"] for c in chunks] == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]]
    assert all(c["state"] == "submitted" and c["expected_output_location"] for c in chunks)


def test_duplicate_s3_event_does_not_create_a_second_job(aws: Aws, endpoint: AsyncEndpoint):
    body = jsonl(4)
    aws.s3.put_object(Bucket=aws.names.input_bucket, Key="incoming/a.jsonl", Body=body)
    event = s3_put_event(
        aws.names.input_bucket, "incoming/a.jsonl", len(body), sequencer="0055AED6DCD90281E5"
    )
    first = dispatcher.handler(event, Context())["jobs"][0]
    second = dispatcher.handler(event, Context())["jobs"][0]
    assert (second["job_id"], second["outcome"], second["invoked"]) == (first["job_id"], "duplicate", 0)
    assert len(endpoint.queued()) == 2


def test_success_error_and_duplicate_notifications_fan_in_exactly_once(aws: Aws, endpoint: AsyncEndpoint):
    job = drop(aws, "incoming/seven.jsonl", jsonl(7))["jobs"][0]
    r1, r2, r3 = queued(endpoint)
    first = complete(aws, r1, errors=frozenset({1}))
    assert notify(aws, first)["notifications"][0]["outcome"] == "recorded"
    assert notify(aws, first)["notifications"][0]["outcome"] == "duplicate"  # SNS redelivery
    notify(
        aws,
        fail(aws, r3, "ClientError: Received server error (500) from model.", top_level_location=True),
        True,
    )
    assert aws.results_messages() == []  # chunk 2 still outstanding
    last = complete(aws, r2)
    result = notify(aws, last)["notifications"][0]
    assert result["finalized"] == "partial"
    for _ in range(2):  # the final notification delivered again: no second message, same files
        assert "finalized" not in notify(aws, last)["notifications"][0]
    (message,) = aws.results_messages()
    assert message["status"] == "partial" and message["job_id"] == job["job_id"]
    assert message["source"] == job["source"]
    results, failures = check_exactly_once(aws, message, {f"t{i}" for i in range(7)})
    assert {f["id"]: f["error"] for f in failures}.keys() == {"t1", "t6"}
    reasons = {f["id"]: f["error"] for f in failures}
    assert reasons["t1"] == "rejected by the model server: empty text"
    assert reasons["t6"].startswith("ClientError: Received server error (500)")
    assert "model exploded" in reasons["t6"]  # detail read from the failure location
    summary = aws.read_json(message["summary"])
    assert summary["tickets"] == 7 and summary["succeeded"] == 5 and summary["failed"] == 2
    assert sum(summary["categories"].values()) == 5
    assert summary["needs_review"] == sum(r["needs_review"] for r in results)
    assert summary["chunks"] == {"total": 3, "succeeded": 2, "failed": 1}
    assert summary["failed_chunks"][0]["tickets"] == 1
    assert aws.jobs().get_job(job["job_id"])["status"] == "partial"


def test_racing_final_notifications_publish_one_results_message(aws: Aws, endpoint: AsyncEndpoint):
    drop(aws, "incoming/race.jsonl", jsonl(9))
    notifications = [complete(aws, r) for r in queued(endpoint)]
    notify(aws, notifications[0])
    # The last two chunks, each delivered three times, from six concurrent "Lambda invocations".
    threads = [threading.Thread(target=notify, args=(aws, n)) for n in notifications[1:] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (message,) = aws.results_messages()
    assert message["status"] == "complete" and message["failed"] == 0
    check_exactly_once(aws, message, {f"t{i}" for i in range(9)})


def test_bad_records_are_reported_and_good_ones_classified(aws: Aws, endpoint: AsyncEndpoint):
    body = (
        b'{"id": "ok1", "text": "where is my card"}\n'
        b'{"id": "ok1", "text": "duplicate"}\n'
        b"this is not json\n"
        b'{"id": "blank", "text": "  "}\n'
        b'{"id": "latin", "text": "caf\xe9"}\n'  # windows-1252 bytes: a ticket, not an error
        b'{"text": "no id"}\n'
    )
    job = drop(aws, "incoming/bad.jsonl", body)["jobs"][0]
    assert (job["tickets"], job["rejected"], job["chunks"]) == (6, 3, 1)
    (request,) = endpoint.queued()
    assert aws.read_jsonl(request.input_location)[1] == {"id": "latin", "text": "café"}
    notify(aws, complete(aws, request))
    (message,) = aws.results_messages()
    keys = {"ok1", "<record 2>", "<record 3>", "blank", "latin", "<record 6>"}
    results, failures = check_exactly_once(aws, message, keys)
    assert {r["id"] for r in results} == {"ok1", "latin", "<record 6>"}
    errors = {f["id"]: f for f in failures}
    assert errors["<record 2>"]["source_id"] == "ok1" and errors["<record 2>"]["record"] == 2
    broken = errors["<record 3>"]["error"]
    assert broken.startswith("invalid JSON") and broken.endswith("(line 3)")
    assert aws.read_json(message["summary"])["failure_reasons"]["duplicate id"] == 1


def test_a_file_of_only_bad_records_completes_without_any_chunk(aws: Aws, endpoint: AsyncEndpoint):
    job = drop(aws, "incoming/all-bad.jsonl", b"nope\n[1, 2]\n")["jobs"][0]
    assert job["outcome"] == "all_rejected" and endpoint.queued() == []
    (message,) = aws.results_messages()
    assert message["status"] == "partial" and message["tickets"] == message["failed"] == 2


@pytest.mark.parametrize(
    ("key", "body", "reason"),
    [
        ("incoming/empty.jsonl", b"", "file is empty"),
        ("incoming/notes.txt", b"hello", "unsupported file type"),
        ("incoming/no-text.csv", b"id,body\n1,hello\n", "wrong format: the CSV header has columns ['id'"),
        ("incoming/blank-lines.jsonl", b"\n\n  \n", "file has no ticket records"),
        ("incoming/big.jsonl", jsonl(40_000), "more than MAX_FILE_MB=0.5"),
    ],
)
def test_whole_file_failures_publish_a_partial_result(
    aws: Aws, endpoint: AsyncEndpoint, key: str, body: bytes, reason: str
):
    with patched_environ({"MAX_FILE_MB": "0.5"}):
        dispatcher.runtime.cache_clear()
        job = drop(aws, key, body)["jobs"][0]
    assert job["outcome"] == "rejected_file" and reason in job["error"]
    (message,) = aws.results_messages()
    assert message["status"] == "partial" and message["tickets"] == 0 and reason in message["error"]
    assert aws.read_jsonl(message["failures"]) == [] and aws.read_jsonl(message["results"]) == []
    assert reason in aws.read_json(message["summary"])["error"]
    assert endpoint.queued() == []


def test_missing_object_is_a_whole_file_failure(aws: Aws, endpoint: AsyncEndpoint):
    event = s3_put_event(aws.names.input_bucket, "incoming/gone.jsonl", 10)
    job = dispatcher.handler(event, Context())["jobs"][0]
    assert job["outcome"] == "rejected_file" and "unreadable" in job["error"]
    assert aws.results_messages()[0]["status"] == "partial"


def test_rejected_invocations_fail_their_chunks_instead_of_hanging_the_job(aws: Aws, endpoint: AsyncEndpoint):
    with patched_environ({"ENDPOINT_NAME": "no-such-endpoint"}):
        dispatcher.runtime.cache_clear()
        job = drop(aws, "incoming/x.jsonl", jsonl(4))["jobs"][0]
    assert job["invoked"] == 0
    (message,) = aws.results_messages()
    assert message["status"] == "partial" and message["failed"] == 4
    failures = aws.read_jsonl(message["failures"])
    assert all("ValidationError" in f["error"] and "not found" in f["error"] for f in failures)


def test_csv_files_are_dispatched_too(aws: Aws, endpoint: AsyncEndpoint):
    body = b'id,text\nc1,"hello, my card"\nc2,"two\nlines"\n,no id\n'
    job = drop(aws, "incoming/tickets.csv", body)["jobs"][0]
    assert job["tickets"] == 3 and job["rejected"] == 0
    ids = [row["id"] for r in queued(endpoint) for row in aws.read_jsonl(r.input_location)]
    assert ids == ["c1", "c2", "<record 3>"]


def test_non_sagemaker_and_unknown_notifications_are_ignored(aws: Aws, endpoint: AsyncEndpoint):
    assert notify(aws, "not json at all")["notifications"][0]["outcome"] == "invalid"
    assert notify(aws, {"hello": "world"})["notifications"][0]["outcome"] == "invalid"
    unknown = {"inferenceId": "someone-else-c00001", "invocationStatus": "Completed"}
    assert notify(aws, unknown)["notifications"][0]["outcome"] == "unknown"
    assert aws.results_messages() == []
