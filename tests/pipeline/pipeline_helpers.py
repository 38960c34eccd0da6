"""Helpers shared by the pipeline tests: a handle on the moto-backed resources, and Lambda
events in the shapes AWS documents (S3 ObjectCreated, SNS subscription)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from local_pipeline.async_endpoint import AsyncEndpoint, AsyncRequest
from local_pipeline.aws import DUMMY_CREDENTIALS, MotoServer, Names, Resources
from ticket_pipeline import aggregator, dispatcher
from ticket_pipeline.jobs import JobStore
from ticket_pipeline.notifications import error_notification, success_notification
from ticket_pipeline.results import Publisher
from ticket_pipeline.settings import AggregatorSettings, DispatcherSettings
from ticket_pipeline.storage import ObjectStore


@dataclass
class Aws:
    server: MotoServer
    resources: Resources
    s3: Any
    sns: Any
    sqs: Any
    dynamodb: Any

    @property
    def names(self) -> Names:
        return self.resources.names

    def env(self, **overrides: str) -> dict[str, str]:
        """The Lambda environment the CDK stack sets, pointed at moto."""
        env = {
            **DUMMY_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.server.url,
            "ENDPOINT_NAME": self.names.endpoint_name,
            "JOBS_TABLE": self.names.jobs_table,
            "CHUNK_PREFIX": "chunks/",
            "CHUNK_SIZE": "3",
            "MAX_FILE_MB": "5",
            "REQUEST_TTL_SECONDS": "3600",
            "INVOCATION_TIMEOUT_SECONDS": "60",
            "JOB_DEADLINE_MARGIN_SECONDS": "600",
            "FUNCTION_TIMEOUT_SECONDS": "60",
            "FINALIZE_LEASE_SECONDS": "120",
            "DISPATCH_THREADS": "4",
            "POWERTOOLS_METRICS_NAMESPACE": "TicketTriageTest",
            "OUTPUT_BUCKET": self.names.output_bucket,
            "RESULTS_PREFIX": "results/",
            "RESULTS_TOPIC_ARN": self.resources.results_topic_arn,
        }
        env.update(overrides)
        return env

    def dispatcher_settings(self, **overrides: str) -> DispatcherSettings:
        return DispatcherSettings.from_env(self.env(**overrides))

    def aggregator_settings(self, **overrides: str) -> AggregatorSettings:
        return AggregatorSettings.from_env(self.env(**overrides))

    def objects(self) -> ObjectStore:
        return ObjectStore(self.s3)

    def jobs(self) -> JobStore:
        return JobStore(self.dynamodb, self.names.jobs_table)

    def publisher(self) -> Publisher:
        return Publisher(self.sns)

    def results_messages(self, wait: int = 0) -> list[dict[str, Any]]:
        """Drain the results queue (subscribed to the results topic)."""
        messages = []
        while True:
            resp = self.sqs.receive_message(
                QueueUrl=self.resources.results_queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait
            )
            batch = resp.get("Messages", [])
            if not batch:
                return messages
            for message in batch:
                messages.append(json.loads(json.loads(message["Body"])["Message"]))
                self.sqs.delete_message(
                    QueueUrl=self.resources.results_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )

    def read_jsonl(self, uri: str) -> list[dict[str, Any]]:
        bucket, key = uri[len("s3://") :].split("/", 1)
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        return [json.loads(line) for line in body.splitlines() if line.strip()]

    def read_json(self, uri: str) -> dict[str, Any]:
        bucket, key = uri[len("s3://") :].split("/", 1)
        return json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def s3_put_event(
    bucket: str,
    key: str,
    size: int,
    etag: str = "abc",
    sequencer: str | None = None,
    version_id: str | None = None,
) -> dict:
    """An S3 ObjectCreated:Put event as Lambda receives it (the documented shape, Amazon S3 User
    Guide "Event message structure"); ``key`` is URL-encoded like S3 does, ``versionId`` is
    there when the bucket is versioned."""
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag}
    if version_id is not None:
        obj["versionId"] = version_id
    obj["sequencer"] = sequencer or uuid.uuid4().hex[:18].upper()
    return {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "awsRegion": "us-east-1",
                "eventTime": "2026-01-02T03:04:05.678Z",
                "eventName": "ObjectCreated:Put",
                "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"},
                "requestParameters": {"sourceIPAddress": "127.0.0.1"},
                "responseElements": {
                    "x-amz-request-id": "C3D13FE58DE4C810",
                    "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD",
                },
                "s3": {
                    "s3SchemaVersion": "1.0",
                    "configurationId": "incoming",
                    "bucket": {
                        "name": bucket,
                        "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                        "arn": f"arn:aws:s3:::{bucket}",
                    },
                    "object": obj,
                },
            }
        ]
    }


def sns_lambda_event(message: dict[str, Any] | str, topic_arn: str) -> dict:
    """An SNS event as a Lambda subscription receives it (``Records[].Sns.Message`` a string)."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{topic_arn}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": str(uuid.uuid4()),
                    "TopicArn": topic_arn,
                    "Subject": None,
                    "Message": message if isinstance(message, str) else json.dumps(message),
                    "Timestamp": "2026-01-02T03:04:07.000Z",
                    "SignatureVersion": "1",
                    "Signature": "EXAMPLE",
                    "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-0000.pem",
                    "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
                    "MessageAttributes": {},
                },
            }
        ]
    }


