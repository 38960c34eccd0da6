"""Start the training pipeline as a SageMaker training job (SageMaker Python SDK v3, ``ModelTrainer``).

The job runs the same code as ``make train``: ``training/sagemaker_entry.py`` calls ``python -m
training train`` inside AWS's PyTorch training image. ``ModelTrainer`` uploads the staged source
directory as the ``code`` channel and its own drivers as ``sm_drivers``; in the container the
SDK's ``sm_train.sh`` installs ``requirements.txt``, sets SageMaker's variables
(``SM_CHANNEL_TRAIN``, ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR``, ``SM_HOSTS``...) and runs
``python train_entry.py --name value ...``, or ``torchrun`` with it on GPU instances. SageMaker
collects ``SM_MODEL_DIR`` (the serving artifact) as ``model.tar.gz`` (directly usable as
``ModelDataUrl``) and ``SM_OUTPUT_DATA_DIR`` (reports, splits, the fp32 model) as
``output.tar.gz``.

Why the SDK has an environment of its own (``make tools``: ``.venv/sagemaker``, from
``requirements-sagemaker.txt``): ``sagemaker`` 3.27's ``sagemaker-core`` caps ``protobuf<7`` and
``rich<15`` (the project runs protobuf 7 and rich 15, through onnx and typer) and
``sagemaker-train`` brings mlflow 3 and dozens more packages; installed next to the project it
would downgrade packages the rest of the project runs on. It only launches jobs; the job itself
installs ``training/sagemaker_requirements.txt`` (no SDK) on AWS's PyTorch image.

The SDK is imported only when a job is really started. Everything up to the SDK call (staged
source directory, ``ModelTrainer`` and ``train`` arguments as plain data) is what ``--dry-run``
prints as JSON and what the tests check. This module imports nothing from the project beyond
the standard library, so it runs in a venv with only the SDK installed.

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
# AWS's PyTorch training image (Deep Learning Container) that the SDK resolves for these
# (sagemaker.core.image_uris.retrieve): it must satisfy transformers' own torch minimum
# (transformers 5.23 declares torch>=2.6 and disables PyTorch below it; pip will not upgrade the
# image's torch). The SDK's image table (sagemaker/core/image_uri_config/pytorch.json) offers
# 2.6.0 to 2.10.0 for training, all py312. tests/training/test_sagemaker.py checks both against
# their owners.
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
    """What the launcher asks SageMaker for: the job's ModelTrainer arguments and its ``train`` channel."""

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


REQUIREMENTS = "requirements.txt"  # inside the staged source dir; the SDK's sm_train.sh installs it
ENVIRONMENT = {"TOKENIZERS_PARALLELISM": "false", "LOG_LEVEL": "INFO"}


def trainer_arguments(spec: JobSpec, source_dir: str | Path) -> dict[str, Any]:
    """Keyword arguments for ``sagemaker.train.ModelTrainer`` (SDK v3), as plain data: each
    nested dict is the config class of the same name (:func:`build_trainer` makes them), and
    ``training_image`` is resolved by :func:`build_trainer` from :func:`image_arguments`."""
    compute: dict[str, Any] = {
        "instance_type": spec.instance_type,
        "instance_count": spec.instance_count,
        "volume_size_in_gb": spec.volume_size_gb,
    }
    stopping: dict[str, Any] = {"max_runtime_in_seconds": spec.max_run_seconds}
    if spec.use_spot:
        compute["enable_managed_spot_training"] = True
        stopping["max_wait_time_in_seconds"] = spec.max_wait_seconds
    kwargs: dict[str, Any] = {
        "role": spec.role,
        "base_job_name": spec.base_job_name,
        "source_code": {
            "source_dir": str(source_dir),
            "entry_script": ENTRY_POINT,
            "requirements": REQUIREMENTS,
        },
        "compute": compute,
        "stopping_condition": stopping,
        "hyperparameters": job_hyperparameters(spec),
        "environment": dict(ENVIRONMENT),
        "tags": [{"key": k, "value": v} for k, v in sorted(spec.tags.items())],
    }
    if spec.output_path:
        kwargs["output_data_config"] = {"s3_output_path": spec.output_path}
    if spec.checkpoint_s3_uri:
        kwargs["checkpoint_config"] = {"s3_uri": spec.checkpoint_s3_uri, "local_path": CHECKPOINT_LOCAL_PATH}
    if is_gpu_instance(spec.instance_type):
        # torchrun with one process per GPU on every instance (the SDK's torchrun driver);
        # training.train's Accelerate loop picks the process group up from its environment.
        kwargs["distributed"] = {"torchrun": {}}
    return kwargs


