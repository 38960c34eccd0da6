"""Settings from environment variables, validated once per process (cold start).

The variable names are the contract with the CDK stack (see CONTEXT / docs/deploy-and-operate.md).
Plain pydantic (no pydantic-settings) because the Lambda runtime gets pydantic from the Powertools layer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, Json, field_validator, model_validator

from triage_core.records import FieldMap

# Lambda stops a chain of invocations caused by one event after 16 (recursive loop detection).
MAX_DISPATCH_RUNS = 15


def _prefix(value: str) -> str:
    value = value.strip().lstrip("/")
    return value if not value or value.endswith("/") else value + "/"


class _EnvSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None):
        """Build from ``environ`` (default ``os.environ``); unset variables take the defaults."""
        environ = os.environ if environ is None else environ
        data = {}
        for name, field in cls.model_fields.items():
            key = field.alias or name.upper()
            if key in environ and environ[key] != "":
                data[key] = environ[key]
        return cls.model_validate(data)


class AggregatorSettings(_EnvSettings):
    """What every function that finalizes jobs needs (aggregator, sweeper, dispatcher)."""

    jobs_table: str = Field(alias="JOBS_TABLE", min_length=3)
    output_bucket: str = Field(alias="OUTPUT_BUCKET", min_length=3)
    results_prefix: str = Field("results/", alias="RESULTS_PREFIX")
    results_topic_arn: str = Field(alias="RESULTS_TOPIC_ARN", pattern=r"^arn:aws[a-z-]*:sns:")
    job_ttl_days: int = Field(30, alias="JOB_TTL_DAYS", ge=1, le=3650)
    function_timeout_seconds: int = Field(
        300, alias="FUNCTION_TIMEOUT_SECONDS", ge=1, le=900, description="this Lambda's configured timeout"
    )
    finalize_lease_seconds: int = Field(
        360,
        alias="FINALIZE_LEASE_SECONDS",
        ge=10,
        le=3600,
        description="how long a finalizer owns a job before another invocation may take over; the stack "
        "derives it from the longest timeout of the functions that finalize",
    )

    # The review queue and the drift numbers (review.py); no topic: no review (the dispatcher).
    review_topic_arn: str | None = Field(None, alias="REVIEW_TOPIC_ARN", pattern=r"^arn:aws[a-z-]*:sns:")
    review_prefix: str = Field("review/", alias="REVIEW_PREFIX")
    out_of_scope_below: float = Field(
        0.0,
        alias="OUT_OF_SCOPE_BELOW",
        ge=0.0,
        lt=1.0,
        description="a classified ticket whose top score is below this fits no category (0: never)",
    )
    training_mix: Json[dict[str, float]] | None = Field(
        None,
        alias="TRAINING_MIX",
        description="the training split's category mix (counts or shares per label), from the model "
        "artifact; unset: no CategoryDrift",
    )
    drift_min_tickets: int = Field(
        500, alias="DRIFT_MIN_TICKETS", ge=1, le=10_000_000, description="smallest file whose mix is compared"
    )

    @field_validator("results_prefix", "review_prefix")
    @classmethod
    def _results_prefix(cls, value: str) -> str:
        return _prefix(value)

    @field_validator("training_mix")
    @classmethod
    def _training_mix(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and (any(v < 0 for v in value.values()) or sum(value.values()) <= 0):
            raise ValueError("TRAINING_MIX needs at least one label and non-negative shares that sum above 0")
        return value

    @property
    def reserve_seconds(self) -> float:
        """Time an invocation keeps for itself at the end: the dispatcher to finish the chunks in
        flight, checkpoint and hand off; a finalizer to publish the results and record the job as
        finished (it does not publish with less left, see :func:`.results.finalize_job`)."""
        return max(10.0, 0.1 * self.function_timeout_seconds)

    @model_validator(mode="after")
    def _lease_outlives_the_function(self):
        if self.finalize_lease_seconds <= self.function_timeout_seconds:
            raise ValueError(
                f"FINALIZE_LEASE_SECONDS ({self.finalize_lease_seconds}) must be longer than "
                f"FUNCTION_TIMEOUT_SECONDS ({self.function_timeout_seconds}): a finalizer still running "
                "would lose its lease and a second one would publish the results again"
            )
        return self


class SweeperSettings(AggregatorSettings):
    max_jobs_per_sweep: int = Field(
        100,
        alias="MAX_JOBS_PER_SWEEP",
        ge=1,
        le=10_000,
        description="overdue jobs one sweep finalizes at most",
    )


class _TicketFields(_EnvSettings):
    """The deployment's field map (the dispatcher reads ticket files with it, the corrections
    function finds a corrected ticket's text with it)."""

    ticket_fields: str = Field(
        '{"id": "id", "text": ["text"]}',
        alias="TICKET_FIELDS",
        description="which field of a ticket holds its id and which fields (joined) its text; "
        "a file's S3 metadata id-field / text-fields overrides it",
    )

    @field_validator("ticket_fields")
    @classmethod
    def _ticket_fields(cls, value: str) -> str:
        return json.dumps(FieldMap.from_spec(value).spec())

    @property
    def fields(self) -> FieldMap:
        return FieldMap.from_spec(self.ticket_fields)


