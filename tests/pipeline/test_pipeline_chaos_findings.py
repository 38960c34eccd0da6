"""Regression tests for the violations the chaos harness (``make chaos``) found, one per bug, each
at the level where the bug lived: the handlers and their logic on moto's server, driven by hand
into the interleaving the harness had hit."""

from __future__ import annotations

import pytest
from pipeline_helpers import Aws, Context, check_exactly_once, complete, drop, jsonl, queued, sns_lambda_event

from local_pipeline.async_endpoint import AsyncEndpoint
from ticket_pipeline import aggregator
from ticket_pipeline.results import OutOfTime


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
