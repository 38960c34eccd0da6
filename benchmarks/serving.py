"""Benchmark: this server vs the Hugging Face toolkit-style baseline vs bare ONNX Runtime.

``python -m benchmarks.serving --model artifacts/model`` (``make bench``) measures, in
one run on this machine, on the same texts and the same trained model:

(a) **baseline**: the fine-tuned torch checkpoint served as the SageMaker Hugging Face inference
    toolkit would with a ``model_fn`` that loads it (``training.modeling.load_classifier``: the
    default pipeline cannot load the custom head): tokenize + forward + softmax one text at a
    time, as the toolkit's ``predict_fn`` (``prediction = model(inputs)``, no batching) does;
    also in batches of 32 for fairness;
(b) **limit**: the served model's engines alone, every input computed beforehand (texts cleaned,
    tokenized, TF-IDF vectors built), in the server's batches (below): ``ArtifactClassifier.run``
    on the artifact's own ``encode`` items. For a transformer artifact that is bare ONNX Runtime
    on pre-tokenized inputs; for an ensemble, ONNX Runtime plus the linear model's logits on
    pre-computed feature vectors; for a cascade (``linear.cascade_bar``), the linear logits of
    every ticket plus ONNX Runtime on the tickets the linear model leaves to it. Two thread
    layouts: one session using every core, and one single-threaded session with one thread per
    core running batches concurrently; the faster is ``limit_tps``. What the server adds on top
    (reading, preprocessing, tokenizing, featurizing, batching, writing) is the gap to it.
    Batches: the server's :class:`~triage_core.inference.BatchRule` over all the tickets at
    once (what its pool would form if every ticket were in it: the least padding it allows).
    ``limit_minilm_tps``: bare ONNX Runtime on ``model.onnx`` alone, the limit as measured before
    the ensemble was served, kept so that ``server_vs_limit_minilm`` compares with that history;
(c) **server**: ``python -m inference_server serve`` spawned as a real process, a JSON Lines
    batch file POSTed over loopback HTTP (end to end: parsing, preprocessing, tokenization,
    batching, inference, response), and single-ticket requests one after another; then
    ``--rounds`` (5) more passes of (b) and (c) back to back, two tries of each side per round
    (a new server process each round):
    ``server_vs_limit`` is the median of the rounds' ratios (the speed of this VM drifts within a
    run; a round's two sides share its stretch), ``server_vs_limit_best`` the ratio of the best
    of each side over the whole run;
(d) **long tickets**: the same server on a copy of the artifact that reads ``L`` tokens
    (``--long-lengths``, default 64, 128, 256 and 512), on tickets of at least ``L`` tokens
    (consecutive texts joined): batch throughput and single-ticket p50/p99 per length, and each
    length's throughput as a ratio to the shortest one's; then the shortest and the longest tickets
    mixed in one body (``long_mixed_vs_separate``: 1.0 = long tickets cost the short ones
    nothing);
(e) **the project's classifier** (``ArtifactClassifier.predict_scores`` in-process) and, with
    ``--reference`` (``make train-reference``), the reference artifact's classifier and server
    beside ``--model``'s, interleaved (reference, default, twice): ``default_vs_reference``
    (server: ``server_paired_tps`` / ``reference_server_tps``) and ``classifier_vs_reference``;
    ``cascade_skip_share``: the share of the texts the default's confidence cascade settles with
    its linear model alone (``linear.cascade_bar``; the reference has none);
(f) e-mail-style bodies (the same tickets wrapped by ``training.noise``): ``server_vs_limit_email``
    (and ``server_vs_limit_minilm_email``).
    ``--profile FILE`` samples the server with py-spy during its JSON Lines runs.


It needs torch + transformers (the dev environment, not the image). The torch checkpoint is
``--hf-model`` (default: ``<model>/../work/hf_model``, where ``make train`` keeps it). Texts:
``--data`` (default: ``<model>/../splits/test.csv`` when present, else a sample of the bundled
Banking77 CSV). Every loop is bounded; the only network traffic is to 127.0.0.1.

The last line printed is one JSON object (``baseline_tps``, ``limit_tps``, ``server_tps``,
``server_vs_baseline``, ``server_vs_limit``, ``single_p50_ms``, ``single_p99_ms``, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from inference_server.settings import Settings, available_cpus
from triage_core.inference import ArtifactClassifier, BatchRule, Settled

ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DATA = ROOT / "data" / "banking77" / "train.csv"


# --- inputs ---------------------------------------------------------------------------------------
def load_texts(path: Path, limit: int) -> list[str]:
    """``text`` column of a CSV, or ``text`` field of JSON Lines; evenly sampled down to ``limit``."""
    if path.suffix in (".jsonl", ".jsonlines"):
        with path.open(encoding="utf-8") as fh:
            texts = [json.loads(line)["text"] for line in fh if line.strip()]
    else:
        with path.open(encoding="utf-8", newline="") as fh:
            texts = [row["text"] for row in csv.DictReader(fh)]
    texts = [t for t in texts if t and t.strip()]
    if len(texts) > limit:
        step = len(texts) / limit
        texts = [texts[int(i * step)] for i in range(limit)]
    return texts


def jsonl_body(texts: list[str]) -> bytes:
    """The texts as the JSON Lines body the bench sends: ``{"id": "t<i>", "text": ...}`` lines."""
    return b"".join(
        json.dumps({"id": f"t{i}", "text": text}).encode() + b"\n" for i, text in enumerate(texts)
    )


def default_data(model: Path) -> Path:
    split = model.resolve().parent / "splits" / "test.csv"
    return split if split.is_file() else BUNDLED_DATA


def percentile_ms(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000.0, q))


# --- (a) baseline --------------------------------------------------------------------------------
def bench_baseline(hf_model: Path, texts: list[str], single: int, threads: int) -> dict[str, float]:
    """The fine-tuned torch model served the way the SageMaker Hugging Face / PyTorch inference
    toolkits serve it: ``model_fn`` loads the checkpoint (``load_classifier``: a plain pipeline
    cannot load the custom head), ``predict_fn`` tokenizes and runs the request's texts one at a
    time (the toolkit's default ``prediction = model(inputs)``), softmax, top label."""
    import torch
    from transformers import AutoTokenizer

    from training.modeling import load_classifier

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(hf_model)
    model = load_classifier(hf_model).eval()
    id2label = model.config.id2label

    def predict(batch: list[str]) -> list[tuple[str, float]]:
        enc = tokenizer(batch, padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            scores, best = torch.softmax(model(**enc).logits, dim=-1).max(dim=-1)
        return [(id2label[int(i)], float(s)) for i, s in zip(best, scores, strict=True)]

    def run(batch_size: int) -> float:
        started = time.perf_counter()
        for start in range(0, len(texts), batch_size):
            predict(texts[start : start + batch_size])
        return len(texts) / (time.perf_counter() - started)

    predict(texts[:8])  # warm-up
    bs1 = run(1)
    bs32 = run(32)
    latencies = []
    for text in texts[:single]:
        t0 = time.perf_counter()
        predict([text])
        latencies.append(time.perf_counter() - t0)
    return {
        "baseline_tps": bs1,
        "baseline_bs32_tps": bs32,
        "baseline_single_p50_ms": percentile_ms(latencies, 50),
    }


# --- (b) the limit: the served model's engines alone ------------------------------------------------
BATCH = 32  # the linear model's logits, per call (a sparse product: the size hardly matters)


SERVER_RULE = Settings().batch_rule  # the server's default; main() reads --server-env's


def length_sorted(items: list, rule: BatchRule = SERVER_RULE) -> list[list]:
    """``items`` (anything with ``ids``) in the batches ``rule`` makes of all of them at once,
    shortest first: the batches the server's pool would form if every ticket were in it."""
    return [[items[i] for i in batch] for batch in rule.batches(items)]


def engine_calls(
    classifier: ArtifactClassifier, texts: list[str], rule: BatchRule = SERVER_RULE
) -> list[Callable[[], object]]:
    """The served model's engine work on ``texts``, one call per batch, every input computed
    beforehand (cleaned, tokenized, TF-IDF vectors): ``ArtifactClassifier.run`` on the server's
    batches (:func:`length_sorted`) of its own ``encode`` items. For a transformer that is ONNX
    Runtime (and the padding of the batch); for an ensemble, ONNX Runtime and the linear model's
    logits on the feature vectors; for a cascade (``linear.cascade_bar`` in the manifest), whose
    ``encode`` already scores every ticket with the linear model, the linear logits of every
    ticket plus ``run`` on the tickets the linear model left to ONNX Runtime (the others are
    only copied)."""
    cleaned = classifier.clean(texts)
    calls: list[Callable[[], object]] = [
        functools.partial(classifier.run, batch)
        for batch in length_sorted(classifier.encode(cleaned), classifier.batch_rule(rule))
    ]
    if getattr(classifier.manifest.linear, "cascade_bar", None) is not None:
        linear = classifier.linear
        batches = [linear.feature_batch(cleaned[s : s + BATCH]) for s in range(0, len(cleaned), BATCH)]
        calls += [functools.partial(linear.logits, batch) for batch in batches]
    return calls


def minilm_calls(
    classifier: ArtifactClassifier, texts: list[str], rule: BatchRule = SERVER_RULE
) -> list[Callable[[], object]]:
    """Bare ONNX Runtime on the artifact's ``model.onnx`` alone, pre-tokenized and pre-padded
    (the limit before the ensemble: kept as ``limit_minilm_*`` so the history stays comparable)."""
    if classifier.session is None:
        return []
    encodings = classifier.tokenizer.encode(classifier.clean(texts))
    feeds = [classifier.tokenizer.pad(batch) for batch in length_sorted(encodings, rule)]
    return [functools.partial(classifier.session.run, ["logits"], feed) for feed in feeds]


def fastest_layout(
    model: Path, texts: list[str], cpus: int, repeats: int, work: Callable[..., list[Callable[[], object]]]
) -> tuple[float, float]:
    """Best tickets/s of ``work``'s calls in the two thread layouts: one session using every core
    running the batches in turn, and one single-threaded session shared by one thread per core
    (each running every ``cpus``-th batch). Zeros when there is no such work."""

    def run(calls: list[Callable[[], object]]) -> None:
        for call in calls:
            call()

    wide = ArtifactClassifier(model, intra_op_threads=cpus)
    calls = work(wide, texts)
    if not calls:
        return 0.0, 0.0
    run(calls[:4])
    best_wide = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        run(calls)
        best_wide = max(best_wide, len(texts) / (time.perf_counter() - started))
    del wide, calls

    narrow = ArtifactClassifier(model, intra_op_threads=1)
    calls = work(narrow, texts)
    run(calls[:4])
    best_parallel = 0.0
    for _ in range(repeats):
        threads = [threading.Thread(target=run, args=(calls[i::cpus],)) for i in range(cpus)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        best_parallel = max(best_parallel, len(texts) / (time.perf_counter() - started))
    return best_wide, best_parallel


def bench_limit(
    model: Path, texts: list[str], cpus: int, repeats: int, rule: BatchRule = SERVER_RULE
) -> dict[str, float]:
    """``limit_tps``: the served model's engines alone (:func:`engine_calls`) in the faster
    thread layout; ``limit_minilm_tps``: bare ONNX Runtime on ``model.onnx`` alone, as measured
    before the ensemble was served (equal in substance for a transformer artifact)."""
    engines, minilm = functools.partial(engine_calls, rule=rule), functools.partial(minilm_calls, rule=rule)
    wide, parallel = fastest_layout(model, texts, cpus, repeats, engines)
    minilm_wide, minilm_parallel = fastest_layout(model, texts, cpus, repeats, minilm)
    return {
        "limit_tps": max(wide, parallel),
        "limit_one_session_tps": wide,
        "limit_session_per_core_tps": parallel,
        "limit_minilm_tps": max(minilm_wide, minilm_parallel) or None,
    }


def bench_preparation(
    model: Path, texts: list[str], repeats: int, rule: BatchRule = SERVER_RULE
) -> dict[str, float]:
    """CPU time per ticket, on one thread, of the server's own work around the engines and of the
    engines' work (:func:`engine_calls` on a single-threaded session), best of ``repeats``:
    ``read``: the JSON Lines body into records (the server's reader); ``clean``: preprocessing;
    ``encode``: tokenizing and, with a linear model, TF-IDF vectors (for a cascade also the
    linear logits of every ticket, which the engines' figure holds too: ``linear_us``, counted
    once); ``respond``: the response records. When the server's work and the engines share the
    cores, ``server_vs_limit`` cannot pass ``engine / (engine + server work)``
    (``prepare_ceiling``) whatever the batching and threads do; the event loop's HTTP handling and
    the threads' hand-offs come on top."""
    from inference_server.outputs import RecordEncoder
    from inference_server.reading import RequestSpec, body_records

    classifier = ArtifactClassifier(model, intra_op_threads=1)
    classifier.encode(classifier.clean(texts[:32]))
    calls = engine_calls(classifier, texts, rule)

    def best(work: Callable[[], object]) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return min(times) / len(texts) * 1e6

    body = jsonl_body(texts)
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)]
    spec, settings = RequestSpec("jsonl", "application/jsonlines", None, None), Settings()
    read = best(lambda: list(body_records(iter(chunks), spec, settings)))
    records = list(body_records(iter(chunks), spec, settings))
    clean = best(lambda: classifier.clean(texts))
    cleaned = classifier.clean(texts)
    encode = best(lambda: classifier.encode(cleaned))
    linear = 0.0
    if getattr(classifier.manifest.linear, "cascade_bar", None) is not None:
        features = classifier.linear.feature_batch(cleaned)
        linear = best(lambda: classifier.linear.logits(features))
    scores = classifier.predict_scores(texts)
    encoder = RecordEncoder(classifier.labels, 0.5, None)
    respond = best(lambda: encoder.encode(records, scores))
    engine = best(lambda: [call() for call in calls])
    server_work = read + clean + encode - linear + respond
    return {
        "read_us": read,
        "clean_us": clean,
        "encode_us": encode,
        "linear_us": linear,
        "respond_us": respond,
        "engine_us": engine,
        "prepare_vs_engine": round(server_work / engine, 4),
        "prepare_ceiling": round(engine / (engine + server_work), 3),
    }


# --- the project's classifier in-process ----------------------------------------------------------
def bench_classifier(model: Path, texts: list[str], cpus: int, repeats: int) -> float:
    """Tickets/s of ``ArtifactClassifier.predict_scores`` (preprocessing, tokenizing, batches by
    the server's rule, one all-core session): what training's evaluation and a batch job run."""
    classifier = ArtifactClassifier(model, intra_op_threads=cpus)
    classifier.predict_scores(texts[:64])
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        classifier.predict_scores(texts)
        best = max(best, len(texts) / (time.perf_counter() - started))
    return best


def bench_pair(
    model: Path, reference: Path, texts: list[str], cpus: int, repeats: int, env_extra: dict[str, str]
) -> dict[str, float]:
    """The reference's classifier and server beside the default's, interleaved (reference,
    default, reference, default: a load that drifts during the run hits both), best of each.
    ``classifier_tps`` takes the best of the default's runs here and in (e); the default's
    server here is ``server_paired_tps``, what ``default_vs_reference`` divides."""
    best: dict[str, float] = {}
    for _ in range(2):
        for name, path in (("reference", reference), ("default", model)):
            tps = bench_classifier(path, texts, cpus, repeats)
            best[f"{name}_classifier"] = max(best.get(f"{name}_classifier", 0.0), tps)
            with Server(path, env_extra) as server:
                tps = server.bulk_tps(texts, repeats)
            best[f"{name}_server"] = max(best.get(f"{name}_server", 0.0), tps)
    return {
        "reference_classifier_tps": best["reference_classifier"],
        "reference_server_tps": best["reference_server"],
        "paired_classifier_tps": best["default_classifier"],
        "server_paired_tps": best["default_server"],
    }


def cascade_share(model: Path, texts: list[str]) -> float:
    """The share of ``texts`` a cascade artifact's linear model settles (never tokenized, never
    run through ONNX Runtime: ``linear.cascade_bar``); 0.0 without a cascade."""
    classifier = ArtifactClassifier(model)
    if classifier.manifest.linear is None or classifier.manifest.linear.cascade_bar is None:
        return 0.0
    items = classifier.encode(classifier.clean(texts))
    return sum(type(item) is Settled for item in items) / max(1, len(items))


def email_texts(texts: list[str], seed: int = 0) -> list[str]:
    """The same tickets as e-mail or chat bodies (greeting, context, signature, quoted history:
    ``training.noise``'s ``dev`` pool), what the server's preprocessing has to cut."""
    from training.noise import make_noisy

    rng = random.Random(seed)
    return [make_noisy(text, rng, pool="dev") for text in texts]


# --- (c) the server over HTTP ----------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    model: Path, port: int, log_path: Path, env_extra: dict[str, str], argv: list[str] | None = None
) -> subprocess.Popen:
    """``python -m inference_server serve`` (or ``argv`` after the interpreter) on ``model``, ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "TRIAGE_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "container")]),
            "MODEL_DIR": str(model),
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "TRIAGE_BIND_HOST": "127.0.0.1",
            **env_extra,
        }
    )
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, *(argv or ["-m", "inference_server", "serve"])],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log_path.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/ping")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
            conn.close()
        except OSError:
            pass
        time.sleep(0.1)
    proc.terminate()
    raise RuntimeError("server did not become ready in 120 s")


def _post(conn: http.client.HTTPConnection, body: bytes, content_type: str, accept: str) -> bytes:
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": content_type, "Accept": accept})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"server answered {resp.status}: {data[:300]!r}")
    return data


class Server:
    """``python -m inference_server serve`` on ``model`` as a real process, one keep-alive
    connection to it; ``with Server(...) as server:`` stops it at the end."""

    def __init__(self, model: Path, env_extra: dict[str, str]):
        self.model, self.env_extra = model, env_extra

    def __enter__(self) -> Server:
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-server-")
        port = _free_port()
        self.proc = start_server(self.model, port, Path(self._tmp.name) / "server.log", self.env_extra)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        return self

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
        self.proc.terminate()
        self.proc.wait(30)
        self._tmp.cleanup()

    def bulk_tps(self, texts: list[str], repeats: int) -> float:
        """Best of ``repeats``: the texts as one JSON Lines body, every line checked."""
        batch = jsonl_body(texts)
        _post(self.conn, batch[: 200 * 1024], "application/jsonlines", "application/jsonlines")  # warm-up
        best = 0.0
        for _ in range(repeats):
            started = time.perf_counter()
            data = _post(self.conn, batch, "application/jsonlines", "application/jsonlines")
            best = max(best, len(texts) / (time.perf_counter() - started))
            lines = data.splitlines()
            if len(lines) != len(texts) or any(b'"error"' in line for line in lines):
                raise RuntimeError("server did not classify every ticket")
        return best

    def single_ms(self, texts: list[str], single: int, warm_up: int = 20) -> tuple[float, float]:
        """p50 and p99 of ``single`` one-ticket JSON requests, one after another."""
        bodies = [json.dumps({"inputs": text}).encode() for text in texts[: max(single, 1)]]
        for body in bodies[:warm_up]:
            _post(self.conn, body, "application/json", "application/json")
        latencies = []
        for i in range(single):
            t0 = time.perf_counter()
            _post(self.conn, bodies[i % len(bodies)], "application/json", "application/json")
            latencies.append(time.perf_counter() - t0)
        return percentile_ms(latencies, 50), percentile_ms(latencies, 99)


@contextlib.contextmanager
def sampled(pid: int, out: Path | None) -> Iterator[None]:
    """py-spy (a sampling profiler, requirements-dev.txt) on process ``pid`` while the block
    runs: collapsed stacks into ``out`` (``flamegraph.pl`` and speedscope read them), then the
    top entries printed. Nothing when ``out`` is None."""
    if out is None:
        yield
        return
    spy_bin = Path(sys.executable).with_name("py-spy")
    spy = subprocess.Popen(
        [str(spy_bin), "record", "-p", str(pid), "-o", str(out), "-f", "raw", "-r", "200", "--threads"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    _wait_until_sampling(spy)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(60)
    for line in profile_summary(out):
        print(f"  {line}")


def _wait_until_sampling(spy: subprocess.Popen, timeout: float = 60.0) -> None:
    """Block until py-spy says it samples (``py-spy> Sampling process ...``, on its stdout): on
    busy cores attaching can take longer than the block being profiled. Its output is drained after."""
    found = threading.Event()

    def read() -> None:
        for line in spy.stdout:
            if "Sampling process" in line:
                found.set()
        found.set()  # py-spy exited: nothing to wait for

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(timeout):
        raise RuntimeError(f"py-spy did not start sampling within {timeout:.0f} s")


def profile_summary(path: Path, top: int = 12) -> list[str]:
    """Shares of the samples in py-spy's collapsed stacks: per thread, then per leaf function
    (where the time is spent: ``session.run`` = ONNX Runtime's own work)."""
    threads: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames, n = stack.split(";"), int(count)
        total += n
        threads[frames[0].rsplit("): ", 1)[-1].rstrip("-0123456789")] += n
        name, _, where = frames[-1].partition(" (")
        leaves[f"{name} ({where.rsplit('/', 1)[-1]}" if where else name] += n
    if not total:
        return ["no samples"]
    lines = [
        f"{total} samples; threads: " + ", ".join(f"{t} {n / total:.1%}" for t, n in threads.most_common())
    ]
    lines += [f"{n / total:6.1%}  {leaf}" for leaf, n in leaves.most_common(top)]
    return lines


def bench_server(
    model: Path,
    texts: list[str],
    emails: list[str],
    single: int,
    repeats: int,
    env_extra: dict[str, str],
    profile: Path | None = None,
) -> dict[str, float]:
    with Server(model, env_extra) as server:
        with sampled(server.proc.pid, profile):
            clean = server.bulk_tps(texts, repeats)
            email = server.bulk_tps(emails, repeats)
        p50, p99 = server.single_ms(texts, single)
    return {"server_tps": clean, "server_email_tps": email, "single_p50_ms": p50, "single_p99_ms": p99}


def interleaved_rounds(
    model: Path,
    texts: list[str],
    emails: list[str],
    cpus: int,
    rounds: int,
    rule: BatchRule,
    env_extra: dict[str, str],
    result: dict,
) -> None:
    """``rounds`` more passes of the limit and the server back to back (clean bodies, then e-mail
    bodies), each side measured twice per round: the limit once in each thread layout, the server
    twice; the best of each side's two gives the round's ratio; the order alternates (the limit
    first in even rounds, the server first in odd ones). ``server_vs_limit_rounds`` lists each
    round's ratios (clean, e-mail); their medians are ``server_vs_limit`` and
    ``server_vs_limit_email``: a slow stretch of a drifting machine (two runs minutes apart on this
    2-vCPU VM gave 0.81 and 0.97 for the same code) hits both sides of a round, and both sides
    get as many tries. Each round starts its own server process, as it builds its own ONNX
    Runtime sessions for the limit: one process can run ~10 % slower than another for its whole
    life on this VM (four processes, six 1,000-ticket bodies each: best 2,973 / 3,011 / 2,681 /
    3,002 tickets/s), and one process for all rounds let that drag every round of a run. (The
    ratio of each side's best over the whole run, ``server_vs_limit_best``, takes the limit's best
    of more measurements than the server's: both layouts in (b), three repeats each, against the
    server's three, which lowers it by chance alone.) ``limit_tps``, ``server_tps`` and their
    e-mail twins keep the best of every pass, (b) and (c) included."""
    engines = functools.partial(engine_calls, rule=rule)
    ratios = []
    for round_ in range(rounds):
        pair = []
        with Server(model, env_extra) as server:  # a process per round, as the limit's sessions are
            for suffix, batch in (("", texts), ("_email", emails)):
                measured: dict[str, float] = {}
                for side in ("limit", "server") if round_ % 2 == 0 else ("server", "limit"):
                    if side == "limit":
                        measured[side] = max(fastest_layout(model, batch, cpus, 1, engines))
                    else:
                        measured[side] = server.bulk_tps(batch, 2)
                result[f"limit{suffix}_tps"] = max(result[f"limit{suffix}_tps"], measured["limit"])
                result[f"server{suffix}_tps"] = max(result[f"server{suffix}_tps"], measured["server"])
                pair.append(round(measured["server"] / measured["limit"], 3))
        ratios.append(pair)
    result["server_vs_limit_rounds"] = ratios


# --- (d) long tickets --------------------------------------------------------------------------------
def long_texts(classifier: ArtifactClassifier, texts: list[str], tokens: int, count: int) -> list[str]:
    """``count`` tickets of at least ``tokens`` tokens: consecutive texts joined by a blank line."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(classifier.tokenizer.tokenizer.to_str())
    tokenizer.no_truncation()

    def length(text: str) -> int:
        return len(tokenizer.encode(classifier.clean([text])[0]).ids)

    out: list[str] = []
    i = 0
    while len(out) < count:
        ticket, previous = texts[i % len(texts)], -1
        while previous < (n := length(ticket)) < tokens:  # stops growing: preprocessing's cap
            i, previous = i + 1, n
            ticket += "\n\n" + texts[i % len(texts)]
        out.append(ticket)
        i += 1
    return out


def reading(model: Path, directory: Path, tokens: int) -> Path:
    """A copy of the artifact that reads ``tokens`` tokens (head truncation); model files linked."""
    directory.mkdir(parents=True)
    for path in model.iterdir():
        if path.is_file() and path.name != "triage_artifact.json":
            (directory / path.name).symlink_to(path)
    manifest = json.loads((model / "triage_artifact.json").read_text("utf-8"))
    preprocessing = manifest.get("preprocessing", {})
    preprocessing["max_chars"] = max(preprocessing.get("max_chars", 2000), 8 * tokens)  # room for the tokens
    manifest.update(max_length=tokens, long_text={"strategy": "head"}, preprocessing=preprocessing)
    (directory / "triage_artifact.json").write_text(json.dumps(manifest), "utf-8")
    return directory


def bench_long(
    model: Path, texts: list[str], lengths: list[int], count: int, single: int, env_extra: dict[str, str]
) -> dict[str, float]:
    result: dict[str, float] = {}
    tickets: dict[int, list[str]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-long-") as tmp:
        for tokens in lengths:
            copy = reading(model, Path(tmp) / str(tokens), tokens)
            tickets[tokens] = long_texts(ArtifactClassifier(copy, intra_op_threads=1), texts, tokens, count)
            with Server(copy, env_extra) as server:
                tps = server.bulk_tps(tickets[tokens], 1)
                p50, p99 = server.single_ms(tickets[tokens], single, warm_up=5)
            result[f"long_{tokens}_tps"] = tps
            result[f"long_{tokens}_p50_ms"] = p50
            result[f"long_{tokens}_p99_ms"] = p99
            print(
                f"    {tokens:4d} tokens: {tps:8.1f} tickets/s, single p50 {p50:.1f} ms, p99 {p99:.1f} ms",
                flush=True,
            )
        # The shortest and the longest tickets in one body (9 : 1, shuffled), on the copy that
        # reads the longest: the two apart take `apart` seconds; batching by length keeps the
        # mixed body at that time (a ratio under 1: long tickets slowed the short ones).
        short, longest = tickets[min(lengths)], tickets[max(lengths)]
        long = longest[: max(1, len(short) // 9)]
        mixed = short + long
        random.Random(0).shuffle(mixed)
        with Server(Path(tmp) / str(max(lengths)), env_extra) as server:
            apart = len(short) / server.bulk_tps(short, 1) + len(long) / server.bulk_tps(long, 1)
            together = len(mixed) / server.bulk_tps(mixed, 1)
        result["long_mixed_vs_separate"] = round(apart / together, 3)
        print(
            f"    mixed body ({len(short)} x {min(lengths)} + {len(long)} x {max(lengths)} tokens): "
            f"separate / mixed time {apart / together:.3f}",
            flush=True,
        )
    shortest = result[f"long_{lengths[0]}_tps"]
    for tokens in lengths:
        result[f"long_{tokens}_vs_{lengths[0]}"] = round(result[f"long_{tokens}_tps"] / shortest, 3)
    return result


# --- report --------------------------------------------------------------------------------------
def _ratio(numerator: float | None, denominator: float | None, digits: int = 3) -> float | None:
    return round(numerator / denominator, digits) if numerator and denominator else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serving", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="serving artifact directory")
    parser.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="the reference artifact (make train-reference): measured beside --model, default_vs_reference",
    )
    parser.add_argument("--hf-model", type=Path, default=None, help="torch checkpoint for the baseline")
    parser.add_argument("--data", type=Path, default=None, help="CSV (text column) or JSON Lines")
    parser.add_argument("--limit", type=int, default=2000, help="number of texts (default 2000)")
    parser.add_argument("--single", type=int, default=300, help="single-ticket requests (default 300)")
    parser.add_argument("--repeats", type=int, default=3, help="best of N for limit and server")
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="then N interleaved rounds of the limit and the server, two tries a side: "
        "server_vs_limit is the median of the rounds' ratios (a drifting machine hits both sides)",
    )
    parser.add_argument("--skip-baseline", action="store_true", help="no torch baseline (e.g. no checkpoint)")
    parser.add_argument(
        "--long-lengths",
        default="64,128,256,512",
        help="(d) token lengths of the long-ticket rows, comma-separated; empty: skip them",
    )
    parser.add_argument("--long-tickets", type=int, default=200, help="(d) tickets per length (default 200)")
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        metavar="FILE",
        help="py-spy the server during its JSON Lines runs: collapsed stacks into FILE, top entries printed",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the server process (e.g. TRIAGE_THREADS_PER_WORKER=2)",
    )
    args = parser.parse_args(argv)

    model = args.model.resolve()
    reference = args.reference.resolve() if args.reference else None
    if reference is not None and not (reference / "triage_artifact.json").is_file():
        print(f"reference skipped: no artifact at {reference} (make train-reference)")
        reference = None
    hf_model = (args.hf_model or model.parent / "work" / "hf_model").resolve()
    data = args.data or default_data(model)
    texts = load_texts(data, args.limit)
    emails = email_texts(texts)
    cpus = available_cpus()
    env_extra = dict(item.split("=", 1) for item in args.server_env)
    print(f"model {model}\ndata  {data} ({len(texts)} texts)\ncpus  {cpus}", flush=True)
    print(f"load  {os.getloadavg()} (1, 5, 15 min)\n", flush=True)

    result: dict[str, float | int | str | None] = {
        "texts": len(texts),
        "cpus": cpus,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "baseline_tps": None,  # stays null when the baseline is skipped
        "baseline_bs32_tps": None,
        "baseline_single_p50_ms": None,
    }
    if args.skip_baseline:
        print("baseline skipped (--skip-baseline)")
    elif not (hf_model / "config.json").is_file():
        print(f"baseline skipped: no Hugging Face checkpoint at {hf_model} (pass --hf-model)")
    else:
        print("(a) torch checkpoint, toolkit-style ...", flush=True)
        result.update(bench_baseline(hf_model, texts, min(args.single, 100), cpus))
    print("(b) the model's engines alone, the server's batches (clean, then e-mail bodies) ...", flush=True)
    rule = Settings.from_env(env_extra).batch_rule  # the limit batches as the server will
    result.update(bench_limit(model, texts, cpus, args.repeats, rule))
    email_limit = bench_limit(model, emails, cpus, args.repeats, rule)
    result["limit_email_tps"] = email_limit["limit_tps"]
    result["limit_minilm_email_tps"] = email_limit["limit_minilm_tps"]
    print("(b) the server's own work per ticket vs the engines', one thread (clean, e-mail) ...", flush=True)
    for suffix, batch in (("", texts), ("_email", emails)):
        result.update({k + suffix: v for k, v in bench_preparation(model, batch, args.repeats, rule).items()})
    print("(c) this server over HTTP (clean, e-mail bodies, single tickets) ...", flush=True)
    result.update(bench_server(model, texts, emails, args.single, args.repeats, env_extra, args.profile))
    if args.rounds > 0:
        print(
            f"(b)+(c) {args.rounds} more rounds of the limit and the server, one after the other ...",
            flush=True,
        )
        interleaved_rounds(model, texts, emails, cpus, args.rounds, rule, env_extra, result)
    print("(e) the project's classifier in-process (ArtifactClassifier.predict_scores) ...", flush=True)
    result["classifier_tps"] = bench_classifier(model, texts, cpus, args.repeats)
    result["cascade_skip_share"] = round(cascade_share(model, texts), 4)
    result["reference"] = str(reference) if reference else None
    result["reference_classifier_tps"] = result["reference_server_tps"] = result["server_paired_tps"] = None
    if reference is not None:
        print("(e) the reference and the default, interleaved twice: classifier, then server ...", flush=True)
        result.update(bench_pair(model, reference, texts, cpus, args.repeats, env_extra))
    lengths = [int(n) for n in args.long_lengths.split(",") if n.strip()]
    if lengths:
        print(f"(d) long tickets through the server, {args.long_tickets} per length ...", flush=True)
        result.update(bench_long(model, texts, lengths, args.long_tickets, min(args.single, 50), env_extra))

    result["server_vs_baseline"] = _ratio(result["server_tps"], result.get("baseline_tps"), 2)
    result["server_vs_limit_best"] = _ratio(result["server_tps"], result["limit_tps"])
    result["server_vs_limit_email_best"] = _ratio(result["server_email_tps"], result["limit_email_tps"])
    rounds = result.get("server_vs_limit_rounds") or []
    for column, suffix in enumerate(("", "_email")):  # the rounds' median; without rounds, the bests'
        best = result[f"server_vs_limit{suffix}_best"]
        result[f"server_vs_limit{suffix}"] = statistics.median(r[column] for r in rounds) if rounds else best
    result["server_vs_limit_minilm"] = _ratio(result["server_tps"], result["limit_minilm_tps"])
    result["server_vs_limit_minilm_email"] = _ratio(
        result["server_email_tps"], result["limit_minilm_email_tps"]
    )
    if reference is not None:
        result["classifier_tps"] = max(result["classifier_tps"], result.pop("paired_classifier_tps"))
    result["classifier_vs_reference"] = _ratio(result["classifier_tps"], result["reference_classifier_tps"])
    result["default_vs_reference"] = _ratio(result["server_paired_tps"], result["reference_server_tps"])
    ratios = ("_vs_", "ceiling")
    result = {
        k: round(v, 2) if isinstance(v, float) and not any(r in k for r in ratios) else v
        for k, v in result.items()
    }

    rows = [
        (
            "(a) torch, toolkit-style (batch 1)",
            result.get("baseline_tps"),
            result.get("baseline_single_p50_ms"),
        ),
        ("(a) torch, batches of 32", result.get("baseline_bs32_tps"), None),
        ("(b) the model's engines, one session x all cores", result["limit_one_session_tps"], None),
        ("(b) the model's engines, one session per core", result["limit_session_per_core_tps"], None),
        ("(b) the model's engines, e-mail bodies", result["limit_email_tps"], None),
        ("(b) bare ORT on model.onnx alone", result["limit_minilm_tps"], None),
        ("(b) bare ORT on model.onnx alone, e-mail bodies", result["limit_minilm_email_tps"], None),
        ("(c) this server, JSON Lines batch over HTTP", result["server_tps"], None),
        ("(c) this server, e-mail bodies", result["server_email_tps"], None),
        ("(c) this server, single tickets over HTTP", None, result["single_p50_ms"]),
        ("(e) ArtifactClassifier.predict_scores", result["classifier_tps"], None),
        ("(e) reference: ArtifactClassifier", result["reference_classifier_tps"], None),
        ("(e) reference: server, JSON Lines batch", result["reference_server_tps"], None),
        ("(e) default: server, interleaved with it", result["server_paired_tps"], None),
    ]
    print(f"\n{'':46} {'tickets/s':>10} {'p50 ms':>8}")
    for name, tps, p50 in rows:
        tps_s = f"{tps:10.1f}" if tps is not None else f"{'-':>10}"
        p50_s = f"{p50:8.2f}" if p50 is not None else f"{'-':>8}"
        print(f"{name:46} {tps_s} {p50_s}")
    for tokens in lengths:
        print(
            f"{f'(d) this server, {tokens}-token tickets':46} {result[f'long_{tokens}_tps']:10.1f} "
            f"{result[f'long_{tokens}_p50_ms']:8.2f}  p99 {result[f'long_{tokens}_p99_ms']:.2f} ms, "
            f"{result[f'long_{tokens}_vs_{lengths[0]}']}x the {lengths[0]}-token throughput"
        )
    print(f"single-ticket p99: {result['single_p99_ms']} ms")
    for suffix, name in (("", "clean"), ("_email", "e-mail")):
        print(
            f"{name} bodies, µs per ticket on one thread: reading {result['read_us' + suffix]:.1f}, "
            f"preprocessing {result['clean_us' + suffix]:.1f}, encoding {result['encode_us' + suffix]:.1f} "
            f"(of which the engines' linear logits {result['linear_us' + suffix]:.1f}), responding "
            f"{result['respond_us' + suffix]:.1f}; the engines {result['engine_us' + suffix]:.1f}: "
            f"server_vs_limit at most {result['prepare_ceiling' + suffix]}"
        )
    print(
        f"server / baseline: {result['server_vs_baseline']}x   server / limit: {result['server_vs_limit']}"
        f" (e-mail bodies: {result['server_vs_limit_email']}; the bests over the run: "
        f"{result['server_vs_limit_best']}, {result['server_vs_limit_email_best']}; model.onnx alone: "
        f"{result['server_vs_limit_minilm']}, {result['server_vs_limit_minilm_email']}; per interleaved "
        f"round, clean and e-mail: {result.get('server_vs_limit_rounds')})"
        "   default / reference: "
        f"{result['default_vs_reference']} (classifier: {result['classifier_vs_reference']}; the default's "
        f"cascade settles {result['cascade_skip_share']:.1%} of the texts without MiniLM)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
