"""The dispatcher (fan-out), aggregator (fan-in), sweeper (deadlines) and corrections (reviewers'
labels) Lambdas, least privilege."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aws_cdk import Duration, RemovalPolicy, Size, Stack, SymlinkFollowMode
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.async_endpoint import AsyncInferenceEndpoint
from infra.job_state import OPEN_JOBS_INDEX
from infra.model import ModelArtifact
from infra.nag import acknowledge, arn_finding, skip_checkov

RUNTIME = lambda_.Runtime.PYTHON_3_13
# The AWS-managed Powertools for AWS Lambda (Python) v3 layer (it also ships pydantic). AWS
# publishes it from this account in every commercial region; the region comes from the stack.
POWERTOOLS_ACCOUNT = "017000801446"
LAMBDA_CODE_EXCLUDE = ["**/__pycache__", "**/*.pyc", "requirements.txt", "**/.pytest_cache"]


def _grant_objects(grantee: iam.IGrantable, actions: list[str], bucket: s3.IBucket, prefix: str) -> None:
    """``actions`` on the objects under ``prefix`` and the stack key use they take: reading an
    SSE-KMS object needs kms:Decrypt, writing one kms:GenerateDataKey (and kms:Decrypt for a
    multipart upload; Amazon S3 User Guide, "Using server-side encryption with AWS KMS keys").
    ``grant_read``/``grant_put`` would add s3:GetBucket*, s3:List*, s3:Abort*, the object-lock and
    tagging writes and kms:Encrypt/ReEncrypt*, which the code never calls."""
    iam.Grant.add_to_principal(
        grantee=grantee, actions=actions, resource_arns=[bucket.arn_for_objects(f"{prefix}*")]
    )
    if bucket.encryption_key is not None:
        bucket.encryption_key.grant(grantee, "kms:Decrypt", "kms:GenerateDataKey")


def _grant_table(grantee: iam.IGrantable, props: TicketPipelineProps, *actions: str) -> None:
    """``actions`` on the jobs table itself (not its indexes), and the one key operation DynamoDB
    makes on the caller's behalf with the table's customer-managed key: ``kms:Decrypt`` of the
    table key, only through DynamoDB (``kms:ViaService``). "When you access an encrypted DynamoDB
    table, DynamoDB needs to decrypt the table key [...] DynamoDB sends a Decrypt request to AWS
    KMS [...] The user is the principal in your AWS account who is accessing the table"; the
    table key's GenerateDataKey is DynamoDB's own ("The user is the DynamoDB service account") and
    CreateGrant/DescribeKey are the table creator's (Amazon DynamoDB Developer Guide, "DynamoDB
    encryption at rest usage notes", Monitoring DynamoDB interaction with AWS KMS). No
    kms:Encrypt / kms:ReEncrypt* / kms:GenerateDataKey* (``grant_encrypt_decrypt``)."""
    iam.Grant.add_to_principal(grantee=grantee, actions=list(actions), resource_arns=[props.table.table_arn])
    key = props.table.encryption_key
    if key is not None:
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kms:Decrypt"],
            resource_arns=[key.key_arn],
            conditions={"StringEquals": {"kms:ViaService": f"dynamodb.{Stack.of(key).region}.amazonaws.com"}},
        )


def powertools_layer_arn(scope: Construct, version: int) -> str:
    region = Stack.of(scope).region
    partition = Stack.of(scope).partition
    return (
        f"arn:{partition}:lambda:{region}:{POWERTOOLS_ACCOUNT}:layer:"
        f"AWSLambdaPowertoolsPythonV3-python313-x86_64:{version}"
    )


@dataclass(frozen=True)
class PipelineFunctionProps:
    handler: str
    description: str
    code: lambda_.Code
    key: kms.IKey
    environment: dict[str, str]
    timeout_seconds: int
    reserved_concurrency: int
    memory_mb: int
    ephemeral_storage_mb: int
    log_retention_days: int
    powertools_layer_version: int
    extra_layers: list[lambda_.ILayerVersion] = field(default_factory=list)


class PipelineFunction(Construct):
    """A Python Lambda with its own role, KMS-encrypted log group and dead-letter queue.

    The role starts with one grant: ``logs:CreateLogStream`` and ``logs:PutLogEvents`` on the
    function's own log group (its ARN ``...:log-group:<name>:*`` covers the group's streams), which
    Lambda needs to ship the function's output: "Your execution role needs the following
    permissions to upload logs to CloudWatch Logs" (AWS Lambda Developer Guide, "Sending Lambda
    function logs to CloudWatch Logs"). No ``logs:CreateLogGroup``: the stack creates the group
    (``logGroup``), so the function writes to the group the stack owns, with its retention and
    key, and nowhere else; no AWSLambdaBasicExecutionRole (``*``). Without it there are no handler
    logs and no embedded-metric-format metrics. Callers add what the function needs with
    ``grant_*``. The functions are invoked asynchronously (S3, SNS, EventBridge), so the DLQ
    catches events that failed every retry.
    """

    def __init__(self, scope: Construct, construct_id: str, *, props: PipelineFunctionProps) -> None:
        super().__init__(scope, construct_id)
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=props.description,
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=_RETENTION[props.log_retention_days],
            encryption_key=props.key,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.log_group.grant_write(self.role)
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=props.key,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        acknowledge(
            self,
            "AwsSolutions-L1",
            "Python 3.13 is the runtime the handlers and the AWS-managed Powertools v3 layer "
            "(python313 build) are pinned to and tested with; move both together.",
        )
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=lambda_.Architecture.X86_64,
            handler=props.handler,
            code=props.code,
            description=props.description,
            role=self.role,
            environment=props.environment,
            environment_encryption=props.key,
            timeout=Duration.seconds(props.timeout_seconds),
            memory_size=props.memory_mb,
            ephemeral_storage_size=Size.mebibytes(props.ephemeral_storage_mb),
            reserved_concurrent_executions=props.reserved_concurrency,
            dead_letter_queue=self.dead_letter_queue,
            log_group=self.log_group,
            layers=[
                lambda_.LayerVersion.from_layer_version_arn(
                    self, "Powertools", powertools_layer_arn(self, props.powertools_layer_version)
                ),
                *props.extra_layers,
            ],
            retry_attempts=2,
        )
        skip_checkov(
            self.function,
            "CKV_AWS_117",
            "No VPC: the function talks only to AWS APIs (S3, DynamoDB, SNS, SageMaker runtime) over "
            "TLS with IAM auth; a VPC would add NAT or five interface endpoints and no protection.",
        )


_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    120: logs.RetentionDays.FOUR_MONTHS,
    150: logs.RetentionDays.FIVE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    400: logs.RetentionDays.THIRTEEN_MONTHS,
    545: logs.RetentionDays.EIGHTEEN_MONTHS,
    731: logs.RetentionDays.TWO_YEARS,
    1096: logs.RetentionDays.THREE_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    2192: logs.RetentionDays.SIX_YEARS,
}


# "The total size of all environment variables doesn't exceed 4 KB" (AWS Lambda Developer Guide,
# Lambda quotas, "Function configuration, deployment, and execution").
ENVIRONMENT_BYTES = 4 * 1024


def training_mix_json(manifest: dict | None) -> str | None:
    """The artifact's ``training_mix`` as the compact ``TRAINING_MIX`` value (None without one)."""
    mix = (manifest or {}).get("training_mix")
    return json.dumps(mix, separators=(",", ":"), ensure_ascii=False) if mix else None


