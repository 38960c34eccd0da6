"""moto's server on loopback and the AWS resources of the pipeline, created with real boto3."""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import boto3
import requests
from botocore.config import Config

from local_pipeline.model_server import REPO_ROOT, free_port

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


@contextmanager
def patched_environ(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for this process only, restoring the previous values on exit."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_dynamodb_lock = threading.RLock()


_sequencer = iter(range(1, 1 << 62))
_sequencer_lock = threading.Lock()


def _complete_moto_s3_events() -> None:
    """moto's S3 event notifications omit ``versionId`` and ``sequencer``; the documented event
    (Amazon S3 User Guide, "Event message structure") carries ``versionId`` when the bucket is
    versioned and a ``sequencer`` on every PUT, and the dispatcher relies on both. Add them, so
    the local stack's events look like AWS's: the version the request created, and a hex string
    that grows with every event (S3 orders a key's events by it)."""
    from moto.s3 import notifications

    if getattr(notifications._get_s3_event, "_completed", False):
        return
    original = notifications._get_s3_event

    @functools.wraps(original)
    def get_s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        event = original(event_name, bucket, key, notification_id)
        obj = event["Records"][0]["s3"]["object"]
        version_id = getattr(key, "version_id", None)
        if version_id and version_id != "null":
            obj["versionId"] = version_id
        with _sequencer_lock:
            obj["sequencer"] = f"{next(_sequencer):016X}"
        return event

    get_s3_event._completed = True  # type: ignore[attr-defined]
    notifications._get_s3_event = get_s3_event


def _snapshot_only_touched_items() -> None:
    """moto's ``TransactWriteItems`` deep-copies every table it touches before it starts (to roll
    back on failure): O(table size) per transaction, minutes per notification once a job has a
    few thousand chunk items. Keep the same all-or-nothing behaviour by saving only the items the
    transaction touches and putting them back if it is cancelled. Runs under the DynamoDB lock
    (:func:`_serialize_moto_dynamodb`), so nothing else touches the tables meanwhile."""
    import copy

    from moto.dynamodb import models

    backend = models.DynamoDBBackend
    if getattr(backend.transact_write_items, "_touched_only", False):
        return
    original = backend.transact_write_items

    class _NoCopy:
        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        saved = []
        for entry in transact_items:
            _, op = next(iter(entry.items()))
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            key = op.get("Key") or {
                attr: op["Item"][attr] for attr in (table.hash_key_attr, table.range_key_attr) if attr
            }
            current = self.get_item(op["TableName"], key)
            saved.append(
                (op["TableName"], key, copy.deepcopy(current.to_json()["Attributes"]) if current else None)
            )
        models.copy = _NoCopy  # the tables are not copied; the saved items stand in for them
        try:
            return original(self, transact_items)
        except BaseException:
            for table_name, key, item in reversed(saved):
                if item is None:
                    if self.get_item(table_name, key) is not None:
                        self.delete_item(table_name, key)
                else:
                    self.put_item(table_name, item)
            raise
        finally:
            models.copy = copy

    transact_write_items._touched_only = True  # type: ignore[attr-defined]
    backend.transact_write_items = transact_write_items  # type: ignore[method-assign]


def _serialize_moto_dynamodb() -> None:
    """moto's DynamoDB backend is not thread-safe: ``TransactWriteItems`` deep-copies a table
    while other requests write to it ("dictionary changed size during iteration"). Real DynamoDB
    serializes conflicting writes; one lock around moto's DynamoDB request handling gives the
    in-process server the same behaviour."""
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "_serialized", False):
        return
    original = DynamoHandler.call_action

    @functools.wraps(original)
    def call_action(self: Any) -> Any:
        with _dynamodb_lock:
            return original(self)

    call_action._serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign]


