"""The jobs table (DynamoDB, ``pk``/``sk``, TTL attribute ``expires_at``).

One job per uploaded object version::

    pk = JOB#<job_id>  sk = META          source, version_id, status, cursor, next_chunk, run,
                                          chunk_count (once dispatched), reported (atomic counter),
                                          tickets, rejected, rejected_parts, submitted_at,
                                          deadline, open_jobs (while open), lease_until, ...
    pk = JOB#<job_id>  sk = CHUNK#00001   inference_id, input_location, ticket_ids, state,
                                          output/failure location, failure_reason, reported_at

Job status: ``dispatching`` (chunks being written and invoked, over one or more dispatcher runs;
``cursor`` counts the records already dispatched) -> ``submitted`` (``chunk_count`` final) ->
``finalizing`` (one invocation holds a lease while it writes the results) -> ``complete`` |
``partial``. Chunk state: ``pending`` -> ``submitted`` -> ``succeeded`` | ``failed``.

Deadline: every open job carries ``deadline`` (epoch seconds; pushed forward each time the
dispatcher invokes chunks) and ``open_jobs``, the partition key of the sparse index
:data:`OPEN_JOBS_INDEX`; finalizing a job removes ``open_jobs``, so the index holds exactly the
open jobs, ordered by deadline, and the sweeper finds the overdue ones with one query.

Idempotency: recording a chunk's outcome and bumping the job's ``reported`` counter is one
transaction conditioned on the chunk not having reported yet *and* the job still being open, so
a duplicate SNS delivery changes nothing and a notification arriving after the job was
finalized (late) changes nothing either. Finalization is claimed with a conditional update: by
the last notification (``reported >= chunk_count``) or by the sweeper (``deadline`` passed), and
by whoever finds a crashed finalizer's lease run out (the sweeper only, once the job was claimed
as overdue); only one claim can succeed at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from enum import Enum
from typing import Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import ClientError

DISPATCHING, SUBMITTED, FINALIZING, COMPLETE, PARTIAL = (
    "dispatching",
    "submitted",
    "finalizing",
    "complete",
    "partial",
)
PENDING, CHUNK_SUBMITTED, SUCCEEDED, FAILED = "pending", "submitted", "succeeded", "failed"
FINAL_STATUSES = frozenset({COMPLETE, PARTIAL})

# The sparse index of open jobs (the same names as infra/job_state.py; a test keeps them equal).
OPEN_JOBS_INDEX = "OpenJobsByDeadline"
OPEN_JOBS_PARTITION = "open_jobs"
DEADLINE_ATTRIBUTE = "deadline"
OPEN = "open"

_ser = TypeSerializer()
_de = TypeDeserializer()


class Recorded(Enum):
    """What recording a notification's chunk outcome did."""

    RECORDED = "recorded"
    DUPLICATE = "duplicate"  # the chunk had already reported
    LATE = "late"  # the job was already finalized (or is being finalized): ignored
    UNKNOWN = "unknown"  # no such job or chunk


def chunk_sk(number: int) -> str:
    return f"CHUNK#{number:05d}"


def inference_id_for(job_id: str, number: int) -> str:
    """InferenceId of a chunk: ``<job_id>-c<number>`` (<= 64 printable chars, as the API requires)."""
    return f"{job_id}-c{number:05d}"


def parse_inference_id(inference_id: str) -> tuple[str, int] | None:
    job_id, sep, number = inference_id.rpartition("-c")
    if not sep or not job_id or not number.isdigit():
        return None
    return job_id, int(number)


def _item(values: dict[str, Any]) -> dict[str, Any]:
    return {k: _ser.serialize(v) for k, v in values.items() if v is not None}


def _plain(item: dict[str, Any]) -> dict[str, Any]:
    out = {k: _de.deserialize(v) for k, v in item.items()}
    for k, v in out.items():  # DynamoDB numbers come back as Decimal
        if isinstance(v, Decimal):
            out[k] = int(v) if v == int(v) else float(v)
    return out


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _conditional_failed(exc: ClientError) -> bool:
    return _code(exc) == "ConditionalCheckFailedException"


def _sets(fields: dict[str, Any], names: dict[str, str], values: dict[str, Any]) -> list[str]:
    """``#fN = :fN`` clauses for ``fields`` (None values skipped), filling names/values."""
    clauses = []
    for i, (name, value) in enumerate(sorted(fields.items())):
        if value is None:
            continue
        names[f"#f{i}"] = name
        values[f":f{i}"] = _ser.serialize(value)
        clauses.append(f"#f{i} = :f{i}")
    return clauses