def check_environment_size(function: str, environment: dict[str, str]) -> None:
    """Lambda refuses a function whose variables exceed 4 KB: fail the synth, saying why."""
    size = sum(len(k.encode()) + len(v.encode()) for k, v in environment.items() if isinstance(v, str))
    if size > ENVIRONMENT_BYTES:
        raise ValueError(
            f"the {function} Lambda's environment is {size} bytes, over Lambda's 4 KB: the model artifact's "
            "training_mix has too many labels or too long names for TRAINING_MIX"
        )


@dataclass(frozen=True)
class ReviewProps:
    """The review queue (``review/<job>/review.jsonl`` + the review topic) and the drift numbers."""

    topic: sns.ITopic
    prefix: str
    out_of_scope_below: float
    drift_min_tickets: int
    training_mix_json: str | None  # the model artifact's training_mix (None: no CategoryDrift)

    def environment(self) -> dict[str, str]:
        env = {
            "REVIEW_TOPIC_ARN": self.topic.topic_arn,
            "REVIEW_PREFIX": self.prefix,
            "OUT_OF_SCOPE_BELOW": str(self.out_of_scope_below),
            "DRIFT_MIN_TICKETS": str(self.drift_min_tickets),
        }
        if self.training_mix_json:
            env["TRAINING_MIX"] = self.training_mix_json
        return env


