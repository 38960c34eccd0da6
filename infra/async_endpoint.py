"""The SageMaker asynchronous inference endpoint: execution role, model, endpoint config, endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import Annotations, Aws
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from constructs import Construct

from infra.config import MAX_ASYNC_PAYLOAD_MB, has_local_nvme_storage
from infra.model import ModelArtifact
from infra.nag import acknowledge, arn_finding, skip_checkov
from infra.rollout import GuardedRollout, GuardedRolloutProps, RolloutSettings

VARIANT_NAME = "AllTraffic"


@dataclass(frozen=True)
class AsyncInferenceEndpointProps:
    image: ecr_assets.DockerImageAsset
    model_artifact: ModelArtifact
    key: kms.IKey
    input_bucket: s3.IBucket
    chunk_prefix: str
    output_bucket: s3.IBucket
    async_results_prefix: str
    async_failures_prefix: str
    success_topic: sns.ITopic
    error_topic: sns.ITopic
    instance_type: str
    max_concurrent_invocations_per_instance: int
    model_server_workers: int
    threads_per_worker: int
    invocation_timeout_seconds: int
    review_threshold: float | None  # None: the artifact's own (the container's fallback)
    log_level: str
    endpoint_name: str  # fixed: the roll-back alarms name it (infra/rollout.py)
    rollout: RolloutSettings
    alarm_topic: sns.ITopic


class AsyncInferenceEndpoint(Construct):
    """Model + async endpoint config + endpoint, with a least-privilege execution role.

    The role may read the model artifact, pull the image, read ``chunks/`` of the input bucket,
    write ``async-results/`` and ``async-failures/`` of the output bucket, publish to the
    success/error topics, use the key for those, and write its own logs and metrics.

    The model and the endpoint config have no fixed names: every async property forces a
    replacement, and CloudFormation can only replace a resource whose name it generates. So a new
    artifact (or image, or setting) gives a new model and a new config, and the endpoint's update to
    that config is a guarded deployment (infra/rollout.py). The endpoint itself has a fixed name,
    the one its roll-back alarms watch.

    Its ``KmsKeyId`` (the ML storage volume) is the stack key, except on instance types with local
    NVMe storage (g4dn, g5, m5d, ...), where ``CreateEndpointConfig`` refuses any ``KmsKeyId``
    ("You can't request a KmsKeyId when using an instance type with local storage", SageMaker API
    Reference, CreateEndpointConfig): there the key is omitted, the volumes are encrypted by the
    instance's hardware module, and the synth says so in a warning. The async outputs are
    encrypted with the stack key on every instance type.
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: AsyncInferenceEndpointProps) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
            description="Ticket triage async endpoint: model, chunks, async outputs, notifications",
        )
        # Each grant names exactly what SageMaker calls with this role (tests/iam replays the local
        # runs' calls against it): GetObject of the model archive and of the chunks, PutObject of
        # the async outputs (SSE-KMS with the stack key: kms:GenerateDataKey to write, kms:Decrypt to
        # read and for multipart uploads, Amazon S3 User Guide "Using server-side encryption with
        # AWS KMS keys"), Publish to the two topics (grant_publish adds the key use SNS documents
        # for encrypted topics). No kms:Encrypt / kms:ReEncrypt*: SageMaker never calls them.
        props.model_artifact.grant_read(self.role)
        props.image.repository.grant_pull(self.role)
        iam.Grant.add_to_principal(
            grantee=self.role,
            actions=["s3:GetObject"],
            resource_arns=[props.input_bucket.arn_for_objects(f"{props.chunk_prefix}*")],
        )
        iam.Grant.add_to_principal(
            grantee=self.role,
            actions=["s3:PutObject"],
            resource_arns=[
                props.output_bucket.arn_for_objects(f"{props.async_results_prefix}*"),
                props.output_bucket.arn_for_objects(f"{props.async_failures_prefix}*"),
            ],
        )
        props.key.grant(self.role, "kms:Decrypt", "kms:GenerateDataKey")
        props.success_topic.grant_publish(self.role)
        props.error_topic.grant_publish(self.role)
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="EndpointLogs",
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                ],
                resources=[
                    f"arn:{Aws.PARTITION}:logs:{Aws.REGION}:{Aws.ACCOUNT_ID}:log-group:/aws/sagemaker/Endpoints/*"
                ],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="EndpointMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "AWS/SageMaker"]}},
            )
        )
        self._acknowledge_role_findings(props)

        environment = {
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": str(props.invocation_timeout_seconds),
            "SAGEMAKER_MODEL_SERVER_WORKERS": str(props.model_server_workers),
            "TRIAGE_THREADS_PER_WORKER": str(props.threads_per_worker),
            "TRIAGE_MAX_PAYLOAD_MB": str(MAX_ASYNC_PAYLOAD_MB),
            "LOG_LEVEL": props.log_level,
        }
        if props.review_threshold is not None:  # unset: the server uses the artifact's threshold
            environment["TRIAGE_REVIEW_THRESHOLD"] = str(props.review_threshold)
        self.model = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            # The container needs no network: SageMaker itself fetches the model and the request
            # payload and writes the results and notifications.
            enable_network_isolation=True,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(
                image=props.image.image_uri,
                model_data_url=props.model_artifact.s3_url,
                environment=environment,
            ),
        )
        # SageMaker checks the role's permissions when it creates the model: create the policy first
        # (the role itself is already ordered by the ARN reference).
        self.model.node.add_dependency(self.role.node.find_child("DefaultPolicy"))

        local_nvme = has_local_nvme_storage(props.instance_type)
        self.endpoint_config = sagemaker.CfnEndpointConfig(
            self,
            "Config",
            kms_key_id=None if local_nvme else props.key.key_arn,
            production_variants=[
                sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                    variant_name=VARIANT_NAME,
                    model_name=self.model.attr_model_name,
                    initial_instance_count=props.rollout.instance_count,
                    instance_type=props.instance_type,
                )
            ],
            async_inference_config=sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty(
                client_config=sagemaker.CfnEndpointConfig.AsyncInferenceClientConfigProperty(
                    max_concurrent_invocations_per_instance=props.max_concurrent_invocations_per_instance,
                ),
                output_config=sagemaker.CfnEndpointConfig.AsyncInferenceOutputConfigProperty(
                    s3_output_path=props.output_bucket.s3_url_for_object(props.async_results_prefix),
                    s3_failure_path=props.output_bucket.s3_url_for_object(props.async_failures_prefix),
                    kms_key_id=props.key.key_arn,
                    notification_config=sagemaker.CfnEndpointConfig.AsyncInferenceNotificationConfigProperty(
                        success_topic=props.success_topic.topic_arn,
                        error_topic=props.error_topic.topic_arn,
                    ),
                ),
            ),
        )
        if local_nvme:
            Annotations.of(self).add_warning_v2(
                "triage:localNvmeStorage",
                f"{props.instance_type} has local NVMe storage: the endpoint config carries no KmsKeyId "
                "(CreateEndpointConfig refuses one for such instance types); its volumes are encrypted "
                "by the instance's hardware module. The async outputs still use the stack key.",
            )
            skip_checkov(
                self.endpoint_config,
                "CKV_AWS_98",
                f"{props.instance_type} has local NVMe storage, encrypted by the instance's hardware module; "
                "CreateEndpointConfig fails when a KmsKeyId is given for such instance types.",
            )
        r = props.rollout
        self.rollout = GuardedRollout(
            self,
            "Rollout",
            props=GuardedRolloutProps(
                endpoint_name=props.endpoint_name,
                variant_name=VARIANT_NAME,
                endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
                settings=r,
                alarm_topic=props.alarm_topic,
            ),
        )
        if not r.alarms:
            Annotations.of(self).add_warning_v2(
                "triage:noRollbackAlarms",
                "triage:rolloutAlarms is empty: endpoint updates still shift traffic in steps, but nothing "
                "rolls a bad model back automatically.",
            )
        self.endpoint = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_name=props.endpoint_name,
            endpoint_config_name=self.endpoint_config.attr_endpoint_config_name,
            deployment_config=self.rollout.deployment_config,
        )
        describe_alarms = self.rollout.grant_describe_alarms(self.role)
        if describe_alarms is not None:
            self.endpoint.node.add_dependency(describe_alarms)

    @property
    def endpoint_name(self) -> str:
        return self.endpoint.attr_endpoint_name

    @property
    def endpoint_arn(self) -> str:
        """``Ref`` of ``AWS::SageMaker::Endpoint`` is its ARN."""
        return self.endpoint.ref

    def grant_invoke_async(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``sagemaker:InvokeEndpointAsync`` on this endpoint only."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sagemaker:InvokeEndpointAsync"], resource_arns=[self.endpoint_arn]
        )

    def _acknowledge_role_findings(self, props: AsyncInferenceEndpointProps) -> None:
        policy = self.role.node.find_child("DefaultPolicy").node.default_child
        output = props.output_bucket.node.default_child
        findings = {
            "Action::kms:GenerateDataKey*": (
                "grant_publish on the KMS-encrypted topics: the stack key only, as SNS documents it."
            ),
            "Resource::*": (
                "ecr:GetAuthorizationToken has no resource-level permissions, and "
                "cloudwatch:PutMetricData is limited by a namespace condition."
            ),
            arn_finding(props.input_bucket.node.default_child, f"/{props.chunk_prefix}*"): (
                "The endpoint reads the chunks the dispatcher writes, nothing else in the input bucket."
            ),
            arn_finding(output, f"/{props.async_results_prefix}*"): (
                "The endpoint writes one result object per invocation under the async-results prefix."
            ),
            arn_finding(output, f"/{props.async_failures_prefix}*"): (
                "The endpoint writes one failure object per failed invocation under the failures prefix."
            ),
            (
                "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
                "log-group:/aws/sagemaker/Endpoints/*"
            ): "SageMaker names the endpoint's log streams itself, under its own log group.",
        }
        for finding, reason in findings.items():
            acknowledge(policy, f"AwsSolutions-IAM5[{finding}]", reason)
