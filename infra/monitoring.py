"""Alarms (to the alarm topic) and one dashboard for the whole pipeline."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.autoscaling import sagemaker_metric
from infra.lambdas import PipelineFunction


@dataclass(frozen=True)
class MonitoringProps:
    endpoint_name: str
    variant_name: str
    dispatcher: PipelineFunction
    aggregator: PipelineFunction
    alarm_topic: sns.ITopic
    oldest_request_alarm_seconds: int
    alarm_email: str
    dashboard_name: str


class Monitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, props: MonitoringProps) -> None:
        super().__init__(scope, construct_id)
        name = props.endpoint_name
        variant_dims = {"EndpointName": name, "VariantName": props.variant_name}
        five_minutes = Duration.minutes(5)
        if props.alarm_email:
            props.alarm_topic.add_subscription(subscriptions.EmailSubscription(props.alarm_email))

        oldest_request = sagemaker_metric("ApproximateAgeOfOldestRequest", name, "Maximum")
        invocation_failures = sagemaker_metric("InvocationFailures", name, "Sum").with_(period=five_minutes)
        errors_5xx = cloudwatch.Metric(
            namespace="AWS/SageMaker",
            metric_name="Invocation5XXErrors",
            dimensions_map=variant_dims,
            statistic="Sum",
            period=five_minutes,
        )
        action = cw_actions.SnsAction(props.alarm_topic)
        self.alarms: dict[str, cloudwatch.Alarm] = {}

        def alarm(construct_id: str, metric: cloudwatch.IMetric, threshold: float, description: str,
                  periods: int = 1) -> cloudwatch.Alarm:  # fmt: skip
            created = cloudwatch.Alarm(
                self,
                construct_id,
                metric=metric,
                threshold=threshold,
                evaluation_periods=periods,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
                alarm_description=description,
            )
            created.add_alarm_action(action)
            created.add_ok_action(action)
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
        alarm("InvocationFailures", invocation_failures, 1, "Async invocations failed (see async-failures/).")
        alarm("Invocation5xx", errors_5xx, 1, "The model container returned 5xx errors.")
        alarm(
            "AggregatorErrors",
            props.aggregator.function.metric_errors(period=five_minutes, statistic="Sum"),
            1,
            "The aggregator Lambda failed: results of some input files may be late or missing.",
        )
        alarm(
            "DispatcherErrors",
            props.dispatcher.function.metric_errors(period=five_minutes, statistic="Sum"),
            1,
            "The dispatcher Lambda failed: some input files were not submitted.",
        )
        for fn_id, fn in (("Dispatcher", props.dispatcher), ("Aggregator", props.aggregator)):
            alarm(
                f"{fn_id}DeadLetters",
                fn.dead_letter_queue.metric_approximate_number_of_messages_visible(
                    period=five_minutes, statistic="Maximum"
                ),
                1,
                f"Events the {fn_id.lower()} gave up on are waiting in its dead-letter queue.",
            )

        backlog = sagemaker_metric("ApproximateBacklogSize", name)
        backlog_per_instance = sagemaker_metric("ApproximateBacklogSizePerInstance", name)
        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=props.dashboard_name, default_interval=Duration.hours(6)
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Backlog (queued async requests)",
                left=[backlog, backlog_per_instance],
                right=[sagemaker_metric("HasBacklogWithoutCapacity", name, "Maximum")],
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
                    cloudwatch.Metric(
                        namespace="/aws/sagemaker/Endpoints",
                        metric_name="CPUUtilization",
                        dimensions_map=variant_dims,
                        statistic="Average",
                    )
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Latency",
                left=[
                    cloudwatch.Metric(
                        namespace="AWS/SageMaker",
                        metric_name="ModelLatency",
                        dimensions_map=variant_dims,
                        statistic="p90",
                        label="model latency p90 (µs)",
                    )
                ],
                right=[
                    sagemaker_metric("TimeInBacklog", name, "p90").with_(label="time in backlog p90 (ms)"),
                    oldest_request.with_(label="oldest request age (s)"),
                ],
                width=12,
            ),
            cloudwatch.GraphWidget(
                title="Errors",
                left=[
                    invocation_failures,
                    errors_5xx,
                    props.dispatcher.function.metric_errors(statistic="Sum", label="dispatcher errors"),
                    props.aggregator.function.metric_errors(statistic="Sum", label="aggregator errors"),
                ],
                right=[
                    props.dispatcher.dead_letter_queue.metric_approximate_number_of_messages_visible(
                        label="dispatcher DLQ"
                    ),
                    props.aggregator.dead_letter_queue.metric_approximate_number_of_messages_visible(
                        label="aggregator DLQ"
                    ),
                ],
                width=12,
            ),
        )
