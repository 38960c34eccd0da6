"""SNS topics: the endpoint's success/error notifications, the results feed, the alarm feed."""

from __future__ import annotations

from aws_cdk import Aws
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from constructs import Construct


class Notifications(Construct):
    """Five KMS-encrypted topics whose policies deny publishing without TLS.

    - ``success_topic`` / ``error_topic``: SageMaker publishes one message per async invocation
      (the endpoint's ``NotificationConfig``); the aggregator subscribes to both.
    - ``results_topic``: one message per completed input file, for downstream subscribers.
    - ``alarm_topic``: every CloudWatch alarm of the stack notifies it.
    - ``review_topic``: the flagged tickets of each file, for a help desk or a review tool.
    """

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)

        def topic(construct_id: str, display_name: str) -> sns.Topic:
            return sns.Topic(
                self,
                construct_id,
                display_name=display_name,
                master_key=key,
                enforce_ssl=True,
            )

        self.success_topic = topic("Success", "Ticket triage: async inference succeeded")
        self.error_topic = topic("Error", "Ticket triage: async inference failed")
        self.results_topic = topic("Results", "Ticket triage: results of an input file are ready")
        self.alarm_topic = topic("Alarms", "Ticket triage: operational alarms")
        # the flagged tickets of every file (lambda/ticket_pipeline/review.py; docs/pipeline.md)
        self.review_topic = topic("Review", "Ticket triage: tickets to review")


AT_OR_ABOVE = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD


def notifying_alarm(
    scope: Construct,
    construct_id: str,
    *,
    metric: cloudwatch.IMetric,
    threshold: float,
    description: str,
    topic: sns.ITopic,
    periods: int = 1,
    comparison: cloudwatch.ComparisonOperator = AT_OR_ABOVE,
) -> cloudwatch.Alarm:
    """An alarm on ``metric`` against ``threshold`` (at or above it, unless ``comparison`` says
    otherwise) over ``periods`` periods, no data counting as not breaching, that notifies
    ``topic`` when it fires and when it clears (the stack's monitoring and the endpoint's
    roll-back guards)."""
    action = cw_actions.SnsAction(topic)
    alarm = cloudwatch.Alarm(
        scope,
        construct_id,
        metric=metric,
        threshold=threshold,
        evaluation_periods=periods,
        comparison_operator=comparison,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        alarm_description=description,
    )
    alarm.add_alarm_action(action)
    alarm.add_ok_action(action)
    return alarm


def allow_alarms_to_publish(topic: sns.ITopic, alarms: list[cloudwatch.Alarm], sid: str) -> None:
    """CloudWatch publishes alarm notifications as the service principal, which the topic policy
    must allow (``enforce_ssl`` replaced SNS's default policy): for these alarms of this account only
    (Amazon SNS Developer Guide, "Example cases for Amazon SNS access control" and "Enable
    compatibility between event sources from AWS services and encrypted topics")."""
    topic.add_to_resource_policy(
        iam.PolicyStatement(
            sid=sid,
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            actions=["sns:Publish"],
            resources=[topic.topic_arn],
            conditions={
                "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                "ArnLike": {"aws:SourceArn": [a.alarm_arn for a in alarms]},
            },
        )
    )
