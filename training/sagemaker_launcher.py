"""Start the training pipeline as a SageMaker training job (SageMaker Python SDK v2, PyTorch).

Why SDK v2 and not v3: ``sagemaker`` 3.27 resolves against the project's pins, but its
``sagemaker-core`` caps ``protobuf<7`` and ``rich<15`` (the project environment has protobuf 7.36
and rich 15, through onnx and typer) and ``sagemaker-train`` pulls mlflow 3 and 68 more packages:
installed next to the project it would downgrade packages the rest of the project runs on. v2
lives in its own environment (``make tools``: ``.venv/sagemaker``) and only launches jobs; the
job itself installs ``training/sagemaker_requirements.txt`` (no SDK) on AWS's PyTorch image.

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
# AWS's PyTorch training image (Deep Learning Container) that the SDK resolves for these: it must
# satisfy transformers' own torch minimum (transformers 5.23 declares torch>=2.6 and disables
# PyTorch below it; pip will not upgrade the image's torch). The SDK's image table
# (image_uri_config/pytorch.json) offers 2.6.0, 2.7.1 and 2.8.0 for training, all py312; a full
# version, because the SDK's torch_distributed check compares full versions.
# tests/training/test_sagemaker.py checks both against their owners.
FRAMEWORK_VERSION = "2.8.0"
PY_VERSION = "py312"
DEFAULT_INSTANCE_TYPE = "ml.c5.2xlarge"  # 8 vCPUs: the default run takes a few minutes on CPU
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"  # SageMaker syncs it with checkpoint_s3_uri
# Per-epoch lines of training.train ("epoch 3/7: loss 0.8123, val macro-F1 0.9012, val acc
# 0.9100, 84 s") become the job's metrics (CloudWatch, the console, HPO objectives).
METRIC_DEFINITIONS = (
    # anchored on the epoch line: the run's summary lines also say "best val macro-F1"
    {"Name": "val:macro_f1", "Regex": r"epoch \d+/\d+: .*val macro-F1 ([0-9.]+)"},
    {"Name": "val:accuracy", "Regex": r"epoch \d+/\d+: .*val acc ([0-9.]+)"},
    {"Name": "train:loss", "Regex": r"epoch \d+/\d+: loss ([0-9.]+)"},
)


def is_gpu_instance(instance_type: str) -> bool:
    """ml.g4dn/g5/g6/p3/p4d/p5...: the families with NVIDIA GPUs."""
    family = instance_type.removeprefix("ml.").split(".")[0]
    return family[:1] in ("g", "p") and family not in ("g4ad",)


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
    # s3:// prefix the job's /opt/ml/checkpoints is synced to: a restarted (spot) job resumes
    # there. Spot training without it would restart from zero: <output_path>checkpoints/ by default.
    checkpoint_s3_uri: str | None = None
    region: str | None = None
    tags: dict[str, str] = field(default_factory=lambda: {"project": "ticket-triage"})

    def __post_init__(self) -> None:
        if not self.role.startswith("arn:aws") or ":role/" not in self.role:
            raise ValueError(f"role must be an IAM role ARN, got {self.role!r}")
        if not self.train_input.startswith("s3://"):
            raise ValueError(f"train input must be an s3:// URI, got {self.train_input!r}")
        if self.output_path is not None and not self.output_path.startswith("s3://"):
            raise ValueError(f"output path must be an s3:// URI, got {self.output_path!r}")
        if self.instance_count < 1:
            raise ValueError("instance_count must be >= 1")
        if self.instance_count > 1 and not is_gpu_instance(self.instance_type):
            raise ValueError(
                "several instances train data-parallel with torchrun, which SageMaker supports on GPU "
                f"instances only: use an ml.g*/ml.p* instance type or instance_count 1 ({self.instance_type})"
            )
        if self.checkpoint_s3_uri is not None and not self.checkpoint_s3_uri.startswith("s3://"):
            raise ValueError(f"checkpoint S3 URI must be an s3:// URI, got {self.checkpoint_s3_uri!r}")
        if self.use_spot and self.checkpoint_s3_uri is None:
            if self.output_path is None:
                raise ValueError(
                    "spot training needs checkpoints in S3 to resume after an interruption: "
                    "pass --checkpoint-s3-uri (or --output-path, checkpoints then go under it)"
                )
            self.checkpoint_s3_uri = self.output_path.rstrip("/") + "/checkpoints/"
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
        "hyperparameters": job_hyperparameters(spec),
        "base_job_name": spec.base_job_name,
        "max_run": spec.max_run_seconds,
        "volume_size": spec.volume_size_gb,
        "environment": {"TOKENIZERS_PARALLELISM": "false", "LOG_LEVEL": "INFO"},
        "disable_profiler": True,
        "tags": [{"Key": k, "Value": v} for k, v in sorted(spec.tags.items())],
        "metric_definitions": [dict(m) for m in METRIC_DEFINITIONS],
    }
    if spec.output_path:
        kwargs["output_path"] = spec.output_path
    if spec.use_spot:
        kwargs["use_spot_instances"] = True
        kwargs["max_wait"] = spec.max_wait_seconds
    if spec.checkpoint_s3_uri:
        kwargs["checkpoint_s3_uri"] = spec.checkpoint_s3_uri
        kwargs["checkpoint_local_path"] = CHECKPOINT_LOCAL_PATH
    if is_gpu_instance(spec.instance_type):
        # torchrun with one process per GPU on every instance (SageMaker's PyTorch toolkit);
        # training.train's Accelerate loop picks the process group up from its environment.
        kwargs["distribution"] = {"torch_distributed": {"enabled": True}}
    return kwargs


def job_hyperparameters(spec: JobSpec) -> dict[str, str]:
    """The user's hyperparameters, plus the checkpoint directory when checkpoints go to S3: kept
    after the run, so a job restarted after training (during export) does not train again."""
    hyperparameters = dict(spec.hyperparameters)
    if spec.checkpoint_s3_uri:
        hyperparameters.setdefault("checkpoint-dir", CHECKPOINT_LOCAL_PATH)
        hyperparameters.setdefault("keep-checkpoint", "true")
    return hyperparameters


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
    parser.add_argument("--instance-count", type=int, default=1, help="GPU instances only when > 1")
    parser.add_argument("--spot", action="store_true", help="managed spot training (needs checkpoints in S3)")
    parser.add_argument(
        "--checkpoint-s3-uri",
        help="s3:// prefix for resumable checkpoints (default <output-path>checkpoints/)",
    )
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
            instance_count=args.instance_count,
            checkpoint_s3_uri=args.checkpoint_s3_uri,
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
