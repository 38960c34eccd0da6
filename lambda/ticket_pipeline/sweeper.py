"""Sweeper Lambda: EventBridge schedule -> overdue jobs finalized ``partial``.

Handler: ``ticket_pipeline.sweeper.handler``. Env: see :class:`.settings.SweeperSettings`.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from ticket_pipeline.events import ScheduledEvent
from ticket_pipeline.logs import handler_logger
from ticket_pipeline.metrics import SWEEPER_COUNTS, PipelineMetrics
from ticket_pipeline.settings import SweeperSettings
from ticket_pipeline.stores import aws_stores
from ticket_pipeline.sweeping import Deps, sweep

logger = handler_logger()


@cache
def runtime() -> tuple[SweeperSettings, Deps]:
    """Settings and clients, built once per execution environment (cold start)."""
    settings = SweeperSettings.from_env()
    return settings, aws_stores(settings)


@logger.inject_lambda_context
@event_parser(model=ScheduledEvent)
def handler(event: ScheduledEvent, context: LambdaContext) -> dict[str, Any]:
    settings, shared = runtime()
    deps = replace(shared, metrics=PipelineMetrics(counts=SWEEPER_COUNTS))
    try:
        report = sweep(
            deps, settings, clock=deps.clock, time_left=lambda: context.get_remaining_time_in_millis() / 1000
        )
    finally:
        deps.metrics.publish()
    logger.info("sweep done", extra={"scheduled": event.time, **report.as_dict()})
    return report.as_dict()
