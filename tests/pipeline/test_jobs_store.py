"""The jobs table's state machine (:mod:`ticket_pipeline.jobs`) on a real DynamoDB API: moto's
server, one fresh table per test (created like the stack's, no reset of the shared server).

What "every ticket once" rests on here: a job and its chunks are written once however often the
dispatcher runs again; a chunk's outcome is counted once; exactly one invocation finalizes, a
crashed finalizer's lease can be taken over once it runs out, and a failed one gives it back.
The one thing moto cannot produce, a transaction cancelled for a reason other than a condition
(a conflicting transaction, throttling), is injected as DynamoDB's raw HTTP error response and
parsed by botocore itself.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ClientError

from local_pipeline.aws import MotoServer, create_jobs_table
from ticket_pipeline import jobs as J
from ticket_pipeline.jobs import ChunkOutcome, JobStore, Recorded, parse_inference_id

NOW = 1_800_000_000.0
LEASE = 120
DISPATCH = {"status": J.DISPATCHING, "cursor": 0}  # a job as the dispatcher creates it


@pytest.fixture(scope="module")
def dynamodb(moto_server: MotoServer) -> Any:
    return moto_server.client("dynamodb")


@pytest.fixture
def store(dynamodb: Any) -> Iterator[JobStore]:
    name = f"jobs-{uuid.uuid4().hex[:12]}"
    create_jobs_table(dynamodb, name)
    yield JobStore(dynamodb, name)
    dynamodb.delete_table(TableName=name)


def _raw(store: JobStore, job_id: str, sk: str = "META") -> dict[str, Any]:
    """The item as DynamoDB holds it (typed attribute values)."""
    return store.client.get_item(TableName=store.table, Key=store._key(job_id, sk), ConsistentRead=True).get(
        "Item", {}
    )


def _submitted_job(
    store: JobStore, job_id: str = "job1", chunks: int = 2, deadline: float = NOW + 600
) -> None:
    """A job dispatched in ``chunks`` chunks of two tickets each, all submitted, none reported."""
    assert store.create_job(job_id, {**DISPATCH, "source": f"s3://in/{job_id}.jsonl", "cursor": 0}, deadline)
    for n in range(1, chunks + 1):
        assert store.put_chunk(job_id, {"chunk": n, "ticket_ids": [f"t{n}a", f"t{n}b"]}) is None
        store.mark_chunk_submitted(job_id, n, "2026-01-01T00:00:00Z", f"s3://out/{n}.out", None)
    assert store.finish_dispatch(job_id, 0, {"cursor": 2 * chunks, "chunk_count": chunks}, deadline)


def _succeeded(at: str = "2026-01-01T00:01:00.000Z") -> ChunkOutcome:
    return ChunkOutcome(J.SUCCEEDED, at, "Completed", output_location="s3://out/r.out")


# --- inference ids ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "job_id", ["plain", "report-c7-final", "x-c", "-c", "tickets-c00001", "a" * 40 + "-c00009"]
)
def test_a_job_id_holding_minus_c_still_parses_back(job_id: str):
    """File stems like ``report-c7`` put ``-c`` inside the job id: the chunk number is after the
    last ``-c``."""
    for number in (1, 42, 99999):
        assert parse_inference_id(J.inference_id_for(job_id, number)) == (job_id, number)


@pytest.mark.parametrize("bad", ["", "job", "job-c", "-c00001", "job-cx1", "job-c1a", "job-c-1"])
def test_ids_this_pipeline_did_not_issue_do_not_parse(bad: str):
    assert parse_inference_id(bad) is None


# --- creating a job and its chunks -----------------------------------------------------------
def test_create_job_writes_an_open_job_once(store: JobStore):
    before = time.time()
    assert store.create_job(
        "j", {**DISPATCH, "source": "s3://in/a.jsonl", "tickets": 3, "skipped": None}, NOW + 600.9
    )
    after = time.time()
    job = store.get_job("j")
    assert job is not None
    assert job["status"] == J.DISPATCHING
    assert {k: job[k] for k in ("pk", "sk", "job_id", "reported", "source", "tickets")} == {
        "pk": "JOB#j",
        "sk": "META",
        "job_id": "j",
        "reported": 0,
        "source": "s3://in/a.jsonl",
        "tickets": 3,
    }
    assert "skipped" not in job  # None values are not written
    assert job[J.OPEN_JOBS_PARTITION] == J.OPEN
    assert job[J.DEADLINE_ATTRIBUTE] == int(NOW + 600)
    # TTL: 30 days (the default) from now, in epoch seconds
    assert int(before) + 30 * 86400 <= job["expires_at"] <= int(after) + 30 * 86400

    # A re-dispatch of the same object version finds it and changes nothing.
    assert not store.create_job("j", {**DISPATCH, "source": "s3://in/other.jsonl", "tickets": 9}, NOW + 9999)
    again = store.get_job("j")
    assert again == job


def test_create_job_keeps_a_given_expiry(store: JobStore):
    assert store.create_job("j", {**DISPATCH, "expires_at": 12345}, NOW)
    assert store.get_job("j")["expires_at"] == 12345


def test_ttl_is_counted_forward_from_now():
    store = JobStore(None, "t", ttl_days=2)
    assert store.ttl_seconds == 2 * 86400
    assert store.expires_at(1000.0) == 1000 + 2 * 86400
    assert store.expires_at(0.0) == 2 * 86400
    assert abs(store.expires_at() - (time.time() + 2 * 86400)) < 5


def test_a_chunk_is_written_once_and_a_rerun_never_resets_it(store: JobStore):
    assert store.create_job("j", {**DISPATCH}, NOW)
    assert store.put_chunk("j", {"chunk": 3, "ticket_ids": ["a", "b"], "inference_id": "j-c00003"}) is None
    chunk = store.get_chunk("j", 3)
    assert chunk is not None
    assert chunk["state"] == J.PENDING
    assert chunk["sk"] == "CHUNK#00003"
    assert chunk["job_id"] == "j"
    assert chunk["ticket_ids"] == ["a", "b"]
    assert abs(chunk["expires_at"] - (time.time() + 30 * 86400)) < 5

    # the same chunk again while still pending: its state, its tickets unchanged
    assert store.put_chunk("j", {"chunk": 3, "ticket_ids": ["x"]}) == J.PENDING
    store.mark_chunk_submitted("j", 3, "2026-01-01T00:00:00Z", "s3://out/3.out", "s3://fail/3.err")
    assert store.put_chunk("j", {"chunk": 3, "ticket_ids": ["x"]}) == J.CHUNK_SUBMITTED
    assert store.record_chunk_outcome("j", 3, _succeeded()) is Recorded.RECORDED
    assert store.put_chunk("j", {"chunk": 3, "ticket_ids": ["x"]}) == J.SUCCEEDED
    chunk = store.get_chunk("j", 3)
    assert chunk["state"] == J.SUCCEEDED
    assert chunk["ticket_ids"] == ["a", "b"]


def test_mark_chunk_submitted_only_moves_a_pending_chunk(store: JobStore):
    assert store.create_job("j", {**DISPATCH}, NOW)
    store.put_chunk("j", {"chunk": 1, "ticket_ids": ["a"]})
    store.put_chunk("j", {"chunk": 2, "ticket_ids": ["b"]})
    store.mark_chunk_submitted("j", 1, "2026-01-01T00:00:00Z", "s3://out/1.out", None)
    chunk = store.get_chunk("j", 1)
    assert {k: chunk[k] for k in ("state", "submitted_at", "expected_output_location")} == {
        "state": J.CHUNK_SUBMITTED,
        "submitted_at": "2026-01-01T00:00:00Z",
        "expected_output_location": "s3://out/1.out",
    }
    assert chunk["expected_failure_location"] == ""
    store.mark_chunk_submitted("j", 2, "2026-01-01T00:00:00Z", "s3://out/2.out", "s3://fail/2")
    assert store.get_chunk("j", 2)["expected_failure_location"] == "s3://fail/2"
    # the notification was faster: a late "submitted" does not undo its outcome
    assert store.record_chunk_outcome("j", 1, _succeeded()) is Recorded.RECORDED
    store.mark_chunk_submitted("j", 1, "2026-01-01T00:09:00Z", "s3://out/other", None)
    chunk = store.get_chunk("j", 1)
    assert chunk["state"] == J.SUCCEEDED
    assert chunk["submitted_at"] == "2026-01-01T00:00:00Z"


def test_other_errors_are_raised_not_taken_for_an_existing_item(dynamodb: Any):
    missing = JobStore(dynamodb, "no-such-table")
    with pytest.raises(ClientError) as exc:
        missing.create_job("j", {**DISPATCH}, NOW)
    assert exc.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError):
        missing.put_chunk("j", {"chunk": 1, "ticket_ids": []})
    with pytest.raises(ClientError):
        missing.claim_finalization("j", NOW, LEASE)


# --- dispatcher progress -----------------------------------------------------------------------
def test_checkpoint_and_finish_advance_only_from_the_expected_cursor(store: JobStore):
    assert store.create_job("j", {**DISPATCH, "cursor": 0}, NOW)
    assert not store.checkpoint("j", 5, {"cursor": 10}, NOW + 1)  # another run is further on
    assert store.get_job("j")["cursor"] == 0
    assert store.checkpoint("j", 0, {"cursor": 10, "next_chunk": 4, "note": None}, NOW + 50.7)
    job = store.get_job("j")
    assert (job["cursor"], job["next_chunk"], job[J.DEADLINE_ATTRIBUTE]) == (10, 4, int(NOW + 50))
    assert "note" not in job
    assert job.get("status") != J.SUBMITTED
    assert not store.checkpoint("j", 0, {"cursor": 20}, NOW)  # the same position again loses
    assert not store.finish_dispatch("j", 0, {"cursor": 20, "chunk_count": 2}, NOW)
    assert store.finish_dispatch("j", 10, {"cursor": 20, "chunk_count": 2, "tickets": 20}, NOW + 99)
    job = store.get_job("j")
    assert (job["status"], job["cursor"], job["chunk_count"], job["tickets"]) == (J.SUBMITTED, 20, 2, 20)
    assert job[J.DEADLINE_ATTRIBUTE] == int(NOW + 99)
    # submitted: no more dispatching progress
    assert not store.checkpoint("j", 20, {"cursor": 30}, NOW)
    assert not store.finish_dispatch("j", 20, {"cursor": 30}, NOW)
    assert store.get_job("j")["cursor"] == 20


def test_checkpoint_needs_a_dispatching_job(store: JobStore):
    assert not store.checkpoint("nobody", 0, {"cursor": 1}, NOW)
    assert store.get_job("nobody") is None


def test_rejected_parts_count_only_for_the_run_that_wins_its_position(store: JobStore):
    """Each dispatcher run writes its rejected records to an object of its own and registers it in
    the same conditional update as its progress: of two runs at one position (a duplicate S3
    event), only the winner's object counts; the parts are kept in order."""
    assert store.create_job("j", {**DISPATCH}, NOW)
    assert store.checkpoint("j", 0, {"cursor": 10}, NOW, rejected_part="rejected/run1-a.jsonl")
    assert not store.checkpoint("j", 0, {"cursor": 10}, NOW, rejected_part="rejected/run1-b.jsonl")
    assert store.checkpoint("j", 10, {"cursor": 20}, NOW)  # a run without rejected records
    assert store.finish_dispatch("j", 20, {"cursor": 30}, NOW, rejected_part="rejected/run3-c.jsonl")
    assert store.get_job("j")["rejected_parts"] == ["rejected/run1-a.jsonl", "rejected/run3-c.jsonl"]


