"""The async endpoint stand-in against its contract: boto3's own sagemaker-runtime client over
HTTP, the service model's limits, the real inference server, TTL and invocation timeout."""

from __future__ import annotations

import json
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError, ParamValidationError
from pipeline_helpers import Aws

from local_pipeline.async_endpoint import (
    AsyncEndpoint,
    AsyncEndpointConfig,
    AsyncEndpointHTTPServer,
    AsyncRequest,
)
from local_pipeline.model_server import ModelServerProcess
from ticket_pipeline.notifications import AsyncInferenceNotification
from triage_core.artifact import MANIFEST_FILE


def _endpoint(aws: Aws, model_url: str) -> AsyncEndpoint:
    return AsyncEndpoint(
        AsyncEndpointConfig(
            endpoint_name=aws.names.endpoint_name,
            region="us-east-1",
            model_url=model_url,
            s3_output_path=f"s3://{aws.names.output_bucket}/async-results/",
            s3_failure_path=f"s3://{aws.names.output_bucket}/async-failures/",
            success_topic_arn=aws.resources.success_topic_arn,
            error_topic_arn=aws.resources.error_topic_arn,
            max_concurrent_invocations=1,
        ),
        aws.s3,
        aws.sns,
    )


@pytest.fixture
def runtime_client(aws: Aws) -> Iterator[tuple[Any, AsyncEndpoint]]:
    endpoint = _endpoint(aws, "http://127.0.0.1:9")
    http = AsyncEndpointHTTPServer(endpoint).start()
    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=http.url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    yield client, endpoint
    http.stop()


def _notifications(aws: Aws, queue_url: str, n: int, timeout: float = 20) -> list[AsyncInferenceNotification]:
    out: list[AsyncInferenceNotification] = []
    deadline = time.time() + timeout
    while len(out) < n and time.time() < deadline:
        for m in aws.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            envelope = json.loads(m["Body"])
            out.append(AsyncInferenceNotification.model_validate_json(envelope["Message"]))
    return out


def test_boto3_client_gets_the_documented_response(runtime_client, aws: Aws):
    client, endpoint = runtime_client
    resp = client.invoke_endpoint_async(
        EndpointName=aws.names.endpoint_name,
        InputLocation="s3://bucket/chunks/job/00001.jsonl",
        ContentType="application/jsonlines",
        Accept="application/jsonlines",
        InferenceId="job-c00001",
        RequestTTLSeconds=600,
        InvocationTimeoutSeconds=30,
    )
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert resp["InferenceId"] == "job-c00001"
    assert resp["OutputLocation"] == f"s3://{aws.names.output_bucket}/async-results/job-c00001.out"
    assert resp["FailureLocation"] == f"s3://{aws.names.output_bucket}/async-failures/job-c00001-error.out"
    (queued,) = endpoint.queued()
    assert (queued.ttl_seconds, queued.timeout_seconds, queued.content_type) == (
        600,
        30,
        "application/jsonlines",
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"InferenceId": "x" * 65}, "InferenceId"),
        ({"InferenceId": "has\ttab"}, "InferenceId"),
        ({"RequestTTLSeconds": 21601}, "RequestTTLSeconds"),
        ({"InvocationTimeoutSeconds": 3601}, "InvocationTimeoutSeconds"),
        ({"InputLocation": "ftp://bucket/key"}, "InputLocation"),
        ({"EndpointName": "other-endpoint"}, "not found"),
    ],
)
def test_the_service_side_limits_are_enforced(runtime_client, aws: Aws, overrides: dict, message: str):
    client, endpoint = runtime_client
    params = {"EndpointName": aws.names.endpoint_name, "InputLocation": "s3://b/k", **overrides}
    with pytest.raises(ClientError) as info:
        client.invoke_endpoint_async(**params)
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert message in info.value.response["Error"]["Message"]
    assert endpoint.queued() == []


def test_boto3_rejects_below_minimum_values_before_sending(runtime_client, aws: Aws):
    client, endpoint = runtime_client
    with pytest.raises(ParamValidationError):
        client.invoke_endpoint_async(
            EndpointName=aws.names.endpoint_name, InputLocation="s3://b/k", RequestTTLSeconds=59
        )
    with pytest.raises(ClientError):  # the same limit, on the Python interface
        endpoint.invoke_endpoint_async(
            EndpointName=aws.names.endpoint_name, InputLocation="s3://b/k", RequestTTLSeconds=59
        )


