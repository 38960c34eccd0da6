"""Every CloudWatch metric the stack alarms on or graphs, with the dimension set AWS documents.

An alarm or widget on a dimension set the service does not publish sees no data at all: it never
breaches and the graph stays empty. So metrics are never built by hand: :func:`documented_metric`
looks the metric up in :data:`DOCUMENTED_METRICS` (copied from the pages named there) and
refuses any other dimension set. ``tests/infra/test_infra_metrics.py`` checks every alarm and
dashboard widget of the synthesized template against the same table.

The pipeline's own metrics (Powertools Metrics, CloudWatch embedded metric format) live in the
stack's namespace (``triage:stackName``), with the one dimension Powertools adds to every
metric: ``service`` (the function's ``POWERTOOLS_SERVICE_NAME``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch


@dataclass(frozen=True)
class DocPage:
    title: str
    url: str


ASYNC_ENDPOINT_METRICS = DocPage(
    "Amazon SageMaker AI Developer Guide: Alarms and logs for tracking metrics from asynchronous endpoints",
    "https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-monitor.html",
)
SAGEMAKER_METRICS = DocPage(
    "Amazon SageMaker AI Developer Guide: Amazon SageMaker AI metrics in Amazon CloudWatch "
    "(Endpoint invocation metrics; Endpoint instance metrics)",
    "https://docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html",
)
ASYNC_AUTOSCALING = DocPage(
    "Amazon SageMaker AI Developer Guide: Autoscale an asynchronous endpoint "
    "(scaling policy that scales up from zero: HasBacklogWithoutCapacity, Dimensions EndpointName)",
    "https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-autoscale.html",
)
LAMBDA_METRICS = DocPage(
    "AWS Lambda Developer Guide: Using CloudWatch metrics with Lambda (dimension FunctionName)",
    "https://docs.aws.amazon.com/lambda/latest/dg/monitoring-metrics-types.html",
)
SQS_METRICS = DocPage(
    "Amazon SQS Developer Guide: Available CloudWatch metrics for Amazon SQS "
    "(the only dimension Amazon SQS sends to CloudWatch is QueueName)",
    "https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-available-cloudwatch-metrics.html",
)
POWERTOOLS_METRICS = DocPage(
    "Powertools for AWS Lambda (Python): Metrics (the service name is added as a dimension to every metric)",
    "https://docs.powertools.aws.dev/lambda/python/latest/core/metrics/",
)

DEPLOYMENT_GUARDRAILS_ALARMS = DocPage(
    "Amazon SageMaker AI Developer Guide: Auto-Rollback Configuration and Monitoring (Monitor model "
    'latency on the new fleet: "CloudWatch publishes the metrics with the dimension '
    'EndpointConfigName:{New-Ep-Config} after the new fleet starts receiving traffic"; Dimensions '
    "EndpointName, VariantName, EndpointConfigName)",
    "https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html",
)

SAGEMAKER = "AWS/SageMaker"
SAGEMAKER_ENDPOINTS = "/aws/sagemaker/Endpoints"
LAMBDA = "AWS/Lambda"
SQS = "AWS/SQS"
# Stands for the stack's own namespace (``triage:stackName``) in the table below.
PIPELINE = "<pipeline>"

ENDPOINT = ("EndpointName",)
VARIANT = ("EndpointName", "VariantName")
FLEET = ("EndpointName", "VariantName", "EndpointConfigName")  # one endpoint config's fleet


@dataclass(frozen=True)
class MetricDoc:
    dimensions: tuple[str, ...]
    page: DocPage


def _rows(page: DocPage, dimensions: tuple[str, ...], *names: str) -> dict[str, MetricDoc]:
    return {name: MetricDoc(dimensions, page) for name in names}


# (namespace, metric name) -> documented dimension set and the page it comes from.
DOCUMENTED_METRICS: dict[tuple[str, str], MetricDoc] = {
    **{
        (SAGEMAKER, name): doc
        for name, doc in {
            # "The following metrics are published with the EndpointName dimension"
            **_rows(
                ASYNC_ENDPOINT_METRICS,
                ENDPOINT,
                "ApproximateBacklogSize",
                "ApproximateBacklogSizePerInstance",
                "ApproximateAgeOfOldestRequest",
            ),
            **_rows(ASYNC_AUTOSCALING, ENDPOINT, "HasBacklogWithoutCapacity"),
            # "The following metrics are published with the EndpointName and VariantName dimensions"
            **_rows(
                ASYNC_ENDPOINT_METRICS,
                VARIANT,
                "RequestDownloadFailures",
                "ResponseUploadFailures",
                "NotificationFailures",
                "RequestDownloadLatency",
                "ResponseUploadLatency",
                "ExpiredRequests",
                "InvocationFailures",
                "InvocationsProcesssed",  # sic: the page spells it with three s
                "TimeInBacklog",
                "TotalProcessingTime",
            ),
            # "Dimensions for Endpoint Invocation Metrics": EndpointName, VariantName
            **_rows(SAGEMAKER_METRICS, VARIANT, "Invocation4XXErrors", "Invocation5XXErrors", "ModelLatency"),
        }.items()
    },
    # "Dimensions for Endpoint Instance Metrics: EndpointName, VariantName"
    **{
        (SAGEMAKER_ENDPOINTS, name): MetricDoc(VARIANT, SAGEMAKER_METRICS)
        for name in ("CPUUtilization", "MemoryUtilization", "DiskUtilization")
    },
    **{
        (LAMBDA, name): MetricDoc(("FunctionName",), LAMBDA_METRICS)
        for name in ("Errors", "Throttles", "Duration", "Invocations", "DeadLetterErrors")
    },
    (SQS, "ApproximateNumberOfMessagesVisible"): MetricDoc(("QueueName",), SQS_METRICS),
    # The pipeline's own counts (lambda/ticket_pipeline/metrics.py emits exactly these names).
    **{
        (PIPELINE, name): MetricDoc(("service",), POWERTOOLS_METRICS)
        for name in (
            "FilesReceived",
            "WholeFileFailures",
            "TicketsDispatched",
            "ChunksSubmitted",
            "ChunksRejectedByEndpoint",
            "RecordsRejected",
            "DispatchContinuations",
            "ResultsPublished",
            "TicketsSucceeded",
            "TicketsFailed",
            "OverdueJobs",
            "InvalidNotifications",
            "UnknownNotifications",
            "LateNotifications",
            "DuplicateNotifications",
            "TicketsToReview",
            "TicketsOutOfScope",
            "ReviewMessagesPublished",
            "ReviewShare",
            "OutOfScopeShare",
            "CategoryDrift",
            "CorrectionsReceived",
            "CorrectionsRecorded",
            "CorrectionsRejected",
            "ReviewedTickets",
            "ReviewedCorrect",
        )
    },
}


# Metrics also published per fleet (the endpoint config a fleet runs), beside the set above: the
# alarms that watch only the new fleet during a deployment (infra/rollout.py).
PER_FLEET_METRICS: dict[tuple[str, str], MetricDoc] = {
    (SAGEMAKER, "ModelLatency"): MetricDoc(FLEET, DEPLOYMENT_GUARDRAILS_ALARMS),
}


def documented_dimension_sets(
    namespace: str, metric_name: str, pipeline_namespace: str
) -> list[tuple[str, ...]]:
    """Every documented dimension set of a metric (the per-fleet one too); KeyError if none."""
    key = PIPELINE if namespace == pipeline_namespace else namespace
    found = [table[(key, metric_name)].dimensions for table in (DOCUMENTED_METRICS, PER_FLEET_METRICS)
             if (key, metric_name) in table]  # fmt: skip
    if not found:
        raise KeyError((namespace, metric_name))
    return found


def documented_dimensions(namespace: str, metric_name: str, pipeline_namespace: str) -> tuple[str, ...]:
    """The documented dimension names of a metric; KeyError for a metric not in the table."""
    key = PIPELINE if namespace == pipeline_namespace else namespace
    return DOCUMENTED_METRICS[(key, metric_name)].dimensions


def documented_metric(
    namespace: str,
    metric_name: str,
    dimensions: Mapping[str, str],
    *,
    statistic: str,
    period: Duration | None = None,
    label: str | None = None,
    pipeline_namespace: str | None = None,
) -> cloudwatch.Metric:
    """A ``cloudwatch.Metric`` whose dimension names are exactly the documented set.

    ``pipeline_namespace`` names the stack's own namespace (rows under :data:`PIPELINE`).
    """
    key = PIPELINE if pipeline_namespace is not None and namespace == pipeline_namespace else namespace
    doc = DOCUMENTED_METRICS.get((key, metric_name))
    if doc is None:
        raise ValueError(f"{namespace} {metric_name} is not in DOCUMENTED_METRICS: add it with its page")
    fleet = PER_FLEET_METRICS.get((key, metric_name))
    if set(dimensions) != set(doc.dimensions) and (fleet is None or set(dimensions) != set(fleet.dimensions)):
        raise ValueError(
            f"{namespace} {metric_name} is published with dimensions {list(doc.dimensions)} "
            f"({doc.page.url}), not {sorted(dimensions)}"
        )
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name=metric_name,
        dimensions_map=dict(dimensions),
        statistic=statistic,
        period=period or Duration.minutes(1),
        label=label,
    )
