"""A local stand-in for a SageMaker *asynchronous* inference endpoint.

It implements the documented contract that the dispatcher and aggregator rely on:

* ``InvokeEndpointAsync``: the same request fields (``EndpointName``, ``InputLocation``,
  ``ContentType``, ``Accept``, ``CustomAttributes``, ``InferenceId``, ``RequestTTLSeconds``,
  ``InvocationTimeoutSeconds``, ``S3OutputPathExtension``, ``Filename``), validated against
  the limits in botocore's own service model (lengths, ranges, patterns), answered at once with
  ``InferenceId``, ``OutputLocation`` and ``FailureLocation``. Two ways in: a Python object with
  ``invoke_endpoint_async(**kwargs)`` (the boto3 client's signature) and an HTTP front end that
  speaks the real REST protocol (``POST /endpoints/<name>/async-invocations`` with the
  ``X-Amzn-SageMaker-*`` headers), so the dispatcher uses an unmodified boto3
  ``sagemaker-runtime`` client pointed at it with ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME``.
* A queue and ``max_concurrent_invocations`` worker threads (SageMaker's
  ``MaxConcurrentInvocationsPerInstance``). A worker reads the input object from S3, POSTs it to
  the real model container's ``/invocations`` (``inference_server`` as a process) with the
  request's content type/accept, and writes the response to ``S3OutputPath/<id>.out`` or the
  error body to ``S3FailurePath/<id>-error.out``.
* The documented success/error notification JSON on the success/error SNS topics.
* ``RequestTTLSeconds``: a request still queued when its TTL runs out is not processed; it
  fails with an error notification. ``InvocationTimeoutSeconds``: the HTTP call to the model is
  cut at that time and the request fails.

``update_model(url)`` models an endpoint update as far as one process honestly can: the new
model container must answer ``GET /ping`` with 200 or the update fails and nothing changes (as
SageMaker keeps the old fleet when the new one never becomes healthy); then every request a
worker takes goes to the new container, while requests already at the old one finish there
(``in_flight(url)`` tells when the old container may be stopped). That is the all-at-once
traffic shift; canary and linear steps, baking periods and alarm roll-backs are SageMaker's
and are not imitated here (``infra/rollout.py`` configures them, the template tests check it).

Test hooks: ``fault_injector(request) -> reason | None`` fails chosen requests the way a model
error would (error body + error notification), to exercise failed chunks;
``notification_fault(request) -> bool`` processes a request but publishes no notification for
it, as when SageMaker cannot publish (the ``NotificationFailures`` metric), to exercise jobs that
only their deadline can finish.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

import botocore.session
import requests
from botocore.exceptions import ClientError

from local_pipeline.loopback import LoopbackServer
from ticket_pipeline.notifications import error_notification, success_notification
from ticket_pipeline.storage import ObjectNotFound, ObjectStore, ObjectUnreadable, S3Location

log = logging.getLogger(__name__)

_OPERATION = "InvokeEndpointAsync"
_HEADERS = {
    "ContentType": "X-Amzn-SageMaker-Content-Type",
    "Accept": "X-Amzn-SageMaker-Accept",
    "CustomAttributes": "X-Amzn-SageMaker-Custom-Attributes",
    "InferenceId": "X-Amzn-SageMaker-Inference-Id",
    "InputLocation": "X-Amzn-SageMaker-InputLocation",
    "S3OutputPathExtension": "X-Amzn-SageMaker-S3OutputPathExtension",
    "Filename": "X-Amzn-SageMaker-Filename",
    "RequestTTLSeconds": "X-Amzn-SageMaker-RequestTTLSeconds",
    "InvocationTimeoutSeconds": "X-Amzn-SageMaker-InvocationTimeoutSeconds",
}
DEFAULT_TTL_SECONDS = 6 * 3600  # the API's documented defaults
DEFAULT_INVOCATION_TIMEOUT_SECONDS = 15 * 60


def _java_regex(pattern: str) -> re.Pattern[str]:
    """The service model's patterns are Java regexes; translate the constructs they use."""
    for java, python in (
        (r"[\p{Print}]", r"[\x20-\x7E]"),
        (r"\p{Print}", r"[\x20-\x7E]"),
        (r"\p{ASCII}", r"[\x00-\x7F]"),
        (r"\z", r"\Z"),
    ):
        pattern = pattern.replace(java, python)
    return re.compile(pattern)


def _service_limits() -> tuple[set[str], dict[str, tuple[str, dict[str, Any]]]]:
    model = botocore.session.get_session().get_service_model("sagemaker-runtime")
    shape = model.operation_model(_OPERATION).input_shape
    members = {name: (member.type_name, dict(member.metadata)) for name, member in shape.members.items()}
    return set(shape.required_members), members


