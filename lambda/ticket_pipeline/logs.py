"""One Powertools service name per process, shared by the handler's logger and the logic
modules' child loggers (a child only reaches its parent's handler when the names match)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from aws_lambda_powertools import Logger

DEFAULT_SERVICE = "ticket-pipeline"
# Set only where one process hosts several functions (the local stack, the chaos harness): the
# service of the invocation running in this thread. On AWS it stays unset: one function a process.
_serving_as: ContextVar[str | None] = ContextVar("serving_as", default=None)


def service_name() -> str:
    return _serving_as.get() or os.environ.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE


@contextmanager
def serving_as(service: str) -> Iterator[None]:
    """Run the code inside as the function whose POWERTOOLS_SERVICE_NAME is ``service``."""
    token = _serving_as.set(service)
    try:
        yield
    finally:
        _serving_as.reset(token)


def handler_logger() -> Logger:
    return Logger(service=service_name(), level=os.environ.get("LOG_LEVEL") or "INFO")


def child_logger() -> Logger:
    return Logger(service=service_name(), child=True)
