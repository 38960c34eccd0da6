"""Regression tests for the violations the chaos harness (``make chaos``) found, one per bug, each
at the level where the bug lived: the handlers and their logic on moto's server, driven by hand
into the interleaving the harness had hit."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from pipeline_helpers import Aws, Context, check_exactly_once, complete, drop, jsonl, queued, sns_lambda_event

from local_pipeline.async_endpoint import AsyncEndpoint
from ticket_pipeline import aggregator
from ticket_pipeline.results import OutOfTime


class ThrottledAfterTwo:
    """InvokeEndpointAsync answers ThrottlingException from the third call on (past botocore's
    retries), as the service does under a burst: the dispatcher's run dies part-way."""

    def __init__(self, endpoint: AsyncEndpoint):
        self.endpoint = endpoint
        self.calls = 0

    def invoke_endpoint_async(self, **request):
        self.calls += 1
        if self.calls > 2:
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "x")
        return self.endpoint.invoke_endpoint_async(**request)


def test_a_finalizer_too_close_to_its_timeout_publishes_nothing_and_the_retry_publishes_once(
    aws: Aws, endpoint: AsyncEndpoint
):
    """Found: a finalizer that Lambda stopped right after SNS took the results message left the job
    ``finalizing``; the next finalizer took the lease over and published a second message. Now a
    finalizer with less than its reserve left (10 s here) does not publish: it releases the job and
    fails, and Lambda's retry of the same notification finalizes it once."""
    job_id = drop(aws, "incoming/four.jsonl", jsonl(4))["jobs"][0]["job_id"]
    first, last = queued(endpoint)
    aggregator.handler(sns_lambda_event(complete(aws, first), aws.resources.success_topic_arn), Context())
    event = sns_lambda_event(complete(aws, last), aws.resources.success_topic_arn)

    with pytest.raises(OutOfTime, match="released for the next attempt"):
        aggregator.handler(event, Context("ticket-aggregator", remaining_ms=9_000))
    assert aws.results_messages() == []
    meta = aws.jobs().get_job(job_id)
    assert (meta["status"], meta["lease_until"]) == ("finalizing", 0)  # released: no wait for the lease

    outcome = aggregator.handler(event, Context("ticket-aggregator", remaining_ms=60_000))  # Lambda's retry
    assert outcome["notifications"][0] == {
        "inference_id": last.inference_id,
        "outcome": "duplicate",
        "job_id": job_id,
        "chunk": 2,
        "finalized": "complete",
    }
    (message,) = aws.results_messages()
    check_exactly_once(aws, message, {f"t{i}" for i in range(4)})


def test_a_dispatch_that_died_mid_run_leaves_no_record_of_its_file_unaccounted(
    aws: Aws, endpoint: AsyncEndpoint
):
    """Found: a dispatcher run that died after writing some chunks, before any checkpoint, and whose
    retries failed too (or sat in the dead-letter queue) until the deadline: the sweeper finalized
    the job with the tickets of the chunks written so far only; the records no run had sent, and
    the run's rejected records (spooled, never saved), were in neither results nor failures."""
    from test_pipeline_big_files import mixed_file
    from test_pipeline_deadlines import deadline_of, sweep_at

    from ticket_pipeline import intake
    from ticket_pipeline.chunking import plan_chunks
    from triage_core.formats import iter_jsonl

    body = mixed_file()
    version = aws.s3.put_object(Bucket=aws.names.input_bucket, Key="incoming/died.jsonl", Body=body)[
        "VersionId"
    ]
    upload = intake.Upload(aws.names.input_bucket, "incoming/died.jsonl", version_id=version)
    deps = intake.Deps(aws.objects(), aws.jobs(), aws.publisher(), runtime=ThrottledAfterTwo(endpoint))
    with pytest.raises(ClientError, match="ThrottlingException"):
        intake.dispatch_upload(upload, deps=deps, settings=aws.dispatcher_settings(DISPATCH_THREADS="1"))
    job_id = intake.job_id_for(upload.bucket, upload.key, upload.token)
    for request in queued(endpoint):
        aggregator.handler(
            sns_lambda_event(complete(aws, request), aws.resources.success_topic_arn), Context()
        )
    assert aws.results_messages() == []

    sweep_at(aws, deadline_of(aws, job_id) + 1)
    (message,) = aws.results_messages()
    one_pass = plan_chunks(iter_jsonl(body.splitlines(keepends=True)), chunk_size=3)
    keys = {r.id for r in one_pass.rejected} | {k for c in one_pass.chunks for k in c.ticket_ids}
    results, failures = check_exactly_once(aws, message, keys)
    assert message["status"] == "partial" and message["error"].startswith("dispatch did not finish: ")
    assert len(results) == 6  # the two chunks that went out
    reasons = {f["id"]: f["error"] for f in failures}
    assert {key: reasons[key] for key in (r.id for r in one_pass.rejected)} == {
        r.id: r.error for r in one_pass.rejected
    }
    assert any(reason.startswith("not dispatched: ") for reason in reasons.values())


