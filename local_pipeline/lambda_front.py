"""A local stand-in for Lambda's ``Invoke`` API, asynchronous invocations only.

The dispatcher continues a long file by invoking itself (``InvocationType=Event``) and the
redrive command replays dead-letter queues the same way, both through an unmodified boto3
``lambda`` client pointed here with ``AWS_ENDPOINT_URL_LAMBDA``. It speaks the REST protocol
(``POST /2015-03-31/functions/<name or ARN>/invocations``, header ``X-Amz-Invocation-Type``) and
answers like Lambda: 202 with an empty body for ``Event``, 204 for ``DryRun``; an unknown
function is a 404 ``ResourceNotFoundException``. Accepted events go to ``deliver(function name,
payload)``; the local stack queues them for the event router, like Lambda's own event queue.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from local_pipeline.loopback import LoopbackServer

log = logging.getLogger(__name__)

# Lambda's documented limit for an asynchronous invocation's payload (Invoke API reference).
MAX_ASYNC_PAYLOAD_BYTES = 256 * 1024
_PATH = re.compile(r"^/2015-03-31/functions/(?P<name>[^/]+)/invocations$")


def function_name(name_or_arn: str) -> str:
    """``my-fn``, ``arn:aws:lambda:<region>:<account>:function:my-fn[:qualifier]`` -> ``my-fn``."""
    if name_or_arn.startswith("arn:"):
        parts = name_or_arn.split(":")
        return parts[6] if len(parts) > 6 else name_or_arn
    return name_or_arn.split(":")[0]


class LambdaInvokeFront(LoopbackServer):
    def __init__(
        self,
        deliver: Callable[[str, bytes], None],
        functions: set[str],
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        self.deliver = deliver
        self.functions = functions
        self.invocations: list[tuple[str, dict[str, Any]]] = []
        super().__init__(_handler(self), "lambda-invoke", host, port)


def _handler(front: LambdaInvokeFront) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("lambda invoke: " + format, *args)

        def _send(self, status: int, body: dict[str, Any] | None = None, error: str | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            if error:
                self.send_header("x-amzn-ErrorType", error)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            match = _PATH.match(self.path.split("?", 1)[0])
            if not match:
                self._send(404, {"message": "unknown operation"}, "UnknownOperationException")
                return
            name = function_name(unquote(match["name"]))
            if name not in front.functions:
                self._send(404, {"Message": f"Function not found: {name}"}, "ResourceNotFoundException")
                return
            kind = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            if kind == "DryRun":
                self._send(204)
                return
            if kind != "Event":
                self._send(
                    400,
                    {"message": "the local stack supports asynchronous invocations only"},
                    "InvalidParameterValueException",
                )
                return
            if len(payload) > MAX_ASYNC_PAYLOAD_BYTES:
                self._send(
                    413, {"message": "Request must be smaller than 262144 bytes"}, "RequestTooLargeException"
                )
                return
            try:
                event = json.loads(payload or b"{}")
            except json.JSONDecodeError:
                self._send(
                    400,
                    {"message": "Could not parse request body into json"},
                    "InvalidRequestContentException",
                )
                return
            front.invocations.append((name, event))
            front.deliver(name, payload)
            self._send(202)

    return Handler