class MotoServer:
    """moto's server (S3, SNS, SQS, DynamoDB) as a child process on 127.0.0.1:<free port>.

    A process of its own keeps its state apart from any other moto in this process (moto's
    backends are module globals) and gives it its own interpreter lock.
    """

    def __init__(self, port: int | None = None, log_path: str | None = None, startup_timeout: float = 60):
        self.port = port or free_port()
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "local_pipeline.aws", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    **DUMMY_CREDENTIALS,
                    "PYTHONPATH": os.pathsep.join(
                        filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
                    ),
                },
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        finally:
            if log is not subprocess.DEVNULL:
                log.close()
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode} during start-up")
            try:
                if requests.get(self.url + "/moto-api/data.json", timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"moto server not ready after {self.startup_timeout:.0f}s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def reset(self) -> None:
        requests.post(self.url + "/moto-api/reset", timeout=10).raise_for_status()

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            config=Config(retries={"max_attempts": 3, "mode": "standard"}, max_pool_connections=20),
        )


@dataclass(frozen=True)
class Names:
    input_bucket: str = "ticket-triage-input"
    input_prefix: str = "incoming/"
    output_bucket: str = "ticket-triage-output"
    jobs_table: str = "ticket-triage-jobs"
    success_topic: str = "ticket-triage-async-success"
    error_topic: str = "ticket-triage-async-error"
    results_topic: str = "ticket-triage-results"
    s3_events_queue: str = "ticket-triage-s3-events"
    corrections_prefix: str = "corrections/"
    corrections_queue: str = "ticket-triage-corrections-events"
    model_bucket: str = "ticket-triage-model"  # the model archive (the CDK assets bucket on AWS)
    success_queue: str = "ticket-triage-async-success"
    error_queue: str = "ticket-triage-async-error"
    results_queue: str = "ticket-triage-results"
    endpoint_name: str = "ticket-triage-async"
    # The Lambdas' dead-letter queues (failed asynchronous invocations land here after the retries).
    dispatcher_dlq: str = "ticket-triage-dispatcher-dlq"
    aggregator_dlq: str = "ticket-triage-aggregator-dlq"
    sweeper_dlq: str = "ticket-triage-sweeper-dlq"
    # the review queue: its topic, and an SQS queue subscribed as a review tool would be
    review_topic: str = "ticket-triage-review"
    review_queue: str = "ticket-triage-review"
    corrections_dlq: str = "ticket-triage-corrections-dlq"


@dataclass(frozen=True)
class Resources:
    names: Names
    success_topic_arn: str
    error_topic_arn: str
    results_topic_arn: str
    s3_events_queue_url: str
    success_queue_url: str
    error_queue_url: str
    results_queue_url: str
    success_subscription_arn: str
    error_subscription_arn: str
    dead_letter_queue_urls: dict[str, str]  # "dispatcher" | "aggregator" | "sweeper" | "corrections" -> URL
    review_topic_arn: str = ""
    review_queue_url: str = ""
    corrections_queue_url: str = ""  # the input bucket's notifications for corrections/

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "names": asdict(self.names)}


def _queue(sqs: Any, name: str, visibility_timeout: int = 30) -> tuple[str, str]:
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": str(visibility_timeout)})[
        "QueueUrl"
    ]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def _subscribe(sns: Any, topic_arn: str, queue_arn: str) -> str:
    # RawMessageDelivery stays off: the SQS body is the SNS envelope, which the router turns
    # into the Records[].Sns shape a Lambda subscription receives.
    return sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, ReturnSubscriptionArn=True)[
        "SubscriptionArn"
    ]


