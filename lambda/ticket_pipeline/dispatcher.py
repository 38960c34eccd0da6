"""Dispatcher Lambda: S3 ObjectCreated event (or a continuation) -> chunks -> InvokeEndpointAsync.

Handler: ``ticket_pipeline.dispatcher.handler``. Env: see :class:`.settings.DispatcherSettings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from ticket_pipeline.events import DispatcherEvent
from ticket_pipeline.intake import Deps, RunBudget, dispatch_upload
from ticket_pipeline.logs import handler_logger
from ticket_pipeline.metrics import DISPATCHER_COUNTS, PipelineMetrics
from ticket_pipeline.settings import DispatcherSettings
from ticket_pipeline.stores import aws_stores

logger = handler_logger()


@dataclass(frozen=True)
class SelfInvoke:
    """Continues the work in a new run of this function: an asynchronous ``Invoke`` with the
    continuation event (the same retries, dead-letter queue and redrive as an S3 event)."""

    client: Any
    function_arn: str

    def __call__(self, event: dict[str, Any]) -> None:
        self.client.invoke(
            FunctionName=self.function_arn, InvocationType="Event", Payload=json.dumps(event).encode("utf-8")
        )


@cache
def runtime() -> tuple[DispatcherSettings, Deps, Any]:
    """Settings and clients, built once per execution environment (cold start)."""
    settings = DispatcherSettings.from_env()
    stores = aws_stores(settings)
    deps = Deps(stores.objects, stores.jobs, stores.publisher, runtime=boto3.client("sagemaker-runtime"))
    return settings, deps, boto3.client("lambda")


@logger.inject_lambda_context
@event_parser(model=DispatcherEvent)
def handler(event: DispatcherEvent, context: LambdaContext) -> dict[str, Any]:
    settings, shared, lambda_client = runtime()
    metrics = PipelineMetrics(counts=DISPATCHER_COUNTS)
    deps = replace(
        shared, metrics=metrics, continuation=SelfInvoke(lambda_client, context.invoked_function_arn)
    )
    budget = RunBudget(lambda: context.get_remaining_time_in_millis() / 1000, settings.reserve_seconds)
    jobs = []
    try:
        if event.continuation is not None:
            cont = event.continuation
            result = dispatch_upload(
                cont.upload, deps=deps, settings=settings, budget=budget, cursor=cont.cursor, clock=deps.clock
            )
            logger.info("continued", extra=result.as_dict())
            jobs.append(result.as_dict())
        for i, record in enumerate(event.Records):
            key = record.s3.object.key
            if not record.is_object_created or key.startswith(settings.chunk_prefix) or key.endswith("/"):
                logger.warning("event ignored", extra={"event_name": record.eventName, "key": key})
                continue
            if i and budget.exhausted():  # S3 sends one record per event; just in case of more
                rest = [r.model_dump(by_alias=True, exclude_none=True) for r in event.Records[i:]]
                deps.continuation({"Records": rest})
                metrics.count("DispatchContinuations")
                logger.info("remaining records handed to the next run", extra={"records": len(rest)})
                break
            result = dispatch_upload(
                record.upload, deps=deps, settings=settings, budget=budget, clock=deps.clock
            )
            logger.info("dispatched", extra=result.as_dict())
            jobs.append(result.as_dict())
    finally:
        metrics.publish()
    return {"jobs": jobs}
