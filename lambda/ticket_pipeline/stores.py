"""What the handlers' logic talks to: the object store, the jobs table, the results publisher,
the invocation's metrics and the clock; built from boto3 clients once per execution environment."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import boto3

from ticket_pipeline.jobs import JobStore
from ticket_pipeline.metrics import PipelineMetrics
from ticket_pipeline.results import Publisher
from ticket_pipeline.settings import AggregatorSettings
from ticket_pipeline.storage import ObjectStore


@dataclass
class Stores:
    """Everything finalizing a job needs (the aggregator's and the sweeper's ``Deps``)."""

    objects: ObjectStore
    jobs: JobStore
    publisher: Publisher
    metrics: PipelineMetrics = field(default_factory=PipelineMetrics)
    # Epoch seconds for deadlines, leases and timestamps. The wall clock on AWS; the chaos harness
    # (chaos/) gives the handlers a faster virtual clock, so deadlines pass within seconds.
    clock: Callable[[], float] = time.time


def aws_stores(settings: AggregatorSettings) -> Stores:
    """The stores over boto3 clients (their endpoints from the environment, as on AWS)."""
    return Stores(
        objects=ObjectStore(boto3.client("s3")),
        jobs=JobStore(boto3.client("dynamodb"), settings.jobs_table, settings.job_ttl_days),
        publisher=Publisher(boto3.client("sns")),
    )
