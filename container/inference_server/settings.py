"""Server settings: read once from the environment into one read-only object.

SageMaker's bring-your-own-container contract sets ``SAGEMAKER_BIND_TO_PORT`` (when the image
carries the ``accept-bind-to-port`` label) and may set the ``SAGEMAKER_MODEL_SERVER_*`` values;
the ``TRIAGE_*`` values are this container's own knobs (set them in the SageMaker model's
``Environment``). Defaults are sized to the CPUs the process may use.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from triage_core.artifact import resolve_review_threshold
from triage_core.inference import BatchRule
from triage_core.records import DEFAULT_FIELDS, FieldMap

MB = 1024 * 1024
# SageMaker stops a container with SIGTERM and sends SIGKILL 30 s later ("Custom Inference Code
# with Hosting Services", docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html):
# in-flight requests get this long to finish or account for their unscored tickets.
SAGEMAKER_STOP_SECONDS = 30
DEFAULT_SHUTDOWN_SECONDS = 25.0


class SettingsError(ValueError):
    """An environment variable has a value the server cannot use."""


def available_cpus() -> int:
    """CPUs this process may run on: affinity mask, capped by a cgroup v2 CPU quota if any."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cpus)


def _number(
    env: Mapping[str, str], name: str, default: float, low: float, high: float, cast: type, kind: str
) -> float:
    """An optional numeric setting: ``default`` when unset, else parsed with ``cast`` and bounded."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be {kind}, got {raw!r}") from exc
    if not low <= value <= high:
        raise SettingsError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    return _number(env, name, default, low, high, int, "an integer")


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    return _number(env, name, default, low, high, float, "a number")


def _optional_float(env: Mapping[str, str], name: str, low: float, high: float) -> float | None:
    """Unset or blank: None (the caller has a fallback); else a bounded number."""
    if not env.get(name, "").strip():
        return None
    return _float(env, name, 0.0, low, high)


def review_threshold(setting: float | None, artifact: float | None) -> tuple[float, str]:
    """The review threshold and where it comes from: TRIAGE_REVIEW_THRESHOLD when set, else the
    artifact's (chosen on the validation split when it was trained), else 0.5."""
    return resolve_review_threshold(setting, artifact, "TRIAGE_REVIEW_THRESHOLD")


@dataclass(frozen=True)
class Settings:
    """Everything the server reads from the environment (see the table in docs/serving.md)."""

    port: int = 8080
    model_dir: Path = Path("/opt/ml/model")
    workers: int = 1
    threads_per_worker: int = 1
    intra_op_threads: int = 1
    solo_threads: int = 1  # threads of a batch that runs while the other runners are idle
    max_batch_size: int = 32
    # padded tokens (rows x longest row) per batch: long tickets run in smaller batches
    max_batch_tokens: int = 32 * 128
    # padded cells a batch may hold beyond its real tokens, as a share of them (BatchRule)
    max_padding: float = BatchRule.max_padding
    max_payload_bytes: int = 1024 * MB
    max_json_bytes: int = 100 * MB
    max_record_bytes: int = 8 * MB
    max_json_records: int = 1_000_000
    timeout_seconds: float = 3600.0
    shutdown_seconds: float = DEFAULT_SHUTDOWN_SECONDS
    # None: the artifact's own (chosen on the validation split by training), else 0.5
    review_threshold: float | None = None
    fields: FieldMap = field(default=DEFAULT_FIELDS)
    csv_columns: tuple[str, ...] | None = None
    log_level: str = "INFO"
    host: str = "0.0.0.0"

    @property
    def batch_rule(self) -> BatchRule:
        """Which tickets share an ONNX Runtime run (the batcher's rule, the benchmark's limit's)."""
        return BatchRule(self.max_batch_size, self.max_batch_tokens, self.max_padding)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        cpus = available_cpus()
        workers = _int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", 1, 1, 64)
        threads = _int(env, "TRIAGE_THREADS_PER_WORKER", max(1, cpus // workers), 1, 256)
        log_level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if log_level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise SettingsError(
                f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}"
            )
        payload_mb = _int(env, "TRIAGE_MAX_PAYLOAD_MB", 1024, 1, 4096)
        try:
            fields = FieldMap.parse(env.get("TRIAGE_ID_FIELD"), env.get("TRIAGE_TEXT_FIELDS"))
        except ValueError as exc:
            raise SettingsError(f"TRIAGE_ID_FIELD / TRIAGE_TEXT_FIELDS: {exc}") from exc
        header = env.get("TRIAGE_CSV_HEADER", "").strip()
        columns = tuple(c.strip() for c in header.split(",")) if header else None
        if columns and not {t.lower() for t in fields.text} <= {c.lower() for c in columns}:
            raise SettingsError(
                f"TRIAGE_CSV_HEADER must name the text field(s) {list(fields.text)}, got {header!r}"
            )
        return cls(
            port=_int(env, "SAGEMAKER_BIND_TO_PORT", 8080, 1, 65535),
            model_dir=Path(env.get("MODEL_DIR", "").strip() or "/opt/ml/model"),
            workers=workers,
            threads_per_worker=threads,
            intra_op_threads=_int(env, "TRIAGE_INTRA_OP_THREADS", 1, 1, 256),
            solo_threads=_int(env, "TRIAGE_SOLO_THREADS", threads, 1, 256),
            max_batch_size=_int(env, "TRIAGE_MAX_BATCH_SIZE", 32, 1, 1024),
            max_batch_tokens=_int(env, "TRIAGE_MAX_BATCH_TOKENS", 32 * 128, 512, 1 << 24),
            max_padding=_float(env, "TRIAGE_MAX_PADDING", BatchRule.max_padding, 0.0, 1000.0),
            max_payload_bytes=payload_mb * MB,
            max_json_bytes=min(payload_mb, _int(env, "TRIAGE_MAX_JSON_MB", 100, 1, 4096)) * MB,
            max_record_bytes=_int(env, "TRIAGE_MAX_RECORD_MB", 8, 1, 1024) * MB,
            max_json_records=_int(env, "TRIAGE_MAX_JSON_RECORDS", 1_000_000, 1, 100_000_000),
            timeout_seconds=_float(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT", 3600.0, 1.0, 86400.0),
            shutdown_seconds=_float(env, "TRIAGE_SHUTDOWN_SECONDS", DEFAULT_SHUTDOWN_SECONDS, 1.0, 3600.0),
            review_threshold=_optional_float(env, "TRIAGE_REVIEW_THRESHOLD", 0.0, 1.0),
            log_level=log_level,
            host=env.get("TRIAGE_BIND_HOST", "").strip() or "0.0.0.0",
            fields=fields,
            csv_columns=columns,
        )
