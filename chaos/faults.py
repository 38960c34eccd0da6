"""Seeded fault decisions, the AWS error responses they inject, and the log of what was injected.

Every decision is a pure function of the seed and a *stable identity* of what it is about (an
upload's label and a chunk number, never a version id, a job id or a thread), drawn from its own
``random.Random(f"{seed}|{kind}|{identity}")``: the same seed makes the same decisions whatever
order the threads ask in, so a seed replays the same faults as far as the run reaches the same
points (see docs/chaos.md for what a seed cannot pin down).

The injected errors are HTTP responses in each service's own protocol, parsed by botocore like
a real answer (so botocore's retry policy runs on them and the handler sees the exception AWS
would raise). Codes and messages are the documented ones:

* S3: ``InternalError`` (500, "We encountered an internal error. Please try again.") and
  ``SlowDown`` (503, "Please reduce your request rate.") -- Amazon S3 API Reference, "Error
  responses", list of error codes.
* DynamoDB (JSON 1.0, ``__type``): ``ProvisionedThroughputExceededException`` and
  ``ThrottlingException`` on GetItem/PutItem/UpdateItem/Query; on TransactWriteItems a
  ``TransactionCanceledException`` whose ``CancellationReasons`` carry ``TransactionConflict``
  ("Transaction is ongoing for the item.") or ``ThrottlingError`` -- Amazon DynamoDB API
  Reference, TransactWriteItems, Errors, "Cancellation reason codes and possible error messages"
  (the same text is in botocore's service model; ``tests/chaos`` checks it there).
* SageMaker Runtime, InvokeEndpointAsync (REST-JSON, ``x-amzn-ErrorType``): ``InternalFailure``
  (500), ``ServiceUnavailable`` (503), ``ValidationError`` (400) -- its API reference's Errors
  (botocore's model lists exactly these) -- and ``ThrottlingException`` (400), SageMaker API
  Reference, "Common Errors".
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from botocore.awsrequest import AWSResponse

# --- documented error shapes ---------------------------------------------------------------------
S3_ERRORS = {
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "SlowDown": (503, "Please reduce your request rate."),
}
DYNAMODB_THROTTLES = {
    "ProvisionedThroughputExceededException": (
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API."
    ),
    "ThrottlingException": "Throughput exceeds the current capacity of your table or index.",
}
# TransactWriteItems: cancellation reason codes and messages as the API reference lists them.
TRANSACTION_CANCEL_REASONS = {
    "TransactionConflict": "Transaction is ongoing for the item.",
    "ThrottlingError": (
        "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically "
        "scaling your table or index so please try again shortly. If exceptions persist, check if you "
        "have a hot key: https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/"
        "bp-partition-key-design.html."
    ),
}
INVOKE_ERRORS = {
    "ThrottlingException": (400, "Rate exceeded"),
    "InternalFailure": (500, "An internal failure occurred."),
    "ServiceUnavailable": (503, "The service is unavailable. Please try again."),
    "ValidationError": (400, "Inspect your request and try again."),
}


class _Body:
    """The ``raw`` of an :class:`AWSResponse` (botocore reads ``raw.stream()``)."""

    def __init__(self, data: bytes):
        self.data = data

    def stream(self, **_kwargs: Any):
        yield self.data


def _response(url: str, status: int, headers: dict[str, str], body: bytes) -> AWSResponse:
    return AWSResponse(url, status, {"x-amzn-RequestId": str(uuid.uuid4()), **headers}, _Body(body))


def s3_error(url: str, code: str) -> AWSResponse:
    status, message = S3_ERRORS[code]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message>"
        f"<RequestId>{uuid.uuid4().hex[:16].upper()}</RequestId></Error>"
    )
    return _response(url, status, {"Content-Type": "application/xml"}, body.encode())


def dynamodb_error(url: str, code: str, message: str, **extra: Any) -> AWSResponse:
    body = {"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": message, **extra}
    return _response(url, 400, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(body).encode())


def transaction_canceled(url: str, items: int, reason: str) -> AWSResponse:
    """TransactionCanceledException: one reason per item, the failing one last (the other ``None``)."""
    reasons: list[dict[str, str]] = [{"Code": "None"} for _ in range(items - 1)]
    reasons.append({"Code": reason, "Message": TRANSACTION_CANCEL_REASONS[reason]})
    codes = ", ".join(r["Code"] for r in reasons)
    return dynamodb_error(
        url,
        "TransactionCanceledException",
        f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
        Message=f"Transaction cancelled, please refer cancellation reasons for specific reasons [{codes}]",
        CancellationReasons=reasons,
    )


def invoke_error(url: str, code: str) -> AWSResponse:
    status, message = INVOKE_ERRORS[code]
    return _response(
        url,
        status,
        {"Content-Type": "application/json", "x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/"},
        json.dumps({"message": message}).encode(),
    )


# --- the decisions -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rates:
    """Probabilities of each fault (per call, per event, per request: see where each is used)."""

    # S3 and DynamoDB calls of the handlers (per call); bursts longer than botocore's retries surface
    s3_transient: float = 0.04
    dynamodb_throttle: float = 0.03
    transaction_canceled: float = 0.12  # per TransactWriteItems (conflict or throttling)
    # InvokeEndpointAsync (per call)
    invoke_throttle: float = 0.06
    invoke_5xx: float = 0.03
    invoke_validation: float = 0.01
    # a crash of the invocation at one of its steps (per invocation; halved on every retry)
    crash: dict[str, float] = field(
        default_factory=lambda: {
            "ticket-dispatcher": 0.3,
            "ticket-aggregator": 0.15,
            "ticket-sweeper": 0.25,
            "ticket-corrections": 0.3,
        }
    )
    # the endpoint (per request)
    model_error: float = 0.03
    invocation_timeout: float = 0.02
    ttl_expired: float = 0.02
    notification_not_published: float = 0.02  # SageMaker's NotificationFailures
    # deliveries (per event)
    s3_event_duplicate: float = 0.3
    s3_event_delay: float = 0.3
    notification_lost: float = 0.03
    notification_duplicate: float = 0.12
    notification_concurrent: float = 0.12
    notification_delay: float = 0.15
    continuation_duplicate: float = 0.3


@dataclass(frozen=True)
class Burst:
    """An error answered to the first ``attempts`` HTTP attempts of one call."""

    kind: str  # the fault kind counted
    code: str
    attempts: int


class FaultPlan:
    def __init__(self, seed: int, rates: Rates | None = None):
        self.seed = seed
        self.rates = rates or Rates()

    def rng(self, kind: str, identity: str) -> random.Random:
        return random.Random(f"{self.seed}|{kind}|{identity}")

    def happens(self, kind: str, identity: str, rate: float) -> bool:
        return rate > 0 and self.rng(kind, identity).random() < rate

    def _attempts(self, kind: str, identity: str) -> int:
        """1-2 attempts are usually absorbed by botocore's retries; 10 always surface."""
        return self.rng(kind + ":len", identity).choices([1, 2, 10], weights=[6, 3, 1])[0]

    def burst(self, operation: str, identity: str) -> Burst | None:
        """The transient error (if any) the call ``identity`` of ``operation`` gets."""
        r = self.rates
        service, _, name = operation.partition(".")
        if service == "s3" and name in ("GetObject", "PutObject", "HeadObject"):
            if self.happens("s3", identity, r.s3_transient):
                code = self.rng("s3:code", identity).choice(sorted(S3_ERRORS))
                return Burst(f"s3_{name}_{code}", code, self._attempts("s3", identity))
        elif operation == "dynamodb.TransactWriteItems":
            if self.happens("transaction", identity, r.transaction_canceled):
                reason = self.rng("transaction:code", identity).choices(
                    ["TransactionConflict", "ThrottlingError"], weights=[3, 1]
                )[0]
                return Burst(f"dynamodb_transaction_{reason}", reason, 1)
        elif service == "dynamodb":
            if self.happens("dynamodb", identity, r.dynamodb_throttle):
                code = self.rng("dynamodb:code", identity).choice(sorted(DYNAMODB_THROTTLES))
                return Burst(f"dynamodb_{code}", code, self._attempts("dynamodb", identity))
        elif operation == "sagemaker-runtime.InvokeEndpointAsync":
            rng = self.rng("invoke", identity)
            roll = rng.random()
            if roll < r.invoke_validation:
                return Burst("invoke_ValidationError", "ValidationError", 1)
            if roll < r.invoke_validation + r.invoke_5xx:
                code = rng.choice(["InternalFailure", "ServiceUnavailable"])
                return Burst(f"invoke_{code}", code, self._attempts("invoke", identity))
            if roll < r.invoke_validation + r.invoke_5xx + r.invoke_throttle:
                return Burst(
                    "invoke_ThrottlingException", "ThrottlingException", self._attempts("invoke", identity)
                )
        return None

    def crash(
        self, function: str, invocation: str, attempt: int, repeats: list[bool]
    ) -> tuple[int, int] | None:
        """(crash point index, which occurrence of it) for one invocation, or None; ``repeats``:
        which of the function's crash points come once per chunk (1st, 2nd or 3rd occurrence)."""
        rate = self.rates.crash.get(function, 0.0) / 2 ** (attempt - 1)
        identity = f"{function}|{invocation}|{attempt}"
        if not self.happens("crash", identity, rate):
            return None
        rng = self.rng("crash:where", identity)
        point = rng.randrange(len(repeats))
        return point, rng.choices([1, 2, 3], weights=[4, 2, 1])[0] if repeats[point] else 1

    def endpoint_fate(self, request: str) -> str | None:
        """What the endpoint does to one request: model_error | invocation_timeout | ttl_expired |
        notification_not_published | None."""
        r = self.rates
        roll = self.rng("endpoint", request).random()
        for fate, rate in (
            ("model_error", r.model_error),
            ("invocation_timeout", r.invocation_timeout),
            ("ttl_expired", r.ttl_expired),
            ("notification_not_published", r.notification_not_published),
        ):
            if roll < rate:
                return fate
            roll -= rate
        return None

    def delivery(self, route: str, event: str) -> tuple[str | None, float, bool]:
        """(lose | delay | None, delay seconds, also deliver a copy later) for one event delivery."""
        r = self.rates
        rng = self.rng(f"delivery:{route}", event)
        if route == "s3":
            delay = rng.uniform(0.5, 3.0) if rng.random() < r.s3_event_delay else 0.0
            return ("delay" if delay else None), delay, rng.random() < r.s3_event_duplicate
        if route == "notification":
            roll = rng.random()
            if roll < r.notification_lost:
                return "lose", 0.0, False
            delay = rng.uniform(0.5, 4.0) if rng.random() < r.notification_delay else 0.0
            return ("delay" if delay else None), delay, rng.random() < r.notification_duplicate
        if route == "continuation":
            return None, 0.0, rng.random() < r.continuation_duplicate
        return None, 0.0, False

    def concurrent(self, event: str) -> bool:
        return self.happens("concurrent", event, self.rates.notification_concurrent)


class FaultLog:
    """Counts of what was injected (and what Lambda did about it), thread-safe."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.events: list[tuple[float, str, str]] = []
        self._lock = threading.Lock()

    def add(self, kind: str, identity: str = "") -> None:
        with self._lock:
            self.counts[kind] += 1
            self.events.append((time.time(), kind, identity))
