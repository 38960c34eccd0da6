"""Stands in for Lambda's event source wiring: polls SQS queues and calls the real handlers.

* S3 -> dispatcher: moto delivers the input bucket's ObjectCreated notifications to a queue; the
  SQS body *is* the S3 event (``{"Records": [...]}``), passed to the handler unchanged.
* SNS -> aggregator: the success/error topics deliver to queues with raw delivery off, so each
  body is the SNS envelope; it is rewrapped into ``{"Records": [{"EventSource": "aws:sns",
  "EventVersion", "EventSubscriptionArn", "Sns": {...}}]}`` exactly as a Lambda subscription
  receives it (``SigningCertURL``/``UnsubscribeURL`` become ``SigningCertUrl``/``UnsubscribeUrl``).

* Lambda ``Invoke`` (``InvocationType=Event``, :mod:`local_pipeline.lambda_front`) -> the
  function's queue: the body is the event as given (the dispatcher's continuation events).

A handler that raises leaves the message on the queue, which redelivers it after a short
backoff (Lambda retries failed asynchronous invocations too); after ``max_receives`` attempts
the event goes to the route's dead-letter queue as Lambda does it for an asynchronous
invocation: the event as the message body, ``RequestID``/``ErrorCode``/``ErrorMessage``
attributes (AWS Lambda Developer Guide, "Dead-letter queues").
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]


@dataclass
class LambdaContext:
    """The attributes Powertools and handlers read from Lambda's context object."""

    function_name: str
    memory_limit_in_mb: int = 1024
    function_version: str = "$LATEST"
    timeout_ms: int = 900_000
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    _started: float = field(default_factory=time.time)

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:us-east-1:123456789012:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    @property
    def log_stream_name(self) -> str:
        return "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self.timeout_ms - (time.time() - self._started) * 1000))


def s3_event(body: str) -> dict[str, Any] | None:
    """The Lambda event for an S3 notification delivered to SQS (or an event invoked directly);
    None for S3's ``s3:TestEvent``, which S3 sends to a queue but never to a Lambda."""
    event = json.loads(body)
    if event.get("Event") == "s3:TestEvent":
        return None
    return event


def sns_event(body: str, subscription_arn: str) -> dict[str, Any]:
    """Rewrap an SNS-to-SQS envelope as the event a Lambda subscription receives."""
    envelope = json.loads(body)
    sns = {
        "SignatureVersion": envelope.get("SignatureVersion", "1"),
        "Timestamp": envelope["Timestamp"],
        "Signature": envelope.get("Signature", ""),
        "SigningCertUrl": envelope.get("SigningCertURL") or envelope.get("SigningCertUrl"),
        "MessageId": envelope["MessageId"],
        "Message": envelope["Message"],
        "MessageAttributes": envelope.get("MessageAttributes", {}),
        "Type": envelope.get("Type", "Notification"),
        "UnsubscribeUrl": envelope.get("UnsubscribeURL") or envelope.get("UnsubscribeUrl"),
        "TopicArn": envelope["TopicArn"],
        "Subject": envelope.get("Subject"),
    }
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "Sns": sns,
            }
        ]
    }


@dataclass
class Route:
    name: str  # also the "function name" in the Lambda context
    queue_url: str
    make_event: Callable[[str], dict[str, Any] | None]
    handler: Handler
    concurrency: int = 1
    timeout_seconds: int = 900
    dead_letter_queue_url: str | None = None


@dataclass
class RouteStats:
    invocations: int = 0
    errors: int = 0
    dead_lettered: int = 0


class EventRouter:
    def __init__(
        self,
        sqs_client: Any,
        routes: list[Route],
        max_receives: int = 3,
        retry_backoff_seconds: int = 1,
        wait_seconds: int = 1,
    ):
        self.sqs = sqs_client
        self.routes = routes
        self.max_receives = max_receives
        self.retry_backoff_seconds = retry_backoff_seconds
        self.wait_seconds = wait_seconds
        self.stats = {route.name: RouteStats() for route in routes}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> EventRouter:
        for route in self.routes:
            for i in range(route.concurrency):
                thread = threading.Thread(
                    target=self._poll, args=(route,), name=f"{route.name}-{i}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self, timeout: float = 3.0) -> None:
        """Stop polling. A handler still running finishes on its daemon thread, or fails once the
        services behind it are gone, like a Lambda cut off mid-invocation."""
        self._stop.set()
        deadline = time.time() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.time()))
        self._threads.clear()

    def _poll(self, route: Route) -> None:
        while not self._stop.is_set():
            try:
                resp = self.sqs.receive_message(
                    QueueUrl=route.queue_url,
                    MaxNumberOfMessages=1,
                    WaitTimeSeconds=self.wait_seconds,
                    MessageSystemAttributeNames=["ApproximateReceiveCount"],
                    MessageAttributeNames=["All"],
                )
            except Exception:
                if self._stop.is_set():
                    return
                log.exception("receive_message failed on %s", route.name)
                time.sleep(0.5)
                continue
            for message in resp.get("Messages", []):
                self._deliver(route, message)

    def _deliver(self, route: Route, message: dict[str, Any]) -> None:
        receipt = message["ReceiptHandle"]
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        stats = self.stats[route.name]
        event = None
        context = LambdaContext(function_name=route.name, timeout_ms=route.timeout_seconds * 1000)
        try:
            event = route.make_event(message["Body"])
            if event is not None:
                with self._lock:
                    stats.invocations += 1
                route.handler(event, context)
        except Exception as exc:
            with self._lock:
                stats.errors += 1
            if receives >= self.max_receives:
                log.exception("%s failed %d times; event dead-lettered", route.name, receives)
                with self._lock:
                    stats.dead_lettered += 1
                if route.dead_letter_queue_url and event is not None:
                    self.sqs.send_message(
                        QueueUrl=route.dead_letter_queue_url,
                        MessageBody=json.dumps(event),
                        MessageAttributes={
                            "RequestID": {"DataType": "String", "StringValue": context.aws_request_id},
                            "ErrorCode": {"DataType": "Number", "StringValue": "200"},
                            "ErrorMessage": {
                                "DataType": "String",
                                "StringValue": f"{type(exc).__name__}: {exc}"[:1024],
                            },
                        },
                    )
                self.sqs.delete_message(QueueUrl=route.queue_url, ReceiptHandle=receipt)
            else:
                log.exception("%s failed (attempt %d); will retry", route.name, receives)
                self.sqs.change_message_visibility(
                    QueueUrl=route.queue_url,
                    ReceiptHandle=receipt,
                    VisibilityTimeout=self.retry_backoff_seconds * receives,
                )
            return
        self.sqs.delete_message(QueueUrl=route.queue_url, ReceiptHandle=receipt)
