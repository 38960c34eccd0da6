"""The dynamic batcher's routing: which batches use the wide ("solo") session and which the
per-core one. Real runner threads; the run functions record what they were given."""

from __future__ import annotations

import threading

import numpy as np

from inference_server.batching import Batcher

N_LABELS = 3


class Recorder:
    """A run function that records the tickets of each batch; ``gate`` can hold a call."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.gate = gate
        self.started = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, encodings: list[int]) -> np.ndarray:
        with self.lock:
            self.batches.append(list(encodings))
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10), "test gate never opened"
        return np.tile(np.asarray(encodings, dtype=np.float32)[:, None], (1, N_LABELS))

    @property
    def tickets(self) -> int:
        return sum(len(b) for b in self.batches)


class Encoding(int):
    """Stands in for a ``tokenizers.Encoding``: the batcher only reads ``.ids`` for bulk lengths."""

    @property
    def ids(self) -> list[int]:
        return [0] * (int(self) % 7 + 1)


def submit_and_wait(batcher: Batcher, values: list[int], urgent: bool | None = None) -> np.ndarray:
    done = threading.Event()
    job = batcher.submit([Encoding(v) for v in values], lambda _job: done.set(), urgent)
    assert done.wait(10)
    assert job.error is None
    return job.scores


def test_a_ticket_on_an_idle_server_runs_on_the_solo_session() -> None:
    narrow, solo = Recorder(), Recorder()
    batcher = Batcher(narrow, N_LABELS, max_batch=8, runners=2, solo_fn=solo)
    try:
        for value in (1, 2, 3):  # one request after another, as interactive clients send them
            scores = submit_and_wait(batcher, [value])
            assert scores[0].tolist() == [value] * N_LABELS
        assert solo.batches == [[1], [2], [3]] and narrow.batches == []
    finally:
        batcher.close()


def test_a_batch_that_arrives_while_another_runs_uses_the_per_core_session() -> None:
    gate = threading.Event()
    narrow, solo = Recorder(), Recorder(gate)
    batcher = Batcher(narrow, N_LABELS, max_batch=8, runners=2, solo_fn=solo)
    try:
        first = threading.Event()
        batcher.submit([Encoding(1)], lambda _job: first.set())
        assert solo.started.wait(10)  # runner 1 is inside the solo session, holding its cores
        scores = submit_and_wait(batcher, [2])  # runner 2 must not oversubscribe them
        assert narrow.batches == [[2]] and scores[0].tolist() == [2] * N_LABELS
        gate.set()
        assert first.wait(10)
        assert solo.batches == [[1]]
    finally:
        gate.set()
        batcher.close()


def test_bulk_work_runs_on_the_per_core_session() -> None:
    narrow, solo = Recorder(), Recorder()
    batcher = Batcher(narrow, N_LABELS, max_batch=8, runners=2, solo_fn=solo)
    try:
        values = list(range(100))
        scores = submit_and_wait(batcher, values, urgent=False)
        assert scores[:, 0].tolist() == values  # every ticket scored, in its own row
        assert narrow.tickets + solo.tickets == 100
        # Only a batch taken when nothing else is left (the tail) may go solo.
        assert solo.tickets <= 8 and len(solo.batches) <= 1
    finally:
        batcher.close()


def test_without_a_solo_session_everything_runs_per_core() -> None:
    narrow = Recorder()
    batcher = Batcher(narrow, N_LABELS, max_batch=8, runners=2)
    try:
        submit_and_wait(batcher, [5])
        assert narrow.batches == [[5]]
    finally:
        batcher.close()
