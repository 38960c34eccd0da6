"""The ASGI application: ``GET /ping`` and ``POST /invocations`` (SageMaker's container contract),
and ``GET /execution-parameters`` (batch transform).

A bare ASGI callable, no framework: the request path is short and every microsecond of a
single-ticket request counts. This module routes and owns the lifecycle (model loading, warm-up,
shutdown); the request path is split where a reader expects its seams:

* reading the request: ``reading.py`` (on :mod:`triage_core.reader`);
* scoring: ``pipeline.py`` (the inline and the pipelined route), on ``model.py`` and
  ``batching.py`` (preprocessing, tokenizing, ONNX Runtime);
* writing the response: ``outputs.py`` (what each record's line says) and ``responses.py``
  (status line, streaming, spooling).

A request of at most ``INLINE_BODY_BYTES`` is read whole before it is parsed; a bigger one is
parsed as it arrives (JSON bodies are parsed first, on a thread, because their ``parameters``
may come last).
"""

from __future__ import annotations

import asyncio
import logging
import threading
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
from inference_server.pipeline import Deadline, respond_records, run_pipeline
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
from inference_server.responses import RequestStats, Response, log_request, send_json
from inference_server.settings import Settings
from triage_core.records import TicketRecord

log = logging.getLogger("inference_server")

INLINE_BODY_BYTES = 64 * 1024  # JSON Lines / CSV / JSON bodies up to this size are read whole


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
        self._deadlines: set[Deadline] = set()
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
                await send_json(send, 405, HttpError(405, "use POST").body())
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
            await send_json(send, 200, orjson.dumps(body))
        else:
            await send_json(send, 404, HttpError(404, f"no route {path}").body())

    async def _ping(self, send: Callable) -> None:
        if self.stopping:
            await send_json(send, 503, b'{"status":"stopping"}')
        elif not self.ready:
            await send_json(send, 503, b'{"status":"loading"}')
        elif self.health is not None and not self.health.all_ready():
            ready, total = self.health.counts()
            body = {"status": "loading", "workers_ready": ready, "workers": total}
            await send_json(send, 503, orjson.dumps(body))
        else:
            await send_json(send, 200, b'{"status":"ok"}')

    # --- /invocations ------------------------------------------------------------------------
    async def _invocations(self, scope: dict, receive: Callable, send: Callable) -> None:
        req = RequestStats()
        response: Response | None = None
        loop = asyncio.get_running_loop()
        deadline = Deadline(loop, self.settings.timeout_seconds)
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
            response = Response(send, req.out_format, req)
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
            log_request(req)

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
        response: Response | None,
        req: RequestStats,
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
        await send_json(send, status, body)

    async def _dispatch(
        self,
        spec: RequestSpec,
        stream: BodyStream,
        response: Response,
        req: RequestStats,
        length: int | None,
        deadline: Deadline,
    ) -> None:
        engine = self.engine
        assert engine is not None  # /invocations answers 503 until the model is loaded
        small = length is not None and length <= INLINE_BODY_BYTES
        if spec.format == "json":
            async with asyncio.timeout_at(deadline.expire_at):
                parsed = await self._read_json(spec, stream, small)
            encoder = self._json_encoder(parsed, spec, response)
            await respond_records(engine, parsed.records, response, req, encoder, deadline)
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
                await respond_records(engine, records, response, req, encoder, deadline)
                return

            def source(_on_idle: Callable[[], None]) -> Iterator[TicketRecord]:
                return body_records((body,), spec, self.settings)

            await run_pipeline(engine, source, response, req, encoder, None, deadline)
        else:
            req.streamed = True
            response.stream = stream
            stream.start()

            def source(on_idle: Callable[[], None]) -> Iterator[TicketRecord]:
                return body_records(stream.chunks(on_idle), spec, self.settings)

            await run_pipeline(engine, source, response, req, encoder, stream, deadline)
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

    def _json_encoder(self, parsed: JsonRequest, spec: RequestSpec, response: Response) -> RecordEncoder:
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


__all__ = ["RESPONSE_TYPES", "InferenceApp"]
