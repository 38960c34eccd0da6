"""The jobs table (DynamoDB, ``pk``/``sk``, TTL attribute ``expires_at``).

One job per dropped file::

    pk = JOB#<job_id>  sk = META          source, status, chunk_count, reported (atomic counter),
                                          tickets, rejected, submitted_at, lease_until, ...
    pk = JOB#<job_id>  sk = CHUNK#00001   inference_id, input_location, ticket_ids, state,
                                          output/failure location, failure_reason, reported_at

Job status: ``dispatching`` (chunks being written) -> ``submitted`` (chunk_count final) ->
``finalizing`` (one invocation holds a lease while it writes the results) -> ``complete`` |
``partial``. Chunk state: ``pending`` -> ``submitted`` -> ``succeeded`` | ``failed``.

Idempotency: recording a chunk's outcome and bumping the job's ``reported`` counter is one
transaction conditioned on the chunk not having reported yet, so a duplicate SNS delivery
changes nothing. Finalization is claimed with a conditional update (``reported = chunk_count``),
so it runs once even when two last notifications race.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
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

_ser = TypeSerializer()
_de = TypeDeserializer()


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


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


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

    # --- reads -------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> dict[str, Any] | None:
        resp = self.client.get_item(TableName=self.table, Key=self._key(job_id, "META"), ConsistentRead=True)
        return _plain(resp["Item"]) if "Item" in resp else None

    def get_chunk(self, job_id: str, number: int) -> dict[str, Any] | None:
        resp = self.client.get_item(
            TableName=self.table, Key=self._key(job_id, chunk_sk(number)), ConsistentRead=True
        )
        return _plain(resp["Item"]) if "Item" in resp else None

    def list_chunks(self, job_id: str) -> list[dict[str, Any]]:
        chunks: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :chunk)",
            "ExpressionAttributeValues": {":pk": {"S": f"JOB#{job_id}"}, ":chunk": {"S": "CHUNK#"}},
            "ConsistentRead": True,
        }
        while True:
            resp = self.client.query(**kwargs)
            chunks.extend(_plain(item) for item in resp.get("Items", []))
            if "LastEvaluatedKey" not in resp:
                break
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]
        return sorted(chunks, key=lambda c: c["chunk"])

    # --- dispatcher ----------------------------------------------------------------------------
    def create_job(self, job_id: str, fields: dict[str, Any]) -> bool:
        """Create the job's META item; False if it already exists (duplicate or retried event)."""
        item = _item({**fields, "pk": f"JOB#{job_id}", "sk": "META", "job_id": job_id, "reported": 0})
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

    def put_chunks(self, job_id: str, chunks: Iterable[dict[str, Any]]) -> None:
        """Write chunk items that do not exist yet (a retried dispatch never resets a chunk)."""
        for chunk in chunks:
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

    def mark_job_submitted(self, job_id: str) -> None:
        """``dispatching`` -> ``submitted``: from now on ``chunk_count`` is final."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(job_id, "META"),
                UpdateExpression="SET #status = :submitted",
                ConditionExpression="#status = :dispatching",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":submitted": {"S": SUBMITTED},
                    ":dispatching": {"S": DISPATCHING},
                },
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def mark_chunk_submitted(
        self, job_id: str, number: int, submitted_at: str, output_location: str, failure_location: str | None
    ) -> None:
        values = {
            ":submitted": {"S": CHUNK_SUBMITTED},
            ":pending": {"S": PENDING},
            ":at": {"S": submitted_at},
        }
        values[":out"] = {"S": output_location or ""}
        values[":fail"] = {"S": failure_location or ""}
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(job_id, chunk_sk(number)),
                UpdateExpression=(
                    "SET #state = :submitted, submitted_at = :at, "
                    "expected_output_location = :out, expected_failure_location = :fail"
                ),
                ConditionExpression="#state = :pending",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if not _conditional_failed(exc):  # the notification was faster than us: fine
                raise

    # --- aggregator ----------------------------------------------------------------------------
    def record_chunk_outcome(self, job_id: str, number: int, outcome: ChunkOutcome) -> bool:
        """Record a chunk's result and count it, once. False: already reported, or unknown chunk."""
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
                            "ConditionExpression": "attribute_exists(pk)",
                            "ExpressionAttributeValues": {":one": {"N": "1"}},
                        }
                    },
                ]
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                reasons = exc.response.get("CancellationReasons") or []
                if not reasons or any(r.get("Code") == "ConditionalCheckFailed" for r in reasons):
                    return False
            raise
        return True

    def claim_finalization(self, job_id: str, now: float, lease_seconds: int) -> bool:
        """Take the job's finalization lease if every chunk has reported (or a previous holder's
        lease ran out). Exactly one caller wins while the lease is live."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(job_id, "META"),
                UpdateExpression="SET #status = :finalizing, lease_until = :until",
                ConditionExpression=(
                    "(#status = :submitted AND reported >= chunk_count) "
                    "OR (#status = :finalizing AND lease_until < :now)"
                ),
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={
                    ":finalizing": {"S": FINALIZING},
                    ":submitted": {"S": SUBMITTED},
                    ":until": {"N": str(int(now + lease_seconds))},
                    ":now": {"N": str(int(now))},
                },
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def release_finalization(self, job_id: str) -> None:
        """Give the lease back after a failed finalization, so a retry can take it at once."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(job_id, "META"),
                UpdateExpression="SET lease_until = :zero",
                ConditionExpression="#status = :finalizing",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":zero": {"N": "0"}, ":finalizing": {"S": FINALIZING}},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise

    def complete_job(self, job_id: str, status: str, fields: dict[str, Any]) -> bool:
        """``finalizing`` -> ``complete``/``partial`` with the result locations and counts."""
        names = {"#status": "status"}
        values = {":status": _ser.serialize(status), ":finalizing": {"S": FINALIZING}}
        sets = ["#status = :status"]
        for i, (name, value) in enumerate(sorted(fields.items())):
            names[f"#f{i}"] = name
            values[f":f{i}"] = _ser.serialize(value)
            sets.append(f"#f{i} = :f{i}")
        try:
            self.client.update_item(
                TableName=self.table,
                Key=self._key(job_id, "META"),
                UpdateExpression="SET " + ", ".join(sets) + " REMOVE lease_until",
                ConditionExpression="#status = :finalizing",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True
