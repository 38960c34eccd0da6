"""The jobs table: fan-out/fan-in state shared by the dispatcher, the aggregator and the sweeper."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

TTL_ATTRIBUTE = "expires_at"
# A sparse index of the jobs still open, by deadline: only a job's META item carries
# ``open_jobs`` (set when the job is created, removed when it is finalized), so the sweeper
# queries the open jobs past their deadline without scanning the table. The names are the
# contract with ticket_pipeline.jobs (a test keeps them equal).
OPEN_JOBS_INDEX = "OpenJobsByDeadline"
OPEN_JOBS_PARTITION = "open_jobs"
DEADLINE_ATTRIBUTE = "deadline"


class JobState(Construct):
    """On-demand table (``pk``/``sk`` strings, TTL ``expires_at``), KMS-encrypted, with PITR and the
    open-jobs index.

    The rows are transient job bookkeeping that expire by TTL, so the table is deleted with the
    stack; the results themselves live in the retained output bucket.
    """

    def __init__(self, scope: Construct, construct_id: str, *, key: kms.IKey) -> None:
        super().__init__(scope, construct_id)
        self.table = dynamodb.Table(
            self,
            "Jobs",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name="sk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute=TTL_ATTRIBUTE,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.table.add_global_secondary_index(
            index_name=OPEN_JOBS_INDEX,
            partition_key=dynamodb.Attribute(name=OPEN_JOBS_PARTITION, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=DEADLINE_ATTRIBUTE, type=dynamodb.AttributeType.NUMBER),
            projection_type=dynamodb.ProjectionType.KEYS_ONLY,
        )