def test_real_server_success_and_error_notifications(aws: Aws, model_server: ModelServerProcess):
    body = b'{"id": "a", "text": "my card has not arrived"}\n{"id": "b", "text": " "}\n'
    aws.s3.put_object(Bucket=aws.names.input_bucket, Key="chunks/j/00001.jsonl", Body=body)
    endpoint = _endpoint(aws, model_server.url).start()
    try:
        ok = endpoint.invoke_endpoint_async(
            EndpointName=aws.names.endpoint_name,
            InputLocation=f"s3://{aws.names.input_bucket}/chunks/j/00001.jsonl",
            ContentType="application/jsonlines",
            Accept="application/jsonlines",
            InferenceId="j-c00001",
        )
        bad = endpoint.invoke_endpoint_async(  # the server answers 415 to an unknown content type
            EndpointName=aws.names.endpoint_name,
            InputLocation=f"s3://{aws.names.input_bucket}/chunks/j/00001.jsonl",
            ContentType="application/x-unknown",
            InferenceId="j-c00002",
        )
        (success,) = _notifications(aws, aws.resources.success_queue_url, 1)
        (error,) = _notifications(aws, aws.resources.error_queue_url, 1)
    finally:
        endpoint.stop()
    assert success.succeeded and success.output_location == ok["OutputLocation"]
    assert success.requestParameters.inputLocation.endswith("chunks/j/00001.jsonl")
    assert (success.eventSource, success.eventName, success.eventVersion) == (
        "aws:sagemaker",
        "InferenceResult",
        "1.0",
    )
    records = aws.read_jsonl(ok["OutputLocation"])
    assert [(r["id"], r["index"]) for r in records] == [("a", 0), ("b", 1)]
    assert "label" in records[0] and "error" in records[1]
    assert not error.succeeded and error.failure_location == bad["FailureLocation"]
    assert "(415)" in error.failureReason
    assert aws.s3.get_object(Bucket=aws.names.output_bucket, Key="async-failures/j-c00002-error.out")[
        "Body"
    ].read()


def _request(aws: Aws, **kwargs: Any) -> AsyncRequest:
    base = {
        "inference_id": "t-c00001",
        "input_location": f"s3://{aws.names.input_bucket}/chunks/t/00001.jsonl",
        "output_location": f"s3://{aws.names.output_bucket}/async-results/t-c00001.out",
        "failure_location": f"s3://{aws.names.output_bucket}/async-failures/t-c00001-error.out",
        "content_type": "application/jsonlines",
        "accept": "application/jsonlines",
        "custom_attributes": None,
        "ttl_seconds": 60,
        "timeout_seconds": 1,
    }
    return AsyncRequest(**{**base, **kwargs})


def test_expired_requests_are_not_processed(aws: Aws):
    endpoint = _endpoint(aws, "http://127.0.0.1:9")
    endpoint._process(_request(aws, received=time.time() - 61))
    (note,) = _notifications(aws, aws.resources.error_queue_url, 1)
    assert note.invocationStatus == "Failed" and "RequestTTLSeconds=60" in note.failureReason
    assert endpoint.stats.expired == 1


def test_invocation_timeout_cuts_a_model_that_does_not_answer(aws: Aws):
    aws.s3.put_object(Bucket=aws.names.input_bucket, Key="chunks/t/00001.jsonl", Body=b'{"text": "hi"}\n')
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = _endpoint(aws, f"http://127.0.0.1:{silent.getsockname()[1]}")
        started = time.time()
        endpoint._process(_request(aws, timeout_seconds=1))
        assert time.time() - started < 5
    (note,) = _notifications(aws, aws.resources.error_queue_url, 1)
    assert "InvocationTimeoutSeconds=1" in note.failureReason
    assert note.failure_location.endswith("t-c00001-error.out")


def test_an_endpoint_update_moves_new_requests_to_the_new_model_and_loses_none(
    aws: Aws, model_server: ModelServerProcess, tiny_artifact: Path, tmp_path: Path
):
    """``update_model``: all-at-once, as SageMaker's blue/green update without guardrails. The second
    container serves a copy of the tiny artifact whose labels are renamed, so every result says
    which model scored it. A container that does not answer /ping is refused and the old one kept."""
    renamed = tmp_path / "v2"
    shutil.copytree(tiny_artifact, renamed)
    manifest = json.loads((renamed / MANIFEST_FILE).read_text())
    manifest["labels"] = [f"v2-{label}" for label in manifest["labels"]]
    (renamed / MANIFEST_FILE).write_text(json.dumps(manifest))
    old_labels = set(json.loads((tiny_artifact / MANIFEST_FILE).read_text())["labels"])
    new_server = ModelServerProcess(
        renamed, tmp_path / "v2.log", env={"TRIAGE_THREADS_PER_WORKER": "1"}
    ).start()
    body = b'{"id": "a", "text": "my card has not arrived"}\n{"id": "b", "text": "exchange rate was wrong"}\n'
    aws.s3.put_object(Bucket=aws.names.input_bucket, Key="chunks/u/00001.jsonl", Body=body)
    endpoint = _endpoint(aws, model_server.url).start()

    def invoke(n: int) -> list[str]:
        return [
            endpoint.invoke_endpoint_async(
                EndpointName=aws.names.endpoint_name,
                InputLocation=f"s3://{aws.names.input_bucket}/chunks/u/00001.jsonl",
                ContentType="application/jsonlines",
                Accept="application/jsonlines",
                InferenceId=f"u-{n}-{i}",
            )["OutputLocation"]
            for i in range(3)
        ]

    try:
        before = invoke(1)
        assert endpoint.wait_idle(30)
        with pytest.raises(RuntimeError, match="does not answer /ping"):
            endpoint.update_model("http://127.0.0.1:9", ping_timeout=1)
        assert endpoint.model_url == model_server.url
        previous = endpoint.update_model(new_server.url)
        after = invoke(2)
        assert endpoint.wait_idle(30)
        assert previous == model_server.url and endpoint.in_flight(previous) == 0
        successes = _notifications(aws, aws.resources.success_queue_url, 6)
    finally:
        endpoint.stop()
        new_server.stop()
    assert len(successes) == 6 and endpoint.stats.failed == 0
    for locations, labels in ((before, old_labels), (after, {f"v2-{label}" for label in old_labels})):
        for location in locations:
            assert {r["label"] for r in aws.read_jsonl(location)} <= labels
