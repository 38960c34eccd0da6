"""The short chaos run of ``make test``: a few seeds through the local stack (moto's server, the real
inference server on the tiny artifact, the real handlers) with every kind of fault, checked by
the independent checker; and proof that the checker fails a deliberately broken aggregator.
``make chaos`` runs the long version (docs/chaos.md)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from chaos.__main__ import main, summary
from chaos.faults import Rates
from chaos.harness import ChaosStack

SEEDS = (110, 103)  # two seeds whose plans reach every boundary between them (asserted below)
BOUNDARIES = {  # each boundary of the issue, and the fault kinds that hit it
    "s3 events": ("s3_duplicate", "s3_delayed"),
    "s3 calls": ("s3_GetObject_", "s3_PutObject_", "s3_HeadObject_"),
    "dispatcher crash": ("crash_dispatcher_",),
    "InvokeEndpointAsync": ("invoke_",),
    "endpoint": ("endpoint_",),
    "sns": ("notification_lost", "notification_duplicate", "notification_delayed", "notification_concurrent"),
    "aggregator crash": ("crash_aggregator_",),
    "dynamodb": ("dynamodb_transaction_", "dynamodb_ProvisionedThroughput", "dynamodb_Throttling"),
    "corrections crash": ("crash_corrections_",),
}
# More crashes than make chaos's rates (Rates()), so two short seeds crash every function.
DENSE = replace(
    Rates(),
    crash={
        "ticket-dispatcher": 0.6,
        "ticket-aggregator": 0.4,
        "ticket-sweeper": 0.4,
        "ticket-corrections": 0.6,
    },
)


@pytest.fixture(scope="module")
def stack(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    with ChaosStack(tiny_artifact, tmp_path_factory.mktemp("chaos")) as running:
        yield running


def test_a_short_chaos_run_keeps_every_invariant(stack: ChaosStack):
    results = [stack.run_seed(seed, files=3, rates=DENSE) for seed in SEEDS]
    figures = summary(results, 0.0)
    details = {r.seed: [str(v) for v in r.check.violations] for r in results}
    assert (figures["violations"], figures["stuck_jobs"]) == (0, 0), details
    assert figures["files"] == sum(len(r.uploads) for r in results) >= 6
    assert figures["tickets"] > 60 and figures["faults_injected"] > 20
    kinds = figures["faults_by_kind"]
    missed = [b for b, prefixes in BOUNDARIES.items() if not any(k.startswith(prefixes) for k in kinds)]
    assert not missed, f"no fault at {missed}: {kinds}"
    for result in results:
        assert sum(result.check.statuses.values()) == len(result.uploads)  # one message each
        seed_file = json.loads((stack.work_dir / f"seed-{result.seed}.json").read_text())
        assert len(seed_file["fault_log"]) == sum(result.faults.values())


def test_the_checker_reports_an_aggregator_whose_duplicate_detection_is_off(
    tiny_artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture
):
    """``python -m chaos --broken no-dedup``: an aggregator that records redelivered notifications
    and finalizes without a lease publishes a job's results again when SNS delivers a notification
    twice (seed 15's plan, one file in two versions, duplicates five); the checker reports it,
    the exit code is 1 and the last line is the summary. The real aggregator keeps every
    invariant under duplicates (the run above)."""
    args = ["--seed", "15", "--files", "1", "--broken", "no-dedup"]
    assert main([*args, "--model", str(tiny_artifact), "--work-dir", str(tmp_path)]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    figures = json.loads(lines[-1])
    assert set(figures) >= {
        "seeds",
        "files",
        "tickets",
        "faults_injected",
        "faults_by_kind",
        "violations",
        "stuck_jobs",
        "seconds",
    }
    assert figures["seeds"] == 1 and figures["violations"] >= 1
    assert any("[one_message]" in line and "results messages" in line for line in lines[:-1]), lines


def test_every_aws_call_of_the_chaos_run_is_allowed_by_the_role_the_template_gives_its_caller(
    stack: ChaosStack, synth
):
    """The calls of the short chaos run above (crashes, retries, redrives, overdue jobs: the paths
    the plain end-to-end run does not take), replayed against the synthesized template's role of
    each caller (``tests/iam_replay.py``): none is denied. The grants no call used go to
    ``iam-usage.md`` in the run's directory."""
    from iam_replay import stack_replay

    from local_pipeline.aws import Names

    names = Names()

    class Topics:  # the ARNs provision() gets from SNS: account, region and topic name
        success_topic_arn, error_topic_arn, results_topic_arn, review_topic_arn = (
            f"arn:aws:sns:us-east-1:123456789012:{name}"
            for name in (names.success_topic, names.error_topic, names.results_topic, names.review_topic)
        )

    calls = stack.calls.snapshot()
    assert {c.principal for c in calls} == {
        "ticket-dispatcher",
        "ticket-aggregator",
        "ticket-sweeper",
        "ticket-corrections",
        "sagemaker-endpoint",
    }
    result = stack_replay(synth, calls, names, Topics)
    assert result.denied == []
    assert len(result.allowed) > 100
    report = result.report()
    (stack.work_dir / "iam-usage.md").write_text(report)
    if os.environ.get("TRIAGE_IAM_REPORT"):  # a directory: keep the report past pytest's tmp dirs
        Path(os.environ["TRIAGE_IAM_REPORT"], "iam-usage-chaos.md").write_text(report)
    stack.calls.save(stack.work_dir / "aws-calls.jsonl")
