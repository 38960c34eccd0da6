"""The whole local stack in one object: start in order, stop in reverse, even on errors."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from local_pipeline.async_endpoint import (
    AsyncEndpoint,
    AsyncEndpointConfig,
    AsyncEndpointHTTPServer,
    AsyncRequest,
)
from local_pipeline.aws import ACCOUNT, DUMMY_CREDENTIALS, REGION, MotoServer, Names, Resources, provision
from local_pipeline.calls import SAGEMAKER_ENDPOINT, CallRecorder
from local_pipeline.lambda_front import LambdaInvokeFront
from local_pipeline.model_server import ModelServerProcess
from local_pipeline.router import EventRouter, Route, s3_event, sns_event

DISPATCHER, AGGREGATOR, SWEEPER = "ticket-dispatcher", "ticket-aggregator", "ticket-sweeper"
CORRECTIONS = "ticket-corrections"
MANIFEST = "triage_artifact.json"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackConfig:
    model_dir: Path
    work_dir: Path  # logs
    chunk_size: int = 500
    max_concurrent_invocations: int = 2
    request_ttl_seconds: int = 21600
    invocation_timeout_seconds: int = 900
    max_file_mb: float = 100
    aggregator_concurrency: int = 2
    dispatcher_timeout_seconds: int = 300  # the stack's defaults
    aggregator_timeout_seconds: int = 300
    job_deadline_margin_seconds: int = 1800
    sweep_interval_seconds: float = 60.0  # EventBridge schedule of the sweeper (5 minutes on AWS)
    log_level: str = "WARNING"
    drift_min_tickets: int | None = None  # None: the stack's default (cdk.json)
    server_env: dict[str, str] | None = None
    fault_injector: Callable[[AsyncRequest], str | None] | None = None
    notification_fault: Callable[[AsyncRequest], bool] | None = None


def scheduled_event(rule_arn: str, when: float | None = None) -> dict[str, Any]:
    """The event EventBridge sends a Lambda target of a schedule rule."""
    stamp = datetime.fromtimestamp(when or time.time(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": stamp,
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


def as_function(function: str, handler: Callable, calls: CallRecorder) -> Callable:
    """``handler`` run as the Lambda function ``function``: its metrics carry the function's own
    ``service`` dimension (the stack's POWERTOOLS_SERVICE_NAME, one per function, although one
    process hosts the three here), and the runtime's log writes are recorded as the function's."""
    from ticket_pipeline.logs import serving_as

    def invoke(event: dict[str, Any], context: Any) -> Any:
        calls.lambda_invocation(function, context.log_stream_name)
        with serving_as(function):
            return handler(event, context)

    return invoke


@contextlib.contextmanager
def routed_logs(work_dir: Path, level: str) -> Iterator[None]:
    """Send what the functions print to files instead of the terminal, while the stack runs:
    their Powertools JSON logs to ``<work_dir>/lambda.log``, their EMF metrics to
    ``<work_dir>/metrics.log``, and the local stack's own log (router retries, endpoint errors) to
    ``<work_dir>/local-pipeline.log``."""
    from ticket_pipeline import metrics
    from ticket_pipeline.logs import handler_logger

    own = logging.getLogger("local_pipeline")
    own_handler = logging.FileHandler(work_dir / "local-pipeline.log")
    own_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    own.addHandler(own_handler)
    own.setLevel(logging.INFO)
    own.propagate = False

    std = logging.getLogger(handler_logger().service)
    lambda_handler = logging.FileHandler(work_dir / "lambda.log")
    saved = list(std.handlers)
    for handler in saved:
        lambda_handler.setFormatter(handler.formatter)
        std.removeHandler(handler)
    std.addHandler(lambda_handler)
    std.setLevel(level)
    metrics_file = (work_dir / "metrics.log").open("a", encoding="utf-8")
    metrics.set_output(metrics_file)
    try:
        yield
    finally:
        metrics.set_output(None)
        metrics_file.close()
        std.removeHandler(lambda_handler)
        lambda_handler.close()
        for handler in saved:
            std.addHandler(handler)
        own.removeHandler(own_handler)
        own_handler.close()
        own.propagate = True


class LocalStack:
    """moto server + provisioned resources + model server + async endpoint + event router +
    Lambda's asynchronous Invoke + the sweeper's schedule.

    Sets dummy credentials and the endpoint URLs in *this process's* environment while it runs
    (``AWS_ENDPOINT_URL`` -> moto, ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` -> the async endpoint's
    HTTP front, ``AWS_ENDPOINT_URL_LAMBDA`` -> the Invoke front), so the unmodified handlers build
    their boto3 clients exactly as on AWS. The three functions' EMF metrics go to
    ``<work_dir>/metrics.log``.
    """

    def __init__(self, config: StackConfig, names: Names | None = None):
        self.config = config
        self.names = names or Names()
        self.moto: MotoServer | None = None
        self.resources: Resources | None = None
        self.model_server: ModelServerProcess | None = None
        self.endpoint: AsyncEndpoint | None = None
        self.endpoint_http: AsyncEndpointHTTPServer | None = None
        self.router: EventRouter | None = None
        self.lambda_front: LambdaInvokeFront | None = None
        self.invoke_queues: dict[str, str] = {}
        self.sweeps = 0
        self._sweeping = threading.Event()
        self._sweeper_thread: threading.Thread | None = None
        self._env = contextlib.ExitStack()
        self.clients: dict[str, Any] = {}
        # Every AWS call the three functions and the endpoint (as its SageMaker role) make.
        self.calls = CallRecorder()

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self, progress: Callable[[str], None] = lambda _msg: None) -> LocalStack:
        try:
            self._start(progress)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, progress: Callable[[str], None]) -> None:
        from local_pipeline.aws import patched_environ

        cfg = self.config
        cfg.work_dir.mkdir(parents=True, exist_ok=True)
        progress("starting moto server (S3, SNS, SQS, DynamoDB)")
        self.moto = MotoServer(log_path=str(cfg.work_dir / "moto.log")).start()
        for service in ("s3", "sns", "sqs", "dynamodb"):
            self.clients[service] = self.moto.client(service)
        self.resources = provision(
            self.clients["s3"], self.clients["sns"], self.clients["sqs"], self.clients["dynamodb"], self.names
        )
        # the model's manifest where the corrections function reads the labels (on AWS: the
        # archive the endpoint serves, in the CDK assets bucket)
        self.clients["s3"].create_bucket(Bucket=self.names.model_bucket)
        self.clients["s3"].put_object(
            Bucket=self.names.model_bucket,
            Key=f"model/{MANIFEST}",
            Body=(cfg.model_dir / MANIFEST).read_bytes(),
        )
        progress(f"starting the inference server on {cfg.model_dir}")
        self.model_server = ModelServerProcess(
            cfg.model_dir, cfg.work_dir / "inference-server.log", env=cfg.server_env
        ).start()
        progress("starting the async endpoint stand-in")
        out = f"s3://{self.names.output_bucket}"
        endpoint_s3, endpoint_sns = self.moto.client("s3"), self.moto.client("sns")
        for client in (endpoint_s3, endpoint_sns):  # what SageMaker does with the execution role
            self.calls.attach(client, SAGEMAKER_ENDPOINT)
        self.endpoint = AsyncEndpoint(
            AsyncEndpointConfig(
                endpoint_name=self.names.endpoint_name,
                region=REGION,
                model_url=self.model_server.url,
                s3_output_path=f"{out}/async-results/",
                s3_failure_path=f"{out}/async-failures/",
                success_topic_arn=self.resources.success_topic_arn,
                error_topic_arn=self.resources.error_topic_arn,
                max_concurrent_invocations=cfg.max_concurrent_invocations,
            ),
            endpoint_s3,
            endpoint_sns,
            fault_injector=cfg.fault_injector,
            notification_fault=cfg.notification_fault,
        ).start()
        self.endpoint_http = AsyncEndpointHTTPServer(self.endpoint).start()
        sqs = self.clients["sqs"]
        # Lambda keeps asynchronous invocations in a queue of its own: one per function here.
        for function in (DISPATCHER, AGGREGATOR, SWEEPER, CORRECTIONS):
            self.invoke_queues[function] = sqs.create_queue(QueueName=f"{function}-async-invocations")[
                "QueueUrl"
            ]
        self.lambda_front = LambdaInvokeFront(
            lambda function, payload: sqs.send_message(
                QueueUrl=self.invoke_queues[function], MessageBody=payload.decode("utf-8")
            ),
            set(self.invoke_queues),
        ).start()
        self._env.enter_context(patched_environ(self.lambda_environment()))
        self._env.enter_context(routed_logs(cfg.work_dir, cfg.log_level))
        from ticket_pipeline import aggregator, corrector, dispatcher, sweeper

        for function, handler_module in (
            (DISPATCHER, dispatcher),
            (AGGREGATOR, aggregator),
            (SWEEPER, sweeper),
            (CORRECTIONS, corrector),
        ):
            handler_module.runtime.cache_clear()
            # The execution environment's cold start, now: its clients are the ones recorded.
            self.calls.attach_runtime(handler_module.runtime(), function)
        progress("starting the event router (S3 -> dispatcher, SNS -> aggregator, schedule -> sweeper)")
        res = self.resources
        functions = {  # name -> (handler, timeout, dead-letter queue), as the stack configures them
            DISPATCHER: (
                dispatcher.handler,
                cfg.dispatcher_timeout_seconds,
                res.dead_letter_queue_urls["dispatcher"],
            ),
            AGGREGATOR: (
                aggregator.handler,
                cfg.aggregator_timeout_seconds,
                res.dead_letter_queue_urls["aggregator"],
            ),
            SWEEPER: (sweeper.handler, cfg.aggregator_timeout_seconds, res.dead_letter_queue_urls["sweeper"]),
            CORRECTIONS: (
                corrector.handler,
                cfg.aggregator_timeout_seconds,
                res.dead_letter_queue_urls["corrections"],
            ),
        }

        def route(function: str, queue_url: str, make_event: Callable, concurrency: int = 1) -> Route:
            handler, timeout, dlq = functions[function]
            return Route(function, queue_url, make_event, as_function(function, handler, self.calls),
                         concurrency, timeout, dlq)  # fmt: skip

        self.router = EventRouter(
            sqs,
            [
                route(DISPATCHER, res.s3_events_queue_url, s3_event),
                route(CORRECTIONS, res.corrections_queue_url, s3_event),  # the corrections/ notification
                route(
                    AGGREGATOR,
                    res.success_queue_url,
                    lambda body: sns_event(body, res.success_subscription_arn),
                    concurrency=cfg.aggregator_concurrency,
                ),
                route(
                    AGGREGATOR, res.error_queue_url, lambda body: sns_event(body, res.error_subscription_arn)
                ),
                # asynchronous Invoke (continuations, redrive) and the sweeper's schedule
                *(route(function, self.invoke_queues[function], json.loads) for function in functions),
            ],
        ).start()
        self._sweeper_thread = threading.Thread(
            target=self._schedule_sweeps, name="sweep-schedule", daemon=True
        )
        self._sweeper_thread.start()

    def _schedule_sweeps(self) -> None:
        """EventBridge's rate schedule: a scheduled event to the sweeper every interval."""
        rule_arn = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/ticket-triage-sweep"
        while not self._sweeping.wait(self.config.sweep_interval_seconds):
            try:
                self.invoke_sweeper(rule_arn)
            except Exception:
                log.exception("could not schedule a sweep")

    def invoke_sweeper(self, rule_arn: str = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/manual") -> None:
        """Queue one sweep now (what the schedule does every interval)."""
        self.clients["sqs"].send_message(
            QueueUrl=self.invoke_queues[SWEEPER], MessageBody=json.dumps(scheduled_event(rule_arn))
        )
        self.sweeps += 1

    def stop(self) -> None:
        """Stop everything that was started, in reverse order; safe to call twice."""
        self._sweeping.set()
        for step in (
            lambda: self._sweeper_thread and self._sweeper_thread.join(5),
            lambda: self.router and self.router.stop(),
            lambda: self.lambda_front and self.lambda_front.stop(),
            lambda: self.endpoint_http and self.endpoint_http.stop(),
            lambda: self.endpoint and self.endpoint.stop(),
            lambda: self.model_server and self.model_server.stop(),
            lambda: self.moto and self.moto.stop(),
            self._env.close,
        ):
            try:
                step()
            except Exception:
                log.exception("error while stopping the local stack")
        self.router = self.endpoint_http = self.endpoint = self.model_server = self.moto = None
        self.lambda_front = None
        try:
            from ticket_pipeline import aggregator, corrector, dispatcher, sweeper

            for handler_module in (dispatcher, aggregator, sweeper, corrector):
                handler_module.runtime.cache_clear()
        except ImportError:
            pass

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- wiring --------------------------------------------------------------------------------
    def lambda_environment(self) -> dict[str, str]:
        """What the CDK stack sets on the two functions, plus local endpoints and dummy keys."""
        assert self.moto and self.resources and self.endpoint_http and self.lambda_front
        cfg = self.config
        longest = max(cfg.dispatcher_timeout_seconds, cfg.aggregator_timeout_seconds)
        return {
            **DUMMY_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.moto.url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.endpoint_http.url,
            "AWS_ENDPOINT_URL_LAMBDA": self.lambda_front.url,
            "POWERTOOLS_SERVICE_NAME": "ticket-pipeline-local",
            "POWERTOOLS_METRICS_NAMESPACE": "TicketTriageLocal",
            "LOG_LEVEL": cfg.log_level,
            # one process hosts the three functions: one timeout for all, the longest
            "FUNCTION_TIMEOUT_SECONDS": str(longest),
            "FINALIZE_LEASE_SECONDS": str(longest + 60),
            "JOB_DEADLINE_MARGIN_SECONDS": str(cfg.job_deadline_margin_seconds),
            "ENDPOINT_NAME": self.names.endpoint_name,
            "JOBS_TABLE": self.names.jobs_table,
            "CHUNK_PREFIX": "chunks/",
            "CHUNK_SIZE": str(cfg.chunk_size),
            "MAX_FILE_MB": str(cfg.max_file_mb),
            "REQUEST_TTL_SECONDS": str(cfg.request_ttl_seconds),
            "INVOCATION_TIMEOUT_SECONDS": str(cfg.invocation_timeout_seconds),
            "OUTPUT_BUCKET": self.names.output_bucket,
            "RESULTS_PREFIX": "results/",
            "RESULTS_TOPIC_ARN": self.resources.results_topic_arn,
            **self.review_environment(),
            # the corrections function (its labels: the served model's manifest)
            "INPUT_PREFIX": self.names.input_prefix,
            "CORRECTIONS_PREFIX": self.names.corrections_prefix,
            "LABELS_LOCATION": f"s3://{self.names.model_bucket}/model/{MANIFEST}",
        }

    def review_environment(self) -> dict[str, str]:
        """The review queue's settings as the stack gives them (cdk.json's defaults, the artifact's
        training mix: infra/lambdas.py ``ReviewProps``)."""
        from infra.config import TriageConfig
        from triage_core.artifact import load_manifest

        assert self.resources
        defaults = TriageConfig()
        env = {
            "REVIEW_TOPIC_ARN": self.resources.review_topic_arn,
            "REVIEW_PREFIX": defaults.review_prefix,
            "OUT_OF_SCOPE_BELOW": str(defaults.out_of_scope_below),
            "DRIFT_MIN_TICKETS": str(self.config.drift_min_tickets or defaults.drift_min_tickets),
        }
        mix = load_manifest(self.config.model_dir).training_mix
        if mix:
            env["TRAINING_MIX"] = json.dumps(mix, separators=(",", ":"))
        return env

    def info(self) -> dict[str, Any]:
        """The contents of ``local-stack.json``."""
        assert self.moto and self.resources and self.endpoint_http and self.model_server
        return {
            "endpoint_url": self.moto.url,
            "region": REGION,
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing",
            "input_bucket": self.names.input_bucket,
            "input_prefix": self.names.input_prefix,
            "corrections_prefix": self.names.corrections_prefix,
            "output_bucket": self.names.output_bucket,
            "results_prefix": "results/",
            "results_topic_arn": self.resources.results_topic_arn,
            "results_queue_url": self.resources.results_queue_url,
            "review_topic_arn": self.resources.review_topic_arn,
            "review_queue_url": self.resources.review_queue_url,
            "jobs_table": self.names.jobs_table,
            "dead_letter_queue_urls": self.resources.dead_letter_queue_urls,
            "lambda_endpoint_url": self.lambda_front.url if self.lambda_front else None,
            "function_names": {
                "dispatcher": DISPATCHER,
                "aggregator": AGGREGATOR,
                "sweeper": SWEEPER,
                "corrections": CORRECTIONS,
            },
            "async_endpoint_url": self.endpoint_http.url,
            "endpoint_name": self.names.endpoint_name,
            "model_server_url": self.model_server.url,
            "model_dir": str(self.config.model_dir),
            "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
