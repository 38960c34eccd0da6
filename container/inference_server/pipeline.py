"""The two routes parsed records take to their scores.

* **inline** (``respond_records`` with at most ``INLINE_RECORDS`` records): prepared on the
  event loop, scored as one urgent job, answered with a ``Content-Length``.
* **pipelined** (``run_pipeline``): a worker thread reads records from their source (the body
  as it arrives, or a parsed JSON body), preprocesses and tokenizes them in windows of
  ``WINDOW_RECORDS`` (the first ones smaller) and hands each window to the batcher; the event
  loop writes each window's results, in input order, as soon as it is scored. At most
  ``WINDOWS_IN_FLIGHT`` windows are held, so memory stays flat whatever the body size.

Every record gets exactly one output line. When a pipelined request runs out of time (its
``Deadline``: the timeout, or SIGTERM's shutdown window), scoring stops; the records not scored
yet, including those still to be read from the body, each get an error line with their index
and id. Only if even that takes longer than ``DRAIN_SECONDS`` does the response end with one
``{"index": null}`` line naming the first index not accounted for.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from inference_server.model import Engine
from inference_server.outputs import RecordEncoder, error_record
from inference_server.reading import BodyStream, ClientGone
from inference_server.responses import RequestStats, Response
from triage_core.records import TicketRecord

INLINE_RECORDS = 64  # at most this many tickets (good or bad) are prepared on the event loop
WINDOW_RECORDS = 512  # tickets per pipeline window (sorted into batches by the batcher)
# The first windows are smaller (8, 16, ... up to WINDOW_RECORDS): the runners start after 8
# tickets are prepared instead of 512 (~30 ms of idle cores per request); 8 rather than 32: the
# first model call 3.0 instead of 5.2 ms into a request (e-mail bodies 5.2 instead of 9.8 ms),
# measured in an instrumented server (docs/benchmarks.md).
FIRST_WINDOW_RECORDS = 8
WINDOW_CHARS = 8 * 1024 * 1024  # ... or fewer when their raw text is this large
WINDOWS_IN_FLIGHT = 4
PREPARE_SLICE = 128  # tickets preprocessed between two looks at the deadline
DRAIN_SECONDS = 30.0  # after a timeout: time to write error lines for the records left

_EOF = object()


class Deadline:
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
            self._loop.call_at(expire_at, resolve, self.expired),
            self._loop.call_at(give_up_at, resolve, self.give_up),
        ]

    def bring_forward(self, expire_at: float, give_up_at: float, reason: str) -> None:
        if expire_at < self.expire_at:
            self.reason = reason
            self._schedule(expire_at, min(give_up_at, self.give_up_at))

    def cancel(self) -> None:
        for handle in self._handles:
            handle.cancel()


def take_each(records: list[TicketRecord]) -> Iterator[TicketRecord]:
    """Records of a parsed JSON body, letting go of each (and its text) once it is taken."""
    for i in range(len(records)):
        record, records[i] = records[i], None  # type: ignore[call-overload]
        yield record


async def respond_records(
    engine: Engine,
    records: list[TicketRecord],
    response: Response,
    req: RequestStats,
    encoder: RecordEncoder,
    deadline: Deadline,
) -> None:
    """Parsed records: a few inline, more through the pipeline thread (by the total count:
    bad records cost encoding time on the event loop too)."""
    if len(records) > INLINE_RECORDS:
        await run_pipeline(engine, lambda _: take_each(records), response, req, encoder, None, deadline)
        return
    good = [r for r in records if r.error is None]
    async with asyncio.timeout_at(deadline.expire_at):
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        encodings = engine.prepare([r.text for r in good]) if good else []
        job = engine.submit(encodings, lambda _job: loop.call_soon_threadsafe(resolve, done), urgent=True)
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


async def run_pipeline(
    engine: Engine,
    source: Callable[[Callable[[], None]], Iterator[TicketRecord]],
    response: Response,
    req: RequestStats,
    encoder: RecordEncoder,
    stream: BodyStream | None,
    deadline: Deadline,
) -> None:
    """Windows of records: prepared on a pipeline thread, scored by the batcher, written here."""
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
        job = engine.submit(encodings, lambda _job: loop.call_soon_threadsafe(resolve, done), urgent=False)
        if cancel.is_set():
            job.cancelled = True
            raise ClientGone
        put((slim, job, done))

    window: list[TicketRecord] = []
    chars = 0
    window_records = FIRST_WINDOW_RECORDS

    def on_idle() -> None:
        """The body has stalled: past the deadline, the records read so far must not wait
        in a partial window (they are answered, the ones never read are not)."""
        nonlocal window, chars
        if expired.is_set() and window:
            submit(window)
            window, chars = [], 0

    def produce() -> None:
        nonlocal window, chars, window_records
        try:
            for record in source(on_idle):
                if cancel.is_set():
                    raise ClientGone
                window.append(record)
                chars += len(record.text) if record.text else 0
                if len(window) >= window_records or chars >= WINDOW_CHARS:
                    submit(window)
                    window, chars = [], 0
                    window_records = min(2 * window_records, WINDOW_RECORDS)
            if window:
                submit(window)
            put(_EOF)
        except BaseException as exc:
            put(exc)

    producer = threading.Thread(target=produce, name="request-pipeline", daemon=True)
    producer.start()
    try:
        while True:
            item = await _next_window(windows, deadline, expired)
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


async def _next_window(windows: asyncio.Queue, deadline: Deadline, expired: threading.Event) -> object:
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


def resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)
