"""Dispatcher Lambda: S3 ObjectCreated event -> ticket chunks -> InvokeEndpointAsync.

Handler: ``ticket_pipeline.dispatcher.handler``. Env: see :class:`.settings.DispatcherSettings`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from ticket_pipeline.events import S3Event
from ticket_pipeline.intake import Deps, dispatch_object
from ticket_pipeline.jobs import JobStore
from ticket_pipeline.logs import handler_logger
from ticket_pipeline.results import Publisher
from ticket_pipeline.settings import DispatcherSettings
from ticket_pipeline.storage import ObjectStore

logger = handler_logger()


@cache
def runtime() -> tuple[DispatcherSettings, Deps]:
    """Settings and clients, built once per execution environment (cold start)."""
    settings = DispatcherSettings.from_env()
    deps = Deps(
        objects=ObjectStore(boto3.client("s3")),
        jobs=JobStore(boto3.client("dynamodb"), settings.jobs_table, settings.job_ttl_days),
        publisher=Publisher(boto3.client("sns")),
        runtime=boto3.client("sagemaker-runtime"),
    )
    return settings, deps


@logger.inject_lambda_context
@event_parser(model=S3Event)
def handler(event: S3Event, context: LambdaContext) -> dict[str, Any]:
    settings, deps = runtime()
    jobs = []
    for record in event.Records:
        key = record.s3.object.key
        if not record.is_object_created or key.startswith(settings.chunk_prefix) or key.endswith("/"):
            logger.warning("event ignored", extra={"event_name": record.eventName, "key": key})
            continue
        result = dispatch_object(
            record.s3.bucket.name, key, record.idempotency_token, deps=deps, settings=settings
        )
        logger.info("dispatched", extra=result.as_dict())
        jobs.append(result.as_dict())
    return {"jobs": jobs}
