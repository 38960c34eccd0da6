"""Every job finishes: deadlines, the sweeper, late notifications, and the counts the three
handlers publish (Powertools EMF on stdout, read back the way CloudWatch Logs would)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from pipeline_helpers import (
    Aws,
    Context,
    check_exactly_once,
    complete,
    drop,
    jsonl,
    notify,
    queued,
    sns_lambda_event,
)

from local_pipeline.async_endpoint import AsyncEndpoint
from local_pipeline.calls import CallRecorder
from local_pipeline.stack import scheduled_event
from ticket_pipeline import aggregator, intake, sweeper, sweeping
from ticket_pipeline.metrics import AGGREGATOR_COUNTS, PipelineMetrics
from ticket_pipeline.settings import DispatcherSettings, SweeperSettings


def emf_documents(text: str) -> list[dict[str, Any]]:
    """The EMF documents in a handler's stdout (CloudWatch Logs extracts each such line)."""
    docs = []
    for line in text.splitlines():
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


def emf_counts(text: str) -> dict[str, float]:
    counts: dict[str, float] = {}
    for doc in emf_documents(text):
        (directive,) = doc["_aws"]["CloudWatchMetrics"]
        assert directive["Namespace"] == "TicketTriageTest" and directive["Dimensions"] == [["service"]]
        for metric in directive["Metrics"]:
            counts[metric["Name"]] = counts.get(metric["Name"], 0) + sum(doc[metric["Name"]])
    return counts


def sweep_at(aws: Aws, when: float) -> sweeping.SweepReport:
    deps = sweeping.Deps(aws.objects(), aws.jobs(), aws.publisher(), PipelineMetrics())
    return sweeping.sweep(deps, SweeperSettings.from_env(aws.env()), clock=lambda: when)


def sweep_as_the_sweeper(when: float) -> sweeping.SweepReport:
    """:func:`sweep_at` with the sweeper handler's own clients (``sweeper.runtime()``: recorded as
    the sweeper role's calls under ``iam_calls``)."""
    settings, shared = sweeper.runtime()
    deps = dataclasses.replace(shared, metrics=PipelineMetrics())
    return sweeping.sweep(deps, settings, clock=lambda: when)


def deadline_of(aws: Aws, job_id: str) -> int:
    return aws.jobs().get_job(job_id)["deadline"]


def test_a_job_gets_its_deadline_from_the_request_ttl_the_invocation_timeout_and_the_margin(
    aws: Aws, endpoint: AsyncEndpoint
):
    before = time.time()
    job = drop(aws, "incoming/seven.jsonl", jsonl(7))["jobs"][0]
    settings = DispatcherSettings.from_env(aws.env())
    assert settings.job_deadline_seconds == 3600 + 60 + 600
    assert (
        int(before) + settings.job_deadline_seconds <= deadline_of(aws, job["job_id"]) <= time.time() + 4260
    )
    assert sweep_at(aws, time.time()).overdue == []  # not overdue yet


def test_an_overdue_job_is_finalized_partial_once_and_a_late_notification_is_only_counted(
    aws: Aws, endpoint: AsyncEndpoint, capsys: pytest.CaptureFixture
):
    job = drop(aws, "incoming/seven.jsonl", jsonl(7))["jobs"][0]
    r1, r2, r3 = queued(endpoint)
    notify(aws, complete(aws, r1))
    notify(aws, complete(aws, r3))  # chunk 2's notification never comes
    assert aws.results_messages() == []
    report = sweep_at(aws, deadline_of(aws, job["job_id"]) + 1)
    assert report.finalized == {job["job_id"]: "partial"}
    (message,) = aws.results_messages()
    _, failures = check_exactly_once(aws, message, {f"t{i}" for i in range(7)})
    assert {f["id"] for f in failures} == {"t3", "t4", "t5"}  # exactly chunk 2's tickets
    deadline = datetime.fromtimestamp(deadline_of(aws, job["job_id"]), UTC).isoformat(timespec="milliseconds")
    assert {f["error"] for f in failures} == {
        f"no notification received by the job deadline {deadline.replace('+00:00', 'Z')} (chunk state "
        "submitted): the async request expired or its notification was lost; the job was finalized by "
        "the sweeper"
    }
    summary = aws.read_json(message["summary"])
    assert summary["overdue"] is True and summary["chunks"] == {"total": 3, "succeeded": 2, "failed": 1}
    files = {name: aws.read_jsonl(message[name]) for name in ("results", "failures")}

    capsys.readouterr()
    late = notify(aws, complete(aws, r2))["notifications"][0]
    assert late["outcome"] == "late" and "finalized" not in late
    # the transaction that would have recorded it was cancelled as a whole (chunk and job)
    assert aws.jobs().get_chunk(job["job_id"], 2)["state"] == "submitted"
    assert aws.jobs().get_job(job["job_id"])["reported"] == 2
    counts = emf_counts(capsys.readouterr().out)  # every count of the aggregator, the others at 0
    assert {name: n for name, n in counts.items() if n} == {"LateNotifications": 1}
    assert set(counts) == set(AGGREGATOR_COUNTS)
    assert aws.results_messages() == []
    assert {name: aws.read_jsonl(message[name]) for name in ("results", "failures")} == files
    assert sweep_at(aws, deadline_of(aws, job["job_id"]) + 10**6).overdue == []  # it left the open-jobs index
    assert aws.jobs().get_job(job["job_id"])["status"] == "partial"


