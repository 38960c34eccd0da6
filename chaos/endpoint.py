"""The async endpoint stand-in with the endpoint's own failures, decided per request by the plan:

* ``model_error``: the model answers 500; the request fails with the error body in
  ``S3FailurePath`` and an error notification (the stand-in's ``fault_injector`` hook);
* ``invocation_timeout``: the model does not answer within ``InvocationTimeoutSeconds``; the
  HTTP call to the real model server is cut by the stand-in's own timeout handling (a transport
  adapter on its session makes that request hang past the timeout);
* ``ttl_expired``: the request waited in the endpoint's queue past ``RequestTTLSeconds`` (its
  receive time is moved back by the TTL; the stand-in's own TTL check expires it);
* ``notification_not_published``: processed, but no notification is published (SageMaker's
  ``NotificationFailures``; the stand-in's ``notification_fault`` hook).

A chunk invoked twice (a dispatcher retry) is two requests with the same inference id: each gets
its own fate (``<id>#<n>``).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from chaos.faults import FaultLog, FaultPlan
from chaos.lambda_service import Labels
from local_pipeline.async_endpoint import AsyncEndpoint, AsyncEndpointConfig, AsyncRequest


class _HangingAdapter(HTTPAdapter):
    """Sends like requests does, except the request the worker thread marked as hanging: that one
    waits out its read timeout and fails with ``ReadTimeout``, as a model that never answers."""

    def __init__(self, local: threading.local, **kwargs: Any):
        super().__init__(**kwargs)
        self._local = local

    def send(self, request: Any, **kwargs: Any) -> Any:
        if getattr(self._local, "fate", None) == "invocation_timeout":
            timeout = kwargs.get("timeout")
            read = timeout[1] if isinstance(timeout, tuple) else timeout
            time.sleep(float(read or 1))
            raise requests.exceptions.ReadTimeout(f"injected: no answer within {read} s", request=request)
        return super().send(request, **kwargs)


class ChaosEndpoint(AsyncEndpoint):
    def __init__(
        self,
        config: AsyncEndpointConfig,
        s3_client: Any,
        sns_client: Any,
        plan: FaultPlan,
        log: FaultLog,
        labels: Labels,
    ):
        super().__init__(
            config,
            s3_client,
            sns_client,
            fault_injector=self._model_error,
            notification_fault=self._not_published,
        )
        self.plan = plan
        self.log = log
        self.labels = labels
        self._local = threading.local()
        self._seen: Counter[str] = Counter()
        self._seen_lock = threading.Lock()
        self._session.mount("http://", _HangingAdapter(self._local, pool_maxsize=16))

    def _process(self, request: AsyncRequest) -> None:
        label = self.labels.normalize(request.inference_id)
        with self._seen_lock:
            self._seen[label] += 1
            identity = f"{label}#{self._seen[label]}"
        fate = self.plan.endpoint_fate(identity)
        self._local.fate = fate
        if fate is not None:
            self.log.add(f"endpoint_{fate}", identity)
        if fate == "ttl_expired":
            request.received -= request.ttl_seconds + 1
        try:
            super()._process(request)
        finally:
            self._local.fate = None

    def _model_error(self, request: AsyncRequest) -> str | None:
        if getattr(self._local, "fate", None) != "model_error":
            return None
        return (
            'ClientError: Received server error (500) from model with message "injected model error". '
            "See the endpoint logs for more information."
        )

    def _not_published(self, request: AsyncRequest) -> bool:
        return getattr(self._local, "fate", None) == "notification_not_published"