@dataclass(frozen=True)
class ChunkOutcome:
    state: str  # SUCCEEDED | FAILED
    reported_at: str
    notification_status: str
    output_location: str | None = None
    failure_location: str | None = None
    failure_reason: str | None = None


class JobStore:
    """DynamoDB access for jobs, over a low-level boto3 DynamoDB client."""

    def __init__(self, dynamodb_client: Any, table: str, ttl_days: int = 30):
        self.client = dynamodb_client
        self.table = table
        self.ttl_seconds = ttl_days * 86400

    def _key(self, job_id: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": f"JOB#{job_id}"}, "sk": {"S": sk}}

    def expires_at(self, now: float | None = None) -> int:
        return int((now if now is not None else time.time()) + self.ttl_seconds)

    def _update(self, job_id: str, sk: str, **kwargs: Any) -> bool:
        """A conditional update; False when its condition did not hold."""
        try:
            self.client.update_item(TableName=self.table, Key=self._key(job_id, sk), **kwargs)
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    # --- reads -------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> dict[str, Any] | None:
        resp = self.client.get_item(TableName=self.table, Key=self._key(job_id, "META"), ConsistentRead=True)
        return _plain(resp["Item"]) if "Item" in resp else None

    def get_chunk(self, job_id: str, number: int) -> dict[str, Any] | None:
        resp = self.client.get_item(
            TableName=self.table, Key=self._key(job_id, chunk_sk(number)), ConsistentRead=True
        )
        return _plain(resp["Item"]) if "Item" in resp else None

    def iter_chunks(self, job_id: str, projection: str | None = None) -> Iterator[dict[str, Any]]:
        """The job's chunk items in chunk order, one query page (<= 1 MB) in memory at a time."""
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :chunk)",
            "ExpressionAttributeValues": {":pk": {"S": f"JOB#{job_id}"}, ":chunk": {"S": "CHUNK#"}},
            "ConsistentRead": True,
        }
        if projection:
            kwargs["ProjectionExpression"] = projection
            kwargs["ExpressionAttributeNames"] = {"#state": "state"}
        while True:
            resp = self.client.query(**kwargs)
            yield from (_plain(item) for item in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def list_chunks(self, job_id: str) -> list[dict[str, Any]]:
        return list(self.iter_chunks(job_id))

    def pending_chunks(self, job_id: str) -> list[dict[str, Any]]:
        """Chunks written but never submitted (without their ticket ids)."""
        return [
            c
            for c in self.iter_chunks(job_id, projection="chunk, #state, inference_id, input_location")
            if c.get("state") == PENDING
        ]

    def overdue_jobs(self, now: float, limit: int) -> list[str]:
        """Ids of open jobs whose deadline has passed, earliest deadline first (the sparse index)."""
        resp = self.client.query(
            TableName=self.table,
            IndexName=OPEN_JOBS_INDEX,
            KeyConditionExpression="#open = :open AND #deadline < :now",
            ExpressionAttributeNames={"#open": OPEN_JOBS_PARTITION, "#deadline": DEADLINE_ATTRIBUTE},
            ExpressionAttributeValues={":open": {"S": OPEN}, ":now": {"N": str(int(now))}},
            Limit=limit,
        )
        return [item["pk"]["S"].removeprefix("JOB#") for item in resp.get("Items", [])]

    # --- dispatcher ----------------------------------------------------------------------------
    def create_job(self, job_id: str, fields: dict[str, Any], deadline: float) -> bool:
        """Create the job's META item, open, with its deadline; False if it already exists."""
        item = _item(
            {
                **fields,
                "pk": f"JOB#{job_id}",
                "sk": "META",
                "job_id": job_id,
                "reported": 0,
                OPEN_JOBS_PARTITION: OPEN,
                DEADLINE_ATTRIBUTE: int(deadline),
            }
        )
        item.setdefault("expires_at", {"N": str(self.expires_at())})
        try:
            self.client.put_item(
                TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def put_chunk(self, job_id: str, chunk: dict[str, Any]) -> str | None:
        """Write a chunk item in state ``pending`` unless it exists (a retried run never resets a
        chunk). Returns None when written, else the existing chunk's state."""
        values = {
            **chunk,
            "pk": f"JOB#{job_id}",
            "sk": chunk_sk(chunk["chunk"]),
            "job_id": job_id,
            "state": PENDING,
            "expires_at": self.expires_at(),
        }
        try:
            self.client.put_item(
                TableName=self.table, Item=_item(values), ConditionExpression="attribute_not_exists(pk)"
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            existing = self.get_chunk(job_id, chunk["chunk"])
            return existing.get("state") if existing else PENDING
        return None

    def checkpoint(
        self,
        job_id: str,
        expected_cursor: int,
        fields: dict[str, Any],
        deadline: float,
        rejected_part: str | None = None,
    ) -> bool:
        """Record a dispatcher run's progress (``cursor`` and the rest in ``fields``, and the object
        holding the run's rejected records) if the job is still dispatching at ``expected_cursor``:
        of two runs at one position, one wins, and only the winner's rejected records count."""
        return self._advance(job_id, expected_cursor, fields, deadline, rejected_part, submit=False)

    def _advance(
        self,
        job_id: str,
        expected_cursor: int,
        fields: dict[str, Any],
        deadline: float,
        rejected_part: str | None,
        submit: bool,
    ) -> bool:
        names = {"#status": "status", "#deadline": DEADLINE_ATTRIBUTE, "#cursor": "cursor"}
        values = {
            ":dispatching": {"S": DISPATCHING},
            ":expected": {"N": str(expected_cursor)},
            ":deadline": {"N": str(int(deadline))},
        }
        sets = [*_sets(fields, names, values), "#deadline = :deadline"]
        if rejected_part:
            names["#parts"] = "rejected_parts"
            values[":no_parts"] = {"L": []}
            values[":part"] = {"L": [{"S": rejected_part}]}
            sets.append("#parts = list_append(if_not_exists(#parts, :no_parts), :part)")
        if submit:
            values[":submitted"] = {"S": SUBMITTED}
            sets.append("#status = :submitted")
        return self._update(
            job_id,
            "META",
            UpdateExpression="SET " + ", ".join(sets),
            ConditionExpression="#status = :dispatching AND #cursor = :expected",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def mark_handed_off(self, job_id: str, cursor: int) -> None:
        """Note that the next run for ``cursor`` has been invoked."""
        self._update(
            job_id,
            "META",
            UpdateExpression="SET handoff_cursor = :cursor",
            ConditionExpression="#cursor = :cursor",
            ExpressionAttributeNames={"#cursor": "cursor"},
            ExpressionAttributeValues={":cursor": {"N": str(cursor)}},
        )

    def finish_dispatch(
        self,
        job_id: str,
        expected_cursor: int,
        fields: dict[str, Any],
        deadline: float,
        rejected_part: str | None = None,
    ) -> bool:
        """``dispatching`` -> ``submitted`` with the final ``chunk_count``, ``tickets``, ... (and the
        last run's rejected records): from now on the job can be finalized when every chunk has
        reported."""
        return self._advance(job_id, expected_cursor, fields, deadline, rejected_part, submit=True)

    def mark_chunk_submitted(
        self, job_id: str, number: int, submitted_at: str, output_location: str, failure_location: str | None
    ) -> None:
        self._update(  # False: the notification was faster than us, fine
            job_id,
            chunk_sk(number),
            UpdateExpression=(
                "SET #state = :submitted, submitted_at = :at, "
                "expected_output_location = :out, expected_failure_location = :fail"
            ),
            ConditionExpression="#state = :pending",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":submitted": {"S": CHUNK_SUBMITTED},
                ":pending": {"S": PENDING},
                ":at": {"S": submitted_at},
                ":out": {"S": output_location or ""},
                ":fail": {"S": failure_location or ""},
            },
        )

    # --- aggregator ----------------------------------------------------------------------------
    def record_chunk_outcome(self, job_id: str, number: int, outcome: ChunkOutcome) -> Recorded:
        """Record a chunk's result and count it, once, while the job is open."""
        sets = ["#state = :state", "reported_at = :at", "notification_status = :ns"]
        values: dict[str, Any] = {
            ":state": {"S": outcome.state},
            ":at": {"S": outcome.reported_at},
            ":ns": {"S": outcome.notification_status},
            ":pending": {"S": PENDING},
            ":submitted": {"S": CHUNK_SUBMITTED},
        }
        for name, value in (
            ("output_location", outcome.output_location),
            ("failure_location", outcome.failure_location),
            ("failure_reason", outcome.failure_reason),
        ):
            if value:
                sets.append(f"{name} = :{name}")
                values[f":{name}"] = {"S": value}
        try:
            self.client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": self._key(job_id, chunk_sk(number)),
                            "UpdateExpression": "SET " + ", ".join(sets),
                            "ConditionExpression": "#state IN (:pending, :submitted)",
                            "ExpressionAttributeNames": {"#state": "state"},
                            "ExpressionAttributeValues": values,
                        }
                    },
                    {
                        "Update": {
                            "TableName": self.table,
                            "Key": self._key(job_id, "META"),
                            "UpdateExpression": "ADD reported :one",
                            "ConditionExpression": "#status IN (:dispatching, :submitted)",
                            "ExpressionAttributeNames": {"#status": "status"},
                            "ExpressionAttributeValues": {
                                ":one": {"N": "1"},
                                ":dispatching": {"S": DISPATCHING},
                                ":submitted": {"S": SUBMITTED},
                            },
                        }
                    },
                ]
            )
        except ClientError as exc:
            if _code(exc) != "TransactionCanceledException":
                raise
            codes = [r.get("Code") for r in exc.response.get("CancellationReasons") or []]
            if "ConditionalCheckFailed" not in codes:
                raise  # e.g. a conflicting transaction: let the invocation retry
            return self._why_not_recorded(job_id, number)
        return Recorded.RECORDED

    def _why_not_recorded(self, job_id: str, number: int) -> Recorded:
        chunk = self.get_chunk(job_id, number)
        if chunk is None:
            return Recorded.UNKNOWN
        if chunk.get("state") not in (PENDING, CHUNK_SUBMITTED):
            return Recorded.DUPLICATE
        return Recorded.LATE if self.get_job(job_id) is not None else Recorded.UNKNOWN

    def claim_finalization(self, job_id: str, now: float, lease_seconds: int) -> bool:
        """Take the job's finalization lease if every chunk has reported (or a previous holder's
        lease ran out). Exactly one caller wins while the lease is live. A job the sweeper claimed
        as overdue is left to the sweeper (:meth:`claim_overdue`): its dispatch may not have
        finished, and only the sweeper reads the file again to account for every record."""
        return self._update(
            job_id,
            "META",
            UpdateExpression="SET #status = :finalizing, lease_until = :until",
            ConditionExpression=(
                "(#status = :submitted AND reported >= chunk_count) "
                "OR (#status = :finalizing AND lease_until < :now AND attribute_not_exists(overdue_at))"
            ),
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":finalizing": {"S": FINALIZING},
                ":submitted": {"S": SUBMITTED},
                ":until": {"N": str(int(now + lease_seconds))},
                ":now": {"N": str(int(now))},
            },
        )

    def claim_overdue(self, job_id: str, now: float, lease_seconds: int) -> bool:
        """The sweeper's claim: the job's deadline has passed and it is still open (or its
        finalizer's lease ran out). From then on notifications for it are late."""
        return self._update(
            job_id,
            "META",
            UpdateExpression="SET #status = :finalizing, lease_until = :until, overdue_at = :now",
            ConditionExpression=(
                "#deadline < :now AND attribute_exists(#open) AND ("
                "#status IN (:dispatching, :submitted) OR (#status = :finalizing AND lease_until < :now))"
            ),
            ExpressionAttributeNames={
                "#status": "status",
                "#deadline": DEADLINE_ATTRIBUTE,
                "#open": OPEN_JOBS_PARTITION,
            },
            ExpressionAttributeValues={
                ":finalizing": {"S": FINALIZING},
                ":dispatching": {"S": DISPATCHING},
                ":submitted": {"S": SUBMITTED},
                ":until": {"N": str(int(now + lease_seconds))},
                ":now": {"N": str(int(now))},
            },
        )

    def release_finalization(self, job_id: str) -> None:
        """Give the lease back after a failed finalization, so a retry can take it at once."""
        self._update(
            job_id,
            "META",
            UpdateExpression="SET lease_until = :zero",
            ConditionExpression="#status = :finalizing",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={":zero": {"N": "0"}, ":finalizing": {"S": FINALIZING}},
        )

    def complete_job(self, job_id: str, status: str, fields: dict[str, Any]) -> bool:
        """``finalizing`` -> ``complete``/``partial`` with the result locations and counts; the job
        leaves the open-jobs index."""
        names = {"#status": "status", "#open": OPEN_JOBS_PARTITION}
        values = {":status": _ser.serialize(status), ":finalizing": {"S": FINALIZING}}
        sets = ["#status = :status", *_sets(fields, names, values)]
        return self._update(
            job_id,
            "META",
            UpdateExpression="SET " + ", ".join(sets) + " REMOVE lease_until, #open",
            ConditionExpression="#status = :finalizing",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )
