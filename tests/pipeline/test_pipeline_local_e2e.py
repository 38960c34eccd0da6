"""End to end on one machine: moto's server + the real inference server process (tiny artifact)
+ the async endpoint stand-in + the event router calling the real handlers. Checks the rule that
every ticket id appears exactly once in the results or the failures, with a failed chunk
injected and every SageMaker notification delivered a second time."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from local_pipeline.demo import wait_for_results
from local_pipeline.samples import SampleFile
from local_pipeline.stack import LocalStack, StackConfig


def _jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def _read(stack: LocalStack, uri: str) -> bytes:
    bucket, key = uri[len("s3://") :].split("/", 1)
    return stack.clients["s3"].get_object(Bucket=bucket, Key=key)["Body"].read()


def _rows(stack: LocalStack, uri: str) -> list[dict]:
    return [json.loads(line) for line in _read(stack, uri).splitlines() if line.strip()]


@pytest.fixture
def stack(tiny_artifact: Path, tmp_path: Path):
    def inject(request) -> str | None:  # chunk 2 of the big file fails like a model error would
        if request.inference_id.startswith("big-file") and request.inference_id.endswith("-c00002"):
            return "ModelError: injected failure for chunk 2"
        return None

    config = StackConfig(
        model_dir=tiny_artifact,
        work_dir=tmp_path / "stack",
        chunk_size=4,
        max_concurrent_invocations=2,
        log_level="INFO",
        server_env={"TRIAGE_THREADS_PER_WORKER": "1"},
        fault_injector=inject,
    )
    with LocalStack(config) as running:
        yield running


def test_files_come_out_exactly_once_despite_failed_chunks_and_duplicate_notifications(stack: LocalStack):
    prefix = stack.names.input_prefix
    files = {
        f"{prefix}normal.jsonl": _jsonl(
            [{"id": f"n{i}", "text": f"my card number {i} has not arrived"} for i in range(10)]
        ),
        f"{prefix}big file+v2 (final).jsonl": _jsonl(
            [{"id": f"b{i}", "text": f"I want a refund for payment {i}"} for i in range(18)]
        ),
        f"{prefix}bad.jsonl": b'{"id": "x1", "text": "lost my card"}\n{"id": "x1", "text": "dup"}\nnot json\n'
        b'{"id": "x2", "text": ""}\n{"text": "no id given"}\n',
        f"{prefix}tickets.csv": b'id,text\nc1,"exchange rate, please"\nc2,top up failed\n',
    }
    expected_ids = {
        f"{prefix}normal.jsonl": {f"n{i}" for i in range(10)},
        f"{prefix}big file+v2 (final).jsonl": {f"b{i}" for i in range(18)},
        f"{prefix}bad.jsonl": {"x1", "x1#2", "#3", "x2", "#5"},
        f"{prefix}tickets.csv": {"c1", "c2"},
    }
    expected = {}
    for key, body in files.items():
        stack.clients["s3"].put_object(Bucket=stack.names.input_bucket, Key=key, Body=body)
        expected[f"s3://{stack.names.input_bucket}/{key}"] = SampleFile(key, body, "", 0)
    messages = wait_for_results(stack, expected, timeout=60, show_progress=False)
    assert set(messages) == set(expected), "a file never produced its results message"

    snapshot = {}
    for source, message in messages.items():
        key = source.split("/", 3)[3]
        results = _rows(stack, message["results"])
        failures = _rows(stack, message["failures"])
        ids = [r["id"] for r in results] + [f["id"] for f in failures]
        assert len(ids) == len(set(ids)), f"duplicated ticket in {key}"
        assert set(ids) == expected_ids[key], key
        assert message["tickets"] == len(expected_ids[key]) and message["failed"] == len(failures)
        assert all(isinstance(r["score"], float) and isinstance(r["needs_review"], bool) for r in results)
        snapshot[source] = {name: _read(stack, message[name]) for name in ("results", "failures", "summary")}
        if key.endswith("normal.jsonl") or key.endswith(".csv"):
            assert message["status"] == "complete" and not failures
    big = messages[f"s3://{stack.names.input_bucket}/{prefix}big file+v2 (final).jsonl"]
    assert big["status"] == "partial" and big["failed"] == 4
    failed = {f["id"]: f["error"] for f in _rows(stack, big["failures"])}
    assert set(failed) == {"b4", "b5", "b6", "b7"}  # exactly the tickets of chunk 2
    assert all("injected failure for chunk 2" in reason for reason in failed.values())
    summary = json.loads(_read(stack, big["summary"]))
    assert summary["chunks"] == {"total": 5, "succeeded": 4, "failed": 1}
    assert summary["failed_chunks"][0]["tickets"] == 4

    # SNS delivers at least once: publish every notification the endpoint sent a second time.
    router = stack.router
    before = sum(s.invocations for s in router.stats.values())
    notifications = list(stack.endpoint.notifications)
    sns = stack.clients["sns"]
    for notification in notifications:
        topic = (
            stack.resources.success_topic_arn
            if notification["invocationStatus"] == "Completed"
            else stack.resources.error_topic_arn
        )
        sns.publish(TopicArn=topic, Message=json.dumps(notification))
    deadline = time.time() + 30
    while sum(s.invocations for s in router.stats.values()) < before + len(notifications):
        assert time.time() < deadline, "the duplicates were not all delivered to the aggregator"
        time.sleep(0.1)
    extra = stack.clients["sqs"].receive_message(
        QueueUrl=stack.resources.results_queue_url, WaitTimeSeconds=2
    )
    assert extra.get("Messages", []) == [], "a job published its results twice"
    for source, message in messages.items():
        for name in ("results", "failures", "summary"):
            assert _read(stack, message[name]) == snapshot[source][name], f"{name} rewritten for {source}"
    assert all(s.dead_lettered == 0 for s in router.stats.values())
    assert stack.endpoint.stats.failed == 1 and stack.endpoint.stats.expired == 0