@dataclass(frozen=True)
class TicketPipelineProps:
    code_directory: Path
    key: kms.IKey
    input_bucket: s3.Bucket
    output_bucket: s3.Bucket
    table: dynamodb.ITable
    endpoint: AsyncInferenceEndpoint
    success_topic: sns.ITopic
    error_topic: sns.ITopic
    results_topic: sns.ITopic
    input_prefix: str
    chunk_prefix: str
    results_prefix: str
    async_results_prefix: str
    async_failures_prefix: str
    chunk_size: int
    max_file_mb: int
    max_tickets_per_file: int
    ticket_fields_json: str
    request_ttl_seconds: int
    invocation_timeout_seconds: int
    job_deadline_margin_seconds: int
    dispatcher_timeout_seconds: int
    aggregator_timeout_seconds: int
    sweeper_timeout_seconds: int
    finalize_lease_seconds: int
    dispatcher_concurrency: int
    aggregator_concurrency: int
    dispatch_threads: int
    max_dispatch_runs: int
    sweep_interval_minutes: int
    memory_mb: int
    ephemeral_storage_mb: int
    metrics_namespace: str
    log_level: str
    log_retention_days: int
    powertools_layer_version: int
    review: ReviewProps | None = None  # the review queue and drift numbers (aggregator, sweeper)
    corrections_prefix: str = "corrections/"
    model_artifact: ModelArtifact | None = None  # the corrections' labels: None, no corrections function


# POWERTOOLS_SERVICE_NAME of each function: the ``service`` dimension of its metrics.
DISPATCHER_SERVICE = "ticket-dispatcher"
AGGREGATOR_SERVICE = "ticket-aggregator"
SWEEPER_SERVICE = "ticket-sweeper"
CORRECTIONS_SERVICE = "ticket-corrections"


