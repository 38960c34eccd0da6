"""Files as big as promised, and exactly the version uploaded: the real dispatcher handler against
moto's server, its continuation through Lambda's asynchronous Invoke (the local front), the
async endpoint stand-in taking the requests. Every AWS call the handlers make here is replayed
against the synthesized template's roles (``iam_calls``): the continuation's self-invoke included."""

from __future__ import annotations

import json
from typing import Any

from pipeline_helpers import (
    Aws,
    Context,
    check_exactly_once,
    complete,
    drop,
    fail,
    notify,
    queued,
    s3_put_event,
)

from local_pipeline.async_endpoint import AsyncEndpoint
from local_pipeline.aws import patched_environ
from local_pipeline.calls import CallRecorder
from ticket_pipeline import dispatcher
from ticket_pipeline.chunking import plan_chunks
from triage_core.formats import iter_jsonl


def short_runs(boundaries: int) -> Context:
    """A run whose time is down to the reserve after ``boundaries`` checks at chunk boundaries."""
    calls = {"n": 0}

    def remaining_ms() -> int:
        calls["n"] += 1
        return 60_000 if calls["n"] <= boundaries else 5_000  # the reserve is 10 s

    return Context(remaining_ms=remaining_ms)


def run_continuations(invocations: list[tuple[str, bytes]], boundaries: int) -> list[dict[str, Any]]:
    """Play Lambda: run the dispatcher on each event it invoked itself with, until none is left."""
    outcomes = []
    while invocations:
        name, payload = invocations.pop(0)
        assert name == "ticket-dispatcher"
        outcomes.extend(dispatcher.handler(json.loads(payload), short_runs(boundaries))["jobs"])
    return outcomes


def mixed_file() -> bytes:
    """40 records: good ones, duplicates of earlier ids (also across runs), bad lines, no ids."""
    lines = []
    for i in range(40):
        if i % 9 == 4:
            lines.append(b"not json at all\n")
        elif i % 7 == 6:
            lines.append(json.dumps({"id": f"t{i - 5}", "text": "repeats an earlier id"}).encode() + b"\n")
        elif i % 11 == 10:
            lines.append(json.dumps({"text": f"no id {i}"}).encode() + b"\n")
        else:
            lines.append(json.dumps({"id": f"t{i}", "text": f"ticket {i}"}).encode() + b"\n")
    return b"".join(lines)


def test_a_file_longer_than_one_run_continues_in_the_next_and_comes_out_exactly_once(
    aws: Aws, endpoint: AsyncEndpoint, invocations: list, iam_calls: CallRecorder, synth
):
    from iam_replay import stack_replay

    body = mixed_file()
    first = drop(aws, "incoming/long.jsonl", body, context=short_runs(2))["jobs"][0]
    assert first["outcome"] == "continued" and first["run"] == 1
    outcomes = [first, *run_continuations(invocations, boundaries=2)]
    assert [o["outcome"] for o in outcomes[:-1]] == ["continued"] * (len(outcomes) - 1)
    assert outcomes[-1]["outcome"] == "submitted" and len(outcomes) >= 4
    assert [o["run"] for o in outcomes] == list(range(1, len(outcomes) + 1))

    # the same keys, chunks and rejections as one pass over the file
    one_pass = plan_chunks(iter_jsonl(body.splitlines(keepends=True)), chunk_size=3)
    requests = queued(endpoint)
    sent = [row["id"] for r in requests for row in aws.read_jsonl(r.input_location)]
    assert sent == [key for chunk in one_pass.chunks for key in chunk.ticket_ids]
    assert len(requests) == len(one_pass.chunks) == outcomes[-1]["chunks"]
    for request in requests:
        notify(aws, complete(aws, request))
    (message,) = aws.results_messages()
    keys = {r.id for r in one_pass.rejected} | {k for c in one_pass.chunks for k in c.ticket_ids}
    _, failures = check_exactly_once(aws, message, keys)
    assert {f["id"]: f["error"] for f in failures} == {r.id: r.error for r in one_pass.rejected}
    meta = aws.jobs().get_job(first["job_id"])
    assert len(meta["rejected_parts"]) >= 2  # each run wrote its own rejected records

    # each run but the last invoked the dispatcher with its position: lambda:InvokeFunction on
    # itself, allowed by the template's DispatcherSelfInvoke policy, the grant used
    invokes = [c for c in iam_calls.snapshot() if (c.service, c.operation) == ("lambda", "Invoke")]
    assert [(c.principal, c.args["FunctionName"]) for c in invokes] == [
        ("ticket-dispatcher", "arn:aws:lambda:us-east-1:123456789012:function:ticket-dispatcher")
    ] and iam_calls.calls[invokes[0]] == len(outcomes) - 1
    result = stack_replay(synth, iam_calls.snapshot(), aws.names, aws.resources)
    assert ("ticket-dispatcher", "lambda:InvokeFunction") in {(r.principal, r.action) for r in result.allowed}
    assert not [g for g in result.unused["ticket-dispatcher"] if g[0] == "lambda:InvokeFunction"]


