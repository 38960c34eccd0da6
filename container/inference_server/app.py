"""The ASGI application: ``GET /ping`` and ``POST /invocations`` (SageMaker's container contract).

A bare ASGI callable, no framework: the request path is short and every microsecond of a
single-ticket request counts. The request path is four steps, each in its own module: reading the
request (``reading.py``, on :mod:`triage_core.reader`), preprocessing + tokenizing and scoring
(``model.py``, ``batching.py``), and encoding the response (``outputs.py``). Two routes through
``/invocations``:

* **inline**: a request of at most ``INLINE_RECORDS`` tickets in total (a JSON body, or a JSON
  Lines / CSV body of at most ``INLINE_BODY_BYTES``) is prepared on the event loop, scored as one
  urgent job and answered with a ``Content-Length``.
* **pipeline**: everything else. A worker thread parses records (JSON Lines and CSV straight from
  the body as it arrives; JSON bodies are parsed first, into compact records, because their
  ``parameters`` may come last), preprocesses and tokenizes them in windows of
  ``WINDOW_RECORDS`` and hands each window to the batcher; the event loop writes each window's
  results, in input order, as soon as it is scored. At most ``WINDOWS_IN_FLIGHT`` windows and
  ``BODY_CHUNKS_AHEAD`` body chunks are held, so memory stays flat whatever the body size.

Every record gets exactly one output line. When a pipelined request runs out of time (its
timeout, or SIGTERM's shutdown window), scoring stops; the records not scored yet, including
those still to be read from the body, each get an error line with their index and id. Only if
even that takes too long does the response end with one ``{"index": null}`` line naming the
first index not accounted for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from inference_server.codecs import RESPONSE_TYPES, HttpError, response_format
from inference_server.model import Engine
from inference_server.outputs import (
    RecordEncoder,
    ToolkitEncoder,
    check_toolkit_records,
    error_record,
    project_top_k,
)
from inference_server.reading import (
    BodyStream,
    ClientGone,
    JsonRequest,
    RequestSpec,
    body_records,
    header,
    is_gzip,
    read_json_request,
)
from inference_server.settings import Settings
from triage_core.records import TicketRecord

log = logging.getLogger("inference_server")
request_log = logging.getLogger("inference_server.request")

INLINE_RECORDS = 64  # at most this many tickets (good or bad) are prepared on the event loop
INLINE_BODY_BYTES = 64 * 1024  # JSON Lines / CSV / JSON bodies up to this size are read whole
WINDOW_RECORDS = 512  # tickets per pipeline window (sorted into batches by the batcher)
WINDOW_CHARS = 8 * 1024 * 1024  # ... or fewer when their raw text is this large
WINDOWS_IN_FLIGHT = 4
PREPARE_SLICE = 128  # tickets preprocessed between two looks at the deadline
DRAIN_SECONDS = 30.0  # after a timeout: time to write error lines for the records left
SPOOL_MEMORY_BYTES = 8 * 1024 * 1024  # results held in memory before spilling to a temp file
SPOOL_READ_BYTES = 1024 * 1024

_EOF = object()


class _Request:
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


class _Deadline:
    """When a request stops scoring (``expired``) and when it stops accounting for the records
    left (``give_up``). The server's shutdown brings both forward."""

    def __init__(self, loop: asyncio.AbstractEventLoop, seconds: float):
        self._loop = loop
        self.reason = f"request timed out after {seconds:g} s before this ticket was scored"
        self.expired: asyncio.Future = loop.create_future()
        self.give_up: asyncio.Future = loop.create_future()
        self._handles: list[asyncio.TimerHandle] = []
        self._schedule(loop.time() + seconds, loop.time() + seconds + DRAIN_SECONDS)

    def _schedule(self, expire_at: float, give_up_at: float) -> None:
        for handle in self._handles:
            handle.cancel()
        self.expire_at, self.give_up_at = expire_at, give_up_at
        self._handles = [
            self._loop.call_at(expire_at, _resolve, self.expired),
            self._loop.call_at(give_up_at, _resolve, self.give_up),
        ]

    def bring_forward(self, expire_at: float, give_up_at: float, reason: str) -> None:
        if expire_at < self.expire_at:
            self.reason = reason
            self._schedule(expire_at, min(give_up_at, self.give_up_at))

    def cancel(self) -> None:
        for handle in self._handles:
            handle.cancel()