class DispatcherSettings(AggregatorSettings, _TicketFields):
    endpoint_name: str = Field(alias="ENDPOINT_NAME", pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$", max_length=63)
    chunk_prefix: str = Field("chunks/", alias="CHUNK_PREFIX")
    chunk_size: int = Field(500, alias="CHUNK_SIZE", ge=1, le=100_000, description="tickets per chunk")
    max_file_mb: float = Field(1024, alias="MAX_FILE_MB", gt=0, le=1024 * 1024)
    max_tickets_per_file: int = Field(2_000_000, alias="MAX_TICKETS_PER_FILE", ge=1, le=100_000_000)
    # InvokeEndpointAsync limits (botocore service model): TTL 60..21600 s, timeout 1..3600 s.
    request_ttl_seconds: int = Field(21600, alias="REQUEST_TTL_SECONDS", ge=60, le=21600)
    invocation_timeout_seconds: int = Field(900, alias="INVOCATION_TIMEOUT_SECONDS", ge=1, le=3600)
    job_deadline_margin_seconds: int = Field(1800, alias="JOB_DEADLINE_MARGIN_SECONDS", ge=0, le=7 * 86400)
    dispatch_threads: int = Field(8, alias="DISPATCH_THREADS", ge=1, le=32)
    max_dispatch_runs: int = Field(12, alias="MAX_DISPATCH_RUNS", ge=1, le=MAX_DISPATCH_RUNS)

    @field_validator("chunk_prefix")
    @classmethod
    def _chunk_prefix(cls, value: str) -> str:
        return _prefix(value)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def job_deadline_seconds(self) -> int:
        """How long after its last InvokeEndpointAsync a job may wait for notifications: the request
        may queue for the TTL, then run for the invocation timeout, then notify (plus the margin)."""
        return self.request_ttl_seconds + self.invocation_timeout_seconds + self.job_deadline_margin_seconds


class CorrectionsSettings(_TicketFields):
    """The corrections function: reviewers' ``{"id", "source", "label"}`` lines under
    ``CORRECTIONS_PREFIX`` in the input bucket (:mod:`.corrections`)."""

    jobs_table: str = Field(alias="JOBS_TABLE", min_length=3)
    output_bucket: str = Field(alias="OUTPUT_BUCKET", min_length=3)
    results_prefix: str = Field("results/", alias="RESULTS_PREFIX")
    input_prefix: str = Field(
        "incoming/", alias="INPUT_PREFIX", description="where ticket files (sources) live"
    )
    corrections_prefix: str = Field("corrections/", alias="CORRECTIONS_PREFIX")
    corrections_output_prefix: str = Field(
        "corrections/",
        alias="CORRECTIONS_OUTPUT_PREFIX",
        description="output-bucket prefix of each correction file's report.json and rejections.jsonl",
    )
    labels_location: str = Field(
        alias="LABELS_LOCATION",
        pattern=r"^s3://",
        description="the deployed model archive (model.tar.gz) or its triage_artifact.json: the labels a "
        "correction may name are the ones the endpoint serves (a file, not the environment: 77 labels "
        "would take most of Lambda's 4 KB of environment variables)",
    )
    max_file_mb: float = Field(16, alias="MAX_CORRECTIONS_MB", gt=0, le=1024)

    @field_validator("results_prefix", "input_prefix", "corrections_prefix", "corrections_output_prefix")
    @classmethod
    def _prefixes(cls, value: str) -> str:
        return _prefix(value)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)