def test_a_duplicate_or_stale_event_during_a_continuation_changes_nothing(
    aws: Aws, endpoint: AsyncEndpoint, invocations: list, iam_calls: CallRecorder
):
    body = mixed_file()
    version = aws.s3.put_object(Bucket=aws.names.input_bucket, Key="incoming/dup.jsonl", Body=body)[
        "VersionId"
    ]
    event = s3_put_event(aws.names.input_bucket, "incoming/dup.jsonl", len(body), version_id=version)
    first = dispatcher.handler(event, short_runs(2))["jobs"][0]
    assert first["outcome"] == "continued"
    sent_before = len(endpoint.queued())
    (_, continuation) = invocations[0]
    assert dispatcher.handler(event, Context())["jobs"][0]["outcome"] == "in_progress"  # S3 redelivery
    stale = json.loads(continuation)
    stale["continuation"]["cursor"] = 1
    assert dispatcher.handler(stale, Context())["jobs"][0]["outcome"] == "in_progress"
    assert len(endpoint.queued()) == sent_before and len(invocations) == 1
    run_continuations(invocations, boundaries=100)
    replayed = dispatcher.handler(json.loads(continuation), Context())["jobs"][0]  # a DLQ replay
    assert replayed["outcome"] == "duplicate" and replayed["invoked"] == 0


def test_a_file_still_unfinished_after_the_last_allowed_run_ends_with_a_clear_error(
    aws: Aws, endpoint: AsyncEndpoint, invocations: list, iam_calls: CallRecorder
):
    with patched_environ({"MAX_DISPATCH_RUNS": "2"}):
        dispatcher.runtime.cache_clear()
        drop(aws, "incoming/huge.jsonl", mixed_file(), context=short_runs(2))
        (last,) = run_continuations(invocations, boundaries=2)
    assert last["outcome"] == "submitted" and last["run"] == 2
    assert "MAX_DISPATCH_RUNS=2" in last["error"] and "were not read" in last["error"]
    for request in queued(endpoint):
        notify(aws, complete(aws, request))
    (message,) = aws.results_messages()
    assert message["status"] == "partial" and "were not read" in message["error"]
    assert message["tickets"] == last["tickets"] < 40


def test_two_quick_uploads_to_one_key_are_two_jobs_each_with_its_own_tickets(
    aws: Aws, endpoint: AsyncEndpoint, iam_calls: CallRecorder
):
    """The input bucket is versioned and each event names its version: the dispatcher reads that
    version, even when the second upload has already replaced the first as the latest."""
    key = "incoming/daily.jsonl"
    bucket = aws.names.input_bucket
    v1_body = b"".join(
        json.dumps({"id": f"a{i}", "text": f"first upload {i}"}).encode() + b"\n" for i in range(4)
    )
    v2_body = b"".join(
        json.dumps({"id": f"b{i}", "text": f"second upload {i}"}).encode() + b"\n" for i in range(5)
    )
    v1 = aws.s3.put_object(Bucket=bucket, Key=key, Body=v1_body)["VersionId"]
    v2 = aws.s3.put_object(Bucket=bucket, Key=key, Body=v2_body)["VersionId"]
    assert v1 != v2
    e1 = s3_put_event(bucket, key, len(v1_body), version_id=v1)
    e2 = s3_put_event(bucket, key, len(v2_body), version_id=v2)
    second = dispatcher.handler(e2, Context())["jobs"][0]
    first = dispatcher.handler(e1, Context())["jobs"][0]  # delivered late, after v2 is the latest
    assert first["job_id"] != second["job_id"]
    assert (first["version_id"], first["tickets"]) == (v1, 4)
    assert (second["version_id"], second["tickets"]) == (v2, 5)
    assert dispatcher.handler(e1, Context())["jobs"][0]["outcome"] == "duplicate"
    for request in queued(endpoint):
        notify(aws, complete(aws, request))
    messages = {m["job_id"]: m for m in aws.results_messages()}
    assert set(messages) == {first["job_id"], second["job_id"]}
    check_exactly_once(aws, messages[first["job_id"]], {f"a{i}" for i in range(4)})
    check_exactly_once(aws, messages[second["job_id"]], {f"b{i}" for i in range(5)})
    assert messages[first["job_id"]]["version_id"] == v1