def test_a_throttled_completion_record_after_the_publish_is_retried_and_nothing_is_published_again(
    aws: Aws, endpoint: AsyncEndpoint
):
    """Found: a finalizer published the results, then DynamoDB throttled the write that records the
    job as finished past botocore's retries; the finalizer released its lease and failed, and the
    next one (the sweeper, after the deadline) published the results a second time. Now that write
    is retried while the invocation has time, and the lease is never given back after a publish."""
    from test_pipeline_deadlines import deadline_of, sweep_at

    from ticket_pipeline.aggregation import handle_notification
    from ticket_pipeline.jobs import JobStore
    from ticket_pipeline.notifications import AsyncInferenceNotification
    from ticket_pipeline.stores import Stores

    class ThrottledOnce(JobStore):
        throttled = 0

        def complete_job(self, *args, **kwargs):
            if not self.throttled:
                self.throttled += 1
                error = {
                    "Code": "ProvisionedThroughputExceededException",
                    "Message": "Rate of requests exceeds",
                }
                raise ClientError({"Error": error}, "UpdateItem")
            return super().complete_job(*args, **kwargs)

    job_id = drop(aws, "incoming/four.jsonl", jsonl(4))["jobs"][0]["job_id"]
    first, last = queued(endpoint)
    aggregator.handler(sns_lambda_event(complete(aws, first), aws.resources.success_topic_arn), Context())
    jobs = ThrottledOnce(aws.dynamodb, aws.names.jobs_table)
    notification = AsyncInferenceNotification.model_validate(complete(aws, last))
    result = handle_notification(
        notification, deps=Stores(aws.objects(), jobs, aws.publisher()), settings=aws.aggregator_settings()
    )
    assert (result.finalized, jobs.throttled) == ("complete", 1)
    (message,) = aws.results_messages()
    check_exactly_once(aws, message, {f"t{i}" for i in range(4)})
    assert aws.jobs().get_job(job_id)["status"] == "complete"
    sweep_at(aws, deadline_of(aws, job_id) + 1)
    aggregator.handler(sns_lambda_event(complete(aws, last), aws.resources.success_topic_arn), Context())
    assert aws.results_messages() == []


