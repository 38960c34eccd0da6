"""The dynamic batcher's routing: which batches use the wide ("solo") session and which the
per-core one, and how tickets of different lengths are grouped. Real runner threads; the run
functions record what they were given, or the real model runs and its feeds are read."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import numpy as np
import orjson
import pytest

from inference_server.batching import Batcher, Job
from inference_server.model import Engine
from inference_server.settings import Settings
from tests.container.serverproc import start_server, stop_server
from training.export import fp32_onnx_path
from triage_core.artifact import MANIFEST_FILE, MODEL_FILE, load_manifest
from triage_core.inference import ArtifactClassifier, BatchRule

N_LABELS = 3
EIGHT = BatchRule(max_batch=8, max_tokens=None, max_padding=None)  # at most 8 tickets, no other cap


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


class Windowed(Encoding):
    """A ``windows`` ticket of 100-token windows: ``int(self)`` model rows."""

    @property
    def ids(self) -> list[int]:
        return [0] * 100

    @property
    def parts(self) -> list[int]:
        return [0] * int(self)


def submit_and_wait(batcher: Batcher, values: list[int], urgent: bool | None = None) -> np.ndarray:
    done = threading.Event()
    job = batcher.submit([Encoding(v) for v in values], lambda _job: done.set(), urgent)
    assert done.wait(10)
    assert job.error is None
    return job.scores


def test_a_ticket_on_an_idle_server_runs_on_the_solo_session() -> None:
    narrow, solo = Recorder(), Recorder()
    batcher = Batcher(narrow, N_LABELS, runners=2, rule=EIGHT, solo_fn=solo)
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
    batcher = Batcher(narrow, N_LABELS, runners=2, rule=EIGHT, solo_fn=solo)
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
    batcher = Batcher(narrow, N_LABELS, runners=2, rule=EIGHT, solo_fn=solo)
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
    batcher = Batcher(narrow, N_LABELS, runners=2, rule=EIGHT)
    try:
        submit_and_wait(batcher, [5])
        assert narrow.batches == [[5]]
    finally:
        batcher.close()


def pool_behind_a_busy_runner(values: list[int], runners: int, rule: BatchRule) -> tuple[Recorder, Job]:
    """``values`` queued as one bulk job while a runner holds a first batch (``[0]``), so that the
    pool is whole before it is drained; the batches every runner then took, and the job."""
    gate = threading.Event()
    narrow = Recorder(gate)
    batcher = Batcher(narrow, N_LABELS, runners=runners, rule=rule)
    try:
        held, done = threading.Event(), threading.Event()
        batcher.submit([Encoding(0)], lambda _job: held.set(), urgent=True)
        assert narrow.started.wait(10)  # a runner is inside the first batch: the pool fills
        job = batcher.submit([Encoding(v) for v in values], lambda _job: done.set(), urgent=False)
        gate.set()
        assert done.wait(10) and held.wait(10)
    finally:
        gate.set()
        batcher.close()
    assert narrow.batches[0] == [0]
    return narrow, job


def test_a_pool_running_low_is_split_between_the_runners() -> None:
    """The end of a request: the pool's last (longest) tickets go to both runners, half each,
    not all to the first runner that looks while the other waits with nothing to do."""
    narrow, job = pool_behind_a_busy_runner(list(range(1, 8)), runners=2, rule=EIGHT)
    assert job.scores[:, 0].tolist() == list(range(1, 8))
    # Shortest first (ticket 7 has one token, 1-6 have two to seven). Of the pool's 7 rows the free
    # runner takes half, rounded up; of the 3 then left, 2; then the last (one batch of 7 without
    # the split, run by one runner while the other waits).
    # (the two runners may record their batches in either order)
    assert narrow.batches[1] == [7, 1, 2, 3] and sorted(narrow.batches[2:]) == [[4, 5], [6]]


def test_a_full_pool_still_forms_full_batches_with_two_runners() -> None:
    """Under load the split never binds: a pool of 40 tickets for 2 runners of 8 gives batches
    of 8 until fewer than 16 rows are left, then half of what is left each time."""
    narrow, _ = pool_behind_a_busy_runner([7 * i for i in range(40)], runners=2, rule=EIGHT)
    assert sorted((len(b) for b in narrow.batches[1:]), reverse=True) == [8, 8, 8, 8, 4, 2, 1, 1]


def test_a_windows_ticket_larger_than_the_share_still_runs() -> None:
    narrow = Recorder()
    batcher = Batcher(narrow, N_LABELS, runners=2, rule=BatchRule(8, None, None))
    try:
        done = threading.Event()
        batcher.submit([Windowed(9)], lambda _job: done.set(), urgent=False)
        assert done.wait(10)  # 9 rows, a share of 5: the ticket runs alone, whole
        assert narrow.batches == [[9]]
    finally:
        batcher.close()


class NoRows(int):
    """A cascade's settled ticket: no token ids, no model row (its scores are known)."""

    ids = ()