def test_a_deleted_version_is_a_whole_file_failure_naming_it(
    aws: Aws, endpoint: AsyncEndpoint, iam_calls: CallRecorder
):
    bucket = aws.names.input_bucket
    version = aws.s3.put_object(Bucket=bucket, Key="incoming/gone.jsonl", Body=b'{"text": "x"}\n')[
        "VersionId"
    ]
    aws.s3.delete_object(Bucket=bucket, Key="incoming/gone.jsonl", VersionId=version)
    job = dispatcher.handler(s3_put_event(bucket, "incoming/gone.jsonl", 14, version_id=version), Context())
    (job,) = job["jobs"]
    assert job["outcome"] == "rejected_file" and "unreadable" in job["error"] and job["version_id"] == version


def test_a_file_with_more_records_than_the_documented_maximum_ends_with_a_clear_error(
    aws: Aws, endpoint: AsyncEndpoint, iam_calls: CallRecorder
):
    with patched_environ({"MAX_TICKETS_PER_FILE": "5"}):
        dispatcher.runtime.cache_clear()
        job = drop(
            aws,
            "incoming/many.jsonl",
            b"".join(json.dumps({"id": f"m{i}", "text": f"ticket {i}"}).encode() + b"\n" for i in range(9)),
        )["jobs"][0]
    assert job["tickets"] == 5 and "MAX_TICKETS_PER_FILE=5" in job["error"] and "split it" in job["error"]
    for request in queued(endpoint):
        notify(aws, complete(aws, request))
    (message,) = aws.results_messages()
    assert (
        message["status"] == "partial" and message["tickets"] == 5 and "the rest not read" in message["error"]
    )
    check_exactly_once(aws, message, {f"m{i}" for i in range(5)})


def test_the_dispatcher_finalizes_a_job_whose_last_run_only_rejects_records_with_an_earlier_chunk_failed(
    aws: Aws, endpoint: AsyncEndpoint, invocations: list, iam_calls: CallRecorder, synth
):
    """The dispatcher runs the shared finalization (``results.finalize_for``) when its last run
    finds every chunk reported: here a file whose first run sent two chunks, one of which failed
    at the endpoint before the next run, which reads only bad records. The dispatcher then reads
    the failure report under ``async-failures/`` (its reason is in the failures), the result under
    ``async-results/`` and the rejected records under ``results/``, with its own role: each of its
    three s3:GetObject grants is used, and nothing it calls is denied (``iam_calls``)."""
    from iam_replay import stack_replay

    good = [json.dumps({"id": f"g{i}", "text": f"ticket {i}"}).encode() + b"\n" for i in range(6)]
    body = b"".join(good) + b"not json at all\n" * 4
    first = drop(aws, "incoming/tail.jsonl", body, context=short_runs(1))["jobs"][0]
    assert first["outcome"] == "continued" and first["chunks"] == 2
    done, failed = queued(endpoint)
    notify(aws, complete(aws, done))
    notify(aws, fail(aws, failed, "ModelError"), error=True)
    assert aws.results_messages() == []  # the job is still dispatching: nobody finalizes yet
    (last,) = run_continuations(invocations, boundaries=100)
    assert last["outcome"] == "submitted" and last["run"] == 2 and last["rejected"] == 4
    (message,) = aws.results_messages()  # published by the dispatcher's last run
    one_pass = plan_chunks(iter_jsonl(body.splitlines(keepends=True)), chunk_size=3)
    keys = {r.id for r in one_pass.rejected} | {k for c in one_pass.chunks for k in c.ticket_ids}
    results, failures = check_exactly_once(aws, message, keys)
    assert message["status"] == "partial" and len(results) == 3
    reasons = {f["id"]: f["error"] for f in failures}
    for ticket in aws.read_jsonl(failed.input_location):
        assert reasons[ticket["id"]] == "ModelError (model response: model exploded)"

    reads = {
        c.args["Key"].split("/")[0]
        for c in iam_calls.snapshot()
        if c.principal == "ticket-dispatcher" and (c.service, c.operation) == ("s3", "GetObject")
    }
    assert reads == {"incoming", "async-results", "async-failures", "results"}  # incoming/: versioned
    result = stack_replay(synth, iam_calls.snapshot(), aws.names, aws.resources)
    # chunks/: the review queue's texts, which these tests' environment does not configure (no
    # REVIEW_TOPIC_ARN); the e2e and chaos runs use it
    unused = [g for g in result.unused["ticket-dispatcher"] if g[0] == "s3:GetObject"]
    assert unused == [("s3:GetObject", f"arn:aws:s3:::{aws.names.input_bucket}/chunks/*")]