def test_hand_off_is_noted_only_at_the_current_cursor(store: JobStore):
    assert store.create_job("j", {**DISPATCH, "cursor": 7}, NOW)
    store.mark_handed_off("j", 3)
    assert "handoff_cursor" not in store.get_job("j")
    store.mark_handed_off("j", 7)
    assert store.get_job("j")["handoff_cursor"] == 7


# --- reading chunks --------------------------------------------------------------------------
def test_chunks_are_read_across_query_pages_in_order(store: JobStore):
    """DynamoDB returns at most 1 MB per query page (moto too): a job whose chunk items are
    larger than that is read over several pages, every chunk once."""
    assert store.create_job("j", {**DISPATCH}, NOW)
    big = ["x" * 1000 + f"-{i}" for i in range(300)]  # ~300 KB of ticket ids per chunk
    for n in range(1, 6):
        store.put_chunk("j", {"chunk": n, "ticket_ids": [f"{n}:{t}" for t in big]})
    first_page = store.client.query(
        TableName=store.table,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "JOB#j"}},
    )
    assert "LastEvaluatedKey" in first_page  # the premise: more than one page
    chunks = store.list_chunks("j")
    assert [c["chunk"] for c in chunks] == [1, 2, 3, 4, 5]
    assert all(len(c["ticket_ids"]) == 300 for c in chunks)
    store.mark_chunk_submitted("j", 2, "2026-01-01T00:00:00Z", "s3://o", None)
    pending = store.pending_chunks("j")
    assert [c["chunk"] for c in pending] == [1, 3, 4, 5]
    assert all("ticket_ids" not in c for c in pending)  # the projection leaves the tickets out
    assert all(c["state"] == J.PENDING for c in pending)


