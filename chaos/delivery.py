"""The event sources, with the delivery faults of S3, SNS and Lambda's event queue.

:class:`ChaosRouter` is the local stack's :class:`~local_pipeline.router.EventRouter` (same
polling, same Lambda-style retries with back-off, same dead-letter queues) with three changes:
each invocation runs through the :class:`~chaos.lambda_service.LambdaService` (an execution
environment, the virtual clock, the faults inside the function), and before the first delivery of
an event the plan may

* S3 events: deliver a duplicate later, and hold the event back for a while (so a later upload,
  or the other version of the same key, overtakes it: out of order);
* SNS notifications (success and error topics): lose it (SNS gave up on the Lambda), deliver a
  duplicate later, hold it back (reordered, maybe past the job's deadline: a late notification),
  or deliver it twice *at the same moment* to two execution environments (concurrent deliveries);
* continuations (the dispatcher's asynchronous self-invocations): deliver a duplicate.

A copy or a held-back event is sent back to the queue (``DelaySeconds``) with a ``chaos``
message attribute and is not faulted again on delivery (its invocations still are).
"""

from __future__ import annotations

import json
import threading
from typing import Any
from urllib.parse import unquote_plus

from chaos.faults import FaultLog, FaultPlan
from chaos.lambda_service import Labels, LambdaService
from local_pipeline.router import EventRouter, Route

# What a queue carries, for the fault plan.
S3, NOTIFICATION, CONTINUATION, REDRIVE, SCHEDULE = (
    "s3",
    "notification",
    "continuation",
    "redrive",
    "schedule",
)


class ChaosRouter(EventRouter):
    def __init__(
        self,
        sqs: Any,
        routes: list[tuple[Route, str]],
        service: LambdaService,
        plan: FaultPlan,
        log: FaultLog,
        labels: Labels,
    ):
        self.service = service
        self.plan = plan
        self.log = log
        self.labels = labels
        self.kinds = {route.queue_url: kind for route, kind in routes}
        self._local = threading.local()
        self._copy_lock = threading.Lock()
        self._sweeps = 0
        self.pending_copies = 0  # concurrent copies still running
        wrapped = [self._through_service(route) for route, _ in routes]
        super().__init__(sqs, wrapped, max_receives=3, retry_backoff_seconds=1, wait_seconds=1)

    def _through_service(self, route: Route) -> Route:
        function, handler = route.name, route.handler

        def invoke(event: dict[str, Any], _context: Any) -> Any:
            identity, attempt, barrier = self._local.delivery
            return self.service.invoke(function, handler, event, identity, attempt, barrier)

        return Route(
            route.name,
            route.queue_url,
            route.make_event,
            invoke,
            route.concurrency,
            route.timeout_seconds,
            route.dead_letter_queue_url,
        )

    # --- identities -------------------------------------------------------------------------------
    def identify(self, kind: str, body: str) -> str:
        """A stable label for the event in ``body``."""
        try:
            event = json.loads(body)
        except json.JSONDecodeError:
            return "unparsable"
        if kind == NOTIFICATION:
            try:
                message = json.loads(event["Message"])
                return self.labels.normalize(f"{message['inferenceId']}:{message['invocationStatus']}")
            except (KeyError, TypeError, json.JSONDecodeError):
                return "not-a-notification"
        if kind == SCHEDULE:
            self._sweeps += 1
            return f"sweep{self._sweeps}"
        if "continuation" in event:
            cont = event["continuation"]
            return f"{self.labels.normalize(cont.get('job_id', ''))}@{cont.get('cursor')}"
        records = event.get("Records") or []
        if records and "s3" in records[0]:
            obj = records[0]["s3"]["object"]
            return self.labels.upload(unquote_plus(obj["key"]), obj.get("versionId"))
        if records and "Sns" in records[0]:  # an aggregator event replayed from its dead-letter queue
            return self.identify(NOTIFICATION, json.dumps({"Message": records[0]["Sns"]["Message"]}))
        return "event"

    # --- delivery ---------------------------------------------------------------------------------
    def _deliver(self, route: Route, message: dict[str, Any]) -> None:
        kind = self.kinds[route.queue_url]
        body = message["Body"]
        if kind == CONTINUATION and '"continuation"' not in body:
            kind = REDRIVE  # an S3 event replayed from the dead-letter queue
        receives = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        tag = message.get("MessageAttributes", {}).get("chaos", {}).get("StringValue")
        identity = self.identify(kind, body)
        if tag:
            identity = f"{identity}#{tag}"
        attempt = receives + (3 if kind == REDRIVE else 0)  # a replayed event has had its 3 attempts
        barrier = None
        if receives == 1 and tag is None:
            fate, delay, duplicate = self.plan.delivery(kind, identity)
            if duplicate:
                self.log.add(f"{kind}_duplicate", identity)
                self._send_again(route, body, self.plan.rng("copy-delay", identity).uniform(0, 2), "dup")
            if fate == "lose":
                self.log.add(f"{kind}_lost", identity)
                self.sqs.delete_message(QueueUrl=route.queue_url, ReceiptHandle=message["ReceiptHandle"])
                return
            if fate == "delay":
                self.log.add(f"{kind}_delayed", identity)
                self.sqs.delete_message(QueueUrl=route.queue_url, ReceiptHandle=message["ReceiptHandle"])
                self._send_again(route, body, delay, "late")
                return
            if kind == NOTIFICATION and self.plan.concurrent(identity):
                self.log.add("notification_concurrent", identity)
                barrier = threading.Barrier(2)
                self._concurrent_copy(route, body, f"{identity}#twin", barrier)
        self._local.delivery = (identity, attempt, barrier)
        super()._deliver(route, message)

    def _send_again(self, route: Route, body: str, delay: float, tag: str) -> None:
        self.sqs.send_message(
            QueueUrl=route.queue_url,
            MessageBody=body,
            DelaySeconds=min(900, round(delay)),
            MessageAttributes={"chaos": {"DataType": "String", "StringValue": tag}},
        )

    def _concurrent_copy(self, route: Route, body: str, identity: str, barrier: threading.Barrier) -> None:
        """Deliver the same event to a second environment at the same moment as the first; if that
        invocation fails, its retry goes through the queue like any other."""

        def run() -> None:
            try:
                event = route.make_event(body)
                if event is not None:
                    self._local.delivery = (identity, 1, barrier)
                    route.handler(event, None)
            except Exception:
                self._send_again(route, body, 1, "twin-retry")
            finally:
                with self._copy_lock:
                    self.pending_copies -= 1

        with self._copy_lock:
            self.pending_copies += 1
        thread = threading.Thread(target=run, name=f"{route.name}-twin", daemon=True)
        thread.start()