class _Response:
    """Writes the status line lazily, so a failure before the first record can still be a 4xx.

    While the request body is still arriving (``stream`` not done), results are not sent but
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


async def _send_json(send: Callable, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _take_each(records: list[TicketRecord]) -> Iterator[TicketRecord]:
    """Records of a parsed JSON body, letting go of each (and its text) once it is taken."""
    for i in range(len(records)):
        record, records[i] = records[i], None  # type: ignore[call-overload]
        yield record


class InferenceApp:
    """The ASGI callable. The model loads in a background thread; ``/ping`` is 503 until the
    model is loaded and a warm-up inference has run (in every worker, when ``health`` is
    shared between worker processes)."""

    def __init__(
        self,
        settings: Settings,
        on_fatal: Callable[[], None] | None = None,
        health: Any | None = None,
    ):
        self.settings = settings
        self.engine: Engine | None = None
        self.ready = False
        self.stopping = False
        self.health = health
        self._on_fatal = on_fatal
        self._loader: threading.Thread | None = None
        self._deadlines: set[_Deadline] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

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
            if self.health is not None:
                self.health.failed()
            if self._on_fatal is not None:
                self._on_fatal()
            return
        self.engine = engine
        self.ready = True
        if self.health is not None:
            self.health.ready()
        log.info(
            "model ready",
            extra={
                "model_dir": str(self.settings.model_dir),
                "labels": engine.n_labels,
                "runners": engine.runners,
                "intra_op_threads": self.settings.intra_op_threads,
                "max_batch_size": self.settings.max_batch_size,
                "review_threshold": engine.review_threshold,
                "review_threshold_from": engine.review_threshold_source,
                "load_ms": round(engine.load_seconds * 1000, 1),
                "warm_up_ms": round(warm * 1000, 1),
            },
        )

    def begin_shutdown(self) -> None:
        """SIGTERM: in-flight requests must be done well inside the shutdown window. Called on
        the event loop (the server's signal handler schedules it there)."""
        self.stopping = True
        if self._loop is None:
            return
        now = self._loop.time()
        window = self.settings.shutdown_seconds
        reason = "the server is shutting down (SIGTERM): this ticket was not scored"
        for deadline in list(self._deadlines):
            deadline.bring_forward(now + window * 0.5, now + window * 0.9, reason)

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
                self._loop = asyncio.get_running_loop()
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
            await self._ping(send)
        elif path == "/execution-parameters" and method == "GET":
            # Batch transform asks this once; it lets the same image serve batch jobs too. CSV
            # mini-batches after the first have no header row: they need TRIAGE_CSV_HEADER.
            body = {
                "MaxConcurrentTransforms": self.settings.workers,
                "BatchStrategy": "MULTI_RECORD",
                "MaxPayloadInMB": min(100, self.settings.max_payload_bytes // (1024 * 1024)),
            }
            await _send_json(send, 200, orjson.dumps(body))
        else:
            await _send_json(send, 404, HttpError(404, f"no route {path}").body())

    async def _ping(self, send: Callable) -> None:
        if self.stopping:
            await _send_json(send, 503, b'{"status":"stopping"}')
        elif not self.ready:
            await _send_json(send, 503, b'{"status":"loading"}')
        elif self.health is not None and not self.health.all_ready():
            ready, total = self.health.counts()
            body = {"status": "loading", "workers_ready": ready, "workers": total}
            await _send_json(send, 503, orjson.dumps(body))
        else:
            await _send_json(send, 200, b'{"status":"ok"}')

    # --- /invocations ------------------------------------------------------------------------
    async def _invocations(self, scope: dict, receive: Callable, send: Callable) -> None:
        req = _Request()
        response: _Response | None = None
        loop = asyncio.get_running_loop()
        deadline = _Deadline(loop, self.settings.timeout_seconds)
        self._deadlines.add(deadline)
        stream: BodyStream | None = None
        try:
            spec = RequestSpec.from_scope(scope)
            req.in_format = spec.format
            req.out_format = response_format(header(scope, b"accept"))
            if self.stopping:
                raise HttpError(503, "the server is shutting down")
            if not self.ready or self.engine is None:
                raise HttpError(503, "model is loading")
            limit = self.settings.max_json_bytes if spec.format == "json" else self.settings.max_payload_bytes
            length = self._content_length(scope)
            if length is not None and length > limit:
                raise HttpError(413, f"body is over the {limit}-byte limit", limit=limit)
            stream = BodyStream(receive, limit, lambda n: setattr(req, "bytes_in", req.bytes_in + n))
            response = _Response(send, req.out_format, req)
            await self._dispatch(spec, stream, response, req, length, deadline)
        except HttpError as exc:
            await self._fail(send, response, req, exc.status, exc.body(), exc.message)
        except TimeoutError:
            message = f"request timed out after {self.settings.timeout_seconds:g} s"
            await self._fail(send, response, req, 504, HttpError(504, message).body(), message)
        except ClientGone:
            req.status = 499
        except Exception:
            log.exception("request failed")
            await self._fail(
                send, response, req, 500, HttpError(500, "internal error").body(), "internal error"
            )
        finally:
            if stream is not None:
                stream.cancel.set()
                stream.stop()
            if response is not None:
                response.discard()
            deadline.cancel()
            self._deadlines.discard(deadline)
            self._log(req)

    @staticmethod
    def _content_length(scope: dict) -> int | None:
        raw = header(scope, b"content-length")
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
        spec: RequestSpec,
        stream: BodyStream,
        response: _Response,
        req: _Request,
        length: int | None,
        deadline: _Deadline,
    ) -> None:
        small = length is not None and length <= INLINE_BODY_BYTES
        if spec.format == "json":
            async with asyncio.timeout_at(deadline.expire_at):
                parsed = await self._read_json(spec, stream, small)
            encoder = self._json_encoder(parsed, spec, response)
            await self._respond_records(parsed.records, response, req, encoder, deadline)
            return
        encoder = self._encoder(project_top_k(None, spec.attribute_top_k))
        if small:
            async with asyncio.timeout_at(deadline.expire_at):
                body = await stream.read_all()
            if not body.strip():
                raise HttpError(400, "empty body")
            if not is_gzip(body, spec):  # a small gzip body may inflate to anything: pipeline
                records = list(body_records((body,), spec, self.settings))
                if not records:
                    raise HttpError(400, "no ticket records in the body")
                await self._respond_records(records, response, req, encoder, deadline)
                return

            def source(_on_idle: Callable[[], None]) -> Iterator[TicketRecord]:
                return body_records((body,), spec, self.settings)

            await self._pipeline(source, response, req, encoder, None, deadline)
        else:
            req.streamed = True
            response.stream = stream
            stream.start()

            def source(on_idle: Callable[[], None]) -> Iterator[TicketRecord]:
                return body_records(stream.chunks(on_idle), spec, self.settings)

            await self._pipeline(source, response, req, encoder, stream, deadline)
        if req.records == 0 and not response.started:
            raise HttpError(400, "empty body" if stream.bytes == 0 else "no ticket records in the body")

    async def _read_json(self, spec: RequestSpec, stream: BodyStream, small: bool) -> JsonRequest:
        if small:
            body = await stream.read_all()
            if not body.strip():
                raise HttpError(400, "empty body")
            if not is_gzip(body, spec):
                return read_json_request((body,), spec, self.settings)
            return await asyncio.to_thread(read_json_request, (body,), spec, self.settings)
        stream.start()
        try:
            return await asyncio.to_thread(read_json_request, stream.chunks(), spec, self.settings)
        except HttpError:
            if stream.bytes == 0:
                raise HttpError(400, "empty body") from None
            raise

    def _encoder(self, top_k: int | None) -> RecordEncoder:
        assert self.engine is not None
        return RecordEncoder(self.engine.labels, self.engine.review_threshold, top_k)

    def _json_encoder(self, parsed: JsonRequest, spec: RequestSpec, response: _Response) -> RecordEncoder:
        """The Hugging Face toolkit's response for its request shape (answered as JSON), this
        project's records otherwise."""
        assert self.engine is not None
        if parsed.toolkit and response.fmt == "json":
            if parsed.has_objects:
                raise HttpError(
                    400,
                    "'inputs' must be strings (text pairs are not supported): "
                    'send {"instances": [{"id": ..., "text": ...}]} for tickets with ids',
                )
            check_toolkit_records(parsed.records)
            encoder = ToolkitEncoder(
                self.engine.labels,
                self.engine.classifier.manifest.scoring,
                parsed.shape == "inputs-string",
                parsed.parameters,
            )
            response.wrapper = encoder.wrapper
            return encoder
        return self._encoder(project_top_k(parsed.parameters, spec.attribute_top_k))

    async def _respond_records(
        self,
        records: list[TicketRecord],
        response: _Response,
        req: _Request,
        encoder: RecordEncoder,
        deadline: _Deadline,
    ) -> None:
        """Parsed records: a few inline, more through the pipeline thread (by the total count:
        bad records cost encoding time on the event loop too)."""
        if len(records) > INLINE_RECORDS:
            await self._pipeline(lambda _: _take_each(records), response, req, encoder, None, deadline)
            return
        engine = self.engine
        assert engine is not None
        good = [r for r in records if r.error is None]
        async with asyncio.timeout_at(deadline.expire_at):
            loop = asyncio.get_running_loop()
            done = loop.create_future()
            encodings = engine.prepare([r.text for r in good]) if good else []
            job = engine.submit(
                encodings, lambda _job: loop.call_soon_threadsafe(_resolve, done), urgent=True
            )
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

    async def _pipeline(
        self,
        source: Callable[[Callable[[], None]], Iterator[TicketRecord]],
        response: _Response,
        req: _Request,
        encoder: RecordEncoder,
        stream: BodyStream | None,
        deadline: _Deadline,
    ) -> None:
        """Windows of records: prepared on a pipeline thread, scored by the batcher, written here."""
        engine = self.engine
        assert engine is not None
        req.pipelined = True
        loop = asyncio.get_running_loop()
        windows: asyncio.Queue[Any] = asyncio.Queue()
        slots = threading.Semaphore(WINDOWS_IN_FLIGHT)
        cancel = stream.cancel if stream is not None else threading.Event()
        expired = threading.Event()  # past the deadline: windows are accounted for, not scored

        def put(item: object) -> None:
            # RuntimeError: the event loop has closed (the server is gone): nobody listens.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(windows.put_nowait, item)

        def prepare(texts: list[str]) -> list[Any]:
            """Preprocess and tokenize in slices, so that a deadline stops the work promptly."""
            encodings: list[Any] = []
            for start in range(0, len(texts), PREPARE_SLICE):
                if expired.is_set():
                    return []
                encodings += engine.prepare(texts[start : start + PREPARE_SLICE])
            return encodings

        def submit(window: list[TicketRecord]) -> None:
            good = [r.text for r in window if r.error is None]
            encodings = prepare(good) if good else []
            # Texts are not needed any more: keep only what the response needs.
            slim = [TicketRecord(r.index, r.id, None, r.error) for r in window]
            while not slots.acquire(timeout=0.2):
                if cancel.is_set():
                    raise ClientGone
            if expired.is_set() or len(encodings) != len(good):
                put((slim, None, None))
                return
            done = loop.create_future()
            job = engine.submit(
                encodings, lambda _job: loop.call_soon_threadsafe(_resolve, done), urgent=False
            )
            if cancel.is_set():
                job.cancelled = True
                raise ClientGone
            put((slim, job, done))

        window: list[TicketRecord] = []
        chars = 0

        def on_idle() -> None:
            """The body has stalled: past the deadline, the records read so far must not wait
            in a partial window (they are answered, the ones never read are not)."""
            nonlocal window, chars
            if expired.is_set() and window:
                submit(window)
                window, chars = [], 0

        def produce() -> None:
            nonlocal window, chars
            try:
                for record in source(on_idle):
                    if cancel.is_set():
                        raise ClientGone
                    window.append(record)
                    chars += len(record.text) if record.text else 0
                    if len(window) >= WINDOW_RECORDS or chars >= WINDOW_CHARS:
                        submit(window)
                        window, chars = [], 0
                if window:
                    submit(window)
                put(_EOF)
            except BaseException as exc:
                put(exc)

        producer = threading.Thread(target=produce, name="request-pipeline", daemon=True)
        producer.start()
        try:
            while True:
                item = await self._next_window(windows, deadline, expired)
                if item is None:  # out of time even for accounting: one line for the rest
                    cancel.set()
                    if stream is not None:
                        stream.abort()
                    message = f"{deadline.reason}; the records from index {req.records} on were not read"
                    response.force_send = True
                    await response.records([error_record(message)])
                    req.errors += 1
                    break
                if item is _EOF:
                    break
                if isinstance(item, BaseException):
                    raise item
                slim, job, done = item
                try:
                    if job is not None and not expired.is_set():
                        await asyncio.wait((done, deadline.expired), return_when=asyncio.FIRST_COMPLETED)
                        if not done.done():
                            expired.set()
                    if job is not None and done.done():
                        if job.error is not None:
                            raise job.error
                        items = encoder.encode(slim, job.scores)
                    else:
                        if job is not None:
                            job.cancelled = True
                        items = encoder.unscored(slim, deadline.reason)
                        req.unscored += sum(1 for r in slim if r.error is None)
                finally:
                    slots.release()
                if cancel.is_set():
                    raise ClientGone
                req.records += len(slim)
                req.errors += sum(1 for r in slim if r.error is not None)
                await response.records(items)
            if req.records or response.started:
                await response.finish()
        except BaseException:
            cancel.set()
            if stream is not None:
                stream.abort()
            # Unblock and drop whatever is still queued for this request.
            while not windows.empty():
                item = windows.get_nowait()
                if isinstance(item, tuple) and item[1] is not None:
                    item[1].cancelled = True
            raise

    @staticmethod
    async def _next_window(windows: asyncio.Queue, deadline: _Deadline, expired: threading.Event) -> object:
        """The next window, or None when the request gives up accounting (past ``give_up``).
        Passing the deadline while waiting (a slow body) switches the request to accounting."""
        get = asyncio.ensure_future(windows.get())
        while True:
            timer = deadline.give_up if expired.is_set() else deadline.expired
            await asyncio.wait((get, timer), return_when=asyncio.FIRST_COMPLETED)
            if get.done():
                return get.result()
            if timer is deadline.expired:
                expired.set()
                continue
            get.cancel()
            return None

    def _log(self, req: _Request) -> None:
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


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


__all__ = ["RESPONSE_TYPES", "InferenceApp"]
