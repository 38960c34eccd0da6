"""The ASGI application: ``GET /ping`` and ``POST /invocations`` (SageMaker's container contract).

A bare ASGI callable, no framework: the request path is short and every microsecond of a
single-ticket request counts. Two paths through ``/invocations``:

* **small** (a JSON body, or a JSON Lines / CSV body of known small size, with at most
  ``INLINE_RECORDS`` tickets): read, parse, preprocess and tokenize on the event loop, one job
  in the batcher's urgent queue, one response with a ``Content-Length``.
* **streamed** (large JSON Lines / CSV bodies, many-ticket JSON): the body is read chunk by
  chunk as it arrives; a pipeline thread cuts it into lines, parses records
  (``triage_core.records``), preprocesses and tokenizes them in windows of ``WINDOW_RECORDS``
  and hands each window to the batcher; the event loop writes each window's results as soon as
  it is scored, in input order. At most ``WINDOWS_IN_FLIGHT`` windows and ``BODY_CHUNKS_AHEAD``
  body chunks are held, so memory stays flat whatever the body size (uvicorn stops reading the
  socket while the body queue is full).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from inference_server.codecs import (
    RESPONSE_TYPES,
    HttpError,
    RecordEncoder,
    decode_json_request,
    error_record,
    request_format,
    response_format,
    top_k_from_custom_attributes,
)
from inference_server.model import Engine
from inference_server.settings import Settings
from triage_core.records import RecordFormatError, TicketRecord, iter_records, split_lines

log = logging.getLogger("inference_server")
request_log = logging.getLogger("inference_server.request")

INLINE_RECORDS = 64  # at most this many tickets are prepared on the event loop itself
INLINE_BODY_BYTES = 64 * 1024  # JSON Lines / CSV bodies up to this size are read whole
WINDOW_RECORDS = 512  # tickets per streamed window (sorted into batches by the batcher)
WINDOW_CHARS = 8 * 1024 * 1024  # ... or fewer when their raw text is this large
WINDOWS_IN_FLIGHT = 4
BODY_CHUNKS_AHEAD = 16
JSON_IN_THREAD_BYTES = 256 * 1024
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024  # results held in memory before spilling to a temp file
SPOOL_READ_BYTES = 1024 * 1024

_EOF = object()


class _ClientGone(Exception):
    """The client disconnected or the request was cancelled."""


class _Request:
    """Per-request facts for the request log (never any ticket text)."""

    __slots__ = (
        "bytes_in",
        "bytes_out",
        "errors",
        "first_byte",
        "in_format",
        "out_format",
        "records",
        "started",
        "status",
        "streamed",
    )

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.status = 500
        self.records = 0
        self.errors = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self.first_byte: float | None = None
        self.in_format: str | None = None
        self.out_format: str | None = None
        self.streamed = False


class _Response:
    """Writes the status line lazily, so a failure before the first record can still be a 4xx.

    While the request body is still arriving (``body_done`` false), results are not sent but
    spooled (in memory up to ``SPOOL_MEMORY_BYTES``, then in a temporary file). Most HTTP
    clients (and SageMaker's async front end, as far as anyone can tell) send the whole body
    before they read the response: writing to such a client would fill its socket buffers,
    stall our writes, stop the pipeline and with it the body reads: a deadlock. Spooling keeps
    memory flat and lets a mid-stream failure (e.g. body over the limit) still be a clean 4xx.
    """

    def __init__(self, send: Callable, fmt: str, req: _Request):
        self._send = send
        self.fmt = fmt
        self.req = req
        self.started = False
        self.count = 0
        self.body_done = True
        self._opened = False
        self._spool: tempfile.SpooledTemporaryFile | None = None

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
        return b'{"predictions":[' if self.fmt == "json" else b""

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
        self.body_done = True  # the records ended (or the request is being given up on)
        await self._write(self._open() + (b"]}" if self.fmt == "json" else b""))
        await self._body(b"", False)

    def discard(self) -> None:
        """Drop spooled results (the request fails before anything was sent)."""
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    async def whole(self, items: list[bytes]) -> None:
        """A complete response in one message (the small path)."""
        self.count = len(items)
        if self.fmt == "json":
            data = b'{"predictions":[' + b",".join(items) + b"]}"
        else:
            data = b"\n".join(items) + b"\n"
        await self.start(200, len(data))
        await self._body(data, False)


async def _send_json(send: Callable, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class InferenceApp:
    """The ASGI callable. The model loads in a background thread; ``/ping`` is 503 until the
    model is loaded and a warm-up inference has run."""

    def __init__(self, settings: Settings, on_fatal: Callable[[], None] | None = None):
        self.settings = settings
        self.engine: Engine | None = None
        self.ready = False
        self._on_fatal = on_fatal
        self._loader: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start_loading(self) -> None:
        if self._loader is None:
            self._loader = threading.Thread(target=self._load, name="model-loader", daemon=True)
            self._loader.start()

    def _load(self) -> None:
        try:
            engine = Engine(self.settings)
            warm = engine.warm_up()
        except Exception:
            log.exception("model failed to load", extra={"model_dir": str(self.settings.model_dir)})
            if self._on_fatal is not None:
                self._on_fatal()
            return
        self.engine = engine
        self.ready = True
        log.info(
            "model ready",
            extra={
                "model_dir": str(self.settings.model_dir),
                "labels": engine.n_labels,
                "runners": engine.runners,
                "intra_op_threads": self.settings.intra_op_threads,
                "max_batch_size": self.settings.max_batch_size,
                "load_ms": round(engine.load_seconds * 1000, 1),
                "warm_up_ms": round(warm * 1000, 1),
            },
        )

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Callable, send: Callable) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.start_loading()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await asyncio.to_thread(self.close)
                log.info("server stopped")
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- routing -----------------------------------------------------------------------------
    async def _http(self, scope: dict, receive: Callable, send: Callable) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/invocations":
            if method != "POST":
                await _send_json(send, 405, HttpError(405, "use POST").body())
            else:
                await self._invocations(scope, receive, send)
        elif path == "/ping":
            if self.ready:
                await _send_json(send, 200, b'{"status":"ok"}')
            else:
                await _send_json(send, 503, b'{"status":"loading"}')
        elif path == "/execution-parameters" and method == "GET":
            # Batch transform asks this once; it lets the same image serve batch jobs too.
            body = {
                "MaxConcurrentTransforms": self.settings.workers,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": min(100, self.settings.max_payload_bytes // (1024 * 1024)),
            }
            await _send_json(send, 200, orjson.dumps(body))
        else:
            await _send_json(send, 404, HttpError(404, f"no route {path}").body())

    # --- /invocations ------------------------------------------------------------------------
    async def _invocations(self, scope: dict, receive: Callable, send: Callable) -> None:
        req = _Request()
        response: _Response | None = None
        cancel = threading.Event()
        try:
            req.in_format = request_format(_header(scope, b"content-type"))
            req.out_format = response_format(_header(scope, b"accept"))
            top_k = top_k_from_custom_attributes(_header(scope, b"x-amzn-sagemaker-custom-attributes"))
            if not self.ready or self.engine is None:
                raise HttpError(503, "model is loading")
            limit = (
                self.settings.max_json_bytes if req.in_format == "json" else self.settings.max_payload_bytes
            )
            length = self._content_length(scope)
            if length is not None and length > limit:
                raise HttpError(413, f"body of {length} bytes is over the {limit}-byte limit", limit=limit)
            response = _Response(send, req.out_format, req)
            async with asyncio.timeout(self.settings.timeout_seconds):
                await self._dispatch(receive, response, req, limit, length, top_k, cancel)
        except HttpError as exc:
            cancel.set()
            await self._fail(send, response, req, exc.status, exc.body(), exc.message)
        except TimeoutError:
            cancel.set()
            message = f"request timed out after {self.settings.timeout_seconds:g} s"
            await self._fail(send, response, req, 504, HttpError(504, message).body(), message)
        except _ClientGone:
            cancel.set()
            req.status = 499
        except Exception:
            cancel.set()
            log.exception("request failed")
            await self._fail(
                send, response, req, 500, HttpError(500, "internal error").body(), "internal error"
            )
        finally:
            if response is not None:
                response.discard()
            self._log(req)

    @staticmethod
    def _content_length(scope: dict) -> int | None:
        raw = _header(scope, b"content-length")
        try:
            return int(raw) if raw is not None else None
        except ValueError:
            raise HttpError(400, "invalid Content-Length") from None

    async def _fail(
        self,
        send: Callable,
        response: _Response | None,
        req: _Request,
        status: int,
        body: bytes,
        message: str,
    ) -> None:
        if response is not None and response.started:
            # Too late for a status code: end the stream with an error record (valid JSON still).
            await response.records([error_record(message)])
            await response.finish()
            req.errors += 1
            return
        if response is not None:
            response.discard()
        req.status = status
        req.bytes_out += len(body)
        await _send_json(send, status, body)

    async def _dispatch(
        self,
        receive: Callable,
        response: _Response,
        req: _Request,
        limit: int,
        length: int | None,
        top_k: int | None,
        cancel: threading.Event,
    ) -> None:
        if req.in_format == "json":
            body = await self._read_all(receive, req, limit)
            if len(body) > JSON_IN_THREAD_BYTES:
                records, json_top_k = await asyncio.to_thread(decode_json_request, body)
            else:
                records, json_top_k = decode_json_request(body)
            del body
            encoder = self._encoder(json_top_k if json_top_k is not None else top_k)
            await self._respond_records(records, response, req, encoder, cancel)
            return
        encoder = self._encoder(top_k)
        if length is not None and length <= INLINE_BODY_BYTES:
            body = await self._read_all(receive, req, limit)
            if not body.strip():
                raise HttpError(400, "empty body")
            try:
                lines = split_lines((body,), self.settings.max_record_bytes)
                records = list(iter_records(self._media(req), lines))
            except RecordFormatError as exc:
                raise HttpError(400, str(exc)) from None
            if not records:
                raise HttpError(400, "no ticket records in the body")
            await self._respond_records(records, response, req, encoder, cancel)
            return
        await self._stream(receive, response, req, encoder, limit, cancel)

    @staticmethod
    def _media(req: _Request) -> str:
        return "text/csv" if req.in_format == "csv" else "application/jsonlines"

    def _encoder(self, top_k: int | None) -> RecordEncoder:
        assert self.engine is not None
        return RecordEncoder(self.engine.labels, self.settings.review_threshold, top_k)

    async def _read_all(self, receive: Callable, req: _Request, limit: int) -> bytes:
        parts: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk = message.get("body", b"")
            if chunk:
                req.bytes_in += len(chunk)
                if req.bytes_in > limit:
                    raise HttpError(413, f"body is over the {limit}-byte limit", limit=limit)
                parts.append(chunk)
            if not message.get("more_body", False):
                return parts[0] if len(parts) == 1 else b"".join(parts)

    async def _respond_records(
        self,
        records: list[TicketRecord],
        response: _Response,
        req: _Request,
        encoder: RecordEncoder,
        cancel: threading.Event,
    ) -> None:
        """Parsed records: small batches inline, large ones through the pipeline thread."""
        good = [r for r in records if r.error is None]
        if len(good) > INLINE_RECORDS:
            await self._pipeline(iter(records), response, req, encoder, cancel)
            return
        engine = self.engine
        assert engine is not None
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        encodings = engine.prepare([r.text for r in good]) if good else []
        job = engine.submit(encodings, lambda _job: loop.call_soon_threadsafe(_resolve, done), urgent=True)
        try:
            await done
        except asyncio.CancelledError:
            job.cancelled = True
            raise
        if job.error is not None:
            raise job.error
        items = encoder.encode(records, job.scores)
        req.records += len(records)
        req.errors += len(records) - len(good)
        await response.whole(items)

    async def _stream(
        self,
        receive: Callable,
        response: _Response,
        req: _Request,
        encoder: RecordEncoder,
        limit: int,
        cancel: threading.Event,
    ) -> None:
        """JSON Lines / CSV body read as it arrives; see the module docstring."""
        req.streamed = True
        response.body_done = False
        loop = asyncio.get_running_loop()
        chunks: queue.SimpleQueue[object] = queue.SimpleQueue()
        space = asyncio.Semaphore(BODY_CHUNKS_AHEAD)

        async def pump() -> None:
            """Body chunks -> ``chunks``; afterwards, watch for the client going away."""
            try:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        chunks.put(_ClientGone())
                        cancel.set()
                        return
                    chunk = message.get("body", b"")
                    if chunk:
                        req.bytes_in += len(chunk)
                        if req.bytes_in > limit:
                            chunks.put(HttpError(413, f"body is over the {limit}-byte limit", limit=limit))
                            return
                        await space.acquire()
                        chunks.put(chunk)
                    if not message.get("more_body", False):
                        chunks.put(_EOF)
                        response.body_done = True
                        break
                while not cancel.is_set():  # the body is in; a disconnect now cancels the work
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        cancel.set()
                        return
            except asyncio.CancelledError:
                chunks.put(_ClientGone())
                raise

        def body_chunks() -> Iterator[bytes]:
            while True:
                item = chunks.get()
                if isinstance(item, bytes):
                    loop.call_soon_threadsafe(space.release)
                    yield item
                elif item is _EOF:
                    return
                else:
                    raise item  # type: ignore[misc]

        def records() -> Iterator[TicketRecord]:
            lines = split_lines(body_chunks(), self.settings.max_record_bytes)
            return iter_records(self._media(req), lines)

        pump_task = asyncio.create_task(pump())
        try:
            await self._pipeline(records, response, req, encoder, cancel)
        finally:
            pump_task.cancel()
        if req.records == 0:
            raise HttpError(400, "empty body" if req.bytes_in == 0 else "no ticket records in the body")

    async def _pipeline(
        self,
        records: Iterable[TicketRecord] | Callable[[], Iterator[TicketRecord]],
        response: _Response,
        req: _Request,
        encoder: RecordEncoder,
        cancel: threading.Event,
    ) -> None:
        """Windows of records: prepared on a pipeline thread, scored by the batcher, written here."""
        engine = self.engine
        assert engine is not None
        loop = asyncio.get_running_loop()
        windows: asyncio.Queue[Any] = asyncio.Queue()
        slots = threading.Semaphore(WINDOWS_IN_FLIGHT)

        def put(item: object) -> None:
            loop.call_soon_threadsafe(windows.put_nowait, item)

        def submit(window: list[TicketRecord]) -> None:
            good = [r.text for r in window if r.error is None]
            encodings = engine.prepare(good) if good else []
            # Texts are not needed any more: keep only what the response needs.
            slim = [TicketRecord(r.index, r.id, None, r.error) for r in window]
            while not slots.acquire(timeout=0.2):
                if cancel.is_set():
                    raise _ClientGone
            done = loop.create_future()
            job = engine.submit(
                encodings, lambda _job: loop.call_soon_threadsafe(_resolve, done), urgent=False
            )
            if cancel.is_set():
                job.cancelled = True
                raise _ClientGone
            put((slim, job, done))

        def produce() -> None:
            try:
                source = records() if callable(records) else records
                window: list[TicketRecord] = []
                chars = 0
                for record in source:
                    if cancel.is_set():
                        raise _ClientGone
                    window.append(record)
                    chars += len(record.text) if record.text else 0
                    if len(window) >= WINDOW_RECORDS or chars >= WINDOW_CHARS:
                        submit(window)
                        window, chars = [], 0
                if window:
                    submit(window)
                put(_EOF)
            except RecordFormatError as exc:
                put(HttpError(400, str(exc)))
            except BaseException as exc:
                put(exc)

        producer = threading.Thread(target=produce, name="request-pipeline", daemon=True)
        producer.start()
        try:
            while True:
                item = await windows.get()
                if item is _EOF:
                    break
                if isinstance(item, BaseException):
                    raise item
                slim, job, done = item
                try:
                    await done
                finally:
                    slots.release()
                if job.error is not None:
                    raise job.error
                if cancel.is_set():
                    raise _ClientGone
                req.records += len(slim)
                req.errors += sum(1 for r in slim if r.error is not None)
                await response.records(encoder.encode(slim, job.scores))
            if req.records:
                await response.finish()
        except BaseException:
            cancel.set()
            # Unblock and drop whatever is still queued for this request.
            while not windows.empty():
                item = windows.get_nowait()
                if isinstance(item, tuple):
                    item[1].cancelled = True
            raise

    def _log(self, req: _Request) -> None:
        now = time.perf_counter()
        request_log.info(
            "invocation",
            extra={
                "status": req.status,
                "in_format": req.in_format,
                "out_format": req.out_format,
                "streamed": req.streamed,
                "records": req.records,
                "record_errors": req.errors,
                "bytes_in": req.bytes_in,
                "bytes_out": req.bytes_out,
                "ms": round((now - req.started) * 1000, 3),
                "ms_to_first_byte": None
                if req.first_byte is None
                else round((req.first_byte - req.started) * 1000, 3),
            },
        )


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


__all__ = ["RESPONSE_TYPES", "InferenceApp"]