def create_jobs_table(dynamodb: Any, name: str) -> None:
    """The jobs table as the stack defines it (infra/job_state.py): ``pk``/``sk``, the sparse
    open-jobs index, TTL on ``expires_at``."""
    from ticket_pipeline import jobs

    dynamodb.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "pk", "AttributeType": "S"},
            {"AttributeName": "sk", "AttributeType": "S"},
            {"AttributeName": jobs.OPEN_JOBS_PARTITION, "AttributeType": "S"},
            {"AttributeName": jobs.DEADLINE_ATTRIBUTE, "AttributeType": "N"},
        ],
        GlobalSecondaryIndexes=[
            {
                "IndexName": jobs.OPEN_JOBS_INDEX,
                "KeySchema": [
                    {"AttributeName": jobs.OPEN_JOBS_PARTITION, "KeyType": "HASH"},
                    {"AttributeName": jobs.DEADLINE_ATTRIBUTE, "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "KEYS_ONLY"},
            }
        ],
        BillingMode="PAY_PER_REQUEST",
    )
    dynamodb.update_time_to_live(
        TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
    )


def provision(s3: Any, sns: Any, sqs: Any, dynamodb: Any, names: Names | None = None) -> Resources:
    """Create what the CDK stack creates on AWS, minus the endpoint and the Lambdas."""
    names = names or Names()
    for bucket in (names.input_bucket, names.output_bucket):
        s3.create_bucket(Bucket=bucket)
        # versioned like the stack's buckets: every upload is a version of its own
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    create_jobs_table(dynamodb, names.jobs_table)
    topics = {
        name: sns.create_topic(Name=name)["TopicArn"]
        for name in (names.success_topic, names.error_topic, names.results_topic)
    }
    s3_url, s3_arn = _queue(sqs, names.s3_events_queue)
    success_url, success_arn = _queue(sqs, names.success_queue)
    error_url, error_arn = _queue(sqs, names.error_queue)
    results_url, results_arn = _queue(sqs, names.results_queue)
    dlqs = {
        function: _queue(sqs, name)[0]
        for function, name in (
            ("dispatcher", names.dispatcher_dlq),
            ("aggregator", names.aggregator_dlq),
            ("sweeper", names.sweeper_dlq),
            ("corrections", names.corrections_dlq),
        )
    }
    corrections_url, corrections_arn = _queue(sqs, names.corrections_queue)
    s3.put_bucket_notification_configuration(
        Bucket=names.input_bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "QueueArn": s3_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": names.input_prefix}]}},
                },
                {  # the stack's second notification: correction files, to the corrections function
                    "QueueArn": corrections_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {
                        "Key": {"FilterRules": [{"Name": "prefix", "Value": names.corrections_prefix}]}
                    },
                },
            ]
        },
    )
    success_sub = _subscribe(sns, topics[names.success_topic], success_arn)
    error_sub = _subscribe(sns, topics[names.error_topic], error_arn)
    _subscribe(sns, topics[names.results_topic], results_arn)
    review_topic = sns.create_topic(Name=names.review_topic)["TopicArn"]
    review_url, review_arn = _queue(sqs, names.review_queue)
    _subscribe(sns, review_topic, review_arn)
    return Resources(
        names=names,
        success_topic_arn=topics[names.success_topic],
        error_topic_arn=topics[names.error_topic],
        results_topic_arn=topics[names.results_topic],
        s3_events_queue_url=s3_url,
        success_queue_url=success_url,
        error_queue_url=error_url,
        results_queue_url=results_url,
        success_subscription_arn=success_sub,
        error_subscription_arn=error_sub,
        dead_letter_queue_urls=dlqs,
        review_topic_arn=review_topic,
        review_queue_url=review_url,
        corrections_queue_url=corrections_url,
    )


def results_message(sqs_body: str) -> dict[str, Any]:
    """The results message inside an SQS body delivered from the results topic (SNS envelope)."""
    envelope = json.loads(sqs_body)
    return json.loads(envelope["Message"]) if "Message" in envelope else envelope


def _serve(port: int) -> None:
    """Entry point of the moto child process: ``python -m local_pipeline.aws <port>``."""
    from moto.server import main

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    _serialize_moto_dynamodb()
    _snapshot_only_touched_items()
    _complete_moto_s3_events()
    main(["-H", "127.0.0.1", "-p", str(port)])


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