def test_two_runs_of_one_dispatch_cannot_overwrite_each_others_rejected_records(
    aws: Aws, endpoint: AsyncEndpoint
):
    """Found: a duplicate S3 event started a second dispatcher run while the first had not
    checkpointed yet. The second read the whole file and registered its rejected records in
    ``rejected/001.jsonl``; the first, slower, stopped at its reserve and wrote its own, shorter
    ``rejected/001.jsonl`` over it before losing the checkpoint: the rejected records past its stop
    were in neither file. Now every run writes an object of its own, and only the run whose
    checkpoint (or finish) wins registers it, in the same conditional update."""
    import threading
    import time

    from test_pipeline_big_files import mixed_file

    from ticket_pipeline import intake
    from ticket_pipeline.chunking import plan_chunks
    from triage_core.formats import iter_jsonl

    fast_done = threading.Event()
    held = threading.Event()

    class HeldBack:
        """The slow run's InvokeEndpointAsync calls wait until the other run has finished."""

        def invoke_endpoint_async(self, **request):
            held.set()
            fast_done.wait(30)
            return endpoint.invoke_endpoint_async(**request)

    class TwoBoundaries:
        """The slow run's time is down to its reserve at its second chunk boundary, or at the first
        one after that when no invocation is held back yet (the submission thread may not have
        reached the endpoint by then: the stop must find an invocation in flight to wait for)."""

        checks = 0

        def __call__(self) -> float:
            self.checks += 1
            return 0.0 if self.checks >= 2 and held.is_set() else 60.0

    body = mixed_file()
    key = "incoming/twice.jsonl"
    version = aws.s3.put_object(Bucket=aws.names.input_bucket, Key=key, Body=body)["VersionId"]
    upload = intake.Upload(aws.names.input_bucket, key, version_id=version)
    settings = aws.dispatcher_settings(DISPATCH_THREADS="1")
    slow_deps = intake.Deps(
        aws.objects(), aws.jobs(), aws.publisher(), runtime=HeldBack(), continuation=lambda _event: None
    )
    slow: dict = {}

    def slow_run() -> None:  # the S3 event's run: opens the job, reads two chunks, waits on the endpoint
        budget = intake.RunBudget(TwoBoundaries(), 10.0)
        slow.update(
            intake.dispatch_upload(upload, deps=slow_deps, settings=settings, budget=budget).as_dict()
        )

    thread = threading.Thread(target=slow_run)
    thread.start()
    while aws.jobs().get_job(intake.job_id_for(upload.bucket, key, upload.token)) is None:
        time.sleep(0.01)
    fast_deps = intake.Deps(aws.objects(), aws.jobs(), aws.publisher(), runtime=endpoint)
    fast = intake.dispatch_upload(upload, deps=fast_deps, settings=settings).as_dict()  # the duplicate's run
    fast_done.set()
    thread.join(30)
    assert (fast["outcome"], slow["outcome"]) == ("submitted", "superseded")

    for request in queued(endpoint):
        aggregator.handler(
            sns_lambda_event(complete(aws, request), aws.resources.success_topic_arn), Context()
        )
    (message,) = aws.results_messages()
    one_pass = plan_chunks(iter_jsonl(body.splitlines(keepends=True)), chunk_size=3)
    keys = {r.id for r in one_pass.rejected} | {k for c in one_pass.chunks for k in c.ticket_ids}
    _, failures = check_exactly_once(aws, message, keys)
    assert {f["id"]: f["error"] for f in failures} == {r.id: r.error for r in one_pass.rejected}


def test_a_job_the_sweeper_claimed_as_overdue_is_taken_over_only_by_the_sweeper(
    aws: Aws, endpoint: AsyncEndpoint, invocations: list
):
    """Found: the sweeper claimed a job whose dispatch never finished, and its finalization failed
    (released the lease); a duplicate S3 event then took the job over through the aggregator's
    claim, which does not read the file again, and published it with the records no run had sent
    in neither file. A job claimed as overdue is now taken over by the sweeper only."""
    from pipeline_helpers import s3_put_event
    from test_pipeline_big_files import mixed_file, short_runs
    from test_pipeline_deadlines import deadline_of, sweep_at

    from ticket_pipeline import dispatcher, intake
    from ticket_pipeline.chunking import plan_chunks
    from triage_core.formats import iter_jsonl

    body = mixed_file()
    key = "incoming/stuck-again.jsonl"
    version = aws.s3.put_object(Bucket=aws.names.input_bucket, Key=key, Body=body)["VersionId"]
    event = s3_put_event(aws.names.input_bucket, key, len(body), version_id=version)
    first = dispatcher.handler(event, short_runs(2))["jobs"][0]
    assert first["outcome"] == "continued"
    invocations.clear()  # the continuation is lost
    job_id = first["job_id"]
    jobs, settings = aws.jobs(), aws.aggregator_settings()
    # the sweeper claims the overdue job, then fails before publishing (and releases it)
    assert jobs.claim_overdue(job_id, deadline_of(aws, job_id) + 1, settings.finalize_lease_seconds)
    jobs.release_finalization(job_id)

    again = dispatcher.handler(event, Context())["jobs"][0]  # S3 delivers the event again
    assert again["outcome"] == "duplicate"
    assert aws.results_messages() == []  # not the dispatcher's to finalize

    sweep_at(aws, deadline_of(aws, job_id) + 1)
    (message,) = aws.results_messages()
    one_pass = plan_chunks(iter_jsonl(body.splitlines(keepends=True)), chunk_size=3)
    keys = {r.id for r in one_pass.rejected} | {k for c in one_pass.chunks for k in c.ticket_ids}
    check_exactly_once(aws, message, keys)
    assert intake.job_id_for(aws.names.input_bucket, key, f"v:{version}") == job_id