def test_tickets_without_model_rows_are_scored_on_the_submitting_thread() -> None:
    calls: list[tuple[str, list[int]]] = []

    def run(encodings: list[int]) -> np.ndarray:
        calls.append((threading.current_thread().name, list(encodings)))
        return np.tile(np.asarray(encodings, dtype=np.float32)[:, None], (1, N_LABELS))

    batcher = Batcher(run, N_LABELS, runners=2, rule=EIGHT)
    try:
        here = threading.current_thread().name
        done = threading.Event()
        job = batcher.submit([NoRows(5), NoRows(6)], lambda _job: done.set(), urgent=False)
        assert done.is_set() and job.remaining == 0  # complete before submit returned
        assert job.scores[:, 0].tolist() == [5, 6] and calls == [(here, [5, 6])]
        calls.clear()
        done = threading.Event()
        job = batcher.submit([NoRows(7), Encoding(1), NoRows(8), Encoding(2)], lambda _job: done.set(), False)
        assert done.wait(10) and job.error is None
        assert job.scores[:, 0].tolist() == [7, 1, 8, 2]  # every ticket in its own row
        assert calls[0] == (here, [7, 8])
        assert sorted(v for name, batch in calls[1:] for v in batch) == [1, 2]
        assert all(name.startswith("onnx-runner") for name, _ in calls[1:])
    finally:
        batcher.close()


def test_a_failing_copy_fails_the_job_not_the_batcher() -> None:
    def run(encodings: list[int]) -> np.ndarray:
        if any(isinstance(e, NoRows) for e in encodings):
            raise ValueError("broken scores")
        return np.zeros((len(encodings), N_LABELS), dtype=np.float32)

    batcher = Batcher(run, N_LABELS, runners=1, rule=EIGHT)
    try:
        done = threading.Event()
        job = batcher.submit([NoRows(1), Encoding(2)], lambda _job: done.set(), urgent=False)
        assert done.wait(10) and isinstance(job.error, ValueError)
        assert submit_and_wait(batcher, [3]).shape == (1, N_LABELS)  # the batcher still serves
    finally:
        batcher.close()


# --- batches by length, through the real model ----------------------------------------------
SHORT = ["top up failed", "where is my card", "refund please", "pin blocked", "card declined", "fee?"]
LONG_TICKET = (
    "I ordered a new card three weeks ago and it still has not arrived, the tracking page says "
    "nothing and the support chat keeps closing before anyone answers my question. "
)


def mixed_tickets(n: int) -> list[str]:
    """Short and long tickets interleaved (every third one long, of growing length)."""
    return [
        LONG_TICKET * (2 + 3 * (i % 5)) + str(i) if i % 3 == 0 else SHORT[i % len(SHORT)] for i in range(n)
    ]