class Context:
    """The bits of the Lambda context object Powertools and the handlers read.

    ``remaining_ms`` may be a callable: tests make a run's time run out at a chosen point."""

    memory_limit_in_mb = 256
    aws_request_id = "req-1"

    def __init__(self, function_name: str = "ticket-dispatcher", remaining_ms: Any = 60_000):
        self.function_name = function_name
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        self._remaining = remaining_ms

    def get_remaining_time_in_millis(self) -> int:
        return int(self._remaining() if callable(self._remaining) else self._remaining)


LABELS = ["card_arrival", "lost_or_stolen_card", "exchange_rate"]


def queued(endpoint: AsyncEndpoint) -> list[AsyncRequest]:
    """The requests the dispatcher sent, in chunk order (its thread pool sends them in any order)."""
    return sorted(endpoint.queued(), key=lambda r: r.inference_id)


def drop(aws: Aws, key: str, body: bytes, context: Any = None, **event_kwargs: Any) -> dict[str, Any]:
    """Put a file in the (versioned) input bucket and run the dispatcher on its S3 event."""
    version = aws.s3.put_object(Bucket=aws.names.input_bucket, Key=key, Body=body)["VersionId"]
    event = s3_put_event(aws.names.input_bucket, key, len(body), version_id=version, **event_kwargs)
    return dispatcher.handler(event, context or Context())


def jsonl(n: int, prefix: str = "t") -> bytes:
    return b"".join(
        json.dumps({"id": f"{prefix}{i}", "text": f"ticket number {i}"}).encode() + b"\n" for i in range(n)
    )


def server_output(aws: Aws, request: AsyncRequest, errors: frozenset[int] = frozenset()) -> bytes:
    """What the inference server answers for a chunk (JSON Lines response records)."""
    bucket, key = request.input_location[5:].split("/", 1)
    lines = aws.s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
    out = []
    for index, line in enumerate(lines):
        ticket = json.loads(line)
        if index in errors:
            out.append({"id": ticket["id"], "index": index, "error": "empty text"})
        else:
            score = 0.3 if index % 2 else 0.9
            label = LABELS[index % len(LABELS)]
            out.append(
                {
                    "id": ticket["id"],
                    "index": index,
                    "label": label,
                    "score": score,
                    "needs_review": score < 0.5,
                }
            )
    return b"".join(json.dumps(o).encode() + b"\n" for o in out)


def complete(aws: Aws, request: AsyncRequest, errors: frozenset[int] = frozenset()) -> dict[str, Any]:
    """Play the endpoint: write the output object, return the success notification."""
    bucket, key = request.output_location[5:].split("/", 1)
    aws.s3.put_object(Bucket=bucket, Key=key, Body=server_output(aws, request, errors))
    return success_notification(
        inference_id=request.inference_id,
        endpoint_name=aws.names.endpoint_name,
        input_location=request.input_location,
        output_location=request.output_location,
        received_time="2026-01-02T03:04:05.000Z",
        event_time="2026-01-02T03:04:06.000Z",
        region="us-east-1",
        content_type=request.content_type,
        accept=request.accept,
        response_content_type="application/jsonlines",
    )


def fail(aws: Aws, request: AsyncRequest, reason: str, top_level_location: bool = False) -> dict[str, Any]:
    bucket, key = request.failure_location[5:].split("/", 1)
    aws.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({"error": "model exploded"}).encode())
    message = error_notification(
        inference_id=request.inference_id,
        endpoint_name=aws.names.endpoint_name,
        input_location=request.input_location,
        failure_location=None if top_level_location else request.failure_location,
        failure_reason=reason,
        received_time="2026-01-02T03:04:05.000Z",
        event_time="2026-01-02T03:04:06.000Z",
        region="us-east-1",
        content_type=request.content_type,
        accept=request.accept,
    )
    if top_level_location:  # a variant seen in the wild
        message["failureLocation"] = request.failure_location
        message.pop("responseParameters")
    return message


def notify(aws: Aws, message: dict[str, Any] | str, error: bool = False) -> dict[str, Any]:
    topic = aws.resources.error_topic_arn if error else aws.resources.success_topic_arn
    return aggregator.handler(sns_lambda_event(message, topic), Context("ticket-aggregator"))


def check_exactly_once(aws: Aws, message: dict[str, Any], expected_ids: set[str]) -> tuple[list, list]:
    results = aws.read_jsonl(message["results"])
    failures = aws.read_jsonl(message["failures"])
    ids = [r["id"] for r in results] + [f["id"] for f in failures]
    assert len(ids) == len(set(ids)), "a ticket id appears twice"
    assert set(ids) == expected_ids
    assert message["tickets"] == len(expected_ids)
    assert message["failed"] == len(failures)
    for row in results:
        assert set(row) == {"id", "label", "score", "needs_review"}
    return results, failures
