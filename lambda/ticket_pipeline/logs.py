"""One Powertools service name per process, shared by the handler's logger and the logic
modules' child loggers (a child only reaches its parent's handler when the names match)."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

DEFAULT_SERVICE = "ticket-pipeline"


def service_name() -> str:
    return os.environ.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE


def handler_logger() -> Logger:
    return Logger(service=service_name(), level=os.environ.get("LOG_LEVEL") or "INFO")


def child_logger() -> Logger:
    return Logger(service=service_name(), child=True)