def test_chunks_are_only_the_jobs_own(store: JobStore):
    for job in ("a", "ab"):
        assert store.create_job(job, {**DISPATCH}, NOW)
        store.put_chunk(job, {"chunk": 1, "ticket_ids": [job], "inference_id": f"{job}-c00001"})
    assert [c["ticket_ids"] for c in store.list_chunks("a")] == [["a"]]
    assert store.list_chunks("nobody") == []
    assert store.get_job("nobody") is None
    assert store.get_chunk("a", 2) is None


def test_numbers_come_back_as_int_or_float(store: JobStore):
    assert store.create_job("j", {**DISPATCH, "ratio": Decimal("0.25"), "count": 3}, NOW)
    job = store.get_job("j")
    assert job["ratio"] == 0.25 and isinstance(job["ratio"], float)
    assert job["count"] == 3 and isinstance(job["count"], int)


# --- recording outcomes ------------------------------------------------------------------------
def test_an_outcome_is_recorded_and_counted_once(store: JobStore):
    _submitted_job(store)
    failed = ChunkOutcome(J.FAILED, "2026-01-01T00:02:00.000Z", "Failed", None, "s3://f/1", "model error")
    assert store.record_chunk_outcome("job1", 1, failed) is Recorded.RECORDED
    chunk = store.get_chunk("job1", 1)
    assert {k: chunk.get(k) for k in ("state", "reported_at", "notification_status")} == {
        "state": J.FAILED,
        "reported_at": "2026-01-01T00:02:00.000Z",
        "notification_status": "Failed",
    }
    assert (chunk["failure_location"], chunk["failure_reason"]) == ("s3://f/1", "model error")
    assert "output_location" not in chunk
    assert store.get_job("job1")["reported"] == 1

    # a duplicate delivery (even with the other outcome) changes nothing
    assert store.record_chunk_outcome("job1", 1, _succeeded()) is Recorded.DUPLICATE
    assert store.get_chunk("job1", 1) == chunk
    assert store.get_job("job1")["reported"] == 1

    assert store.record_chunk_outcome("job1", 2, _succeeded()) is Recorded.RECORDED
    chunk2 = store.get_chunk("job1", 2)
    assert (chunk2["state"], chunk2["output_location"]) == (J.SUCCEEDED, "s3://out/r.out")
    assert "failure_location" not in chunk2 and "failure_reason" not in chunk2
    assert store.get_job("job1")["reported"] == 2