@pytest.mark.parametrize("mapped_by", ["TICKET_FIELDS", "object metadata"])
def test_the_sweeper_reads_a_dead_dispatchs_file_with_the_field_map_the_dispatcher_used(
    aws: Aws, endpoint: AsyncEndpoint, mapped_by: str
):
    """Found when chaos met the ticket reader of issue #11: the sweeper read the file of a job whose
    dispatch died with the default field map (it has no ``TICKET_FIELDS``) and without the object's
    ``id-field`` / ``text-fields`` metadata, so a help-desk export (``ticket_id``, ``subject`` +
    ``description``) was a whole-file error to it and the records no run had sent were in neither
    file. The job now records how the dispatcher read the file, and the sweeper reads it so."""
    from test_pipeline_deadlines import deadline_of, sweep_at

    from ticket_pipeline import intake
    from ticket_pipeline.chunking import plan_chunks
    from triage_core.reader import read_tickets
    from triage_core.records import FieldMap

    rows = ["ticket_id,subject,description"]
    for i in range(14):
        if i % 5 == 3:
            rows.append(f"z{i},,  ")  # no subject, blank description: empty text, rejected
        elif i % 6 == 5:
            rows.append(f"z{i},one,too,many,cells")  # more cells than the header: rejected
        else:
            rows.append(f'z{i},card {i},"my card number {i}, it has not arrived"')
    body = ("\r\n".join(rows) + "\r\n").encode()
    fields = FieldMap("ticket_id", ("subject", "description"))
    key = "incoming/zendesk-export.csv"
    put: dict = {"Bucket": aws.names.input_bucket, "Key": key, "Body": body}
    env: dict = {"DISPATCH_THREADS": "1"}
    if mapped_by == "TICKET_FIELDS":
        env["TICKET_FIELDS"] = '{"id": "ticket_id", "text": ["subject", "description"]}'
    else:
        put["Metadata"] = {"id-field": "ticket_id", "text-fields": "subject,description"}
    version = aws.s3.put_object(**put)["VersionId"]
    upload = intake.Upload(aws.names.input_bucket, key, version_id=version)
    deps = intake.Deps(aws.objects(), aws.jobs(), aws.publisher(), runtime=ThrottledAfterTwo(endpoint))
    with pytest.raises(ClientError, match="ThrottlingException"):  # the dispatch dies after two chunks
        intake.dispatch_upload(upload, deps=deps, settings=aws.dispatcher_settings(**env))
    job_id = intake.job_id_for(upload.bucket, key, upload.token)
    for request in queued(endpoint):
        aggregator.handler(
            sns_lambda_event(complete(aws, request), aws.resources.success_topic_arn), Context()
        )

    sweep_at(aws, deadline_of(aws, job_id) + 1)  # the sweeper's settings: no TICKET_FIELDS
    (message,) = aws.results_messages()
    one_pass = plan_chunks(read_tickets([body], key=key, fields=fields), chunk_size=3)
    assert len(one_pass.rejected) == 5
    keys = {r.id for r in one_pass.rejected} | {k for c in one_pass.chunks for k in c.ticket_ids}
    results, failures = check_exactly_once(aws, message, keys)
    assert len(results) == 6  # the two chunks that went out
    reasons = {f["id"]: f["error"] for f in failures}
    assert {r.id: reasons[r.id] for r in one_pass.rejected} == {r.id: r.error for r in one_pass.rejected}
    # the third chunk was written but never invoked: the sweeper fails its tickets as unreported
    assert sorted(k for k, reason in reasons.items() if reason.startswith("no notification")) == [
        "z10",
        "z12",
        "z9",
    ]
    assert message["error"].startswith("dispatch did not finish: 9 of the file's 14 records were dispatched")
