"""DLQ redrive: ``python -m ticket_pipeline.redrive`` replays the Lambdas' dead-letter queues
(moto's SQS) into the real handlers through Lambda's asynchronous Invoke (the local front), and
the handlers are idempotent under replay."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pipeline_helpers import Aws, Context, complete, jsonl, queued, s3_put_event, sns_lambda_event

from local_pipeline.async_endpoint import AsyncEndpoint
from local_pipeline.aws import REGION
from local_pipeline.lambda_front import LambdaInvokeFront
from local_pipeline.stack import scheduled_event
from ticket_pipeline import aggregator, dispatcher, redrive, sweeper

HANDLERS = {
    "ticket-dispatcher": dispatcher.handler,
    "ticket-aggregator": aggregator.handler,
    "ticket-sweeper": sweeper.handler,
}


def dead_letter(aws: Aws, function: str, event: dict[str, Any]) -> None:
    """What Lambda does with an asynchronous event that failed every attempt: the event as the
    message body, RequestID/ErrorCode/ErrorMessage attributes (AWS Lambda Developer Guide)."""
    aws.sqs.send_message(
        QueueUrl=aws.resources.dead_letter_queue_urls[function],
        MessageBody=json.dumps(event),
        MessageAttributes={
            "RequestID": {"DataType": "String", "StringValue": "e4b46cbf-b738-xmpl-8880-a18cdf61200e"},
            "ErrorCode": {"DataType": "Number", "StringValue": "200"},
            "ErrorMessage": {"DataType": "String", "StringValue": "Task timed out after 300.00 seconds"},
        },
    )


def depth(aws: Aws, function: str) -> int:
    attrs = aws.sqs.get_queue_attributes(
        QueueUrl=aws.resources.dead_letter_queue_urls[function],
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@dataclass
class LocalStackFile:
    path: Path
    outcomes: list[dict[str, Any]]  # what the handlers returned, in order


@pytest.fixture
def local_stack_json(aws: Aws, endpoint: AsyncEndpoint, tmp_path: Path) -> Iterator[LocalStackFile]:
    """local-stack.json as `make local` writes it, with a Lambda Invoke front that runs the real
    handlers at once (Lambda would queue the event first)."""
    outcomes: list[dict] = []

    def deliver(name: str, payload: bytes) -> None:
        outcomes.append(HANDLERS[name](json.loads(payload), Context(name)))

    front = LambdaInvokeFront(deliver, set(HANDLERS)).start()
    path = tmp_path / "local-stack.json"
    path.write_text(
        json.dumps(
            {
                "endpoint_url": aws.server.url,
                "region": REGION,
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
                "lambda_endpoint_url": front.url,
                "function_names": {
                    "dispatcher": "ticket-dispatcher",
                    "aggregator": "ticket-aggregator",
                    "sweeper": "ticket-sweeper",
                },
                "dead_letter_queue_urls": aws.resources.dead_letter_queue_urls,
            }
        )
    )
    yield LocalStackFile(path, outcomes)
    front.stop()


def run_redrive(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[dict]]:
    capsys.readouterr()
    code = redrive.main([*args, "--wait-seconds", "0"])  # moto answers at once; SQS needs long polling
    out = capsys.readouterr().out
    return code, json.loads(out[out.index("[\n") :])


def test_redrive_replays_each_dead_letter_queue_into_its_function_and_replaying_twice_changes_nothing(
    aws: Aws, endpoint: AsyncEndpoint, local_stack_json: LocalStackFile, capsys
):
    body = jsonl(4)
    version = aws.s3.put_object(Bucket=aws.names.input_bucket, Key="incoming/lost.jsonl", Body=body)[
        "VersionId"
    ]
    s3_event = s3_put_event(aws.names.input_bucket, "incoming/lost.jsonl", len(body), version_id=version)
    dead_letter(aws, "dispatcher", s3_event)
    dead_letter(aws, "sweeper", scheduled_event("arn:aws:events:us-east-1:123456789012:rule/sweep"))

    code, reports = run_redrive(["--local", str(local_stack_json.path), "--function", "dispatcher"], capsys)
    assert code == 0 and [(r["function"], r["replayed"], r["failed"]) for r in reports] == [
        ("dispatcher", 1, 0)
    ]
    assert depth(aws, "dispatcher") == 0 and depth(aws, "sweeper") == 1
    (job,) = local_stack_json.outcomes[-1]["jobs"]
    assert job["outcome"] == "submitted" and job["tickets"] == 4
    requests = queued(endpoint)
    notifications = [sns_lambda_event(complete(aws, r), aws.resources.success_topic_arn) for r in requests]
    for event in notifications:
        dead_letter(aws, "aggregator", event)

    code, reports = run_redrive(["--local", str(local_stack_json.path)], capsys)
    assert code == 0 and {r["function"]: r["replayed"] for r in reports} == {
        "dispatcher": 0,
        "aggregator": len(notifications),
        "sweeper": 1,
    }
    (message,) = aws.results_messages()
    assert message["status"] == "complete" and message["tickets"] == 4

    # the same events once more (a redrive run twice, or an event that had succeeded after all)
    dead_letter(aws, "dispatcher", s3_event)
    for event in notifications:
        dead_letter(aws, "aggregator", event)
    code, _ = run_redrive(["--local", str(local_stack_json.path)], capsys)
    assert code == 0
    outcomes = local_stack_json.outcomes[-1 - len(notifications) :]
    assert outcomes[0]["jobs"][0]["outcome"] == "duplicate"
    assert {o["notifications"][0]["outcome"] for o in outcomes[1:]} == {"duplicate"}
    assert aws.results_messages() == [] and len(endpoint.queued()) == len(requests)


def test_a_dry_run_changes_nothing_and_a_failed_invoke_keeps_the_event(
    aws: Aws, endpoint: AsyncEndpoint, local_stack_json: LocalStackFile, capsys
):
    dead_letter(aws, "dispatcher", {"Records": []})
    code, (report,) = run_redrive(
        ["--local", str(local_stack_json.path), "--function", "dispatcher", "--dry-run"], capsys
    )
    assert code == 0 and report["replayed"] == 0 and report["previews"][0]["attributes"]["ErrorCode"] == "200"
    assert depth(aws, "dispatcher") == 1

    info = json.loads(local_stack_json.path.read_text())
    info["function_names"]["dispatcher"] = "no-such-function"
    local_stack_json.path.write_text(json.dumps(info))
    code, (report,) = run_redrive(["--local", str(local_stack_json.path), "--function", "dispatcher"], capsys)
    assert code == 1 and report["failed"] == 1 and "ResourceNotFoundException" in report["errors"][0]
    assert depth(aws, "dispatcher") == 1


def test_with_a_stack_name_redrive_finds_functions_and_queues_in_the_stack_outputs():
    """``--stack`` reads ``<Fn>FunctionName`` and ``<Fn>DeadLetterQueueUrl`` outputs: the names
    infra/stack.py gives them (checked against the synthesized template in tests/infra)."""

    class CloudFormation:
        def describe_stacks(self, StackName: str) -> dict:
            outputs = [
                {"OutputKey": f"{fn}{kind}", "OutputValue": f"{fn}-{kind}"}
                for fn in ("Dispatcher", "Aggregator", "Sweeper")
                for kind in ("FunctionName", "DeadLetterQueueUrl")
            ]
            return {"Stacks": [{"StackName": StackName, "Outputs": outputs}]}

    targets = redrive.targets_from_stack(CloudFormation(), "TicketTriage")
    assert [(t.function, t.function_name, t.queue_url) for t in targets] == [
        ("dispatcher", "Dispatcher-FunctionName", "Dispatcher-DeadLetterQueueUrl"),
        ("aggregator", "Aggregator-FunctionName", "Aggregator-DeadLetterQueueUrl"),
        ("sweeper", "Sweeper-FunctionName", "Sweeper-DeadLetterQueueUrl"),
    ]


def test_the_local_router_dead_letters_a_failing_event_like_lambda_and_redrive_brings_it_back(aws: Aws):
    """After its attempts, the local stack's event router puts the event itself into the
    function's dead-letter queue with Lambda's attributes; the redrive then replays it."""
    from local_pipeline.router import EventRouter, Route, s3_event

    queue = aws.sqs.create_queue(QueueName="flaky-input")["QueueUrl"]
    dlq = aws.resources.dead_letter_queue_urls["sweeper"]
    calls: list[dict] = []

    def broken(event: dict, context: Any) -> None:
        calls.append(event)
        raise RuntimeError("the jobs table is unreachable")

    router = EventRouter(
        aws.sqs, [Route("flaky", queue, s3_event, broken, dead_letter_queue_url=dlq)], retry_backoff_seconds=0
    )
    router.start()
    try:
        aws.sqs.send_message(
            QueueUrl=queue, MessageBody=json.dumps({"time": "2026-01-01T00:00:00Z", "detail": {}})
        )
        deadline = time.time() + 20
        while router.stats["flaky"].dead_lettered < 1:
            assert time.time() < deadline
            time.sleep(0.1)
    finally:
        router.stop()
    assert len(calls) == 3  # the first attempt and two retries, as Lambda does
    (message,) = aws.sqs.receive_message(QueueUrl=dlq, MessageAttributeNames=["All"])["Messages"]
    assert json.loads(message["Body"]) == calls[0]
    attributes = {k: v["StringValue"] for k, v in message["MessageAttributes"].items()}
    assert attributes["ErrorCode"] == "200" and "the jobs table is unreachable" in attributes["ErrorMessage"]
    assert set(attributes) == {"RequestID", "ErrorCode", "ErrorMessage"}
