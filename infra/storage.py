"""Data at rest: the customer-managed key and the three buckets."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.nag import skip_checkov


class EncryptionKey(Construct):
    """One customer-managed KMS key (rotated yearly) for every bucket, topic, queue, table and log group.

    The key policy lets the two AWS services that write with it on their own behalf use it:
    CloudWatch Logs (the Lambda log groups) and CloudWatch alarms (publishing to the encrypted
    alarm topic). Everything else gets access through ``grant_*`` on the resource it uses.
    """

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            description="Ticket triage: data at rest (buckets, topics, queues, table, logs)",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchLogs",
                principals=[iam.ServicePrincipal(f"logs.{Aws.REGION}.amazonaws.com")],
                actions=[
                    "kms:Encrypt*",
                    "kms:Decrypt*",
                    "kms:ReEncrypt*",
                    "kms:GenerateDataKey*",
                    "kms:Describe*",
                ],
                resources=["*"],
                conditions={
                    "ArnLike": {
                        "kms:EncryptionContext:aws:logs:arn": (
                            f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:*"
                        )
                    }
                },
            )
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToPublishToEncryptedTopics",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID}},
            )
        )


@dataclass(frozen=True)
class IoBucketsProps:
    key: kms.IKey
    input_prefix: str
    chunk_prefix: str
    results_prefix: str
    async_results_prefix: str
    async_failures_prefix: str
    raw_results_expiration_days: int
    chunk_expiration_days: int


class IoBuckets(Construct):
    """Input bucket (``incoming/`` drops, ``chunks/``), output bucket, server-access-log bucket.

    All three: block public access, deny non-TLS requests, versioned, retained on stack deletion.
    Data buckets use the customer-managed key (S3 bucket keys keep the KMS request count low);
    the log bucket uses S3-managed keys because S3 server access logging cannot write to a
    KMS-encrypted bucket. Raw async results, failures and chunks expire; consolidated results
    and uploaded inputs are kept (noncurrent versions expire).
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: IoBucketsProps) -> None:
        super().__init__(scope, construct_id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireAccessLogs",
                    expiration=Duration.days(365),
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                )
            ],
        )

        skip_checkov(
            self.access_logs,
            "CKV_AWS_18",
            "This is the server-access-log bucket: S3 cannot log a log bucket into itself.",
        )

        common = {
            "encryption": s3.BucketEncryption.KMS,
            "encryption_key": props.key,
            "bucket_key_enabled": True,
            "block_public_access": s3.BlockPublicAccess.BLOCK_ALL,
            "enforce_ssl": True,
            "versioned": True,
            "object_ownership": s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            "server_access_logs_bucket": self.access_logs,
            "removal_policy": RemovalPolicy.RETAIN,
        }
        self.input_bucket = s3.Bucket(
            self,
            "Input",
            server_access_logs_prefix="input/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireChunks",
                    prefix=props.chunk_prefix,
                    expiration=Duration.days(props.chunk_expiration_days),
                    noncurrent_version_expiration=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="ExpireOldVersions",
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
            ],
            **common,
        )
        self.output_bucket = s3.Bucket(
            self,
            "Output",
            server_access_logs_prefix="output/",
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireRawAsyncResults",
                    prefix=props.async_results_prefix,
                    expiration=Duration.days(props.raw_results_expiration_days),
                    noncurrent_version_expiration=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="ExpireRawAsyncFailures",
                    prefix=props.async_failures_prefix,
                    expiration=Duration.days(props.raw_results_expiration_days),
                    noncurrent_version_expiration=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="ExpireOldVersions",
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(1),
                ),
            ],
            **common,
        )