def test_a_job_that_finishes_normally_leaves_the_open_jobs_index(aws: Aws, endpoint: AsyncEndpoint):
    job = drop(aws, "incoming/four.jsonl", jsonl(4))["jobs"][0]
    for request in queued(endpoint):
        notify(aws, complete(aws, request))
    (message,) = aws.results_messages()
    assert message["status"] == "complete"
    assert sweep_at(aws, deadline_of(aws, job["job_id"]) + 1).overdue == []


def dispatch_long_ago(aws: Aws, endpoint: AsyncEndpoint, key: str, body: bytes) -> dict[str, Any]:
    """Dispatch a file as if it had been uploaded long ago: its deadline has passed by now."""
    settings = DispatcherSettings.from_env(aws.env())
    deps = intake.Deps(aws.objects(), aws.jobs(), aws.publisher(), runtime=endpoint)
    version = aws.s3.put_object(Bucket=aws.names.input_bucket, Key=key, Body=body)["VersionId"]
    upload = intake.Upload(aws.names.input_bucket, key, version_id=version)
    long_ago = time.time() - settings.job_deadline_seconds - 60
    return intake.dispatch_upload(upload, deps=deps, settings=settings, clock=lambda: long_ago).as_dict()


def test_the_sweeper_and_a_last_notification_racing_publish_one_results_message(
    aws: Aws, endpoint: AsyncEndpoint
):
    """Jobs past their deadline whose last notification arrives while the sweeper runs: the
    sweeper and the aggregator take the same finalization lease (on the same clock), so whichever
    wins, one results message, and every ticket once."""
    jobs = [
        dispatch_long_ago(aws, endpoint, f"incoming/race-{n}.jsonl", jsonl(6, prefix=f"r{n}-"))
        for n in range(4)
    ]
    pending = []
    for job in jobs:
        first, last = [r for r in queued(endpoint) if r.inference_id.startswith(job["job_id"])]
        notify(aws, complete(aws, first))
        pending.append(complete(aws, last))
    threads = [threading.Thread(target=notify, args=(aws, n)) for n in pending]
    threads += [threading.Thread(target=sweep_at, args=(aws, time.time())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    messages = aws.results_messages()
    assert sorted(m["job_id"] for m in messages) == sorted(job["job_id"] for job in jobs)
    for message in messages:
        n = message["job_id"].split("-")[1]
        check_exactly_once(aws, message, {f"r{n}-{i}" for i in range(6)})


def test_a_job_whose_dispatch_died_is_finalized_with_every_record_of_its_file(
    aws: Aws, endpoint: AsyncEndpoint, invocations: list, iam_calls: CallRecorder
):
    """A dispatch that checkpointed and whose next run never came (its event in the dead-letter
    queue past the deadline): the sweeper finalizes what was dispatched, reads the file again and
    puts every record no run sent among the failures, and the error says how many. It reads the
    version the job names, with its own role (s3:GetObjectVersion on ``incoming/*``, replayed)."""
    from test_pipeline_big_files import mixed_file, short_runs

    from ticket_pipeline.chunking import plan_chunks
    from triage_core.formats import iter_jsonl

    body = mixed_file()
    first = drop(aws, "incoming/stuck.jsonl", body, context=short_runs(2))["jobs"][0]
    assert first["outcome"] == "continued"
    invocations.clear()  # the continuation is lost
    for request in queued(endpoint):
        notify(aws, complete(aws, request))
    assert aws.results_messages() == []
    sweep_as_the_sweeper(deadline_of(aws, first["job_id"]) + 1)
    (message,) = aws.results_messages()
    assert message["status"] == "partial"
    (read,) = [
        c.args
        for c in iam_calls.snapshot()
        if c.principal == "ticket-sweeper" and c.args.get("Key") == "incoming/stuck.jsonl"
    ]
    assert read["VersionId"] == aws.jobs().get_job(first["job_id"])["version_id"]
    one_pass = plan_chunks(iter_jsonl(body.splitlines(keepends=True)), chunk_size=3)
    keys = {r.id for r in one_pass.rejected} | {k for c in one_pass.chunks for k in c.ticket_ids}
    results, failures = check_exactly_once(aws, message, keys)
    assert message["error"] == (
        f"dispatch did not finish: {first['tickets']} of the file's 40 records were dispatched, the other "
        f"{40 - first['tickets']} are in the failures (not dispatched); re-upload the file"
    )
    rejected = {r.id: r.error for r in one_pass.rejected}
    for failure in failures:  # a record the dispatcher never read is rejected with its own reason
        assert failure["error"] == rejected.get(failure["id"]) or failure["error"].startswith(
            "not dispatched: "
        ), failure
    assert len(results) == sum(len(c.ticket_ids) for c in one_pass.chunks[: first["chunks"]])


def test_the_sweeper_handler_counts_overdue_jobs_in_emf(aws: Aws, endpoint: AsyncEndpoint, capsys):
    """Read what the real handler prints: one EMF document with OverdueJobs (namespace and
    service dimension as the stack sets them)."""
    dispatch_long_ago(aws, endpoint, "incoming/old.jsonl", jsonl(3))
    capsys.readouterr()
    report = sweeper.handler(
        scheduled_event("arn:aws:events:us-east-1:123456789012:rule/sweep"), Context("ticket-sweeper")
    )
    assert len(report["finalized"]) == 1
    documents = emf_documents(capsys.readouterr().out)
    (document,) = documents
    assert document["service"] == "ticket-pipeline"  # POWERTOOLS_SERVICE_NAME (unset in the tests)
    assert emf_counts(json.dumps(document)) == {
        "OverdueJobs": 1,
        "ResultsPublished": 1,
        "TicketsSucceeded": 0,
        "TicketsFailed": 3,
        # the review counts, 0 included (every finalizing function publishes them)
        "TicketsToReview": 0,
        "TicketsOutOfScope": 0,
        "ReviewMessagesPublished": 0,
    }
    assert aws.results_messages()[0]["status"] == "partial"


def test_the_sweeper_finalizes_an_overdue_job_with_rejected_records_reading_them_with_its_own_role(
    aws: Aws, endpoint: AsyncEndpoint, iam_calls: CallRecorder, synth
):
    """The sweeper runs the shared finalization (``results.finalize_for``) for a job past its
    deadline; a job with records the dispatcher rejected has them under ``results/<job>/rejected/``,
    and the sweeper reads them into the failures: its s3:GetObject on ``results/*`` is used, and
    nothing the real handler calls is denied by the template's sweeper role (``iam_calls``)."""
    from iam_replay import stack_replay

    from ticket_pipeline.chunking import plan_chunks
    from triage_core.formats import iter_jsonl

    body = jsonl(4) + b"not json at all\n" + json.dumps({"id": "t1", "text": "again"}).encode() + b"\n"
    job = dispatch_long_ago(aws, endpoint, "incoming/rejects.jsonl", body)
    assert (job["tickets"], job["rejected"]) == (6, 2)
    report = sweeper.handler(
        scheduled_event("arn:aws:events:us-east-1:123456789012:rule/sweep"), Context("ticket-sweeper")
    )
    assert report["finalized"] == {job["job_id"]: "partial"}
    (message,) = aws.results_messages()
    plan = plan_chunks(iter_jsonl(body.splitlines(keepends=True)), chunk_size=3)
    keys = {r.id for r in plan.rejected} | {k for c in plan.chunks for k in c.ticket_ids}
    _, failures = check_exactly_once(aws, message, keys)
    reasons = {f["id"]: f["error"] for f in failures}
    assert len(plan.rejected) == 2
    for record in plan.rejected:  # read back from the dispatcher's rejected records, reason and all
        assert reasons[record.id] == record.error
    assert reasons["t0"].startswith("no notification received by the job deadline")

    rejected = [
        c.args["Key"]
        for c in iam_calls.snapshot()
        if (c.principal, c.service, c.operation) == ("ticket-sweeper", "s3", "GetObject")
    ]
    assert [k.startswith(f"results/{job['job_id']}/rejected/") for k in rejected] == [True]
    result = stack_replay(synth, iam_calls.snapshot(), aws.names, aws.resources)
    assert ("s3:GetObject", "arn:aws:s3:::ticket-triage-output/results/*") not in result.unused[
        "ticket-sweeper"
    ]


def test_the_aggregator_counts_invalid_unknown_and_duplicate_notifications_in_emf(
    aws: Aws, endpoint: AsyncEndpoint, capsys
):
    drop(aws, "incoming/one.jsonl", jsonl(2))
    (request,) = queued(endpoint)
    notification = complete(aws, request)
    capsys.readouterr()
    topic = aws.resources.success_topic_arn
    aggregator.handler(sns_lambda_event("not json", topic), Context("ticket-aggregator"))
    aggregator.handler(
        sns_lambda_event({"inferenceId": "someone-else", "invocationStatus": "Completed"}, topic), Context()
    )
    aggregator.handler(
        sns_lambda_event({"inferenceId": "gone-123456789abc-c00001", "invocationStatus": "Completed"}, topic),
        Context(),
    )
    notify(aws, notification)
    notify(aws, notification)
    assert emf_counts(capsys.readouterr().out) == {
        "InvalidNotifications": 1,
        "UnknownNotifications": 2,
        "DuplicateNotifications": 1,
        "LateNotifications": 0,  # every count of the aggregator, each invocation, 0 included
        "ResultsPublished": 1,
        "TicketsSucceeded": 2,
        "TicketsFailed": 0,
        "TicketsToReview": 0,  # no review topic in these tests' environment
        "TicketsOutOfScope": 0,
        "ReviewMessagesPublished": 0,
    }


def test_the_dispatcher_counts_files_tickets_chunks_and_rejected_records_in_emf(
    aws: Aws, endpoint: AsyncEndpoint, capsys
):
    capsys.readouterr()
    drop(aws, "incoming/mixed.jsonl", jsonl(7) + b"not json\n")
    drop(aws, "incoming/empty.jsonl", b"")
    assert emf_counts(capsys.readouterr().out) == {
        "FilesReceived": 2,
        "WholeFileFailures": 1,
        "TicketsDispatched": 7,
        "ChunksSubmitted": 3,
        "ChunksRejectedByEndpoint": 0,
        "RecordsRejected": 1,
        "DispatchContinuations": 0,
        "ResultsPublished": 1,
        "TicketsSucceeded": 0,
        "TicketsFailed": 0,
        "TicketsToReview": 0,  # the dispatcher finalizes too (review.py)
        "TicketsOutOfScope": 0,
        "ReviewMessagesPublished": 0,
    }


def test_settings_refuse_a_lease_shorter_than_the_function_timeout():
    env = {
        "JOBS_TABLE": "jobs",
        "OUTPUT_BUCKET": "out",
        "RESULTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:results",
        "FUNCTION_TIMEOUT_SECONDS": "900",
        "FINALIZE_LEASE_SECONDS": "300",
    }
    with pytest.raises(
        ValueError, match=r"FINALIZE_LEASE_SECONDS \(300\) must be longer than FUNCTION_TIMEOUT"
    ):
        SweeperSettings.from_env(env)


def test_a_sweep_finalizes_only_while_half_its_function_timeout_is_left(aws: Aws, endpoint: AsyncEndpoint):
    """Each finalization may take up to the function's time; the sweeper starts one only with
    half its timeout left, and the next sweep takes the rest (the job stays open, nothing is
    published)."""
    job = drop(aws, "incoming/three.jsonl", jsonl(3))["jobs"][0]
    queued(endpoint)  # no notification ever comes
    settings = SweeperSettings.from_env(aws.env())
    half = settings.function_timeout_seconds / 2
    deps = sweeping.Deps(aws.objects(), aws.jobs(), aws.publisher(), PipelineMetrics())
    when = deadline_of(aws, job["job_id"]) + 1
    report = sweeping.sweep(deps, settings, clock=lambda: when, time_left=lambda: half - 0.001)
    assert report.as_dict() == {"overdue": 1, "finalized": {}, "skipped": []}
    assert aws.results_messages() == [] and aws.jobs().get_job(job["job_id"])["status"] != "partial"
    report = sweeping.sweep(deps, settings, clock=lambda: when, time_left=lambda: half)
    assert report.as_dict() == {"overdue": 1, "finalized": {job["job_id"]: "partial"}, "skipped": []}
    assert len(aws.results_messages()) == 1
