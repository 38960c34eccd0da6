"""Writing responses: the status line written lazily, results spooled while the request body
is still arriving, plain JSON answers, and the per-request log line."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable

from inference_server.outputs import RecordEncoder
from inference_server.reading import BodyStream

request_log = logging.getLogger("inference_server.request")

SPOOL_MEMORY_BYTES = 8 * 1024 * 1024  # results held in memory before spilling to a temp file
SPOOL_READ_BYTES = 1024 * 1024


class RequestStats:
    """Per-request facts for the request log (never any ticket text)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "errors",
        "first_byte",
        "in_format",
        "out_format",
        "pipelined",
        "records",
        "started",
        "status",
        "streamed",
        "unscored",
    )

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.status = 500
        self.records = 0
        self.errors = 0
        self.unscored = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.first_byte: float | None = None
        self.in_format: str | None = None
        self.out_format: str | None = None
        self.streamed = False
        self.pipelined = False


class Response:
    """Writes the status line lazily, so a failure before the first record can still be a 4xx.

    While the request body is still arriving (``stream`` not done), results are not sent but
    spooled (in memory up to ``SPOOL_MEMORY_BYTES``, then in a temporary file). Most HTTP
    clients (and SageMaker's async front end, as far as anyone can tell) send the whole body
    before they read the response: writing to such a client would fill its socket buffers,
    stall our writes, stop the pipeline and with it the body reads: a deadlock. Spooling keeps
    memory flat and lets a mid-stream failure (e.g. body over the limit) still be a clean 4xx.
    """

    def __init__(self, send: Callable, fmt: str, req: RequestStats):
        self._send = send
        self.fmt = fmt
        self.req = req
        self.started = False
        self.count = 0
        self.stream: BodyStream | None = None
        self.force_send = False
        self.wrapper = RecordEncoder.wrapper  # JSON's brackets around the records
        self._opened = False
        self._spool: tempfile.SpooledTemporaryFile | None = None

    @property
    def body_done(self) -> bool:
        return self.force_send or self.stream is None or self.stream.done

    async def start(self, status: int = 200, length: int | None = None) -> None:
        content_type = b"application/json" if self.fmt == "json" else b"application/jsonlines"
        headers = [(b"content-type", content_type)]
        if length is not None:
            headers.append((b"content-length", str(length).encode()))
        await self._send({"type": "http.response.start", "status": status, "headers": headers})
        self.started = True
        self.req.status = status
        self.req.first_byte = time.perf_counter()

    async def _body(self, data: bytes, more: bool) -> None:
        self.req.bytes_out += len(data)
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def _write(self, data: bytes) -> None:
        if not self.body_done:
            if self._spool is None:
                self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY_BYTES)  # noqa: SIM115
            self._spool.write(data)
            return
        if not self.started:
            await self.start()
        if self._spool is not None:
            spool, self._spool = self._spool, None
            spool.seek(0)
            while piece := spool.read(SPOOL_READ_BYTES):
                await self._body(piece, True)
            spool.close()
        if data:
            await self._body(data, True)

    def _open(self) -> bytes:
        if self._opened:
            return b""
        self._opened = True
        return self.wrapper[0] if self.fmt == "json" else b""

    async def records(self, items: list[bytes]) -> None:
        """Stream some records; JSON gets its array syntax around them."""
        if not items:
            return
        if self.fmt == "json":
            data = self._open() + (b"," if self.count else b"") + b",".join(items)
        else:
            data = b"\n".join(items) + b"\n"
        self.count += len(items)
        await self._write(data)

    async def finish(self) -> None:
        self.force_send = True  # the records ended (or the request is being given up on)
        await self._write(self._open() + (self.wrapper[1] if self.fmt == "json" else b""))
        await self._body(b"", False)

    def discard(self) -> None:
        """Drop spooled results (the request fails before anything was sent)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    async def whole(self, items: list[bytes]) -> None:
        """A complete response in one message (the inline path)."""
        self.count = len(items)
        if self.fmt == "json":
            data = self.wrapper[0] + b",".join(items) + self.wrapper[1]
        else:
            data = b"\n".join(items) + b"\n" if items else b""
        await self.start(200, len(data))
        await self._body(data, False)


async def send_json(send: Callable, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def log_request(req: RequestStats) -> None:
    """One line per request for the request log (never any ticket text)."""
    now = time.perf_counter()
    request_log.info(
        "invocation",
        extra={
            "status": req.status,
            "in_format": req.in_format,
            "out_format": req.out_format,
            "streamed": req.streamed,
            "pipelined": req.pipelined,
            "records": req.records,
            "record_errors": req.errors,
            "unscored": req.unscored,
            "bytes_in": req.bytes_in,
            "bytes_out": req.bytes_out,
            "ms": round((now - req.started) * 1000, 3),
            "ms_to_first_byte": None
            if req.first_byte is None
            else round((req.first_byte - req.started) * 1000, 3),
        },
    )
