"""Length-bucketed dynamic batching over a few ONNX Runtime runner threads.

Requests submit *jobs* (the tokenized tickets of one request, or of one window of a streamed
request). Runner threads take batches of up to ``max_batch`` tickets and call the model; ONNX
Runtime releases the GIL, so runners overlap with the event loop and with the threads that parse
and tokenize streamed bodies.

How a batch is chosen:

* Tickets of small jobs (an interactive request: at most ``max_batch`` tickets) go to an
  *urgent* queue that is always served first, so a single ticket never waits behind a
  1 GB batch file.
* Tickets of other jobs (a large request, or a window of a streamed body) go to a pool of
  buckets keyed by token count. A runner takes the shortest waiting tickets, up to
  ``max_batch``: batches are length-sorted across everything in the pool (several windows of
  every running request), so padding is as small as in the globally sorted batches of offline
  evaluation. Long tickets cannot starve: every bulk producer (``app.py``'s pipeline) keeps a
  bounded number of windows in flight and a window completes only when all its tickets are
  scored, so once the producers are blocked the pool drains down to its longest tickets.
* Length decides batches in both queues: the tickets of an urgent job are queued shortest
  first (a request mixing short and long tickets does not pad the short ones to the long
  ones' width; scores go back to each ticket's own row, so the response keeps the input order),
  and a batch stops before its padded size (rows x the longest row's tokens; a ``windows``
  ticket counts one row per window) passes ``max_batch_tokens``: a batch of 512-token tickets
  holds fewer of them than a batch of 20-token ones. It always holds at least one ticket.
* Padding decides too (``max_padding``, ``triage_core.inference.BatchRule``, which offline scoring
  and the benchmark's limit share): a longer length joins a batch only if the batch's padded
  cells stay within that share of its real tokens; otherwise it starts the next batch. A runner
  that finds a 118-ticket window in the pool takes its shortest tickets of similar length,
  not 32 tickets spanning 5 to 80 tokens padded to 80 (measured: 69 % padding and 1.5x the ONNX
  Runtime time per ticket before the cap, docs/benchmarks.md).
* Tickets without a model row (a confidence cascade settled them: their scores are known) never
  enter a queue: ``submit`` copies their scores on the submitting thread.
* A runner takes at most its share of the pool's model rows (the pool's rows split evenly
  between the runners, rounded up): when the pool runs low, at the end of a request where only
  its longest tickets are left, they go to every runner instead of one long batch on one runner
  while the others wait. Under load the share is far above a batch and never binds.
* There is no waiting for a batch to fill: a runner takes whatever is queued when it is free.
  Under load tickets accumulate while runners are busy, so batches grow by themselves; at
  idle a single ticket runs at once.
* A batch that a runner takes while every other runner is idle and nothing else is queued
  (typically one interactive ticket) runs on ``solo_fn`` when one is given: a session with
  more threads, so an idle server answers a single ticket with all its cores instead of one.
  Under load every batch runs on ``run_fn`` (one thread per runner: no oversubscription).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from triage_core.inference import BatchRule, model_rows

log = logging.getLogger(__name__)

RunFn = Callable[[list[Any]], np.ndarray]


class Job:
    """The tickets of one request (or one streamed window) and their score rows."""

    __slots__ = ("callback", "cancelled", "error", "remaining", "scores")

    def __init__(self, n: int, n_labels: int, callback: Callable[[Job], None]):
        self.scores = np.empty((n, n_labels), dtype=np.float32)
        self.remaining = n
        self.callback = callback
        self.cancelled = False
        self.error: BaseException | None = None


class _Item:
    __slots__ = ("encoding", "job", "pos")

    def __init__(self, job: Job, pos: int, encoding: Any):
        self.job = job
        self.pos = pos
        self.encoding = encoding


class Batcher:
    """Dynamic batcher: ``submit`` from any thread; ``runners`` threads call ``run_fn``."""

    def __init__(
        self,
        run_fn: RunFn,
        n_labels: int,
        runners: int,
        rule: BatchRule,
        solo_fn: RunFn | None = None,
    ):
        self._run_fn = run_fn
        self.rule = rule
        self._solo_fn = solo_fn
        self._busy = 0  # runners inside a run call
        self._n_labels = n_labels
        self._cond = threading.Condition()
        self._urgent: deque[_Item] = deque()
        self._buckets: dict[int, deque[_Item]] = {}
        self._bulk = 0
        self._bulk_rows = 0  # model rows of the pool's tickets
        self._closed = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"onnx-runner-{i}", daemon=True) for i in range(runners)
        ]
        for thread in self._threads:
            thread.start()

    # --- producer side ---------------------------------------------------------------------
    def submit(
        self,
        encodings: Sequence[Any],
        callback: Callable[[Job], None],
        urgent: bool | None = None,
    ) -> Job:
        """Queue tokenized tickets; ``callback(job)`` runs (on a runner thread) when all are scored.

        ``urgent`` defaults to "the job fits in one batch". A job with nothing for the model (empty,
        or only tickets without model rows, :meth:`_score_now`) completes at once, its callback on
        the calling thread.
        """
        job = Job(len(encodings), self._n_labels, callback)
        if urgent is None:
            urgent = len(encodings) <= self.rule.max_batch
        rows = [model_rows(enc) for enc in encodings]
        if not all(rows):
            self._score_now(job, [i for i, n in enumerate(rows) if not n], encodings)
        items = [_Item(job, i, enc) for i, (enc, n) in enumerate(zip(encodings, rows, strict=True)) if n]
        if not items:
            callback(job)
            return job
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed")
            if urgent:
                if len(items) > 1:
                    items.sort(key=_length)
                self._urgent.extend(items)
            else:
                buckets = self._buckets
                for item in items:
                    length = len(item.encoding.ids)
                    bucket = buckets.get(length)
                    if bucket is None:
                        bucket = buckets[length] = deque()
                    bucket.append(item)
                self._bulk += len(items)
                self._bulk_rows += sum(rows)
            self._cond.notify(min(len(items), len(self._threads)))
        return job

    def _score_now(self, job: Job, positions: list[int], encodings: Sequence[Any]) -> None:
        """Tickets with no model row (a cascade's settled tickets: their scores are known, ``run_fn``
        only copies them) are scored on the submitting thread. Through the pool each batch of them
        cost a runner's wake-up and the GIL for that copy: 18 of a 1,000-ticket request's 54 runner
        calls."""
        try:
            job.scores[positions] = self._run_fn([encodings[i] for i in positions])
        except Exception as exc:  # as in a runner: the job fails, not the server
            log.exception("scoring %d tickets without model rows failed", len(positions))
            job.error = exc
        job.remaining -= len(positions)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the runners after the queued tickets are done."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._urgent) + self._bulk

    # --- runner side -----------------------------------------------------------------------
    def _take(self) -> list[_Item] | None:
        """Next batch, or None once closed and drained. Called with the condition held."""
        while True:
            if self._urgent:
                batch = self._take_urgent()
            elif self._bulk:
                batch = self._take_bulk()
            elif self._closed:
                return None
            else:
                self._cond.wait()
                continue
            batch = [item for item in batch if not item.job.cancelled]
            if batch:
                return batch

    def _take_urgent(self) -> list[_Item]:
        """The urgent queue's first tickets, one by one while the batch keeps the rule (each
        job's tickets are queued shortest first; jobs one after the other)."""
        urgent, rule = self._urgent, self.rule
        batch = [urgent.popleft()]
        width, rows = _length(batch[0]), _rows(batch[0])
        tokens = rows * width
        while urgent:
            item = urgent[0]
            length, extra = _length(item), _rows(item)
            new_width, new_rows, new_tokens = max(width, length), rows + extra, tokens + extra * length
            if not rule.within(len(batch) + 1, new_rows, new_width) or rule.overpadded(
                new_rows, new_tokens, new_width
            ):
                break
            batch.append(urgent.popleft())
            width, rows, tokens = new_width, new_rows, new_tokens
        return batch

    def _take_bulk(self) -> list[_Item]:
        """The pool's shortest tickets, a length at a time, as :meth:`BatchRule.fit` admits them,
        and at most this runner's share of the pool's rows (:meth:`_share`)."""
        buckets, rule = self._buckets, self.rule
        batch: list[_Item] = []
        rows = tokens = 0
        budget = self._share()
        for length in sorted(buckets):
            bucket = buckets[length]
            offered = min(len(bucket), rule.max_batch - len(batch))
            available: list[int] = []
            planned = rows
            for i in range(offered):
                extra = _rows(bucket[i])
                if planned + extra > budget and (batch or available):
                    break
                available.append(extra)
                planned += extra
            capped = len(available) < offered
            take, rows, tokens = rule.fit(len(batch), rows, tokens, length, available)
            if not take:
                break
            batch.extend(bucket.popleft() for _ in range(take))
            if not bucket:
                del buckets[length]
            if len(batch) == rule.max_batch or take < len(available) or capped:
                break
        self._bulk -= len(batch)
        self._bulk_rows -= rows
        return batch

    def _share(self) -> int:
        """The model rows a runner takes from the pool at most: an even split of the pool's rows
        between the runners (rounded up). Under load the pool holds far more than the runners'
        batches, and this cap never binds; when it runs low (the end of a request: its longest
        tickets, which the pool takes last) one runner taking every ticket left would run one long
        batch while the others wait with nothing to do (measured: one runner idle for 17-41 ms at
        the end of each 1,000-ticket request, ~5 % of its time, docs/benchmarks.md). A batch's
        size hardly changes the cost per row (:class:`~triage_core.inference.BatchRule`), so
        splitting the tail costs next to nothing."""
        return -(-self._bulk_rows // len(self._threads))

    def _loop(self) -> None:
        while True:
            with self._cond:
                batch = self._take()
                if batch is None:
                    return
                alone = self._busy == 0 and not self._urgent and not self._bulk
                self._busy += 1
            run = self._solo_fn if alone and self._solo_fn is not None else self._run_fn
            try:
                scores = run([item.encoding for item in batch])
                error: BaseException | None = None
            except Exception as exc:  # a failed batch fails its tickets' jobs, not the server
                log.exception("batch of %d failed", len(batch))
                scores, error = None, exc
            done: list[Job] = []
            with self._cond:
                self._busy -= 1
                for row, item in enumerate(batch):
                    job = item.job
                    if scores is not None:
                        job.scores[item.pos] = scores[row]
                    elif job.error is None:
                        job.error = error
                    job.remaining -= 1
                    if job.remaining == 0:
                        done.append(job)
            for job in done:
                try:
                    job.callback(job)
                except Exception:
                    log.exception("job callback failed")


def _length(item: _Item) -> int:
    return len(item.encoding.ids)


def _rows(item: _Item) -> int:
    """Model rows of a ticket: none when a cascade settled it, one, or its windows."""
    return model_rows(item.encoding)
