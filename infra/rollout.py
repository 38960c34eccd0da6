"""Guarded roll-outs: the endpoint's ``DeploymentConfig`` and the alarms that roll an update back.

Every endpoint update (a new model artifact, image or environment gives a new model, hence a new
endpoint config: neither has a fixed name) is a SageMaker deployment with guardrails: blue/green
with ALL_AT_ONCE, CANARY or LINEAR traffic shifting, or a ROLLING update, a baking period after
each step and an automatic roll-back when one of the alarms below goes off (SageMaker AI Developer
Guide, "Deployment guardrails for updating models in production"). The exclusions AWS lists
(Marketplace containers, Inf1 instances; serverless and multi-variant endpoints for rolling
updates) do not apply to this single-variant async endpoint.

The alarms watch the endpoint by its name, so the endpoint has a fixed name (the stack's): an
alarm on the generated name would depend on the endpoint while the endpoint's roll-back
configuration depends on the alarm. With a fixed name CloudFormation orders an update as
model -> endpoint config -> alarms (the latency alarm moves to the new config's fleet) ->
endpoint (the deployment, watched by those alarms).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.metrics import SAGEMAKER, documented_metric
from infra.notifications import allow_alarms_to_publish, notifying_alarm

# The alarms a deployment can be rolled back on (cdk.json ``triage:rolloutAlarms`` picks from these).
ROLLBACK_ALARMS = ("InvocationFailures", "Invocation5xx", "ModelLatency")
MICROSECONDS = 1_000_000  # ModelLatency is published in microseconds
ALARM_PERIOD = Duration.minutes(5)


@dataclass(frozen=True)
class RolloutSettings:
    """How an endpoint update rolls out (cdk.json ``triage:rollout*``, validated in infra/config.py)."""

    mode: str
    instance_count: int  # the new fleet's InitialInstanceCount
    step_instances: int
    wait_seconds: int
    termination_wait_seconds: int
    timeout_seconds: int
    alarms: tuple[str, ...]
    max_model_latency_seconds: float


@dataclass(frozen=True)
class GuardedRolloutProps:
    endpoint_name: str  # the fixed name (not the endpoint's attribute: see the module docstring)
    variant_name: str
    endpoint_config_name: str  # the config being deployed: its fleet is the new one
    settings: RolloutSettings
    alarm_topic: sns.ITopic


class GuardedRollout(Construct):
    """The roll-back alarms and the ``DeploymentConfig`` that names them.

    - ``InvocationFailures`` (async: invocations that failed, either fleet) and ``Invocation5xx``
      (the container's 5xx, either fleet): AWS's first example, "Monitor invocation errors on both
      old and new fleets". As the page warns, errors of the old fleet stop the deployment too.
    - ``ModelLatency``: the average model latency of the new fleet only (dimension
      ``EndpointConfigName`` of the config being deployed), AWS's second example.

    Missing data is not breaching: an endpoint without traffic during the bake rolls forward.
    Each alarm also notifies the alarm topic, so an automatic roll-back is never silent.
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: GuardedRolloutProps) -> None:
        super().__init__(scope, construct_id)
        self.props = props
        settings = props.settings
        both_fleets = {"EndpointName": props.endpoint_name, "VariantName": props.variant_name}
        new_fleet = {**both_fleets, "EndpointConfigName": props.endpoint_config_name}

        def metric(name: str, dimensions: dict[str, str], statistic: str) -> cloudwatch.Metric:
            return documented_metric(SAGEMAKER, name, dimensions, statistic=statistic, period=ALARM_PERIOD)

        definitions = {
            "InvocationFailures": (
                metric("InvocationFailures", both_fleets, "Sum"),
                1,
                "Roll-back guard: async invocations failed during an endpoint deployment.",
            ),
            "Invocation5xx": (
                metric("Invocation5XXErrors", both_fleets, "Sum"),
                1,
                "Roll-back guard: the model container returned 5xx errors during an endpoint deployment.",
            ),
            "ModelLatency": (
                metric("ModelLatency", new_fleet, "Average"),
                settings.max_model_latency_seconds * MICROSECONDS,
                "Roll-back guard: the new fleet's average model latency per invocation is above "
                f"{settings.max_model_latency_seconds:g} s.",
            ),
        }
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for name in settings.alarms:
            watched, threshold, description = definitions[name]
            self.alarms[name] = notifying_alarm(
                self,
                name,
                metric=watched,
                threshold=threshold,
                description=description,
                topic=props.alarm_topic,
            )
        if self.alarms:
            allow_alarms_to_publish(
                props.alarm_topic, list(self.alarms.values()), "AllowRollbackAlarmsToPublish"
            )

    @property
    def deployment_config(self) -> sagemaker.CfnEndpoint.DeploymentConfigProperty:
        p = self.props.settings
        step = sagemaker.CfnEndpoint.CapacitySizeProperty(type="INSTANCE_COUNT", value=p.step_instances)
        rollback = (
            sagemaker.CfnEndpoint.AutoRollbackConfigProperty(
                alarms=[
                    sagemaker.CfnEndpoint.AlarmProperty(alarm_name=a.alarm_name) for a in self.alarms.values()
                ]
            )
            if self.alarms
            else None
        )
        if p.mode == "ROLLING":
            return sagemaker.CfnEndpoint.DeploymentConfigProperty(
                rolling_update_policy=sagemaker.CfnEndpoint.RollingUpdatePolicyProperty(
                    maximum_batch_size=step,
                    wait_interval_in_seconds=p.wait_seconds,
                    maximum_execution_timeout_in_seconds=p.timeout_seconds,
                ),
                auto_rollback_configuration=rollback,
            )
        return sagemaker.CfnEndpoint.DeploymentConfigProperty(
            blue_green_update_policy=sagemaker.CfnEndpoint.BlueGreenUpdatePolicyProperty(
                traffic_routing_configuration=sagemaker.CfnEndpoint.TrafficRoutingConfigProperty(
                    type=p.mode,
                    wait_interval_in_seconds=p.wait_seconds,
                    canary_size=step if p.mode == "CANARY" else None,
                    linear_step_size=step if p.mode == "LINEAR" else None,
                ),
                termination_wait_in_seconds=p.termination_wait_seconds,
                maximum_execution_timeout_in_seconds=p.timeout_seconds,
            ),
            auto_rollback_configuration=rollback,
        )

    def grant_describe_alarms(self, role: iam.IRole) -> iam.Policy | None:
        """ "Ensure that your IAM execution role has permission to perform the cloudwatch:DescribeAlarms
        action on the auto-rollback alarms you specify" (Auto-Rollback Configuration and Monitoring).
        A policy of its own, not the role's default policy: the model waits for that one, and the
        alarms come after the model (model -> config -> alarms)."""
        if not self.alarms:
            return None
        return iam.Policy(
            self,
            "DescribeAlarms",
            roles=[role],
            statements=[
                iam.PolicyStatement(
                    actions=["cloudwatch:DescribeAlarms"],
                    resources=[a.alarm_arn for a in self.alarms.values()],
                )
            ],
        )