_REQUIRED, _MEMBERS = _service_limits()


def validation_error(message: str) -> ClientError:
    """What boto3 raises when the service answers 400 ValidationError."""
    return ClientError(
        {
            "Error": {"Code": "ValidationError", "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        },
        _OPERATION,
    )


def validate_request(params: dict[str, Any]) -> None:
    """Validate InvokeEndpointAsync parameters against botocore's service model (required
    members, types, min/max, patterns), raising the service's ValidationError."""
    unknown = set(params) - set(_MEMBERS)
    if unknown:
        raise validation_error(f"Unknown parameter(s): {', '.join(sorted(unknown))}")
    for name in sorted(_REQUIRED | {"InputLocation"}):
        if params.get(name) in (None, ""):
            raise validation_error(f"1 validation error detected: Value null at '{name}' must not be null")
    if "Body" in params:
        raise validation_error("inline Body is not supported by the local endpoint; use InputLocation")
    for name, value in params.items():
        type_name, meta = _MEMBERS[name]
        if type_name == "integer":
            if not isinstance(value, int) or isinstance(value, bool):
                raise validation_error(f"Value '{value}' at '{name}' must be an integer")
            if "min" in meta and value < meta["min"]:
                raise validation_error(
                    f"Value '{value}' at '{name}' failed to satisfy constraint: "
                    f"Member must have value greater than or equal to {meta['min']}"
                )
            if "max" in meta and value > meta["max"]:
                raise validation_error(
                    f"Value '{value}' at '{name}' failed to satisfy constraint: "
                    f"Member must have value less than or equal to {meta['max']}"
                )
        elif type_name == "string":
            if not isinstance(value, str):
                raise validation_error(f"Value at '{name}' must be a string")
            if len(value) < meta.get("min", 0) or len(value) > meta.get("max", 1 << 31):
                raise validation_error(
                    f"Value at '{name}' failed to satisfy constraint: Member must have length between "
                    f"{meta.get('min', 0)} and {meta.get('max')}"
                )
            if "pattern" in meta and not _java_regex(meta["pattern"]).fullmatch(value):
                raise validation_error(
                    f"Value '{value}' at '{name}' failed to satisfy constraint: "
                    f"Member must satisfy regular expression pattern: {meta['pattern']}"
                )


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class AsyncEndpointConfig:
    endpoint_name: str
    region: str
    model_url: str  # base URL of the model container (``/invocations``, ``/ping``)
    s3_output_path: str  # AsyncInferenceConfig.OutputConfig.S3OutputPath
    s3_failure_path: str  # ... S3FailurePath
    success_topic_arn: str
    error_topic_arn: str
    max_concurrent_invocations: int = 2  # ClientConfig.MaxConcurrentInvocationsPerInstance


@dataclass
class AsyncRequest:
    inference_id: str
    input_location: str
    output_location: str
    failure_location: str
    content_type: str | None
    accept: str | None
    custom_attributes: str | None
    ttl_seconds: int
    timeout_seconds: int
    received: float = field(default_factory=time.time)


@dataclass
class EndpointStats:
    received: int = 0
    succeeded: int = 0
    failed: int = 0
    expired: int = 0
    notification_failures: int = 0
    busy_seconds: float = 0.0  # summed model call time

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.expired


class AsyncEndpoint:
    """Queue + workers + S3 in/out + SNS notifications around a real model container."""

    def __init__(
        self,
        config: AsyncEndpointConfig,
        s3_client: Any,
        sns_client: Any,
        fault_injector: Callable[[AsyncRequest], str | None] | None = None,
        notification_fault: Callable[[AsyncRequest], bool] | None = None,
    ):
        self.config = config
        self.objects = ObjectStore(s3_client)
        self.sns = sns_client
        self.fault_injector = fault_injector
        self.notification_fault = notification_fault
        self.stats = EndpointStats()
        self.notifications: list[dict[str, Any]] = []
        self._queue: queue.Queue[AsyncRequest | None] = queue.Queue()
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._stopping = threading.Event()
        self._session = requests.Session()
        self._session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))
        self._model_url = config.model_url
        self._in_flight: dict[str, int] = {}

    # --- API -----------------------------------------------------------------------------------
    def invoke_endpoint_async(self, **params: Any) -> dict[str, Any]:
        """``sagemaker-runtime`` ``invoke_endpoint_async``: same arguments, same response keys."""
        validate_request(params)
        if params["EndpointName"] != self.config.endpoint_name:
            raise validation_error(f"Endpoint {params['EndpointName']} of account 123456789012 not found.")
        inference_id = params.get("InferenceId") or str(uuid.uuid4())
        name = params.get("Filename") or inference_id
        extension = params.get("S3OutputPathExtension", "").strip("/")
        out_base = self.config.s3_output_path.rstrip("/") + (f"/{extension}" if extension else "")
        fail_base = self.config.s3_failure_path.rstrip("/") + (f"/{extension}" if extension else "")
        request = AsyncRequest(
            inference_id=inference_id,
            input_location=params["InputLocation"],
            output_location=f"{out_base}/{name}.out",
            failure_location=f"{fail_base}/{name}-error.out",
            content_type=params.get("ContentType"),
            accept=params.get("Accept"),
            custom_attributes=params.get("CustomAttributes"),
            ttl_seconds=params.get("RequestTTLSeconds", DEFAULT_TTL_SECONDS),
            timeout_seconds=params.get("InvocationTimeoutSeconds", DEFAULT_INVOCATION_TIMEOUT_SECONDS),
        )
        with self._lock:
            self.stats.received += 1
        self._queue.put(request)
        return {
            "ResponseMetadata": {"HTTPStatusCode": 202},
            "InferenceId": inference_id,
            "OutputLocation": request.output_location,
            "FailureLocation": request.failure_location,
        }

    def backlog(self) -> int:
        return self._queue.qsize()

    @property
    def model_url(self) -> str:
        return self._model_url

    def update_model(self, model_url: str, ping_timeout: float = 10.0) -> str:
        """Move to the model container at ``model_url`` (all at once); returns the previous URL.

        Raises ``RuntimeError`` and keeps the current container if the new one does not answer
        ``GET /ping`` with 200."""
        try:
            ping = self._session.get(model_url.rstrip("/") + "/ping", timeout=ping_timeout)
            healthy = ping.status_code == 200
        except requests.RequestException:
            healthy = False
        if not healthy:
            raise RuntimeError(
                f"update failed: {model_url} does not answer /ping with 200; still on the old model"
            )
        with self._lock:
            previous, self._model_url = self._model_url, model_url
        return previous

    def in_flight(self, model_url: str) -> int:
        """Requests being processed by the container at ``model_url`` now."""
        with self._lock:
            return self._in_flight.get(model_url, 0)

    def queued(self) -> list[AsyncRequest]:
        """A snapshot of the requests waiting for a worker (all of them when not started)."""
        with self._queue.mutex:
            return [r for r in self._queue.queue if r is not None]

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> AsyncEndpoint:
        for i in range(self.config.max_concurrent_invocations):
            worker = threading.Thread(target=self._work, name=f"async-endpoint-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the workers; requests still queued are dropped (as when an endpoint is deleted)."""
        self._stopping.set()
        for _ in self._workers:
            self._queue.put(None)
        for worker in self._workers:
            worker.join(timeout)
        self._workers.clear()
        self._session.close()

    def wait_idle(self, timeout: float = 60.0) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.stats.finished >= self.stats.received and self._queue.empty():
                return True
            time.sleep(0.05)
        return False

    # --- processing ----------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            request = self._queue.get()
            if request is None or self._stopping.is_set():
                return
            try:
                self._process(request)
            except Exception:  # never let one request kill a worker
                log.exception("async endpoint worker failed on %s", request.inference_id)
                self._fail(request, "InternalFailure: the local async endpoint failed to process the request")

    def _process(self, request: AsyncRequest) -> None:
        if time.time() - request.received > request.ttl_seconds:
            with self._lock:
                self.stats.expired += 1
            self._notify_error(
                request,
                f"Request expired: it was not processed within RequestTTLSeconds={request.ttl_seconds}",
                failure_location=None,
                count=False,
            )
            return
        injected = self.fault_injector(request) if self.fault_injector else None
        if injected:
            self._fail(request, injected, body=json.dumps({"error": injected}).encode())
            return
        try:
            payload = self.objects.read_bytes(S3Location.parse(request.input_location))
        except (ObjectNotFound, ObjectUnreadable, ValueError) as exc:
            self._fail(request, f"ClientError: could not read InputLocation {request.input_location}: {exc}")
            return
        headers = {"Content-Type": request.content_type or "application/octet-stream"}
        if request.accept:
            headers["Accept"] = request.accept
        if request.custom_attributes:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = request.custom_attributes
        started = time.perf_counter()
        with self._lock:  # the container this request goes to, even if the model is updated meanwhile
            model_url = self._model_url
            self._in_flight[model_url] = self._in_flight.get(model_url, 0) + 1
        try:
            response = self._session.post(
                model_url.rstrip("/") + "/invocations",
                data=payload,
                headers=headers,
                timeout=(5, request.timeout_seconds),
            )
        except requests.Timeout:
            self._fail(
                request,
                "ModelError: the model did not respond within "
                f"InvocationTimeoutSeconds={request.timeout_seconds}",
            )
            return
        except requests.RequestException as exc:
            self._fail(request, f"ModelError: could not reach the model container: {type(exc).__name__}")
            return
        finally:
            with self._lock:
                self.stats.busy_seconds += time.perf_counter() - started
                self._in_flight[model_url] -= 1
        if response.ok:
            self.objects.put_bytes(
                S3Location.parse(request.output_location),
                response.content,
                response.headers.get("Content-Type", "application/octet-stream"),
            )
            with self._lock:
                self.stats.succeeded += 1
            self._publish(
                request,
                self.config.success_topic_arn,
                success_notification(
                    inference_id=request.inference_id,
                    endpoint_name=self.config.endpoint_name,
                    input_location=request.input_location,
                    output_location=request.output_location,
                    received_time=_iso(request.received),
                    event_time=_iso(time.time()),
                    region=self.config.region,
                    content_type=request.content_type,
                    accept=request.accept,
                    response_content_type=response.headers.get("Content-Type"),
                ),
            )
            return
        kind = "client" if response.status_code < 500 else "server"
        message = response.text[:500].strip()
        self._fail(
            request,
            f"ClientError: Received {kind} error ({response.status_code}) from model with message "
            f'"{message}". See the endpoint logs for more information.',
            body=response.content,
            content_type=response.headers.get("Content-Type"),
        )

    def _fail(
        self, request: AsyncRequest, reason: str, body: bytes | None = None, content_type: str | None = None
    ) -> None:
        self.objects.put_bytes(
            S3Location.parse(request.failure_location),
            body if body is not None else json.dumps({"error": reason}).encode(),
            content_type or "application/json",
        )
        self._notify_error(request, reason, request.failure_location, content_type=content_type)

    def _notify_error(
        self,
        request: AsyncRequest,
        reason: str,
        failure_location: str | None,
        content_type: str | None = None,
        count: bool = True,
    ) -> None:
        if count:
            with self._lock:
                self.stats.failed += 1
        self._publish(
            request,
            self.config.error_topic_arn,
            error_notification(
                inference_id=request.inference_id,
                endpoint_name=self.config.endpoint_name,
                input_location=request.input_location,
                failure_location=failure_location,
                failure_reason=reason,
                received_time=_iso(request.received),
                event_time=_iso(time.time()),
                region=self.config.region,
                content_type=request.content_type,
                accept=request.accept,
                response_content_type=content_type,
            ),
        )

    def _publish(self, request: AsyncRequest, topic_arn: str, notification: dict[str, Any]) -> None:
        if self.notification_fault is not None and self.notification_fault(request):
            with self._lock:
                self.stats.notification_failures += 1
            log.warning("notification for %s not published (NotificationFailures)", request.inference_id)
            return
        with self._lock:
            self.notifications.append(notification)
        self.sns.publish(TopicArn=topic_arn, Message=json.dumps(notification))


class AsyncEndpointHTTPServer(LoopbackServer):
    """The REST front end of :class:`AsyncEndpoint` (what boto3's sagemaker-runtime client calls)."""

    def __init__(self, endpoint: AsyncEndpoint, host: str = "127.0.0.1", port: int = 0):
        super().__init__(_make_handler(endpoint), "async-endpoint-http", host, port)
        self.endpoint = endpoint


def _make_handler(endpoint: AsyncEndpoint) -> type[BaseHTTPRequestHandler]:
    path_re = re.compile(r"^/endpoints/(?P<name>[^/]+)/async-invocations$")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("async endpoint http: " + format, *args)

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            match = path_re.match(self.path.split("?", 1)[0])
            if not match:
                self._send(
                    404, {"message": "unknown operation"}, {"x-amzn-ErrorType": "UnknownOperationException"}
                )
                return
            params: dict[str, Any] = {"EndpointName": unquote(match["name"])}
            for name, header in _HEADERS.items():
                value = self.headers.get(header)
                if value is None:
                    continue
                if name in ("RequestTTLSeconds", "InvocationTimeoutSeconds"):
                    try:
                        params[name] = int(value)
                    except ValueError:
                        params[name] = value
                else:
                    params[name] = value
            try:
                response = endpoint.invoke_endpoint_async(**params)
            except ClientError as exc:
                error = exc.response["Error"]
                self._send(400, {"message": error["Message"]}, {"x-amzn-ErrorType": error["Code"]})
                return
            self._send(
                202,
                {"InferenceId": response["InferenceId"]},
                {
                    "X-Amzn-SageMaker-OutputLocation": response["OutputLocation"],
                    "X-Amzn-SageMaker-FailureLocation": response["FailureLocation"],
                },
            )

    return Handler
