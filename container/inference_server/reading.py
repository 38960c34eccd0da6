"""Request reading: headers -> what the body is; body -> ticket records.

The body is read by :class:`triage_core.reader.TicketReader`, the dispatcher Lambda's reader too,
so a file is read the same way whether it is dropped in the input bucket or posted here
(formats, charsets, BOMs, gzip, line endings, CSV quoting and field mapping: see docs/formats.md).

* :class:`RequestSpec` parses ``Content-Type`` (format and charset: any charset a codec knows is
  honoured, an unknown one is a 415), ``Content-Encoding`` (gzip or none, else 415) and SageMaker's
  ``CustomAttributes`` (``top_k``).
* :class:`BodyStream` moves ASGI body messages to a worker thread through a bounded queue
  (uvicorn stops reading the socket while it is full) and enforces the byte limit.
* :func:`read_json_request` reads an ``application/json`` body into compact records (at most
  ``max_records``, else 413) and its ``parameters``; JSON Lines and CSV bodies are streamed
  record by record by the app's pipeline (:func:`body_records`).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from inference_server.codecs import CSV, JSON, JSONL, REQUEST_TYPES, HttpError, top_k_from_custom_attributes
from inference_server.settings import Settings
from triage_core.reader import CSV as CSV_FORMAT
from triage_core.reader import JSON as JSON_FORMAT
from triage_core.reader import JSONL as JSONL_FORMAT
from triage_core.reader import TicketReader, format_of_media_type, split_media_type
from triage_core.records import RecordFormatError, TicketRecord, make_record
from triage_core.textstream import TextFormatError, canonical_charset, check_content_encoding

BODY_CHUNKS_AHEAD = 16
IDLE_SECONDS = 0.25
GZIP_MAGIC = b"\x1f\x8b"
_FORMATS = {JSON_FORMAT: "json", JSONL_FORMAT: "jsonl", CSV_FORMAT: "csv"}
_EOF = object()


class ClientGone(Exception):
    """The client disconnected or the request was cancelled."""


def header(scope: dict, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


@dataclass(frozen=True)
class RequestSpec:
    """What the request headers say about the body."""

    format: str  # json | jsonl | csv
    content_type: str
    content_encoding: str | None
    attribute_top_k: int | None

    @classmethod
    def from_scope(cls, scope: dict) -> RequestSpec:
        content_type = header(scope, b"content-type")
        if not content_type or not content_type.strip():
            raise HttpError(415, "missing Content-Type", supported=list(REQUEST_TYPES))
        media, params = split_media_type(content_type)
        fmt = format_of_media_type(media)
        if fmt is None:
            raise HttpError(415, f"unsupported Content-Type {media!r}", supported=list(REQUEST_TYPES))
        if params.get("charset"):
            try:
                canonical_charset(params["charset"])
            except TextFormatError:
                raise HttpError(
                    415, f"unsupported charset {params['charset']!r}", supported=list(REQUEST_TYPES)
                ) from None
        encoding = header(scope, b"content-encoding")
        try:
            check_content_encoding(encoding)
        except TextFormatError as exc:
            raise HttpError(415, str(exc), supported=["gzip"]) from None
        return cls(
            _FORMATS[fmt],
            content_type,
            encoding,
            top_k_from_custom_attributes(header(scope, b"x-amzn-sagemaker-custom-attributes")),
        )

    @property
    def media(self) -> str:
        return {"json": JSON, "jsonl": JSONL, "csv": CSV}[self.format]


class BodyStream:
    """The request body, as it arrives, for a worker thread (or whole, for small bodies)."""

    def __init__(self, receive: Callable, limit: int, on_bytes: Callable[[int], None]):
        self._receive = receive
        self._limit = limit
        self._on_bytes = on_bytes
        self.bytes = 0
        self.done = False  # the whole body has arrived
        self.cancel = threading.Event()  # set when the client goes away or the request gives up
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._space: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def _count(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        self._on_bytes(len(chunk))
        if self.bytes > self._limit:
            raise HttpError(413, f"body is over the {self._limit}-byte limit", limit=self._limit)

    async def read_all(self) -> bytes:
        """The whole body (small bodies, read on the event loop)."""
        parts: list[bytes] = []
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            chunk = message.get("body", b"")
            if chunk:
                self._count(chunk)
                parts.append(chunk)
            if not message.get("more_body", False):
                self.done = True
                return parts[0] if len(parts) == 1 else b"".join(parts)

    def start(self) -> None:
        """Start moving body chunks to the queue (then watch for a disconnect)."""
        self._loop = asyncio.get_running_loop()
        self._space = asyncio.Semaphore(BODY_CHUNKS_AHEAD)
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self._space is not None
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self._queue.put(ClientGone())
                    self.cancel.set()
                    return
                chunk = message.get("body", b"")
                if chunk:
                    try:
                        self._count(chunk)
                    except HttpError as exc:
                        self._queue.put(exc)
                        return
                    await self._space.acquire()
                    self._queue.put(chunk)
                if not message.get("more_body", False):
                    self._queue.put(_EOF)
                    self.done = True
                    break
            while not self.cancel.is_set():  # the body is in; a disconnect now cancels the work
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    self.cancel.set()
                    return
        except asyncio.CancelledError:
            self._queue.put(ClientGone())
            raise

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def abort(self) -> None:
        """Wake a worker thread blocked on the next chunk: it gets :class:`ClientGone`."""
        self.cancel.set()
        self._queue.put(ClientGone())

    def chunks(self, on_idle: Callable[[], None] | None = None) -> Iterator[bytes]:
        """Body chunks for a worker thread, in order; raises the pump's error if any.
        ``on_idle`` runs (on that thread) whenever no chunk has come for ``IDLE_SECONDS``."""
        loop, space = self._loop, self._space
        assert loop is not None and space is not None
        while True:
            try:
                item = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                if on_idle is not None:
                    on_idle()
                continue
            if isinstance(item, bytes):
                loop.call_soon_threadsafe(space.release)
                yield item
            elif item is _EOF:
                return
            else:
                raise item  # type: ignore[misc]


def is_gzip(body: bytes, spec: RequestSpec) -> bool:
    return body[:2] == GZIP_MAGIC or (spec.content_encoding or "").strip().lower() in ("gzip", "x-gzip")


def body_records(chunks: Iterable[bytes], spec: RequestSpec, settings: Settings) -> Iterator[TicketRecord]:
    """The records of a JSON Lines or CSV body; a whole-body problem is a 400."""
    reader = TicketReader(
        chunks,
        format=JSONL_FORMAT if spec.format == "jsonl" else CSV_FORMAT,
        content_type=spec.content_type,
        content_encoding=spec.content_encoding,
        fields=settings.fields,
        max_record_chars=settings.max_record_bytes,
        csv_columns=settings.csv_columns,
    )
    try:
        yield from reader
    except RecordFormatError as exc:
        raise HttpError(400, _hint(str(exc), spec, settings)) from None


def _hint(message: str, spec: RequestSpec, settings: Settings) -> str:
    if spec.format == "csv" and "CSV header" in message and not settings.csv_columns:
        return f"{message} (headerless CSV, e.g. batch transform's mini-batches: set TRIAGE_CSV_HEADER)"
    return message


@dataclass
class JsonRequest:
    """An ``application/json`` body: records, parameters, and which shape it came in."""

    records: list[TicketRecord]
    parameters: dict[str, Any] | None
    shape: str  # inputs-string | inputs-list | instances | array | export
    has_objects: bool = False  # an "inputs" list held objects (not the toolkit's shape)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def toolkit(self) -> bool:
        return self.shape in ("inputs-string", "inputs-list")


_SHAPE_HELP = 'expected a JSON object: {"inputs": ...} or {"instances": [...]} (or an array of tickets)'


def read_json_request(chunks: Iterable[bytes], spec: RequestSpec, settings: Settings) -> JsonRequest:
    """Records and parameters of a JSON body; 400 for a malformed body, 413 over the record cap."""
    reader = TicketReader(
        chunks,
        format=JSON_FORMAT,
        content_type=spec.content_type,
        content_encoding=spec.content_encoding,
        fields=settings.fields,
        max_record_chars=settings.max_record_bytes,
        keep_members=("parameters", "inputs", "instances"),
    )
    cap = settings.max_json_records
    records: list[TicketRecord] = []
    has_objects = False
    try:
        for record in reader:
            if len(records) >= cap:
                raise HttpError(
                    413,
                    f"more than {cap} tickets in one application/json request "
                    "(send JSON Lines, streamed without a ticket limit)",
                    limit_records=cap,
                )
            records.append(record)
    except RecordFormatError as exc:
        message = str(exc)
        if message.startswith("expected a JSON array"):
            message = _SHAPE_HELP
        raise HttpError(400, f"malformed JSON: {message}" if "JSON" in message else message) from None
    document = reader.json.document if reader.json is not None else None
    if document is None or document.top_level is None:
        raise HttpError(400, "empty body")
    members = document.members
    parameters = members.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise HttpError(400, "'parameters' must be an object")
    if document.top_level == "array":
        shape = "array"
    elif document.records_key == "inputs":
        shape = "inputs-list"
        has_objects = reader.json.objects > 0
    elif document.records_key == "instances":
        shape = "instances"
    elif document.records_key is not None:  # a help-desk export: {"tickets": [...], ...}
        shape = "export"
    elif "inputs" in members:
        if not isinstance(members["inputs"], str):
            raise HttpError(400, "'inputs' must be a string or a list of strings")
        shape = "inputs-string"
        records = [make_record(0, None, members["inputs"])]
    elif "instances" in members:
        raise HttpError(400, '\'instances\' must be a list of {"id", "text"} objects')
    else:
        raise HttpError(400, _SHAPE_HELP)
    if not records:
        raise HttpError(400, "no tickets in the request")
    return JsonRequest(records, parameters, shape, has_objects)
