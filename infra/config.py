"""The app's settings: one typed, validated object built from the CDK context.

Every setting is a top-level context key prefixed ``triage:`` (so ``cdk synth -c
triage:maxCapacity=4`` works: values given on the command line arrive as strings and are
coerced here). Defaults live both in ``cdk.json`` (what ``make synth`` and ``cdk deploy`` use)
and on the fields below (what a bare ``App()`` in a test gets); a test keeps them equal.

Nothing here talks to AWS: no account ids, no regions, no lookups.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from functools import cache
from typing import Any, Literal

import botocore.loaders
import botocore.model
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from triage_core.records import FieldMap

CONTEXT_PREFIX = "triage:"

# SageMaker's async limits (InvokeEndpointAsync): request TTL 60..21600 s, invocation timeout
# 1..3600 s, payload up to 1 GB. The container is told the same limits.
MAX_INVOCATION_TIMEOUT_SECONDS = 3600
MAX_REQUEST_TTL_SECONDS = 21600
MAX_ASYNC_PAYLOAD_MB = 1024

# CreateEndpoint's EndpointName: "Length Constraints: Maximum length of 63" (SageMaker API Reference).
MAX_ENDPOINT_NAME_LENGTH = 63
# The share of the variant's instance count one traffic step may turn on (SageMaker API Reference:
# TrafficRoutingConfig.CanarySize "must be less than or equal to 50% of the variant's total instance
# count", LinearStepSize "must be 10-50% of the variant's total instance count";
# RollingUpdatePolicy.MaximumBatchSize "must be between 5% to 50% of the variant's total instance
# count"). tests/infra/test_rollout.py reads the same sentences from botocore's service model.
STEP_SHARE_BOUNDS: dict[str, tuple[int, int]] = {"CANARY": (0, 50), "LINEAR": (10, 50), "ROLLING": (5, 50)}

# Lambda stops a chain of invocations caused by one event after 16 (recursive loop detection):
# a file's dispatch runs stay below that, whichever services the chain goes through.
MAX_DISPATCH_RUNS = 15
# The finalization lease outlives the longest Lambda that may finalize a job by this much.
LEASE_MARGIN_SECONDS = 60

_PREFIX_RE = re.compile(r"^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*/$")
_STACK_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")


class ConfigError(ValueError):
    """The CDK context holds a missing, unknown or invalid ``triage:*`` value."""


class TriageConfig(BaseModel):
    """Settings of the ticket-triage stack. Field aliases are the context keys (without prefix)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True, str_strip_whitespace=True)

    stack_name: str = Field(
        "TicketTriage", alias="stackName", description="also the pipeline's metric namespace"
    )

    # --- model and endpoint
    model_artifact: str = Field(
        "artifacts/model.tar.gz",
        alias="modelArtifact",
        description="local path of model.tar.gz (relative to the repo root) or an s3:// URI",
    )
    instance_type: str = Field("ml.c6i.large", alias="instanceType")
    model_server_workers: int = Field(1, alias="modelServerWorkers", ge=1, le=64)
    threads_per_worker: int = Field(2, alias="threadsPerWorker", ge=1, le=64)
    max_concurrent_invocations_per_instance: int = Field(
        2, alias="maxConcurrentInvocationsPerInstance", ge=1, le=1000
    )
    review_threshold: float | None = Field(
        None,
        alias="reviewThreshold",
        ge=0.0,
        le=1.0,
        description="needs_review below this top score; null (default): the value the model artifact "
        "carries, chosen on the validation split when it was trained (0.5 for an artifact without one)",
    )
    invocation_timeout_seconds: int = Field(
        3600, alias="invocationTimeoutSeconds", ge=1, le=MAX_INVOCATION_TIMEOUT_SECONDS
    )
    request_ttl_seconds: int = Field(MAX_REQUEST_TTL_SECONDS, alias="requestTtlSeconds", ge=60, le=21600)

    # --- autoscaling
    autoscaling: bool = Field(
        True,
        alias="autoscaling",
        description="false removes the scalable target (needed once to change instanceType when live)",
    )
    min_capacity: int = Field(0, alias="minCapacity", ge=0, le=100)
    max_capacity: int = Field(2, alias="maxCapacity", ge=1, le=100)
    backlog_target_per_instance: float = Field(5.0, alias="backlogTargetPerInstance", gt=0)
    scale_in_cooldown_seconds: int = Field(600, alias="scaleInCooldownSeconds", ge=0, le=3600)
    scale_out_cooldown_seconds: int = Field(300, alias="scaleOutCooldownSeconds", ge=0, le=3600)

    # --- guarded roll-outs: deployment guardrails on every endpoint update (docs/deploy-and-operate.md)
    rollout_mode: Literal["ALL_AT_ONCE", "CANARY", "LINEAR", "ROLLING"] = Field(
        "CANARY",
        alias="rolloutMode",
        description="how an endpoint update shifts traffic: blue/green ALL_AT_ONCE, CANARY or LINEAR, "
        "or ROLLING (batches, fewer extra instances)",
    )
    rollout_instance_count: int = Field(
        2,
        alias="rolloutInstanceCount",
        ge=1,
        le=100,
        description="instances the new fleet starts with (the variant's InitialInstanceCount); CANARY "
        "needs 2 or more (a canary is at most half the fleet); autoscaling takes over afterwards",
    )
    rollout_step_instances: int = Field(
        1,
        alias="rolloutStepInstances",
        ge=1,
        le=100,
        description="CANARY: the canary's size; LINEAR: instances turned on per step; ROLLING: batch size",
    )
    rollout_wait_seconds: int = Field(
        600,
        alias="rolloutWaitSeconds",
        ge=0,
        le=3600,
        description="baking period after each traffic step, during which the roll-back alarms watch",
    )
    rollout_termination_wait_seconds: int = Field(
        600,
        alias="rolloutTerminationWaitSeconds",
        ge=0,
        le=3600,
        description="blue/green: how long the old fleet is kept after all traffic moved (final baking)",
    )
    rollout_timeout_seconds: int = Field(
        3600,
        alias="rolloutTimeoutSeconds",
        ge=600,
        le=28800,
        description="the whole deployment's limit (MaximumExecutionTimeoutInSeconds)",
    )
    rollout_alarms: tuple[str, ...] = Field(
        ("InvocationFailures", "Invocation5xx", "ModelLatency"),
        alias="rolloutAlarms",
        description="the alarms that roll an update back (infra/rollout.py ROLLBACK_ALARMS); [] turns "
        "automatic roll-back off",
    )
    rollout_max_model_latency_seconds: float = Field(
        120.0,
        alias="rolloutMaxModelLatencySeconds",
        gt=0,
        le=3600,
        description="the ModelLatency alarm's threshold (average per invocation, one chunk) on the new fleet",
    )

    # --- pipeline (S3 layout and Lambdas)
    input_prefix: str = Field("incoming/", alias="inputPrefix")
    chunk_prefix: str = Field("chunks/", alias="chunkPrefix")
    results_prefix: str = Field("results/", alias="resultsPrefix")
    async_results_prefix: str = Field("async-results/", alias="asyncResultsPrefix")
    async_failures_prefix: str = Field("async-failures/", alias="asyncFailuresPrefix")
    corrections_prefix: str = Field(
        "corrections/",
        alias="correctionsPrefix",
        description="reviewers drop corrections here in the input bucket; each file's report and "
        "rejections go under the same prefix in the output bucket",
    )
    reviewed_accuracy_alarm: float | None = Field(
        0.8,
        alias="reviewedAccuracyAlarm",
        gt=0,
        le=1,
        description="alarm when the model's accuracy on the tickets reviewers corrected in a day falls "
        "below this (null: no alarm)",
    )
    chunk_size: int = Field(500, alias="chunkSize", ge=1, le=100_000)
    max_file_mb: int = Field(1024, alias="maxFileMb", ge=1, le=10 * 1024)
    max_tickets_per_file: int = Field(
        2_000_000,
        alias="maxTicketsPerFile",
        ge=1,
        le=100_000_000,
        description="records read from one file at most: a job is finalized in one invocation",
    )
    dispatcher_timeout_seconds: int = Field(300, alias="dispatcherTimeoutSeconds", ge=10, le=900)
    aggregator_timeout_seconds: int = Field(
        900,
        alias="aggregatorTimeoutSeconds",
        ge=10,
        le=900,
        description="also the sweeper's: finalizing a big job runs in one invocation (billed by duration)",
    )
    dispatcher_concurrency: int = Field(5, alias="dispatcherConcurrency", ge=1, le=1000)
    aggregator_concurrency: int = Field(5, alias="aggregatorConcurrency", ge=1, le=1000)
    dispatch_threads: int = Field(
        8,
        alias="dispatchThreads",
        ge=1,
        le=32,
        description="chunks the dispatcher writes and invokes at once",
    )
    max_dispatch_runs: int = Field(
        12,
        alias="maxDispatchRuns",
        ge=1,
        le=MAX_DISPATCH_RUNS,
        description="dispatcher runs (each up to dispatcherTimeoutSeconds) one file may take",
    )
    lambda_memory_mb: int = Field(1024, alias="lambdaMemoryMb", ge=128, le=10240)
    lambda_ephemeral_storage_mb: int = Field(
        2048,
        alias="lambdaEphemeralStorageMb",
        ge=512,
        le=10240,
        description="/tmp of the Lambdas: a file's ticket-key index (~25 bytes per ticket), result spools",
    )
    ticket_fields: dict[str, Any] = Field(
        default_factory=lambda: FieldMap().spec(),
        alias="ticketFields",
        description="which field of a ticket file holds the id and which fields (joined) the text, e.g. "
        '{"id": "ticket_id", "text": ["subject", "description"]}; a file\'s S3 metadata '
        "(id-field, text-fields) overrides it",
    )
    powertools_layer_version: int = Field(27, alias="powertoolsLayerVersion", ge=1)
    log_level: str = Field("INFO", alias="logLevel", pattern=r"^(DEBUG|INFO|WARNING|ERROR)$")
    log_retention_days: int = Field(30, alias="logRetentionDays")

    # --- data lifecycle and operations
    raw_results_expiration_days: int = Field(30, alias="rawResultsExpirationDays", ge=1, le=3650)
    chunk_expiration_days: int = Field(7, alias="chunkExpirationDays", ge=1, le=3650)
    oldest_request_alarm_seconds: int = Field(1800, alias="oldestRequestAlarmSeconds", ge=60)
    job_deadline_margin_seconds: int = Field(
        1800,
        alias="jobDeadlineMarginSeconds",
        ge=0,
        le=7 * 86400,
        description="added to requestTtlSeconds + invocationTimeoutSeconds to give each job its deadline",
    )
    sweep_interval_minutes: int = Field(
        5,
        alias="sweepIntervalMinutes",
        ge=1,
        le=1440,
        description="how often the sweeper looks for overdue jobs",
    )
    alarm_email: str = Field("", alias="alarmEmail", pattern=r"^$|^[^@\s]+@[^@\s]+\.[^@\s]+$")

    # --- review queue and drift (lambda/ticket_pipeline/review.py, docs/pipeline.md)
    review_prefix: str = Field("review/", alias="reviewPrefix", description="review/<job>/review.jsonl")
    out_of_scope_below: float = Field(
        0.2,
        alias="outOfScopeBelow",
        ge=0.0,
        lt=1.0,
        description="a classified ticket whose top score is below this fits no category (0: never); "
        "measured with `python -m benchmarks.out_of_scope`",
    )
    review_share_alarm: float = Field(
        0.35, alias="reviewShareAlarm", gt=0.0, le=1.0, description="alarm: hourly share of tickets to review"
    )
    out_of_scope_share_alarm: float = Field(
        0.1, alias="outOfScopeShareAlarm", gt=0.0, le=1.0, description="alarm: hourly share out of scope"
    )
    drift_alarm: float = Field(
        0.25,
        alias="driftAlarm",
        gt=0.0,
        le=1.0,
        description="alarm: hourly mean Jensen-Shannon distance (base 2) of the files' category mix from "
        "the training mix",
    )
    drift_min_tickets: int = Field(
        500, alias="driftMinTickets", ge=1, le=10_000_000, description="smallest file whose mix is compared"
    )

    @field_validator("stack_name")
    @classmethod
    def _stack_name(cls, value: str) -> str:
        if not _STACK_NAME_RE.match(value):
            raise ValueError("must start with a letter and hold only letters, digits and '-' (max 128)")
        return value

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        known = endpoint_instance_types()
        if value not in known:
            close = difflib.get_close_matches(value, sorted(known), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else " such as 'ml.c6i.large'"
            raise ValueError(
                "must be a SageMaker endpoint instance type (ProductionVariantInstanceType in the SDK's "
                f"service model){hint}"
            )
        return value

    @field_validator(
        "input_prefix",
        "chunk_prefix",
        "results_prefix",
        "async_results_prefix",
        "async_failures_prefix",
        "review_prefix",
        "corrections_prefix",
    )
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _PREFIX_RE.match(value):
            raise ValueError("must be an S3 key prefix like 'incoming/' (no leading '/', ends with '/')")
        return value

    @field_validator("model_artifact")
    @classmethod
    def _model_artifact(cls, value: str) -> str:
        if not value:
            raise ValueError("must be a local path to model.tar.gz or an s3:// URI")
        if value.startswith("s3://"):
            bucket, _, key = value[len("s3://") :].partition("/")
            if not bucket or not key or key.endswith("/"):
                raise ValueError("an S3 URI must name an object: s3://<bucket>/<key>/model.tar.gz")
        elif "://" in value:
            raise ValueError("only local paths and s3:// URIs are supported")
        elif not value.endswith(".tar.gz"):
            raise ValueError("the local model artifact must be a model.tar.gz file")
        return value

    @field_validator("rollout_alarms", mode="before")
    @classmethod
    def _rollout_alarm_list(cls, value: Any) -> Any:
        """A -c value arrives as a string: a JSON list or comma-separated names ("" = none)."""
        if isinstance(value, str):
            text = value.strip()
            return (
                json.loads(text)
                if text.startswith("[")
                else [n.strip() for n in text.split(",") if n.strip()]
            )
        return value

    @field_validator("rollout_alarms")
    @classmethod
    def _rollout_alarms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from infra.rollout import ROLLBACK_ALARMS

        unknown = [name for name in value if name not in ROLLBACK_ALARMS]
        if unknown:
            raise ValueError(f"unknown roll-back alarm(s) {unknown}; known: {list(ROLLBACK_ALARMS)}")
        if len(set(value)) != len(value):
            raise ValueError("names an alarm twice")
        return value

    @field_validator("ticket_fields", mode="before")
    @classmethod
    def _ticket_fields(cls, value: Any) -> dict[str, Any]:
        return FieldMap.from_spec(value).spec()  # a -c value arrives as a JSON string

    @field_validator("log_retention_days")
    @classmethod
    def _retention(cls, value: int) -> int:
        allowed = {1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192}
        if value not in allowed:
            raise ValueError(f"must be one of CloudWatch Logs' retention periods {sorted(allowed)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TriageConfig:
        if self.min_capacity > self.max_capacity:
            raise ValueError(f"minCapacity ({self.min_capacity}) exceeds maxCapacity ({self.max_capacity})")
        input_prefixes = {
            "inputPrefix": self.input_prefix,
            "chunkPrefix": self.chunk_prefix,
            "correctionsPrefix": self.corrections_prefix,
        }
        output_prefixes = {
            "correctionsPrefix": self.corrections_prefix,
            "resultsPrefix": self.results_prefix,
            "asyncResultsPrefix": self.async_results_prefix,
            "asyncFailuresPrefix": self.async_failures_prefix,
            "reviewPrefix": self.review_prefix,
        }
        for group in (input_prefixes, output_prefixes):
            names = sorted(group)
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    if group[a].startswith(group[b]) or group[b].startswith(group[a]):
                        raise ValueError(
                            f"{a} ({group[a]!r}) and {b} ({group[b]!r}) overlap: "
                            "each kind of object needs its own prefix"
                        )
        if self.request_ttl_seconds < self.invocation_timeout_seconds:
            raise ValueError("requestTtlSeconds must be at least invocationTimeoutSeconds")
        if len(self.stack_name) > MAX_ENDPOINT_NAME_LENGTH:
            raise ValueError(
                f"stackName ({self.stack_name!r}) also names the endpoint: at most "
                f"{MAX_ENDPOINT_NAME_LENGTH} characters (CreateEndpoint, EndpointName)"
            )
        self._check_rollout()
        return self

    def _check_rollout(self) -> None:
        """The limits AWS documents for a deployment (SageMaker API Reference: TrafficRoutingConfig,
        RollingUpdatePolicy, BlueGreenUpdatePolicy), checked here so ``cdk synth`` fails instead of the
        endpoint update an hour into ``cdk deploy``."""
        count, step = self.rollout_instance_count, self.rollout_step_instances
        if self.autoscaling and not self.min_capacity <= count <= self.max_capacity:
            raise ValueError(
                f"rolloutInstanceCount ({count}) must lie within minCapacity..maxCapacity "
                f"({self.min_capacity}..{self.max_capacity}): autoscaling would resize the new fleet at once"
            )
        bounds = STEP_SHARE_BOUNDS.get(self.rollout_mode)
        if bounds is not None:
            low, high = bounds
            share = 100 * step / count
            if not low <= share <= high:
                raise ValueError(
                    f"rolloutStepInstances ({step}) is {share:.0f}% of rolloutInstanceCount ({count}); a "
                    f"{self.rollout_mode} step must be {low}-{high}% of the variant's instance count"
                    + (": a canary needs a fleet of 2 or more" if self.rollout_mode == "CANARY" else "")
                )
        if self.rollout_timeout_seconds <= self.rollout_total_wait_seconds:
            raise ValueError(
                f"rolloutTimeoutSeconds ({self.rollout_timeout_seconds}) must exceed the deployment's waits "
                f"({self.rollout_total_wait_seconds} s: baking periods and the final wait)"
            )

    @property
    def rollout_steps(self) -> int:
        """Traffic steps of one deployment (each followed by a baking period)."""
        if self.rollout_mode in ("LINEAR", "ROLLING"):
            return -(-self.rollout_instance_count // self.rollout_step_instances)
        return 2 if self.rollout_mode == "CANARY" else 1

    @property
    def rollout_total_wait_seconds(self) -> int:
        """What MaximumExecutionTimeoutInSeconds must exceed: "the total waiting time specified in
        TerminationWaitInSeconds and WaitIntervalInSeconds" (API Reference, BlueGreenUpdatePolicy),
        counted generously: one baking period per traffic step, then the final wait (blue/green)."""
        final = 0 if self.rollout_mode == "ROLLING" else self.rollout_termination_wait_seconds
        return self.rollout_steps * self.rollout_wait_seconds + final

    @property
    def ticket_fields_json(self) -> str:
        """The field map as the dispatcher's ``TICKET_FIELDS`` environment variable."""
        return json.dumps(self.ticket_fields, separators=(",", ":"))

    @property
    def model_artifact_is_s3(self) -> bool:
        return self.model_artifact.startswith("s3://")

    @property
    def sweeper_timeout_seconds(self) -> int:
        """The sweeper finalizes jobs like the aggregator does: the same time limit."""
        return self.aggregator_timeout_seconds

    @property
    def finalize_lease_seconds(self) -> int:
        """How long a finalizer owns a job: longer than any Lambda that finalizes can run (dispatcher,
        aggregator, sweeper), so a live finalizer never loses its lease to a second one."""
        longest = max(
            self.dispatcher_timeout_seconds, self.aggregator_timeout_seconds, self.sweeper_timeout_seconds
        )
        return longest + LEASE_MARGIN_SECONDS

    @property
    def job_deadline_seconds(self) -> int:
        """A job is overdue this long after its last InvokeEndpointAsync: the request may wait
        ``requestTtlSeconds`` in the queue, then run ``invocationTimeoutSeconds``, then notify."""
        return self.request_ttl_seconds + self.invocation_timeout_seconds + self.job_deadline_margin_seconds

    @property
    def endpoint_name(self) -> str:
        """The endpoint's fixed name (its roll-back alarms watch it): the stack's name, unique per
        account and Region like the stack."""
        return self.stack_name

    @property
    def metrics_namespace(self) -> str:
        return self.stack_name

    @property
    def instance_architecture(self) -> str:
        """The CPU architecture of ``instanceType`` (the serving image is built for it)."""
        return instance_architecture(self.instance_type)

    @property
    def instance_has_local_nvme_storage(self) -> bool:
        return has_local_nvme_storage(self.instance_type)

    @classmethod
    def context_keys(cls) -> list[str]:
        """Every supported context key, with its ``triage:`` prefix."""
        return [CONTEXT_PREFIX + (f.alias or name) for name, f in cls.model_fields.items()]

    @field_validator("review_threshold", mode="before")
    @classmethod
    def _threshold_unset(cls, value: Any) -> Any:
        """``-c triage:reviewThreshold=artifact`` (or an empty string) on the command line = unset."""
        if isinstance(value, str) and value.strip().lower() in ("", "artifact", "null"):
            return None
        return value

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> TriageConfig:
        """Build from CDK context: reads the ``triage:*`` keys, ignores every other key.

        Raises ``ConfigError`` naming each bad key, its value and the reason.
        """
        values = {k[len(CONTEXT_PREFIX) :]: v for k, v in context.items() if k.startswith(CONTEXT_PREFIX)}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, values)) from None


@cache
def endpoint_instance_types() -> frozenset[str]:
    """Instance types ``CreateEndpointConfig`` accepts: the ``ProductionVariantInstanceType`` enum of
    the SageMaker service model shipped with botocore (local data, no network). Read with botocore's
    loader, not a session: a session reads the AWS config and fails on a missing profile, and
    synthesizing must not depend on the machine's AWS configuration."""
    loader = botocore.loaders.create_loader()
    model = botocore.model.ServiceModel(loader.load_service_model("sagemaker", "service-2"))
    return frozenset(model.shape_for("ProductionVariantInstanceType").enum)


# Families whose instances carry local NVMe instance-store volumes without a "d" in their name
# (EC2 instance types guide, instance store specifications). A "d" attribute in the family name
# (m5d, c5d, r6gd, g4dn, p4d, ...) always means instance store.
_NVME_FAMILIES = frozenset(
    {"dl1", "g5", "g6", "g6e", "g7", "g7e", "p5", "p5e", "p5en", "p6-b200", "p6-b300", "p6e-gb200"}
    | {"trn1", "trn1n", "trn2"}
)
_D_ATTRIBUTE = re.compile(r"^[a-z]+\d+[a-z-]*d[a-z]*$")


def has_local_nvme_storage(instance_type: str) -> bool:
    """True for instance types with local NVMe storage, for which ``CreateEndpointConfig`` refuses a
    ``KmsKeyId``: "You can't request a KmsKeyId when using an instance type with local storage"
    (SageMaker API Reference, CreateEndpointConfig, KmsKeyId). Their volumes are encrypted by a
    hardware module on the instance instead."""
    family = instance_type.split(".")[1] if instance_type.count(".") == 2 else instance_type
    return family in _NVME_FAMILIES or bool(_D_ATTRIBUTE.match(family.split("-")[0]))


# The processor letter right after the generation digit says the CPU: "g" is AWS Graviton (arm64),
# as in every family aws/aws-graviton-getting-started lists: C6g[d], M6g[d], R6g[d], T4g, X2gd,
# C6gn, I4g, Im4gn, Is4gen, G5g, C7g[d][n], M7g[d], R7g[d], R8g (and the EC2 guide's "Amazon EC2
# instance type naming conventions": "g - AWS Graviton processors"). Every other family is x86_64.
_GRAVITON = re.compile(r"^[a-z]+\d+g")
# Arm families without the g: NVIDIA GB200 (Grace CPUs, arm64) of P6e-GB200 UltraServers.
_OTHER_ARM_FAMILIES = frozenset({"p6e-gb200"})
ARM64, X86_64 = "arm64", "x86_64"


def instance_architecture(instance_type: str) -> str:
    """``arm64`` for a Graviton instance type (``ml.c7g.large``), else ``x86_64``: the platform the
    serving image must be built for, or the endpoint fails to start its container."""
    family = instance_type.split(".")[1] if instance_type.count(".") == 2 else instance_type
    return ARM64 if _GRAVITON.match(family) or family in _OTHER_ARM_FAMILIES else X86_64


def _describe(exc: ValidationError, values: Mapping[str, Any]) -> str:
    lines = ["invalid CDK context (cdk.json or -c key=value):"]
    for error in exc.errors():
        loc = error["loc"]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            known = ", ".join(TriageConfig.context_keys())
            lines.append(f"  {CONTEXT_PREFIX}{loc[0]}: unknown setting (known: {known})")
        elif loc:
            key = str(loc[0])
            lines.append(f"  {CONTEXT_PREFIX}{key}={values.get(key)!r}: {message}")
        else:
            lines.append(f"  {message}")
    return "\n".join(lines)


def context_from_app(node: Any) -> dict[str, Any]:
    """The ``triage:*`` context of a construct node (cdk.json, ``-c`` and ``App(context=...)``)."""
    return {k: v for k, v in node.get_all_context().items() if k.startswith(CONTEXT_PREFIX)}
