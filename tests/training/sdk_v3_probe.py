"""Run by tests/training/test_sagemaker.py with the SDK venv's python (``.venv/sagemaker``, SDK v3):
starts two jobs through the launcher's real code path (``start_job`` -> ``ModelTrainer.train``)
and prints, as one JSON line, what the SDK did.

The SDK uploads the code and its drivers to S3 (moto's server: ``AWS_ENDPOINT_URL``) and sends
``CreateTrainingJob`` to a botocore ``Stubber`` on the SageMaker client it uses; botocore
validates the request against the SageMaker API model before the Stubber answers, and the
request is printed as the SDK built it. Usage: ``sdk_v3_probe.py <role arn> <staging bucket>
<hyperparameters of a third, CPU job as JSON>`` (the job the test then runs as its container would).
"""

from __future__ import annotations

import copy
import datetime
import json
import sys
import tempfile
from pathlib import Path

import boto3
import sagemaker.core
from botocore.stub import Stubber
from sagemaker.core.utils.utils import SageMakerClient
from sagemaker.train import Session

from training.sagemaker_launcher import JobSpec, stage_source_dir, start_job

ARN = "arn:aws:sagemaker:eu-west-1:123456789012:training-job/"


def main(role: str, bucket: str, local_hyperparameters: dict[str, str]) -> dict:
    boto_session = boto3.Session(region_name="eu-west-1")
    s3 = boto_session.client("s3")
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    session = Session(boto_session=boto_session, default_bucket=bucket)
    # the client TrainingJob.create uses: sagemaker-core caches one per boto3 session
    sagemaker_client = SageMakerClient(session=boto_session).get_client("sagemaker")
    stubber = Stubber(sagemaker_client)
    requests: list[dict] = []

    def on_create(params: dict, **_) -> None:
        requests.append(copy.deepcopy(params))
        # what TrainingJob.create reads back right after creating the job
        describe = {
            "TrainingJobName": params["TrainingJobName"],
            "TrainingJobArn": ARN + params["TrainingJobName"],
            "ModelArtifacts": {"S3ModelArtifacts": ""},
            "TrainingJobStatus": "InProgress",
            "SecondaryStatus": "Starting",
            "AlgorithmSpecification": params["AlgorithmSpecification"],
            "ResourceConfig": params["ResourceConfig"],
            "StoppingCondition": params["StoppingCondition"],
            "CreationTime": datetime.datetime(2026, 1, 1),
        }
        stubber.add_response("describe_training_job", describe)

    sagemaker_client.meta.events.register("provide-client-params.sagemaker.CreateTrainingJob", on_create)
    train, output = "s3://tickets/train/", "s3://models/triage/"
    specs = {
        "cpu": JobSpec(role=role, train_input=train, hyperparameters={"epochs": "2"}, output_path=output),
        "gpu": JobSpec(
            role=role,
            train_input=train,
            output_path=output,
            use_spot=True,
            instance_type="ml.g5.12xlarge",
            instance_count=2,
        ),
        "local": JobSpec(role=role, train_input=train, hyperparameters=local_hyperparameters),
    }
    out: dict = {"jobs": {}}
    with tempfile.TemporaryDirectory() as tmp, stubber:
        src = stage_source_dir(Path(tmp) / "src")
        for name, spec in specs.items():
            stubber.add_response("create_training_job", {"TrainingJobArn": ARN + "x"})
            job_name = start_job(spec, src, session)
            request = requests[-1]
            channels = {
                c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]
            }
            uploaded: dict[str, list[str]] = {}
            for channel in ("code", "sm_drivers"):
                prefix = channels[channel].split(bucket + "/", 1)[1].rstrip("/") + "/"
                for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]:
                    uploaded.setdefault(channel, []).append(obj["Key"][len(prefix) :])
            drivers = channels["sm_drivers"].split(bucket + "/", 1)[1].rstrip("/")
            sm_train = s3.get_object(Bucket=bucket, Key=f"{drivers}/sm_train.sh")["Body"].read().decode()
            out["jobs"][name] = {
                "job_name": job_name,
                "request": request,
                "uploaded": uploaded,
                "sm_train": sm_train,
            }
        stubber.assert_no_pending_responses()
    table = Path(sagemaker.core.__file__).parent / "image_uri_config" / "pytorch.json"
    out["version_aliases"] = json.loads(table.read_text())["training"]["version_aliases"]
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])), default=str))