def test_a_chunk_can_report_while_its_job_is_still_dispatching(store: JobStore):
    assert store.create_job("j", {**DISPATCH, "cursor": 0}, NOW)
    store.put_chunk("j", {"chunk": 1, "ticket_ids": ["a"]})
    assert store.record_chunk_outcome("j", 1, _succeeded()) is Recorded.RECORDED  # still pending
    assert store.get_job("j")["reported"] == 1


def test_outcomes_for_unknown_jobs_or_chunks_are_unknown(store: JobStore):
    _submitted_job(store, chunks=1)
    assert store.record_chunk_outcome("job1", 7, _succeeded()) is Recorded.UNKNOWN
    assert store.record_chunk_outcome("nobody", 1, _succeeded()) is Recorded.UNKNOWN
    assert store.get_chunk("job1", 7) is None and store.get_job("nobody") is None
    assert store.get_job("job1")["reported"] == 0


def test_a_chunk_without_its_job_is_unknown(store: JobStore):
    store.put_chunk("orphan", {"chunk": 1, "ticket_ids": ["a"]})
    assert store.record_chunk_outcome("orphan", 1, _succeeded()) is Recorded.UNKNOWN
    assert store.get_chunk("orphan", 1)["state"] == J.PENDING


def test_an_outcome_after_finalization_is_late_and_changes_nothing(store: JobStore):
    _submitted_job(store)
    assert store.claim_overdue("job1", NOW + 601, LEASE)
    assert store.record_chunk_outcome("job1", 1, _succeeded()) is Recorded.LATE
    assert store.get_chunk("job1", 1)["state"] == J.CHUNK_SUBMITTED
    assert store.get_job("job1")["reported"] == 0
    assert store.complete_job("job1", J.PARTIAL, {})
    assert store.record_chunk_outcome("job1", 2, _succeeded()) is Recorded.LATE


