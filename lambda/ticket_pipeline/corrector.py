"""Corrections Lambda: S3 ObjectCreated under ``corrections/`` -> validated, recorded corrections.

Handler: ``ticket_pipeline.corrector.handler``. Env: see :class:`.settings.CorrectionsSettings`;
the logic is :mod:`.corrections`.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from typing import Any

import boto3
from aws_lambda_powertools.utilities.parser import event_parser
from aws_lambda_powertools.utilities.typing import LambdaContext

from ticket_pipeline.corrections import CorrectionStore, Deps, load_labels, record_file
from ticket_pipeline.events import DispatcherEvent
from ticket_pipeline.logs import handler_logger
from ticket_pipeline.metrics import CORRECTIONS_COUNTS, PipelineMetrics
from ticket_pipeline.settings import CorrectionsSettings
from ticket_pipeline.storage import ObjectStore, S3Location

logger = handler_logger()


@cache
def runtime() -> tuple[CorrectionsSettings, Deps]:
    """Settings and clients, built once per execution environment (cold start); the labels are
    read from the model archive on first use and kept for the environment's life."""
    settings = CorrectionsSettings.from_env()
    objects = ObjectStore(boto3.client("s3"))
    labels = cache(lambda: load_labels(objects, S3Location.parse(settings.labels_location)))
    return settings, Deps(objects, CorrectionStore(boto3.client("dynamodb"), settings.jobs_table), labels)


@logger.inject_lambda_context
@event_parser(model=DispatcherEvent)
def handler(event: DispatcherEvent, context: LambdaContext) -> dict[str, Any]:
    settings, shared = runtime()
    deps = replace(shared, metrics=PipelineMetrics(counts=CORRECTIONS_COUNTS))
    files = []
    try:
        for record in event.Records:
            key = record.s3.object.key
            if (
                not record.is_object_created
                or not key.startswith(settings.corrections_prefix)
                or key.endswith("/")
            ):
                logger.warning("event ignored", extra={"event_name": record.eventName, "key": key})
                continue
            upload = record.upload
            version = upload.version_id if upload.versioned else None
            outcome = record_file(upload.bucket, key, version, deps, settings, upload.sequencer)
            logger.info("corrections read", extra=outcome.as_dict())
            files.append(outcome.as_dict())
    finally:
        deps.metrics.publish()
    return {"files": files}
