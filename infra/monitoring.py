"""Alarms (to the alarm topic, which CloudWatch may publish to) and one dashboard for the pipeline.

Every metric comes from :func:`infra.metrics.documented_metric`, so each alarm and widget uses
the dimension set AWS publishes the metric with. The runbook (docs/deploy-and-operate.md) lists
every alarm built here: what it means and what to do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.autoscaling import endpoint_metric
from infra.lambdas import PipelineFunction
from infra.metrics import LAMBDA, SAGEMAKER, SAGEMAKER_ENDPOINTS, SQS, documented_metric
from infra.notifications import allow_alarms_to_publish, notifying_alarm

FIVE_MINUTES = Duration.minutes(5)
ONE_DAY = Duration.days(1)
ONE_HOUR = Duration.hours(1)
# the functions that finalize jobs (each publishes the job's counts: ticket_pipeline/results.py)
FINALIZERS = ("Aggregator", "Dispatcher", "Sweeper")


@dataclass(frozen=True)
class DriftAlarms:
    """Thresholds of the hourly review and drift alarms (cdk.json, validated in infra/config.py)."""

    review_share: float
    out_of_scope_share: float
    category_drift: float


@dataclass(frozen=True)
class MonitoringProps:
    endpoint_name: str
    variant_name: str
    functions: Mapping[str, PipelineFunction]  # "Dispatcher", "Aggregator", "Sweeper"
    services: Mapping[str, str]  # the same keys -> POWERTOOLS_SERVICE_NAME (the metrics' dimension)
    metrics_namespace: str
    alarm_topic: sns.ITopic
    oldest_request_alarm_seconds: int
    alarm_email: str
    dashboard_name: str
    drift: DriftAlarms | None = None
    reviewed_accuracy_alarm: float | None = None  # alarm below this daily accuracy on reviewed tickets


class Monitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, props: MonitoringProps) -> None:
        super().__init__(scope, construct_id)
        self.props = props
        endpoint = {"EndpointName": props.endpoint_name}
        variant = {"EndpointName": props.endpoint_name, "VariantName": props.variant_name}
        if props.alarm_email:
            props.alarm_topic.add_subscription(subscriptions.EmailSubscription(props.alarm_email))

        def sagemaker(name: str, statistic: str = "Sum", label: str | None = None) -> cloudwatch.Metric:
            dims = endpoint if name.startswith(("Approximate", "HasBacklog")) else variant
            return documented_metric(
                SAGEMAKER, name, dims, statistic=statistic, period=FIVE_MINUTES, label=label
            )

        def lambda_metric(fn_id: str, name: str, label: str | None = None) -> cloudwatch.Metric:
            fn = props.functions[fn_id].function
            return documented_metric(
                LAMBDA,
                name,
                {"FunctionName": fn.function_name},
                statistic="Sum",
                period=FIVE_MINUTES,
                label=label,
            )

        def dead_letters(fn_id: str, label: str | None = None) -> cloudwatch.Metric:
            queue = props.functions[fn_id].dead_letter_queue
            return documented_metric(
                SQS,
                "ApproximateNumberOfMessagesVisible",
                {"QueueName": queue.queue_name},
                statistic="Maximum",
                period=FIVE_MINUTES,
                label=label,
            )

        oldest_request = endpoint_metric("ApproximateAgeOfOldestRequest", props.endpoint_name, "Maximum")
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        def alarm(construct_id: str, metric: cloudwatch.IMetric, threshold: float, description: str,
                  periods: int = 1) -> cloudwatch.Alarm:  # fmt: skip
            created = notifying_alarm(
                self,
                construct_id,
                metric=metric,
                threshold=threshold,
                description=description,
                topic=props.alarm_topic,
                periods=periods,
            )
            self.alarms[construct_id] = created
            return created

        alarm(
            "OldestRequestAge",
            oldest_request,
            props.oldest_request_alarm_seconds,
            "The oldest queued async request has waited too long: the endpoint is not keeping up "
            "(or cannot scale out from zero).",
            periods=3,
        )
        alarm(
            "InvocationFailures",
            sagemaker("InvocationFailures"),
            1,
            "Async invocations failed (see async-failures/).",
        )
        alarm(
            "Invocation5xx", sagemaker("Invocation5XXErrors"), 1, "The model container returned 5xx errors."
        )
        alarm(
            "NotificationFailures",
            sagemaker("NotificationFailures"),
            1,
            "SageMaker could not publish success/error notifications: the jobs concerned wait for their "
            "deadline and are then finalized partial by the sweeper.",
        )
        for fn_id, effect in (
            ("Dispatcher", "some input files were not submitted yet"),
            ("Aggregator", "results of some input files may be late"),
            ("Sweeper", "overdue jobs are not being finalized"),
            ("Corrections", "some correction files were not recorded"),
        ):
            if fn_id not in props.functions:
                continue
            alarm(
                f"{fn_id}Errors",
                lambda_metric(fn_id, "Errors"),
                1,
                f"The {fn_id.lower()} Lambda failed: {effect}.",
            )
            alarm(
                f"{fn_id}DeadLetters",
                dead_letters(fn_id),
                1,
                f"Events the {fn_id.lower()} gave up on are waiting in its dead-letter queue: replay them "
                "with `make redrive` once the cause is fixed.",
            )
            alarm(
                f"{fn_id}DeadLetterErrors",
                lambda_metric(fn_id, "DeadLetterErrors"),
                1,
                f"Lambda could not put a failed {fn_id.lower()} event into its dead-letter queue: "
                "the event is lost.",
            )
        alarm(
            "OverdueJobs",
            self._pipeline_metric("Sweeper", "OverdueJobs"),
            1,
            "Jobs passed their deadline without all notifications and were finalized partial by the sweeper.",
        )
        alarm(
            "InvalidNotifications",
            self._pipeline_metric("Aggregator", "InvalidNotifications"),
            1,
            "Messages on the success/error topics that are not SageMaker async notifications.",
        )
        alarm(
            "UnknownNotifications",
            self._pipeline_metric("Aggregator", "UnknownNotifications"),
            1,
            "SageMaker notifications for inference ids or chunks this pipeline has no job for.",
        )
        drift_widgets = self._drift(alarm) if props.drift is not None else []
        reviewed = self._reviewed_accuracy() if "Corrections" in props.functions else None
        if reviewed is not None and props.reviewed_accuracy_alarm is not None:
            self.alarms["ReviewedAccuracy"] = notifying_alarm(
                self,
                "ReviewedAccuracy",
                metric=reviewed,
                threshold=props.reviewed_accuracy_alarm,
                description=(
                    "The model's accuracy on the tickets reviewers corrected today is below "
                    "triage:reviewedAccuracyAlarm: look at the corrections (make export-corrections) and "
                    "consider retraining with them (make train CORRECTIONS=...)."
                ),
                topic=props.alarm_topic,
                comparison=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            )
        self._allow_cloudwatch_to_publish(props.alarm_topic)

        backlog = endpoint_metric("ApproximateBacklogSize", props.endpoint_name)
        backlog_per_instance = endpoint_metric("ApproximateBacklogSizePerInstance", props.endpoint_name)
        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=props.dashboard_name, default_interval=Duration.hours(6)
        )
        count = self._pipeline_metric
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Backlog (queued async requests)",
                left=[backlog, backlog_per_instance],
                right=[endpoint_metric("HasBacklogWithoutCapacity", props.endpoint_name, "Maximum")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Instances (backlog / backlog per instance) and CPU",
                left=[
                    cloudwatch.MathExpression(
                        expression="IF(perinstance > 0, backlog / perinstance, 0)",
                        using_metrics={"backlog": backlog, "perinstance": backlog_per_instance},
                        label="instances (while there is a backlog)",
                        period=Duration.minutes(1),
                    )
                ],
                right=[
                    documented_metric(SAGEMAKER_ENDPOINTS, "CPUUtilization", variant, statistic="Average")
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Latency",
                left=[
                    documented_metric(
                        SAGEMAKER, "ModelLatency", variant, statistic="p90", label="model latency p90 (µs)"
                    )
                ],
                right=[
                    documented_metric(
                        SAGEMAKER, "TimeInBacklog", variant, statistic="p90", label="time in backlog p90 (µs)"
                    ),
                    oldest_request.with_(label="oldest request age (s)"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Endpoint errors",
                left=[
                    sagemaker("InvocationFailures"),
                    sagemaker("Invocation5XXErrors"),
                    sagemaker("ExpiredRequests"),
                ],
                right=[
                    sagemaker("NotificationFailures"),
                    sagemaker("RequestDownloadFailures"),
                    sagemaker("ResponseUploadFailures"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Files and tickets in",
                left=[
                    count("Dispatcher", "FilesReceived"),
                    count("Dispatcher", "WholeFileFailures"),
                    count("Dispatcher", "ChunksSubmitted"),
                    count("Dispatcher", "ChunksRejectedByEndpoint"),
                    count("Dispatcher", "DispatchContinuations"),
                ],
                right=[count("Dispatcher", "TicketsDispatched"), count("Dispatcher", "RecordsRejected")],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Results out",
                left=[
                    count("Aggregator", "ResultsPublished", "results (aggregator)"),
                    count("Dispatcher", "ResultsPublished", "results (dispatcher)"),
                    count("Sweeper", "ResultsPublished", "results (sweeper)"),
                    count("Sweeper", "OverdueJobs"),
                ],
                right=[
                    count("Aggregator", "TicketsSucceeded"),
                    count("Aggregator", "TicketsFailed"),
                    count("Sweeper", "TicketsFailed", "tickets failed (overdue jobs)"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Notifications the aggregator did not record",
                left=[
                    count("Aggregator", "InvalidNotifications"),
                    count("Aggregator", "UnknownNotifications"),
                    count("Aggregator", "LateNotifications"),
                    count("Aggregator", "DuplicateNotifications"),
                ],
                width=12,
            ),
            *self._corrections_widgets(reviewed),
            cloudwatch.GraphWidget(
                title="Lambda errors and dead letters",
                left=[lambda_metric(fn_id, "Errors", f"{fn_id.lower()} errors") for fn_id in props.functions],
                right=[dead_letters(fn_id, f"{fn_id.lower()} DLQ") for fn_id in props.functions],
                width=12,
            ),
            *drift_widgets,
        )

    def _drift(self, alarm) -> list[cloudwatch.IWidget]:
        """The review queue and the category mix: hourly alarms (shares weighted by tickets: sum
        of the counts over sum of the classified tickets; the drift as the mean of the files'
        distances) and per-file and hourly panels.

        A job is finalized by whichever function records its last outcome: usually the
        aggregator, the dispatcher when every chunk reported before it finished submitting, the
        sweeper past the deadline. Each publishes the job's ticket and review counts (zeros
        included, every invocation), so the shares add the three up. The drift distance is a
        sample only a finalized file of ``drift_min_tickets`` publishes, which in practice is the
        aggregator's; the drift alarm watches the aggregator's."""
        drift = self.props.drift
        assert drift is not None
        finalizers = [fn_id for fn_id in FINALIZERS if fn_id in self.props.services]

        def total(count: str) -> tuple[str, dict[str, cloudwatch.IMetric]]:
            """``FILL(a, 0) + FILL(b, 0) + ...`` over the finalizers' hourly ``count``, and its metrics."""
            metrics = {
                f"{count.lower()}{fn_id.lower()}": self._pipeline_metric(fn_id, count, period=ONE_HOUR)
                for fn_id in finalizers
            }
            return " + ".join(f"FILL({metric_id}, 0)" for metric_id in metrics), metrics

        def share(count: str, label: str) -> cloudwatch.MathExpression:
            flagged, flagged_metrics = total(count)
            classified, classified_metrics = total("TicketsSucceeded")
            return cloudwatch.MathExpression(
                expression=f"IF(({classified}) > 0, ({flagged}) / ({classified}), 0)",
                using_metrics={**flagged_metrics, **classified_metrics},
                label=label,
                period=ONE_HOUR,
            )

        review_share = share("TicketsToReview", "share to review (hour)")
        out_of_scope_share = share("TicketsOutOfScope", "share out of scope (hour)")
        category_drift = self._pipeline_metric(
            "Aggregator", "CategoryDrift", "category drift, JS distance (hour mean)", "Average", ONE_HOUR
        )
        alarm(
            "ReviewShareHigh",
            review_share,
            drift.review_share,
            "Over the last hour more tickets than usual were flagged for review: the incoming tickets "
            "differ from the training data, or the model or the review threshold changed.",
        )
        alarm(
            "OutOfScopeShareHigh",
            out_of_scope_share,
            drift.out_of_scope_share,
            "Over the last hour many tickets fit no category: a new kind of request, or files that are "
            "not support tickets.",
        )
        alarm(
            "CategoryDriftHigh",
            category_drift,
            drift.category_drift,
            "Over the last hour the predicted category mix was far from the training mix "
            "(Jensen-Shannon distance): retrain, or check what changed upstream.",
        )
        per_file = {
            name: self._pipeline_metric("Aggregator", name, label, "Maximum", FIVE_MINUTES)
            for name, label in (
                ("ReviewShare", "share to review (largest file, 5 min)"),
                ("OutOfScopeShare", "share out of scope (largest file, 5 min)"),
                ("CategoryDrift", "category drift (largest file, 5 min)"),
            )
        }
        return [
            cloudwatch.GraphWidget(
                title="Review queue: share to review and out of scope",
                left=[review_share, out_of_scope_share],
                right=[per_file["ReviewShare"], per_file["OutOfScopeShare"]],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Category mix vs training mix (Jensen-Shannon distance)",
                left=[category_drift],
                right=[per_file["CategoryDrift"]],
                width=12,
            ),
        ]

    def _reviewed_accuracy(self, period: Duration = ONE_DAY) -> cloudwatch.MathExpression:
        """Accuracy on reviewed tickets over ``period``: ReviewedCorrect / ReviewedTickets (the
        corrections function's net counts; no data while nobody reviews)."""
        return cloudwatch.MathExpression(
            expression="IF(reviewed > 0, correct / reviewed, 1)",
            using_metrics={
                "reviewed": self._pipeline_metric("Corrections", "ReviewedTickets").with_(period=period),
                "correct": self._pipeline_metric("Corrections", "ReviewedCorrect").with_(period=period),
            },
            label="accuracy on reviewed tickets (daily)",
            period=period,
        )

    def _corrections_widgets(self, reviewed: cloudwatch.IMetric | None) -> list[cloudwatch.IWidget]:
        if reviewed is None:
            return []
        count = self._pipeline_metric
        return [
            cloudwatch.GraphWidget(
                title="Corrections (reviewed tickets)",
                left=[
                    count("Corrections", "CorrectionsRecorded"),
                    count("Corrections", "CorrectionsRejected"),
                    count("Corrections", "ReviewedTickets"),
                    count("Corrections", "ReviewedCorrect"),
                ],
                right=[reviewed],
                width=12,
            )
        ]

    def _pipeline_metric(
        self,
        fn_id: str,
        name: str,
        label: str | None = None,
        statistic: str = "Sum",
        period: Duration = FIVE_MINUTES,
    ) -> cloudwatch.Metric:
        """A count the pipeline publishes itself (Powertools EMF), by the function that counts it."""
        return documented_metric(
            self.props.metrics_namespace,
            name,
            {"service": self.props.services[fn_id]},
            statistic=statistic,
            period=period,
            label=label,
            pipeline_namespace=self.props.metrics_namespace,
        )

    def _allow_cloudwatch_to_publish(self, topic: sns.ITopic) -> None:
        allow_alarms_to_publish(topic, list(self.alarms.values()), "AllowCloudWatchAlarmsToPublish")