def _cancelled(reasons: list[dict[str, str]]) -> bytes:
    """DynamoDB's error body for a cancelled transaction (API_TransactWriteItems, "Errors":
    TransactionCanceledException with one CancellationReason per item, in request order)."""
    codes = ", ".join(r["Code"] for r in reasons)
    return json.dumps(
        {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": "Transaction cancelled, please refer cancellation reasons for specific reasons "
            f"[{codes}]",
            "CancellationReasons": reasons,
        }
    ).encode()


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def _answer_transactions_with(store: JobStore, body: bytes) -> list[int]:
    """Make the store's (real) client receive ``body`` as a 400 answer to TransactWriteItems;
    botocore parses it as it would DynamoDB's. Returns the list of attempts made."""
    attempts: list[int] = []

    def respond(request: Any, **_: Any) -> AWSResponse:
        attempts.append(1)
        return AWSResponse(request.url, 400, {"Content-Type": "application/x-amz-json-1.0"}, _Raw(body))

    store.client.meta.events.register_first("before-send.dynamodb.TransactWriteItems", respond)
    return attempts


@pytest.mark.parametrize(
    "reasons",
    [
        [{"Code": "None"}, {"Code": "TransactionConflict", "Message": "Transaction is ongoing for the item"}],
        [{"Code": "ThrottlingError", "Message": "Throughput exceeds the current capacity"}, {"Code": "None"}],
        [{"Code": "ProvisionedThroughputExceeded"}, {"Code": "None"}],
    ],
    ids=["conflict", "throttling", "throughput"],
)
def test_a_transaction_cancelled_for_another_reason_is_raised_for_a_retry(
    moto_server: MotoServer, reasons: list[dict[str, str]]
):
    """Not a duplicate, not late: the chunk has not been recorded, so the invocation must fail
    and be retried (Lambda retries it, then its dead-letter queue keeps it)."""
    client = moto_server.client("dynamodb")
    store = JobStore(client, f"jobs-{uuid.uuid4().hex[:12]}")
    create_jobs_table(client, store.table)
    _submitted_job(store)
    attempts = _answer_transactions_with(store, _cancelled(reasons))
    with pytest.raises(ClientError) as exc:
        store.record_chunk_outcome("job1", 1, _succeeded())
    assert attempts
    assert exc.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in exc.value.response["CancellationReasons"]] == [r["Code"] for r in reasons]
    assert store.get_chunk("job1", 1)["state"] == J.CHUNK_SUBMITTED
    assert store.get_job("job1")["reported"] == 0


def test_a_conditional_cancellation_is_a_duplicate_not_an_error(moto_server: MotoServer):
    """The same injected shape with ConditionalCheckFailed is what moto answers too; the store
    then looks at the chunk to tell duplicate from late."""
    client = moto_server.client("dynamodb")
    store = JobStore(client, f"jobs-{uuid.uuid4().hex[:12]}")
    create_jobs_table(client, store.table)
    _submitted_job(store)
    assert store.record_chunk_outcome("job1", 1, _succeeded()) is Recorded.RECORDED
    _answer_transactions_with(store, _cancelled([{"Code": "ConditionalCheckFailed"}, {"Code": "None"}]))
    assert store.record_chunk_outcome("job1", 1, _succeeded()) is Recorded.DUPLICATE


def test_an_error_other_than_a_cancellation_is_raised(moto_server: MotoServer):
    client = moto_server.client("dynamodb")
    store = JobStore(client, f"jobs-{uuid.uuid4().hex[:12]}")
    create_jobs_table(client, store.table)
    _submitted_job(store)
    body = json.dumps(
        {"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": "Internal server error"}
    ).encode()
    _answer_transactions_with(store, body)
    with pytest.raises(ClientError) as exc:
        store.record_chunk_outcome("job1", 1, _succeeded())
    assert exc.value.response["Error"]["Code"] == "InternalServerError"


