"""Helpers shared by the pipeline tests: a handle on the moto-backed resources, and Lambda
events in the shapes AWS documents (S3 ObjectCreated, SNS subscription)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from local_pipeline.aws import DUMMY_CREDENTIALS, MotoServer, Names, Resources
from ticket_pipeline.jobs import JobStore
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


def s3_put_event(bucket: str, key: str, size: int, etag: str = "abc", sequencer: str | None = None) -> dict:
    """An S3 ObjectCreated:Put event as Lambda receives it (the documented shape); ``key`` is
    URL-encoded like S3 does."""
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key, safe="/"), "size": size, "eTag": etag}
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
    """The bits of the Lambda context object Powertools reads."""

    function_name = "test-fn"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:test-fn"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 60_000