class TicketPipeline(Construct):
    """Dispatcher (``incoming/`` object created -> chunks -> async invocations), aggregator
    (endpoint success/error notifications -> consolidated ``results/`` -> results topic) and
    sweeper (every ``sweepIntervalMinutes``: jobs past their deadline are finalized ``partial``)."""

    def __init__(self, scope: Construct, construct_id: str, *, props: TicketPipelineProps) -> None:
        super().__init__(scope, construct_id)
        code = lambda_.Code.from_asset(
            str(props.code_directory), follow_symlinks=SymlinkFollowMode.ALWAYS, exclude=LAMBDA_CODE_EXCLUDE
        )
        shared_env = {
            "JOBS_TABLE": props.table.table_name,
            "OUTPUT_BUCKET": props.output_bucket.bucket_name,
            "RESULTS_PREFIX": props.results_prefix,
            "RESULTS_TOPIC_ARN": props.results_topic.topic_arn,
            "FINALIZE_LEASE_SECONDS": str(props.finalize_lease_seconds),
            "POWERTOOLS_METRICS_NAMESPACE": props.metrics_namespace,
            "LOG_LEVEL": props.log_level,
        }

        def function(construct_id: str, handler: str, description: str, env: dict[str, str], timeout: int,
                     concurrency: int, service: str) -> PipelineFunction:  # fmt: skip
            environment = {
                **shared_env,
                **env,
                "FUNCTION_TIMEOUT_SECONDS": str(timeout),
                "POWERTOOLS_SERVICE_NAME": service,
            }
            check_environment_size(construct_id, environment)
            return PipelineFunction(
                self,
                construct_id,
                props=PipelineFunctionProps(
                    handler=handler,
                    description=description,
                    code=code,
                    key=props.key,
                    environment=environment,
                    timeout_seconds=timeout,
                    reserved_concurrency=concurrency,
                    memory_mb=props.memory_mb,
                    ephemeral_storage_mb=props.ephemeral_storage_mb,
                    log_retention_days=props.log_retention_days,
                    powertools_layer_version=props.powertools_layer_version,
                ),
            )

        # every function that finalizes jobs queues their flagged tickets: the aggregator, the
        # sweeper, and the dispatcher when every chunk reported before it finished dispatching
        review_env = props.review.environment() if props.review else {}
        self.dispatcher = function(
            "Dispatcher",
            "ticket_pipeline.dispatcher.handler",
            "Ticket triage: split an incoming ticket file into chunks and invoke the async endpoint",
            {
                "ENDPOINT_NAME": props.endpoint.endpoint_name,
                "CHUNK_PREFIX": props.chunk_prefix,
                "CHUNK_SIZE": str(props.chunk_size),
                "MAX_FILE_MB": str(props.max_file_mb),
                "MAX_TICKETS_PER_FILE": str(props.max_tickets_per_file),
                "TICKET_FIELDS": props.ticket_fields_json,
                "REQUEST_TTL_SECONDS": str(props.request_ttl_seconds),
                "INVOCATION_TIMEOUT_SECONDS": str(props.invocation_timeout_seconds),
                "JOB_DEADLINE_MARGIN_SECONDS": str(props.job_deadline_margin_seconds),
                "DISPATCH_THREADS": str(props.dispatch_threads),
                "MAX_DISPATCH_RUNS": str(props.max_dispatch_runs),
                **review_env,
            },
            props.dispatcher_timeout_seconds,
            props.dispatcher_concurrency,
            DISPATCHER_SERVICE,
        )
        self.aggregator = function(
            "Aggregator",
            "ticket_pipeline.aggregator.handler",
            "Ticket triage: collect async results of a file into consolidated results",
            review_env,
            props.aggregator_timeout_seconds,
            props.aggregator_concurrency,
            AGGREGATOR_SERVICE,
        )
        self.sweeper = function(
            "Sweeper",
            "ticket_pipeline.sweeper.handler",
            "Ticket triage: finalize jobs past their deadline as partial (notifications that never came)",
            review_env,
            props.sweeper_timeout_seconds,
            1,  # one sweep at a time (the finalization lease makes a second one harmless anyway)
            SWEEPER_SERVICE,
        )
        self.functions = {
            "Dispatcher": self.dispatcher,
            "Aggregator": self.aggregator,
            "Sweeper": self.sweeper,
        }
        self.corrections: PipelineFunction | None = None
        if props.model_artifact is not None:
            self.corrections = self._corrections(props, props.model_artifact, function)
            self.functions["Corrections"] = self.corrections

        # --- dispatcher: read incoming/, write chunks/, invoke this endpoint, job rows.
        # It finalizes a job itself when nothing reached the endpoint (every record or every
        # submission rejected), so it reads and writes results/ and reads the raw async outputs.
        dispatcher = self.dispatcher.function
        # the S3 event names the version: GetObject/HeadObject with VersionId is s3:GetObjectVersion
        _grant_objects(dispatcher, ["s3:GetObjectVersion"], props.input_bucket, props.input_prefix)
        _grant_objects(dispatcher, ["s3:PutObject"], props.input_bucket, props.chunk_prefix)
        _grant_table(dispatcher, props, "dynamodb:PutItem")  # creates the job and its chunks
        props.endpoint.grant_invoke_async(dispatcher)
        self._grant_finalize(self.dispatcher, props)
        props.input_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(dispatcher),
            s3.NotificationKeyFilter(prefix=props.input_prefix),
        )
        # A file that needs more than one run continues in the next: the dispatcher invokes itself
        # asynchronously with its position. A policy of its own (not the role's default policy, on
        # which the function depends) so the template has no dependency cycle.
        self.dispatcher_self_invoke = iam.Policy(
            self,
            "DispatcherSelfInvoke",
            statements=[
                iam.PolicyStatement(actions=["lambda:InvokeFunction"], resources=[dispatcher.function_arn])
            ],
            roles=[self.dispatcher.role],
        )

        # --- aggregator: read raw async outputs, read results/ (the dispatcher's rejected
        # records) and write the consolidated files there, job rows, notify.
        aggregator = self.aggregator.function
        self._grant_finalize(self.aggregator, props)
        props.success_topic.add_subscription(subscriptions.LambdaSubscription(aggregator))
        props.error_topic.add_subscription(subscriptions.LambdaSubscription(aggregator))

        # --- sweeper: the same rights as the aggregator (it finalizes), on a schedule; it reads the
        # ticket files too: a job whose dispatch never finished gets its file read again, so the
        # records no dispatcher run sent are accounted for in its failures.
        self._grant_finalize(self.sweeper, props)
        _grant_objects(self.sweeper.function, ["s3:GetObjectVersion"], props.input_bucket, props.input_prefix)
        if props.review is not None:
            for fn in (self.dispatcher, self.aggregator, self.sweeper):
                self._grant_review(fn, props, props.review)
        # the overdue jobs: a query of the sparse open-jobs index
        iam.Grant.add_to_principal(
            grantee=self.sweeper.function,
            actions=["dynamodb:Query"],
            resource_arns=[f"{props.table.table_arn}/index/{OPEN_JOBS_INDEX}"],
        )
        self.sweep_schedule = events.Rule(
            self,
            "SweepSchedule",
            description="Ticket triage: look for jobs past their deadline",
            schedule=events.Schedule.rate(Duration.minutes(props.sweep_interval_minutes)),
            targets=[targets.LambdaFunction(self.sweeper.function)],
        )

        self._acknowledge(props)

    def _corrections(
        self, props: TicketPipelineProps, model: ModelArtifact, function: Any
    ) -> PipelineFunction:
        """Reviewers' correction files (``correctionsPrefix`` of the input bucket) -> one recorded
        correction per ticket and the accuracy counters (ticket_pipeline.corrections). Its own S3
        notification, on its own prefix: the dispatcher's (``inputPrefix``) never sees these files."""
        fn = function(
            "Corrections",
            "ticket_pipeline.corrector.handler",
            "Ticket triage: record reviewers' corrections and the model's accuracy on reviewed tickets",
            {
                "INPUT_PREFIX": props.input_prefix,
                "CORRECTIONS_PREFIX": props.corrections_prefix,
                "CORRECTIONS_OUTPUT_PREFIX": props.corrections_prefix,
                # the model archive the endpoint serves: its triage_artifact.json names the labels
                "LABELS_LOCATION": model.s3_url,
                "TICKET_FIELDS": props.ticket_fields_json,
            },
            props.aggregator_timeout_seconds,
            1,  # corrections are few; one at a time keeps the ticket transactions uncontended
            CORRECTIONS_SERVICE,
        )
        handler = fn.function
        # the event names the correction file's version; the source is read at its current version
        # (HeadObject: s3:GetObject) and its tickets' texts at the version the results came from
        _grant_objects(handler, ["s3:GetObjectVersion"], props.input_bucket, props.corrections_prefix)
        _grant_objects(
            handler, ["s3:GetObject", "s3:GetObjectVersion"], props.input_bucket, props.input_prefix
        )
        _grant_objects(handler, ["s3:GetObject"], props.output_bucket, props.results_prefix)
        _grant_objects(handler, ["s3:PutObject"], props.output_bucket, props.corrections_prefix)
        _grant_table(handler, props, "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem")
        model.grant_read(handler)
        props.input_bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(handler),
            s3.NotificationKeyFilter(prefix=props.corrections_prefix),
        )
        return fn

    @staticmethod
    def _grant_finalize(fn: PipelineFunction, props: TicketPipelineProps) -> None:
        """What finalizing a job takes: job rows, the raw async outputs, results/ read and write,
        the results topic. Exactly the actions the local runs record (tests/iam_replay.py)."""
        _grant_table(fn.function, props, "dynamodb:GetItem", "dynamodb:Query", "dynamodb:UpdateItem")
        output = props.output_bucket
        for prefix in (props.async_results_prefix, props.async_failures_prefix, props.results_prefix):
            _grant_objects(fn.function, ["s3:GetObject"], output, prefix)
        _grant_objects(fn.function, ["s3:PutObject"], output, props.results_prefix)
        props.results_topic.grant_publish(fn.function)

    @staticmethod
    def _grant_review(fn: PipelineFunction, props: TicketPipelineProps, review: ReviewProps) -> None:
        """The review queue of a finalized job: its tickets' texts from their chunks, review/ written,
        the review topic: every function that finalizes (the dispatcher too: a fast endpoint may
        report every chunk before the dispatcher finishes, and the dispatcher then finalizes)."""
        _grant_objects(fn.function, ["s3:GetObject"], props.input_bucket, props.chunk_prefix)
        _grant_objects(fn.function, ["s3:PutObject"], props.output_bucket, review.prefix)
        review.topic.grant_publish(fn.function)

    def _acknowledge(self, props: TicketPipelineProps) -> None:
        input_bucket = props.input_bucket.node.default_child
        output_bucket = props.output_bucket.node.default_child
        common = {
            "Action::kms:GenerateDataKey*": (
                "grant_publish on the KMS-encrypted results topic: the stack key only, as SNS documents it."
            ),
            arn_finding(output_bucket, f"/{props.results_prefix}*"): (
                "Consolidated results and rejected records live under the results prefix, one folder "
                "per input file."
            ),
            arn_finding(output_bucket, f"/{props.async_results_prefix}*"): (
                "Reads the endpoint's raw results, only under the async-results prefix."
            ),
            arn_finding(output_bucket, f"/{props.async_failures_prefix}*"): (
                "Reads the endpoint's failure reports, only under the failures prefix."
            ),
        }
        dispatcher = {
            **common,
            arn_finding(input_bucket, f"/{props.input_prefix}*"): (
                "The dispatcher reads any uploaded ticket file, and only under the input prefix."
            ),
            arn_finding(input_bucket, f"/{props.chunk_prefix}*"): (
                "The dispatcher writes the chunk objects it creates, only under the chunk prefix."
            ),
        }
        sweeper = {
            **common,
            arn_finding(input_bucket, f"/{props.input_prefix}*"): (
                "The sweeper reads the ticket file of a job whose dispatch never finished, to account for "
                "the records no dispatcher run sent; only under the input prefix."
            ),
        }
        review = {}
        if props.review is not None:
            review = {
                arn_finding(output_bucket, f"/{props.review.prefix}*"): (
                    "The review queue of each file lives under the review prefix, one folder per input file."
                ),
                arn_finding(input_bucket, f"/{props.chunk_prefix}*"): (
                    "Reads the chunks the dispatcher wrote (the flagged tickets' texts), only under the "
                    "chunk prefix."
                ),
            }
        targets = [
            (self.dispatcher, {**dispatcher, **review}),
            (self.aggregator, {**common, **review}),
            (self.sweeper, {**sweeper, **review}),
        ]
        if self.corrections is not None:
            targets.append((self.corrections, self._corrections_findings(props)))
        for fn, findings in targets:
            policy = fn.role.node.find_child("DefaultPolicy").node.default_child
            for finding, reason in findings.items():
                acknowledge(policy, f"AwsSolutions-IAM5[{finding}]", reason)

    @staticmethod
    def _corrections_findings(props: TicketPipelineProps) -> dict[str, str]:
        input_bucket = props.input_bucket.node.default_child
        output_bucket = props.output_bucket.node.default_child
        return {
            arn_finding(input_bucket, f"/{props.corrections_prefix}*"): (
                "Reads any correction file reviewers drop, only under the corrections prefix."
            ),
            arn_finding(input_bucket, f"/{props.input_prefix}*"): (
                "Reads the ticket file a correction names (its version, its tickets' texts), only under "
                "the input prefix."
            ),
            arn_finding(output_bucket, f"/{props.results_prefix}*"): (
                "Reads the results a correction corrects (results.jsonl of the source's job), only under "
                "the results prefix."
            ),
            arn_finding(output_bucket, f"/{props.corrections_prefix}*"): (
                "Writes each correction file's report and rejections, only under the corrections prefix."
            ),
        }