# --- finalization ------------------------------------------------------------------------------
def _report_all(store: JobStore, job_id: str = "job1", chunks: int = 2) -> None:
    for n in range(1, chunks + 1):
        assert store.record_chunk_outcome(job_id, n, _succeeded()) is Recorded.RECORDED


def test_finalization_is_claimed_only_when_every_chunk_has_reported(store: JobStore):
    _submitted_job(store)
    assert store.record_chunk_outcome("job1", 1, _succeeded()) is Recorded.RECORDED
    assert not store.claim_finalization("job1", NOW, LEASE)
    assert store.get_job("job1")["status"] == J.SUBMITTED
    assert store.record_chunk_outcome("job1", 2, _succeeded()) is Recorded.RECORDED
    assert store.claim_finalization("job1", NOW + 0.9, LEASE)
    job = store.get_job("job1")
    assert (job["status"], job["lease_until"]) == (J.FINALIZING, int(NOW) + LEASE)
    # exactly one winner while the lease is live, up to and including its last second
    assert not store.claim_finalization("job1", NOW + 1, LEASE)
    assert not store.claim_finalization("job1", NOW + LEASE, LEASE)
    assert store.get_job("job1")["lease_until"] == int(NOW) + LEASE


def test_a_dispatching_job_is_never_finalized_by_the_aggregator(store: JobStore):
    assert store.create_job("j", {**DISPATCH, "chunk_count": 0, "cursor": 0}, NOW)
    assert not store.claim_finalization("j", NOW, LEASE)
    assert not store.claim_finalization("nobody", NOW, LEASE)
    assert store.get_job("nobody") is None


def test_a_crashed_finalizers_lease_is_taken_over_once_it_runs_out(store: JobStore):
    _submitted_job(store)
    _report_all(store)
    assert store.claim_finalization("job1", NOW, LEASE)
    # the holder crashed; a duplicate notification after the lease ran out takes over
    assert store.claim_finalization("job1", NOW + LEASE + 1, LEASE)
    assert store.get_job("job1")["lease_until"] == int(NOW) + 2 * LEASE + 1
    assert not store.claim_finalization("job1", NOW + LEASE + 2, LEASE)


def test_a_failed_finalizer_gives_the_lease_back(store: JobStore):
    _submitted_job(store)
    _report_all(store)
    assert store.claim_finalization("job1", NOW, LEASE)
    store.release_finalization("job1")
    job = store.get_job("job1")
    assert (job["status"], job["lease_until"]) == (J.FINALIZING, 0)
    assert store.claim_finalization("job1", NOW + 1, LEASE)  # a retry at once, not after the lease
    assert store.get_job("job1")["lease_until"] == int(NOW) + 1 + LEASE


def test_releasing_touches_only_a_job_being_finalized(store: JobStore):
    _submitted_job(store)
    store.release_finalization("job1")  # not finalizing: nothing to give back
    assert "lease_until" not in store.get_job("job1")
    store.release_finalization("nobody")
    assert store.get_job("nobody") is None  # no item conjured up
    _report_all(store)
    assert store.claim_finalization("job1", NOW, LEASE)
    assert store.complete_job("job1", J.COMPLETE, {})
    store.release_finalization("job1")
    job = store.get_job("job1")
    assert job["status"] == J.COMPLETE and "lease_until" not in job


def test_completing_closes_the_job_and_drops_its_lease(store: JobStore):
    _submitted_job(store)
    _report_all(store)
    assert not store.complete_job("job1", J.COMPLETE, {"succeeded": 4})  # not claimed yet
    assert store.get_job("job1")["status"] == J.SUBMITTED
    assert store.claim_finalization("job1", NOW, LEASE)
    fields = {"succeeded": 3, "failed": 1, "results_location": "s3://out/r.jsonl", "skipped": None}
    assert store.complete_job("job1", J.PARTIAL, fields)
    job = store.get_job("job1")
    assert job["status"] == J.PARTIAL
    assert (job["succeeded"], job["failed"], job["results_location"]) == (3, 1, "s3://out/r.jsonl")
    assert "lease_until" not in job and J.OPEN_JOBS_PARTITION not in job and "skipped" not in job
    assert J.DEADLINE_ATTRIBUTE in job
    # once: a second completion (a finalizer that lost its lease) changes nothing
    assert not store.complete_job("job1", J.COMPLETE, {"succeeded": 4})
    assert store.get_job("job1")["status"] == J.PARTIAL
    # and nobody can claim it again
    assert not store.claim_finalization("job1", NOW + 10 * LEASE, LEASE)
    assert not store.claim_overdue("job1", NOW + 10**6, LEASE)


