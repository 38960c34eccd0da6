"""Deliberately broken variants of the pipeline, to prove the checker can fail.

``no-dedup``: an aggregator whose duplicate detection is switched off. It records every
notification it gets, duplicates included (no condition on the chunk's state), and takes the
finalization whenever the reported count has reached the chunk count, whatever the job's state
(no lease): a redelivered notification finalizes the job again and publishes a second results
message. Only the aggregator's environments get it; the code under test is not touched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ticket_pipeline import jobs as J
from ticket_pipeline.jobs import ChunkOutcome, JobStore, Recorded


class NoDedupJobStore(JobStore):
    def record_chunk_outcome(self, job_id: str, number: int, outcome: ChunkOutcome) -> Recorded:
        if self.get_chunk(job_id, number) is None or self.get_job(job_id) is None:
            return Recorded.UNKNOWN
        self.client.update_item(
            TableName=self.table,
            Key=self._key(job_id, J.chunk_sk(number)),
            UpdateExpression="SET #state = :state, output_location = :out, reported_at = :at",
            ExpressionAttributeNames={"#state": "state"},
            ExpressionAttributeValues={
                ":state": {"S": outcome.state},
                ":out": {"S": outcome.output_location or ""},
                ":at": {"S": outcome.reported_at},
            },
        )
        self.client.update_item(
            TableName=self.table,
            Key=self._key(job_id, "META"),
            UpdateExpression="ADD reported :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )
        return Recorded.RECORDED

    def claim_finalization(self, job_id: str, now: float, lease_seconds: int) -> bool:
        return self._update(
            job_id,
            "META",
            UpdateExpression="SET #status = :finalizing, lease_until = :until",
            ConditionExpression="reported >= chunk_count",
            ExpressionAttributeNames={"#status": "status"},
            ExpressionAttributeValues={
                ":finalizing": {"S": J.FINALIZING},
                ":until": {"N": str(int(now + lease_seconds))},
            },
        )


def _no_dedup(function: str, runtime: tuple[Any, ...]) -> None:
    if function != "ticket-aggregator":
        return
    _settings, stores = runtime
    stores.jobs = NoDedupJobStore(stores.jobs.client, stores.jobs.table, stores.jobs.ttl_seconds // 86400)


TAMPERS: dict[str, Callable[[str, tuple[Any, ...]], None]] = {"no-dedup": _no_dedup}
