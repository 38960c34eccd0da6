"""Scale the async endpoint on its backlog, down to zero instances and back up.

Following AWS's async-inference autoscaling guide: target tracking on
``ApproximateBacklogSizePerInstance`` sizes the fleet while there is work, and a step policy on
a ``HasBacklogWithoutCapacity`` alarm adds the first instance when requests arrive at an
endpoint scaled to zero (target tracking alone does not: the per-instance backlog of a
zero-instance fleet is undefined, so it would never fire).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Aws, Duration
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.metrics import SAGEMAKER, documented_metric

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


@dataclass(frozen=True)
class EndpointAutoscalingProps:
    endpoint_name: str
    variant_name: str
    min_capacity: int
    max_capacity: int
    backlog_target_per_instance: float
    scale_in_cooldown_seconds: int
    scale_out_cooldown_seconds: int


def endpoint_metric(metric_name: str, endpoint_name: str, statistic: str = "Average") -> cloudwatch.Metric:
    """An ``AWS/SageMaker`` metric AWS publishes with ``EndpointName`` alone (the async backlog
    metrics); :func:`infra.metrics.documented_metric` refuses any other."""
    return documented_metric(
        SAGEMAKER,
        metric_name,
        {"EndpointName": endpoint_name},
        statistic=statistic,
        period=Duration.minutes(1),
    )


class EndpointAutoscaling(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, props: EndpointAutoscalingProps) -> None:
        super().__init__(scope, construct_id)
        self.target = appscaling.ScalableTarget(
            self,
            "Target",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{props.endpoint_name}/variant/{props.variant_name}",
            scalable_dimension=SCALABLE_DIMENSION,
            min_capacity=props.min_capacity,
            max_capacity=props.max_capacity,
            # Application Auto Scaling acts on SageMaker through its service-linked role (created
            # by AWS on first use); without this, CDK would add an unused IAM role.
            role=iam.Role.from_role_arn(
                self,
                "ServiceLinkedRole",
                f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/aws-service-role/"
                "sagemaker.application-autoscaling.amazonaws.com/"
                "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
                mutable=False,
            ),
        )
        self.backlog_per_instance = endpoint_metric("ApproximateBacklogSizePerInstance", props.endpoint_name)
        self.target_tracking = self.target.scale_to_track_metric(
            "BacklogPerInstance",
            target_value=props.backlog_target_per_instance,
            custom_metric=self.backlog_per_instance,
            scale_in_cooldown=Duration.seconds(props.scale_in_cooldown_seconds),
            scale_out_cooldown=Duration.seconds(props.scale_out_cooldown_seconds),
        )

        self.scale_out_from_zero = appscaling.StepScalingAction(
            self,
            "ScaleOutFromZero",
            scaling_target=self.target,
            adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
            metric_aggregation_type=appscaling.MetricAggregationType.AVERAGE,
            cooldown=Duration.seconds(props.scale_out_cooldown_seconds),
        )
        self.scale_out_from_zero.add_adjustment(adjustment=1, lower_bound=0)
        self.has_backlog_without_capacity = cloudwatch.Alarm(
            self,
            "HasBacklogWithoutCapacity",
            alarm_description="Requests are queued while the endpoint has no instance: add one.",
            metric=endpoint_metric("HasBacklogWithoutCapacity", props.endpoint_name),
            threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        self.has_backlog_without_capacity.add_alarm_action(
            cw_actions.ApplicationScalingAction(self.scale_out_from_zero)
        )