# --- deadlines -------------------------------------------------------------------------------
def test_overdue_jobs_are_the_open_ones_past_their_deadline_earliest_first(store: JobStore):
    for job_id, deadline in (("late2", NOW - 50), ("future", NOW + 50), ("late1", NOW - 100), ("now", NOW)):
        assert store.create_job(job_id, {**DISPATCH}, deadline)
    assert store.overdue_jobs(NOW, limit=10) == ["late1", "late2"]
    assert store.overdue_jobs(NOW + 0.9, limit=10) == ["late1", "late2"]
    assert store.overdue_jobs(NOW + 1, limit=10) == ["late1", "late2", "now"]
    assert store.overdue_jobs(NOW + 1, limit=1) == ["late1"]
    assert store.claim_overdue("late1", NOW, LEASE)
    assert store.complete_job("late1", J.PARTIAL, {})
    assert store.overdue_jobs(NOW, limit=10) == ["late2"]


@pytest.mark.parametrize("status", ["dispatching", "submitted"])
def test_the_sweeper_claims_an_open_job_past_its_deadline(store: JobStore, status: str):
    assert store.create_job("j", {**DISPATCH, "cursor": 0}, NOW)
    if status == "submitted":
        assert store.finish_dispatch("j", 0, {"chunk_count": 1}, NOW)
    assert not store.claim_overdue("j", NOW, LEASE)  # deadline not yet passed
    assert store.get_job("j")["status"] == status
    assert store.claim_overdue("j", NOW + 1.5, LEASE)
    job = store.get_job("j")
    assert (job["status"], job["lease_until"], job["overdue_at"]) == (
        J.FINALIZING,
        int(NOW) + 1 + LEASE,
        int(NOW) + 1,
    )
    assert not store.claim_overdue("j", NOW + 2, LEASE)  # live lease
    assert not store.claim_finalization("j", NOW + 2, LEASE)
    assert store.claim_overdue("j", NOW + 2 + LEASE, LEASE)  # ran out: taken over
    assert store.get_job("j")["lease_until"] == int(NOW) + 2 + 2 * LEASE


def test_the_sweeper_does_not_claim_jobs_it_should_not(store: JobStore):
    assert not store.claim_overdue("nobody", NOW, LEASE)
    assert store.get_job("nobody") is None
    _submitted_job(store, deadline=NOW)
    _report_all(store)
    assert store.claim_finalization("job1", NOW - 500, LEASE)  # being finalized, lease live
    assert not store.claim_overdue("job1", NOW - 500 + LEASE, LEASE)
    job = store.get_job("job1")
    assert "overdue_at" not in job and job["lease_until"] == int(NOW) - 500 + LEASE


def test_the_reads_that_decide_outcomes_are_strongly_consistent(moto_server: MotoServer, store: JobStore):
    """moto is always consistent; DynamoDB is not unless asked: a finalizer reading chunks with an
    eventually consistent query could miss an outcome recorded a moment before. The requests as
    botocore sends them must ask for ConsistentRead."""
    _submitted_job(store, chunks=1)
    client = moto_server.client("dynamodb")
    reader = JobStore(client, store.table)
    sent: list[tuple[str, Any]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        sent.append((model.name, params.get("ConsistentRead")))

    client.meta.events.register("provide-client-params.dynamodb.*", record)
    reader.get_job("job1")
    reader.get_chunk("job1", 1)
    reader.list_chunks("job1")
    reader.pending_chunks("job1")
    assert sent == [("GetItem", True), ("GetItem", True), ("Query", True), ("Query", True)]


def test_a_submission_without_an_output_location_stores_an_empty_one(store: JobStore):
    assert store.create_job("j", {**DISPATCH}, NOW)
    store.put_chunk("j", {"chunk": 1, "ticket_ids": ["a"]})
    store.mark_chunk_submitted("j", 1, "2026-01-01T00:00:00Z", "", None)
    chunk = store.get_chunk("j", 1)
    assert (chunk["expected_output_location"], chunk["expected_failure_location"]) == ("", "")