@pytest.fixture(scope="module")
def long_artifact(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model (fp32, so batch neighbours do not move scores) reading up to 512 tokens."""
    dst = tmp_path_factory.mktemp("long") / "model"
    shutil.copytree(tiny_artifact, dst)
    shutil.copyfile(fp32_onnx_path(tiny_artifact), dst / MODEL_FILE)
    data = json.loads((dst / MANIFEST_FILE).read_text("utf-8"))
    data.update(max_length=512, quantization="none")
    (dst / MANIFEST_FILE).write_text(json.dumps(data), "utf-8")
    return dst


class ShapeLog:
    """Wraps the classifier's padding: the ONNX feeds the real session receives, and the real
    (unpadded) lengths of their rows."""

    def __init__(self, engine: Engine) -> None:
        self.feeds: list[tuple[tuple[int, int], list[int]]] = []
        tokenizer = engine.classifier.tokenizer
        pad = tokenizer.pad

        def recording(encodings):
            feed = pad(encodings)
            self.feeds.append((feed["input_ids"].shape, [len(e.ids) for e in encodings]))
            return feed

        tokenizer.pad = recording

    def padding_share(self) -> float:
        cells = sum(rows * width for (rows, width), _ in self.feeds)
        real = sum(sum(lengths) for _, lengths in self.feeds)
        return cells / real - 1


def score(engine: Engine, texts: list[str], urgent: bool) -> np.ndarray:
    """As the server's routes submit: inline requests (up to 64 records) as one urgent job,
    pipelined windows as bulk jobs."""
    done = threading.Event()
    job = engine.submit(engine.prepare(texts), lambda _job: done.set(), urgent=urgent)
    assert done.wait(60) and job.error is None
    return job.scores


@pytest.mark.parametrize(("n", "urgent"), [(24, True), (64, True), (64, False)])
def test_a_request_mixing_lengths_is_batched_by_length_and_answered_in_order(
    long_artifact: Path, n: int, urgent: bool
) -> None:
    settings = Settings(model_dir=long_artifact, max_batch_size=8, max_batch_tokens=2048)
    engine = Engine(settings)
    try:
        texts = mixed_tickets(n)
        log = ShapeLog(engine)
        scores = score(engine, texts, urgent)
        feeds = list(log.feeds)
        # In input order: each row is that ticket's own scores (scored alone, fp32).
        alone = np.vstack([engine.classifier.predict_scores([t]) for t in texts])
        np.testing.assert_allclose(scores, alone, atol=1e-5)
        lengths = sorted(len(e.ids) for e in engine.prepare(texts))
        assert lengths[0] < 10 and lengths[-1] > 300
        # Padding is bounded: short tickets are not padded to the long ones' width, and no batch
        # holds more padded tokens than the budget (unless it is one ticket).
        log.feeds = feeds
        assert sum(len(rows) for _, rows in feeds) == n
        assert log.padding_share() < 0.35, feeds
        for (rows, width), real in feeds:
            assert rows * width <= 2048 or rows == 1
            assert width == max(real)
        # Arrival order (what a FIFO batcher feeds) pads several times more.
        fifo = [lengths_of(engine, texts[i : i + 8]) for i in range(0, n, 8)]
        assert sum(len(b) * max(b) for b in fifo) / sum(map(sum, fifo)) - 1 > 3 * log.padding_share()
    finally:
        engine.close()


def lengths_of(engine: Engine, texts: list[str]) -> list[int]:
    return [len(e.ids) for e in engine.prepare(texts)]


def test_short_requests_run_in_batches_within_the_padding_cap(long_artifact: Path) -> None:
    """The token budget only splits long batches: without a padding cap 8 short tickets are one
    run; with the default cap (10 %) they run in batches of close lengths, each within the cap,
    every ticket once."""
    texts = SHORT + SHORT[:2]
    lengths = lengths_of(Engine(Settings(model_dir=long_artifact)), texts)
    assert len(set(lengths)) > 1  # the premise: the short tickets differ in length
    for max_padding in (1000.0, Settings.max_padding):
        engine = Engine(
            Settings(
                model_dir=long_artifact, max_batch_size=8, max_batch_tokens=2048, max_padding=max_padding
            )
        )
        try:
            log = ShapeLog(engine)
            engine.predict_blocking(texts, timeout=60)
        finally:
            engine.close()
        if max_padding == 1000.0:
            assert [shape[0] for shape, _ in log.feeds] == [8]
            continue
        assert len(log.feeds) > 1 and sorted(x for _, real in log.feeds for x in real) == sorted(lengths)
        for (rows, width), real in log.feeds:
            assert rows * width <= (1 + max_padding) * sum(real), log.feeds


@pytest.mark.parametrize("max_padding", [None, 0.1, 0.5])
def test_a_pool_holding_every_ticket_forms_the_rule_s_batches(max_padding: float | None) -> None:
    """The batcher's pool and :meth:`BatchRule.batches` (offline scoring, the benchmark's limit)
    make the same batches of the same tickets when every ticket is queued before a runner looks
    (one runner: its share of the pool is all of it)."""
    values = [int(v) for v in np.random.default_rng(7).integers(1, 10_000, 200)]
    rule = BatchRule(8, 40, max_padding)
    narrow, _ = pool_behind_a_busy_runner(values, runners=1, rule=rule)
    expected = [[values[i] for i in batch] for batch in rule.batches([Encoding(v) for v in values])]
    assert narrow.batches[1:] == expected


def test_a_windows_ticket_counts_its_rows_against_the_budget() -> None:
    narrow = Recorder()
    batcher = Batcher(narrow, N_LABELS, runners=1, rule=BatchRule(8, 1000, None))
    try:
        done = threading.Event()
        batcher.submit([Windowed(v) for v in (4, 4, 4, 9)], lambda _job: done.set(), urgent=True)
        assert done.wait(10)
        # 4 + 4 windows of 100 tokens fit 1,000; the third ticket does not; 9 windows go alone.
        assert narrow.batches == [[4, 4], [4], [9]]
    finally:
        batcher.close()


@pytest.mark.parametrize("n", [40, 300])  # inline (one urgent job) and pipelined (bulk windows)
def test_the_server_answers_mixed_lengths_in_input_order_with_their_ids(
    long_artifact: Path, tmp_path: Path, n: int
) -> None:
    texts = mixed_tickets(n)
    body = b"".join(orjson.dumps({"id": f"t-{i}", "text": t}) + b"\n" for i, t in enumerate(texts))
    expected = ArtifactClassifier(long_artifact).predict_scores(texts)
    server = start_server(long_artifact, tmp_path / "server.log", TRIAGE_MAX_BATCH_TOKENS="2048")
    try:
        resp = server.invoke(body, "application/jsonlines", "application/jsonlines")
    finally:
        stop_server(server)
    assert resp.status == 200, resp.body
    lines = resp.jsonl()
    assert [(r["index"], r["id"]) for r in lines] == [(i, f"t-{i}") for i in range(n)]
    np.testing.assert_allclose([r["score"] for r in lines], expected.max(axis=1), atol=1e-5)
    labels = load_manifest(long_artifact).labels
    assert [r["label"] for r in lines] == [labels[i] for i in expected.argmax(axis=1)]
