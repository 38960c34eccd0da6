"""Aggregator Lambda: SageMaker async success/error notification (via SNS) -> results fan-in.

Handler: ``ticket_pipeline.aggregator.handler``. Env: see :class:`.settings.AggregatorSettings`.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from ticket_pipeline.aggregation import Deps, handle_notification
from ticket_pipeline.events import SnsModel
from ticket_pipeline.logs import handler_logger
from ticket_pipeline.metrics import AGGREGATOR_COUNTS, PipelineMetrics
from ticket_pipeline.notifications import AsyncInferenceNotification
from ticket_pipeline.settings import AggregatorSettings
from ticket_pipeline.stores import aws_stores

logger = handler_logger()


@cache
def runtime() -> tuple[AggregatorSettings, Deps]:
    """Settings and clients, built once per execution environment (cold start)."""
    settings = AggregatorSettings.from_env()
    return settings, aws_stores(settings)


@logger.inject_lambda_context
@event_parser(model=SnsModel)
def handler(event: SnsModel, context: LambdaContext) -> dict[str, Any]:
    settings, shared = runtime()
    deps = replace(shared, metrics=PipelineMetrics(counts=AGGREGATOR_COUNTS))
    outcomes = []
    try:
        for record in event.Records:
            try:
                notification = AsyncInferenceNotification.model_validate_json(str(record.Sns.Message))
            except ValidationError as exc:
                # Retrying cannot fix a message that is not a SageMaker notification: count it, log it.
                logger.error(
                    "not a SageMaker async inference notification; ignored",
                    extra={
                        "message_id": record.Sns.MessageId,
                        "topic": record.Sns.TopicArn,
                        "error": str(exc),
                    },
                )
                deps.metrics.count("InvalidNotifications")
                outcomes.append({"message_id": record.Sns.MessageId, "outcome": "invalid"})
                continue
            result = handle_notification(
                notification,
                deps=deps,
                settings=settings,
                clock=deps.clock,
                time_left=lambda: context.get_remaining_time_in_millis() / 1000,
            )
            outcomes.append(result.as_dict())
    finally:
        deps.metrics.publish()
    return {"notifications": outcomes}
