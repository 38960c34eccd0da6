"""Replay the Lambdas' dead-letter queues into the functions: ``python -m ticket_pipeline.redrive``.

Lambda puts an asynchronous event that failed every attempt into the function's dead-letter
queue as it was: the message body is the original event, with ``RequestID``, ``ErrorCode`` and
``ErrorMessage`` attributes (AWS Lambda Developer Guide, "Dead-letter queues"). SQS's own DLQ
redrive (``StartMessageMoveTask``) only moves messages back to a source *queue*, and these
events never came from one, so each message is replayed the way Lambda first received it: an
asynchronous ``Invoke`` (``InvocationType=Event``) with the body as payload, then deleted. A
message whose invoke fails stays in the queue. Every handler is idempotent under replay (a
replayed S3 event finds its job; a replayed notification is a duplicate or late; a replayed
continuation or sweep does nothing twice), so replaying an event that did succeed is harmless.

On AWS the queues and functions come from the stack's outputs (``--stack TicketTriage``);
locally from ``local-stack.json`` (``--local``). ``make redrive`` runs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FUNCTIONS = ("dispatcher", "aggregator", "sweeper", "corrections")


@dataclass(frozen=True)
class Target:
    function: str  # dispatcher | aggregator | sweeper
    function_name: str  # Lambda function name (or ARN)
    queue_url: str  # its dead-letter queue


@dataclass
class RedriveReport:
    function: str
    queue_url: str
    replayed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    previews: list[dict[str, Any]] = field(default_factory=list)  # --dry-run: what would be replayed


def redrive_queue(
    sqs: Any,
    lambda_client: Any,
    target: Target,
    *,
    max_messages: int | None = None,
    dry_run: bool = False,
    wait_seconds: int = 1,
) -> RedriveReport:
    """Invoke ``target.function_name`` asynchronously with every message body of its DLQ."""
    report = RedriveReport(target.function, target.queue_url)
    seen = 0
    while max_messages is None or seen < max_messages:
        batch = min(10, max_messages - seen) if max_messages is not None else 10
        resp = sqs.receive_message(
            QueueUrl=target.queue_url,
            MaxNumberOfMessages=batch,
            WaitTimeSeconds=wait_seconds,  # long polling: an empty answer means an empty queue
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
        )
        messages = resp.get("Messages", [])
        if not messages:
            break
        for message in messages:
            seen += 1
            attributes = {k: v.get("StringValue") for k, v in message.get("MessageAttributes", {}).items()}
            if dry_run:
                report.previews.append({"attributes": attributes, "event": message["Body"][:300]})
                continue
            try:
                lambda_client.invoke(
                    FunctionName=target.function_name,
                    InvocationType="Event",
                    Payload=message["Body"].encode(),
                )
            except Exception as exc:  # leave it in the queue (it reappears after the visibility timeout)
                report.failed += 1
                report.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            sqs.delete_message(QueueUrl=target.queue_url, ReceiptHandle=message["ReceiptHandle"])
            report.replayed += 1
        if dry_run:
            for message in messages:  # make them visible again at once
                sqs.change_message_visibility(
                    QueueUrl=target.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
            break
    return report


def targets_from_stack(cloudformation: Any, stack_name: str) -> list[Target]:
    """The functions and dead-letter queues the stack's outputs name (``<Fn>FunctionName`` and
    ``<Fn>DeadLetterQueueUrl``, see infra/stack.py)."""
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    return [
        Target(fn, outputs[f"{fn.title()}FunctionName"], outputs[f"{fn.title()}DeadLetterQueueUrl"])
        for fn in FUNCTIONS
        if f"{fn.title()}FunctionName" in outputs
    ]


def targets_from_local(info: dict[str, Any]) -> list[Target]:
    """The same from ``local-stack.json`` (written by ``make local``)."""
    names, queues = info["function_names"], info["dead_letter_queue_urls"]
    return [Target(fn, names[fn], queues[fn]) for fn in FUNCTIONS if fn in names and fn in queues]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ticket_pipeline.redrive", description=__doc__.split("\n\n")[0]
    )
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--stack", help="CloudFormation stack name (AWS credentials and region from the environment)"
    )
    where.add_argument(
        "--local",
        type=Path,
        nargs="?",
        const=Path("local-stack.json"),
        help="the local stack's local-stack.json",
    )
    parser.add_argument("--function", choices=[*FUNCTIONS, "all"], default="all")
    parser.add_argument("--max", type=int, default=None, help="replay at most this many events per queue")
    parser.add_argument("--dry-run", action="store_true", help="show what would be replayed, change nothing")
    parser.add_argument("--wait-seconds", type=int, default=1, help="SQS long-polling wait per receive")
    return parser


def main(argv: list[str] | None = None) -> int:
    import boto3

    args = _parser().parse_args(argv)
    if args.stack:
        sqs, lambda_client = boto3.client("sqs"), boto3.client("lambda")
        targets = targets_from_stack(boto3.client("cloudformation"), args.stack)
    else:
        info = json.loads(args.local.read_text())
        keys = {
            "region_name": info["region"],
            "aws_access_key_id": info["aws_access_key_id"],
            "aws_secret_access_key": info["aws_secret_access_key"],
        }
        sqs = boto3.client("sqs", endpoint_url=info["endpoint_url"], **keys)
        lambda_client = boto3.client("lambda", endpoint_url=info["lambda_endpoint_url"], **keys)
        targets = targets_from_local(info)
    reports = [
        redrive_queue(
            sqs, lambda_client, t, max_messages=args.max, dry_run=args.dry_run, wait_seconds=args.wait_seconds
        )
        for t in targets
        if args.function in ("all", t.function)
    ]
    print(json.dumps([asdict(r) for r in reports], indent=2))
    return 1 if any(r.failed for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
