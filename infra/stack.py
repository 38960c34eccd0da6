"""The stack: composes the constructs, nothing else (no resources of its own)."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Aws, CfnOutput, Stack, Tags
from constructs import Construct

from infra.async_endpoint import VARIANT_NAME, AsyncInferenceEndpoint, AsyncInferenceEndpointProps
from infra.autoscaling import EndpointAutoscaling, EndpointAutoscalingProps
from infra.config import TriageConfig
from infra.job_state import JobState
from infra.lambdas import (
    AGGREGATOR_SERVICE,
    CORRECTIONS_SERVICE,
    DISPATCHER_SERVICE,
    SWEEPER_SERVICE,
    ReviewProps,
    TicketPipeline,
    TicketPipelineProps,
    training_mix_json,
)
from infra.model import ModelArtifactSource, container_image
from infra.monitoring import DriftAlarms, Monitoring, MonitoringProps
from infra.nag import acknowledge, skip_checkov
from infra.notifications import Notifications
from infra.rollout import RolloutSettings
from infra.storage import EncryptionKey, IoBuckets, IoBucketsProps

REPO_ROOT = Path(__file__).resolve().parent.parent


class TicketTriageStack(Stack):
    """Ticket files in S3 -> dispatcher -> async SageMaker endpoint -> aggregator -> results + SNS."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: TriageConfig,
        repo_root: Path = REPO_ROOT,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        c = config

        self.encryption = EncryptionKey(self, "Encryption")
        key = self.encryption.key
        self.storage = IoBuckets(
            self,
            "Storage",
            props=IoBucketsProps(
                key=key,
                input_prefix=c.input_prefix,
                chunk_prefix=c.chunk_prefix,
                results_prefix=c.results_prefix,
                async_results_prefix=c.async_results_prefix,
                async_failures_prefix=c.async_failures_prefix,
                raw_results_expiration_days=c.raw_results_expiration_days,
                chunk_expiration_days=c.chunk_expiration_days,
            ),
        )
        self.notifications = Notifications(self, "Notifications", key=key)
        self.job_state = JobState(self, "JobState", key=key)

        self.image = container_image(
            self, "ServingImage", repo_root=repo_root, architecture=c.instance_architecture
        )
        self.model_source = ModelArtifactSource(
            self, "ModelArtifact", location=c.model_artifact, repo_root=repo_root
        )
        self.inference = AsyncInferenceEndpoint(
            self,
            "Inference",
            props=AsyncInferenceEndpointProps(
                image=self.image,
                model_artifact=self.model_source.artifact,
                key=key,
                input_bucket=self.storage.input_bucket,
                chunk_prefix=c.chunk_prefix,
                output_bucket=self.storage.output_bucket,
                async_results_prefix=c.async_results_prefix,
                async_failures_prefix=c.async_failures_prefix,
                success_topic=self.notifications.success_topic,
                error_topic=self.notifications.error_topic,
                instance_type=c.instance_type,
                max_concurrent_invocations_per_instance=c.max_concurrent_invocations_per_instance,
                model_server_workers=c.model_server_workers,
                threads_per_worker=c.threads_per_worker,
                invocation_timeout_seconds=c.invocation_timeout_seconds,
                review_threshold=c.review_threshold,
                log_level=c.log_level,
                endpoint_name=c.endpoint_name,
                rollout=RolloutSettings(
                    mode=c.rollout_mode,
                    instance_count=c.rollout_instance_count,
                    step_instances=c.rollout_step_instances,
                    wait_seconds=c.rollout_wait_seconds,
                    termination_wait_seconds=c.rollout_termination_wait_seconds,
                    timeout_seconds=c.rollout_timeout_seconds,
                    alarms=c.rollout_alarms,
                    max_model_latency_seconds=c.rollout_max_model_latency_seconds,
                ),
                alarm_topic=self.notifications.alarm_topic,
            ),
        )
        # AWS refuses to move a variant registered for autoscaling to another instance type: deploy
        # once with triage:autoscaling=false, then with the new type and autoscaling back on.
        self.autoscaling = (
            None
            if not c.autoscaling
            else EndpointAutoscaling(
                self,
                "Autoscaling",
                props=EndpointAutoscalingProps(
                    endpoint_name=self.inference.endpoint_name,
                    variant_name=VARIANT_NAME,
                    min_capacity=c.min_capacity,
                    max_capacity=c.max_capacity,
                    backlog_target_per_instance=c.backlog_target_per_instance,
                    scale_in_cooldown_seconds=c.scale_in_cooldown_seconds,
                    scale_out_cooldown_seconds=c.scale_out_cooldown_seconds,
                ),
            )
        )
        self.pipeline = TicketPipeline(
            self,
            "Pipeline",
            props=TicketPipelineProps(
                code_directory=repo_root / "lambda",
                key=key,
                input_bucket=self.storage.input_bucket,
                output_bucket=self.storage.output_bucket,
                table=self.job_state.table,
                endpoint=self.inference,
                success_topic=self.notifications.success_topic,
                error_topic=self.notifications.error_topic,
                results_topic=self.notifications.results_topic,
                input_prefix=c.input_prefix,
                chunk_prefix=c.chunk_prefix,
                results_prefix=c.results_prefix,
                async_results_prefix=c.async_results_prefix,
                async_failures_prefix=c.async_failures_prefix,
                chunk_size=c.chunk_size,
                max_file_mb=c.max_file_mb,
                max_tickets_per_file=c.max_tickets_per_file,
                ticket_fields_json=c.ticket_fields_json,
                request_ttl_seconds=c.request_ttl_seconds,
                invocation_timeout_seconds=c.invocation_timeout_seconds,
                job_deadline_margin_seconds=c.job_deadline_margin_seconds,
                dispatcher_timeout_seconds=c.dispatcher_timeout_seconds,
                aggregator_timeout_seconds=c.aggregator_timeout_seconds,
                sweeper_timeout_seconds=c.sweeper_timeout_seconds,
                finalize_lease_seconds=c.finalize_lease_seconds,
                dispatcher_concurrency=c.dispatcher_concurrency,
                aggregator_concurrency=c.aggregator_concurrency,
                dispatch_threads=c.dispatch_threads,
                max_dispatch_runs=c.max_dispatch_runs,
                sweep_interval_minutes=c.sweep_interval_minutes,
                memory_mb=c.lambda_memory_mb,
                ephemeral_storage_mb=c.lambda_ephemeral_storage_mb,
                metrics_namespace=c.metrics_namespace,
                log_level=c.log_level,
                log_retention_days=c.log_retention_days,
                powertools_layer_version=c.powertools_layer_version,
                review=ReviewProps(
                    topic=self.notifications.review_topic,
                    prefix=c.review_prefix,
                    out_of_scope_below=c.out_of_scope_below,
                    drift_min_tickets=c.drift_min_tickets,
                    training_mix_json=training_mix_json(self.model_source.manifest),
                ),
                corrections_prefix=c.corrections_prefix,
                model_artifact=self.model_source.artifact,
            ),
        )
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            props=MonitoringProps(
                endpoint_name=self.inference.endpoint_name,
                variant_name=VARIANT_NAME,
                functions=self.pipeline.functions,
                services={
                    "Dispatcher": DISPATCHER_SERVICE,
                    "Aggregator": AGGREGATOR_SERVICE,
                    "Sweeper": SWEEPER_SERVICE,
                    "Corrections": CORRECTIONS_SERVICE,
                },
                metrics_namespace=c.metrics_namespace,
                alarm_topic=self.notifications.alarm_topic,
                oldest_request_alarm_seconds=c.oldest_request_alarm_seconds,
                alarm_email=c.alarm_email,
                drift=DriftAlarms(
                    review_share=c.review_share_alarm,
                    out_of_scope_share=c.out_of_scope_share_alarm,
                    category_drift=c.drift_alarm,
                ),
                dashboard_name=f"{c.stack_name}-{Aws.REGION}",
                reviewed_accuracy_alarm=c.reviewed_accuracy_alarm,
            ),
        )
        self._acknowledge_cdk_internals()
        self._outputs()
        Tags.of(self).add("project", "ticket-triage")

    def _acknowledge_cdk_internals(self) -> None:
        """Findings on resources CDK itself adds (the S3-notification custom resource)."""
        handler = self.node.try_find_child("BucketNotificationsHandler050a0587b7544547bf325f094a3db834")
        if handler is None:
            return
        reason_role = (
            "CDK's own BucketNotificationsHandler (it configures the input bucket's event notification "
            "once, at deploy time) uses the AWSLambdaBasicExecutionRole managed policy; its role is "
            "not configurable."
        )
        function = handler.node.default_child
        for check_id in ("CKV_AWS_115", "CKV_AWS_116", "CKV_AWS_117"):
            skip_checkov(
                function,
                check_id,
                "CDK's BucketNotificationsHandler runs once per deployment (CloudFormation custom "
                "resource): no concurrency limit, DLQ or VPC to configure, and none needed.",
            )
        acknowledge(
            handler,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
            reason_role,
        )

    def _outputs(self) -> None:
        outputs = {
            "InputBucketName": (self.storage.input_bucket.bucket_name, "drop ticket files under inputPrefix"),
            "OutputBucketName": (
                self.storage.output_bucket.bucket_name,
                "consolidated results under resultsPrefix",
            ),
            "ResultsTopicArn": (self.notifications.results_topic.topic_arn, "one message per completed file"),
            "AlarmTopicArn": (self.notifications.alarm_topic.topic_arn, "subscribe to get the alarms"),
            "ReviewTopicArn": (
                self.notifications.review_topic.topic_arn,
                "the flagged tickets of each file (docs/pipeline.md, the review queue)",
            ),
            "EndpointName": (self.inference.endpoint_name, "the async SageMaker endpoint"),
            "JobsTableName": (self.job_state.table.table_name, "dispatcher/aggregator/sweeper job state"),
            "DashboardName": (
                self.monitoring.dashboard.dashboard_name,
                "CloudWatch dashboard of the pipeline",
            ),
        }
        # What `make redrive` (python -m ticket_pipeline.redrive --stack <name>) reads: each
        # function and the dead-letter queue of its failed asynchronous events.
        for fn_id, fn in self.pipeline.functions.items():
            outputs[f"{fn_id}FunctionName"] = (fn.function.function_name, f"the {fn_id.lower()} Lambda")
            outputs[f"{fn_id}DeadLetterQueueUrl"] = (
                fn.dead_letter_queue.queue_url,
                f"events the {fn_id.lower()} gave up on (replay: make redrive)",
            )
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)