def image_arguments(spec: JobSpec, region: str | None = None) -> dict[str, Any]:
    """Arguments of ``sagemaker.core.image_uris.retrieve`` for the job's training image."""
    return {
        "framework": "pytorch",
        "region": region or spec.region,
        "version": FRAMEWORK_VERSION,
        "py_version": PY_VERSION,
        "instance_type": spec.instance_type,
        "image_scope": "training",
    }


def job_hyperparameters(spec: JobSpec) -> dict[str, str]:
    """The user's hyperparameters, plus the checkpoint directory when checkpoints go to S3: kept
    after the run, so a job restarted after training (during export) does not train again."""
    hyperparameters = dict(spec.hyperparameters)
    if spec.checkpoint_s3_uri:
        hyperparameters.setdefault("checkpoint-dir", CHECKPOINT_LOCAL_PATH)
        hyperparameters.setdefault("keep-checkpoint", "true")
    return hyperparameters


def train_arguments(spec: JobSpec, wait: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``ModelTrainer.train``: one ``train`` channel -> ``SM_CHANNEL_TRAIN``."""
    return {
        "input_data_config": [{"channel_name": "train", "data_source": spec.train_input}],
        "wait": wait,
        "logs": wait,
    }


def _sdk():
    try:
        from sagemaker.core import image_uris
        from sagemaker.core.training import configs
        from sagemaker.train import ModelTrainer
        from sagemaker.train.distributed import Torchrun
    except ImportError as exc:  # pragma: no cover - depends on the optional install
        raise SystemExit(
            "the SageMaker SDK v3 is not installed: pip install -r requirements-sagemaker.txt "
            f"(in its own virtual environment, `make tools` makes .venv/sagemaker) ({exc})"
        ) from None
    return image_uris, configs, ModelTrainer, Torchrun


def build_trainer(spec: JobSpec, source_dir: str | Path, sagemaker_session):
    """The SDK's ``ModelTrainer`` for ``spec`` (constructing it does not call AWS)."""
    image_uris, configs, ModelTrainer, Torchrun = _sdk()
    kwargs = trainer_arguments(spec, source_dir)
    region = spec.region or sagemaker_session.boto_region_name
    trainer = ModelTrainer(
        sagemaker_session=sagemaker_session,
        training_image=image_uris.retrieve(**image_arguments(spec, region)),
        role=kwargs["role"],
        base_job_name=kwargs["base_job_name"],
        source_code=configs.SourceCode(**kwargs["source_code"]),
        compute=configs.Compute(**kwargs["compute"]),
        stopping_condition=configs.StoppingCondition(**kwargs["stopping_condition"]),
        hyperparameters=kwargs["hyperparameters"],
        environment=kwargs["environment"],
        tags=[configs.Tag(**tag) for tag in kwargs["tags"]],
        output_data_config=configs.OutputDataConfig(**kwargs["output_data_config"])
        if "output_data_config" in kwargs
        else None,
        checkpoint_config=configs.CheckpointConfig(**kwargs["checkpoint_config"])
        if "checkpoint_config" in kwargs
        else None,
        distributed=Torchrun() if "distributed" in kwargs else None,
    )
    return trainer.with_metric_definitions(
        [configs.MetricDefinition(name=m["Name"], regex=m["Regex"]) for m in METRIC_DEFINITIONS]
    )


def start_job(spec: JobSpec, source_dir: str | Path, sagemaker_session, wait: bool = False) -> str:
    """Build the trainer and start the job (``CreateTrainingJob``). Returns the job name."""
    _, configs, _, _ = _sdk()
    trainer = build_trainer(spec, source_dir, sagemaker_session)
    arguments = train_arguments(spec, wait)
    channels = [configs.InputData(**channel) for channel in arguments.pop("input_data_config")]
    trainer.train(input_data_config=channels, **arguments)
    # the SDK's own docstring reads the job from this attribute; it has no public accessor
    return trainer._latest_training_job.training_job_name


def launch(spec: JobSpec, wait: bool = False) -> str:
    """Stage the code and start the job with the default AWS credentials. Returns the job name."""
    import boto3  # the SDK's dependency
    from sagemaker.train import Session

    session = Session(boto_session=boto3.Session(region_name=spec.region))
    with tempfile.TemporaryDirectory(prefix="triage-sm-src-") as tmp:
        return start_job(spec, stage_source_dir(Path(tmp) / "src"), session, wait)


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
        "--dry-run",
        action="store_true",
        help="print the job (ModelTrainer and train arguments) as JSON; call nothing",
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
            "trainer": "sagemaker.train.ModelTrainer",
            "training_image": image_arguments(spec),
            "trainer_arguments": trainer_arguments(spec, "<staged source dir>"),
            "metric_definitions": [dict(m) for m in METRIC_DEFINITIONS],
            "train_arguments": train_arguments(spec, args.wait),
        }
        print(json.dumps(plan, indent=2))
        return 0
    print(launch(spec, wait=args.wait))
    return 0


if __name__ == "__main__":
    sys.exit(main())
