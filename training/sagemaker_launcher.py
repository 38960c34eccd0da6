"""Start the training pipeline as a SageMaker training job (SageMaker Python SDK v2, PyTorch).

The job runs the same code as ``make train``: ``training/sagemaker_entry.py`` calls
``python -m training train`` inside AWS's PyTorch training image. SageMaker provides the data
channel (``SM_CHANNEL_TRAIN``), collects ``SM_MODEL_DIR`` (the serving artifact) as
``model.tar.gz`` (directly usable as ``ModelDataUrl``) and ``SM_OUTPUT_DATA_DIR`` (reports,
splits) as ``output.tar.gz``.

The SDK is optional and imported only when a job is really started: install
``requirements-sagemaker.txt`` (``sagemaker==2.257.7``) in its own environment. Everything up to
the SDK call (staged source directory, estimator and ``fit`` arguments) is plain Python and is
what ``--dry-run`` prints and the tests check. This module imports nothing from the project
beyond the standard library, so it runs in a venv with only the SDK installed.

    python -m training.sagemaker_launcher --role arn:aws:iam::123456789012:role/SageMakerTraining \\
        --train s3://my-bucket/tickets/ --hp epochs=7 --hp base-model=distilbert-base-uncased --wait
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
ENTRY_POINT = "train_entry.py"
PACKAGES = ("training", "triage_core")
# AWS's PyTorch training image (Deep Learning Container) that the SDK v2 resolves for these.
FRAMEWORK_VERSION = "2.5"
PY_VERSION = "py311"
DEFAULT_INSTANCE_TYPE = "ml.c5.2xlarge"  # 8 vCPUs: the default run takes a few minutes on CPU


@dataclass
class JobSpec:
    """What the launcher asks SageMaker for: estimator arguments plus the ``fit`` inputs."""

    role: str
    train_input: str  # s3:// URI of the channel (a prefix holding one CSV/JSONL, or the file)
    instance_type: str = DEFAULT_INSTANCE_TYPE
    instance_count: int = 1
    hyperparameters: dict[str, str] = field(default_factory=dict)
    output_path: str | None = None  # s3:// prefix for model.tar.gz / output.tar.gz
    base_job_name: str = "ticket-triage-train"
    max_run_seconds: int = 2 * 3600
    volume_size_gb: int = 30
    use_spot: bool = False
    max_wait_seconds: int | None = None
    region: str | None = None
    tags: dict[str, str] = field(default_factory=lambda: {"project": "ticket-triage"})

    def __post_init__(self) -> None:
        if not self.role.startswith("arn:aws") or ":role/" not in self.role:
            raise ValueError(f"role must be an IAM role ARN, got {self.role!r}")
        if not self.train_input.startswith("s3://"):
            raise ValueError(f"train input must be an s3:// URI, got {self.train_input!r}")
        if self.output_path is not None and not self.output_path.startswith("s3://"):
            raise ValueError(f"output path must be an s3:// URI, got {self.output_path!r}")
        if self.instance_count != 1:
            raise ValueError("the training loop is single-node: instance_count must be 1")
        if self.use_spot and (self.max_wait_seconds or 0) < self.max_run_seconds:
            self.max_wait_seconds = self.max_run_seconds * 2


def stage_source_dir(destination: str | Path) -> Path:
    """Build the directory the SDK uploads: entry point at its root, the two packages, and the
    ``requirements.txt`` that SageMaker's image pip-installs before running the entry point."""
    destination = Path(destination)
    destination.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, destination / package, ignore=ignore, dirs_exist_ok=True)
    shutil.copyfile(REPO_ROOT / "training" / "sagemaker_entry.py", destination / ENTRY_POINT)
    shutil.copyfile(REPO_ROOT / "training" / "sagemaker_requirements.txt", destination / "requirements.txt")
    return destination


