"""The whole local stack in one object: start in order, stop in reverse, even on errors."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local_pipeline.async_endpoint import (
    AsyncEndpoint,
    AsyncEndpointConfig,
    AsyncEndpointHTTPServer,
    AsyncRequest,
)
from local_pipeline.aws import DUMMY_CREDENTIALS, REGION, MotoServer, Names, Resources, provision
from local_pipeline.model_server import ModelServerProcess
from local_pipeline.router import EventRouter, Route, s3_event, sns_event

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
    log_level: str = "WARNING"
    server_env: dict[str, str] | None = None
    fault_injector: Callable[[AsyncRequest], str | None] | None = None


class LocalStack:
    """moto server + provisioned resources + model server + async endpoint + event router.

    Sets dummy credentials and the endpoint URLs in *this process's* environment while it runs
    (``AWS_ENDPOINT_URL`` -> moto, ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` -> the async endpoint's
    HTTP front), so the unmodified handlers build their boto3 clients exactly as on AWS.
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
        self._env = contextlib.ExitStack()
        self._log_handler: logging.Handler | None = None
        self._own_handler: logging.Handler | None = None
        self.clients: dict[str, Any] = {}

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
        progress(f"starting the inference server on {cfg.model_dir}")
        self.model_server = ModelServerProcess(
            cfg.model_dir, cfg.work_dir / "inference-server.log", env=cfg.server_env
        ).start()
        progress("starting the async endpoint stand-in")
        out = f"s3://{self.names.output_bucket}"
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
            self.moto.client("s3"),
            self.moto.client("sns"),
            fault_injector=cfg.fault_injector,
        ).start()
        self.endpoint_http = AsyncEndpointHTTPServer(self.endpoint).start()
        self._env.enter_context(patched_environ(self.lambda_environment()))
        self._route_handler_logs()
        from ticket_pipeline import aggregator, dispatcher

        dispatcher.runtime.cache_clear()
        aggregator.runtime.cache_clear()
        progress("starting the event router (S3 -> dispatcher, SNS -> aggregator)")
        self.router = EventRouter(
            self.moto.client("sqs"),
            [
                Route("ticket-dispatcher", self.resources.s3_events_queue_url, s3_event, dispatcher.handler),
                Route(
                    "ticket-aggregator-success",
                    self.resources.success_queue_url,
                    lambda body: sns_event(body, self.resources.success_subscription_arn),
                    aggregator.handler,
                    concurrency=cfg.aggregator_concurrency,
                ),
                Route(
                    "ticket-aggregator-error",
                    self.resources.error_queue_url,
                    lambda body: sns_event(body, self.resources.error_subscription_arn),
                    aggregator.handler,
                ),
            ],
        ).start()

    def stop(self) -> None:
        """Stop everything that was started, in reverse order; safe to call twice."""
        for step in (
            lambda: self.router and self.router.stop(),
            lambda: self.endpoint_http and self.endpoint_http.stop(),
            lambda: self.endpoint and self.endpoint.stop(),
            lambda: self.model_server and self.model_server.stop(),
            lambda: self.moto and self.moto.stop(),
            self._env.close,
            self._unroute_handler_logs,
        ):
            try:
                step()
            except Exception:
                log.exception("error while stopping the local stack")
        self.router = self.endpoint_http = self.endpoint = self.model_server = self.moto = None
        try:
            from ticket_pipeline import aggregator, dispatcher

            dispatcher.runtime.cache_clear()
            aggregator.runtime.cache_clear()
        except ImportError:
            pass

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- wiring --------------------------------------------------------------------------------
    def lambda_environment(self) -> dict[str, str]:
        """What the CDK stack sets on the two functions, plus local endpoints and dummy keys."""
        assert self.moto and self.resources and self.endpoint_http
        cfg = self.config
        return {
            **DUMMY_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.moto.url,
            "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": self.endpoint_http.url,
            "POWERTOOLS_SERVICE_NAME": "ticket-pipeline-local",
            "LOG_LEVEL": cfg.log_level,
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
            "FINALIZE_LEASE_SECONDS": "60",
        }

    def _route_handler_logs(self) -> None:
        """Handler logs (Powertools JSON) go to <work_dir>/lambda.log, the stack's own (router
        retries, endpoint errors) to <work_dir>/local-pipeline.log, not to the terminal."""
        from ticket_pipeline.logs import handler_logger

        own = logging.getLogger("local_pipeline")
        self._own_handler = logging.FileHandler(self.config.work_dir / "local-pipeline.log")
        self._own_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        own.addHandler(self._own_handler)
        own.setLevel(logging.INFO)
        own.propagate = False

        logger = handler_logger()
        std = logging.getLogger(logger.service)
        self._log_handler = logging.FileHandler(self.config.work_dir / "lambda.log")
        self._saved_handlers = list(std.handlers)
        for handler in self._saved_handlers:
            self._log_handler.setFormatter(handler.formatter)
            std.removeHandler(handler)
        std.addHandler(self._log_handler)
        std.setLevel(self.config.log_level)

    def _unroute_handler_logs(self) -> None:
        own = logging.getLogger("local_pipeline")
        if getattr(self, "_own_handler", None) is not None:
            own.removeHandler(self._own_handler)
            self._own_handler.close()
            self._own_handler = None
            own.propagate = True
        if self._log_handler is None:
            return
        from ticket_pipeline.logs import handler_logger

        std = logging.getLogger(handler_logger().service)
        std.removeHandler(self._log_handler)
        self._log_handler.close()
        for handler in self._saved_handlers:
            std.addHandler(handler)
        self._log_handler = None

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
            "output_bucket": self.names.output_bucket,
            "results_prefix": "results/",
            "results_topic_arn": self.resources.results_topic_arn,
            "results_queue_url": self.resources.results_queue_url,
            "jobs_table": self.names.jobs_table,
            "async_endpoint_url": self.endpoint_http.url,
            "endpoint_name": self.names.endpoint_name,
            "model_server_url": self.model_server.url,
            "model_dir": str(self.config.model_dir),
            "pid": os.getpid(),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