def estimator_arguments(spec: JobSpec, source_dir: str | Path) -> dict[str, Any]:
    """Keyword arguments for ``sagemaker.pytorch.PyTorch`` (SDK v2)."""
    kwargs: dict[str, Any] = {
        "entry_point": ENTRY_POINT,
        "source_dir": str(source_dir),
        "role": spec.role,
        "framework_version": FRAMEWORK_VERSION,
        "py_version": PY_VERSION,
        "instance_type": spec.instance_type,
        "instance_count": spec.instance_count,
        "hyperparameters": dict(spec.hyperparameters),
        "base_job_name": spec.base_job_name,
        "max_run": spec.max_run_seconds,
        "volume_size": spec.volume_size_gb,
        "environment": {"TOKENIZERS_PARALLELISM": "false", "LOG_LEVEL": "INFO"},
        "disable_profiler": True,
        "tags": [{"Key": k, "Value": v} for k, v in sorted(spec.tags.items())],
        # Per-epoch lines of training.train become CloudWatch metrics of the job.
        "metric_definitions": [
            {"Name": "val:macro_f1", "Regex": r"val macro-F1 ([0-9.]+)"},
            {"Name": "val:accuracy", "Regex": r"val acc ([0-9.]+)"},
            {"Name": "train:loss", "Regex": r"epoch \d+/\d+: loss ([0-9.]+)"},
        ],
    }
    if spec.output_path:
        kwargs["output_path"] = spec.output_path
    if spec.use_spot:
        kwargs["use_spot_instances"] = True
        kwargs["max_wait"] = spec.max_wait_seconds
    return kwargs


def fit_arguments(spec: JobSpec, wait: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``estimator.fit``: one ``train`` channel -> ``SM_CHANNEL_TRAIN``."""
    return {"inputs": {"train": spec.train_input}, "wait": wait, "logs": "All" if wait else "None"}


def build_estimator(spec: JobSpec, source_dir: str | Path, sagemaker_session=None):
    """The SDK's PyTorch estimator (imports the SDK; constructing it does not call AWS)."""
    try:
        from sagemaker.pytorch import PyTorch
    except ImportError as exc:  # pragma: no cover - depends on the optional install
        raise SystemExit(
            "the SageMaker SDK is not installed: pip install -r requirements-sagemaker.txt "
            f"(in its own virtual environment) ({exc})"
        ) from None
    return PyTorch(sagemaker_session=sagemaker_session, **estimator_arguments(spec, source_dir))


def launch(spec: JobSpec, wait: bool = False) -> str:
    """Stage the code, create the estimator and start the job. Returns the job name."""
    import boto3  # a project dependency; the SDK needs a boto3 session anyway
    from sagemaker.session import Session

    session = Session(boto_session=boto3.Session(region_name=spec.region))
    with tempfile.TemporaryDirectory(prefix="triage-sm-src-") as tmp:
        source_dir = stage_source_dir(Path(tmp) / "src")
        estimator = build_estimator(spec, source_dir, session)
        estimator.fit(**fit_arguments(spec, wait))
    return estimator.latest_training_job.name


def parse_hyperparameters(pairs: list[str]) -> dict[str, str]:
    """``["epochs=7", "base-model=roberta-base"]`` -> ``{"epochs": "7", ...}`` (CLI options of
    ``python -m training train`` without the leading ``--``)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ValueError(f"hyperparameter {pair!r} must look like name=value")
        out[key] = value.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training.sagemaker_launcher", description=__doc__)
    parser.add_argument("--role", required=True, help="IAM role ARN that SageMaker assumes")
    parser.add_argument("--train", required=True, help="s3:// URI of the ticket CSV/JSONL (channel 'train')")
    parser.add_argument("--output-path", help="s3:// prefix for the job's model.tar.gz and output.tar.gz")
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE_TYPE)
    parser.add_argument("--hp", action="append", default=[], metavar="NAME=VALUE", help="hyperparameter")
    parser.add_argument("--spot", action="store_true", help="managed spot training")
    parser.add_argument("--max-run", type=int, default=2 * 3600, help="seconds")
    parser.add_argument("--region")
    parser.add_argument("--wait", action="store_true", help="stream the job's logs until it ends")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the estimator and fit arguments; call nothing"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        spec = JobSpec(
            role=args.role,
            train_input=args.train,
            instance_type=args.instance_type,
            hyperparameters=parse_hyperparameters(args.hp),
            output_path=args.output_path,
            max_run_seconds=args.max_run,
            use_spot=args.spot,
            region=args.region,
        )
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    if args.dry_run:
        plan = {
            "estimator": "sagemaker.pytorch.PyTorch",
            "estimator_arguments": estimator_arguments(spec, "<staged source dir>"),
            "fit_arguments": fit_arguments(spec, args.wait),
        }
        print(json.dumps(plan, indent=2))
        return 0
    print(launch(spec, wait=args.wait))
    return 0


if __name__ == "__main__":
    sys.exit(main())
