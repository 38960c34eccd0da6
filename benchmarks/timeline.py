"""Where a bulk request's time goes between the runners' model calls: a timeline of the real server.

``python -m benchmarks.timeline --model artifacts/model [--email]`` starts the real server
(``inference_server serve``) in a child process whose ``ArtifactClassifier`` records every model
call (thread, start, end, tickets, ONNX rows), POSTs the test split as one JSON Lines body a few
times over loopback, and prints per request: its wall time, the share of the runners' time spent
inside model calls (``busy``), the process's CPU share of the cores (``cpu``), when the first call
started, and the runners' idle gaps (their sum and the largest, with when it happened). A
sampling profiler (``make bench-profile``) sees where CPU goes; this sees the time the runners
wait, which a profiler does not. The last line is one JSON object of the medians, and of the
CPU time per ticket over all requests of the runner threads (``runner_cpu_us``) and of the rest
of the process (``server_cpu_us``: the server's own work as it runs beside ONNX Runtime, reading,
preprocessing, featurizing, tokenizing, HTTP; from ``/proc``, in clock ticks, so summed over
the requests rather than per request).

Only the runner threads (``onnx-runner-*``) are counted: tickets a cascade settled are copied on
the submitting thread and are not model work.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.serving import (
    _free_port,
    _post,
    default_data,
    email_texts,
    jsonl_body,
    load_texts,
    start_server,
)
from inference_server.settings import available_cpus

RUNNER = "onnx-runner"
MEDIANS = (
    "wall_ms",
    "busy",
    "cpu",
    "first_call_ms",
    "idle_ms",
    "longest_idle_ms",
    "model_calls",
    "onnx_rows",
)


def serve_recording(out: Path) -> int:
    """The server, its model calls recorded into ``out`` (JSON) when it exits."""
    from inference_server.__main__ import main
    from triage_core.inference import ArtifactClassifier, model_rows

    calls: list[tuple[str, float, float, int, int, int]] = []
    score = ArtifactClassifier._score

    def recorded(self, session, encodings):
        started = time.perf_counter()
        try:
            return score(self, session, encodings)
        finally:
            rows = sum(model_rows(e) for e in encodings)
            thread = threading.current_thread()
            calls.append((thread.name, started, time.perf_counter(), len(encodings), rows, thread.native_id))

    ArtifactClassifier._score = recorded
    atexit.register(lambda: out.write_text(json.dumps(calls)))
    return main(["serve"])


def process_cpu(pid: int, task: str | None = None) -> float:
    """CPU seconds (user + system) of process ``pid``, or of its thread ``task``."""
    path = Path(f"/proc/{pid}/task/{task}/stat" if task else f"/proc/{pid}/stat")
    fields = path.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each live thread of ``pid``, by native thread id."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            out[int(task.name)] = process_cpu(pid, task.name)
    return out


def cpu_per_ticket(calls: list, windows: list, before: list[dict], after: list[dict], tickets: int) -> dict:
    """The runner threads' CPU time per ticket over all requests, and the rest of the process's
    (``server_cpu_us``: its other threads, including each request's pipeline thread, which has
    ended when the request has, so it is the process's CPU minus the runners')."""
    runners = {c[5] for c in calls if c[0].startswith(RUNNER)}
    runner = sum(
        end.get(tid, 0.0) - start.get(tid, 0.0)
        for start, end in zip(before, after, strict=True)
        for tid in runners
    )
    process = sum(cpu for _, _, cpu in windows)
    scale = 1e6 / (tickets * len(windows))
    return {"runner_cpu_us": round(runner * scale, 1), "server_cpu_us": round((process - runner) * scale, 1)}


def summarize(calls: list, start: float, end: float, cpu_seconds: float, cores: int) -> dict:
    """One request's figures from the model calls inside ``[start, end]``."""
    mine = sorted(
        (c for c in calls if c[0].startswith(RUNNER) and c[1] >= start and c[2] <= end), key=lambda c: c[1]
    )
    wall = end - start
    runners = sorted({c[0] for c in mine})
    gaps: list[tuple[float, float]] = []  # (length, when) of each runner's time outside model calls
    for name in runners:
        own = [c for c in mine if c[0] == name]
        edges = [start, *[t for c in own for t in (c[1], c[2])], end]
        gaps += [(b - a, a - start) for a, b in zip(edges[::2], edges[1::2], strict=True)]
    busy = sum(c[2] - c[1] for c in mine)
    longest = max(gaps, default=(0.0, 0.0))
    return {
        "wall_ms": round(1000 * wall, 1),
        "busy": round(busy / (len(runners) * wall), 3) if runners else 0.0,
        "cpu": round(cpu_seconds / (cores * wall), 3),
        "first_call_ms": round(1000 * (mine[0][1] - start), 1) if mine else None,
        "idle_ms": round(1000 * sum(g for g, _ in gaps), 1),
        "longest_idle_ms": round(1000 * longest[0], 1),
        "longest_idle_at_ms": round(1000 * longest[1], 1),
        "model_calls": len(mine),
        "onnx_rows": sum(c[4] for c in mine),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.timeline", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="serving artifact directory")
    parser.add_argument("--data", type=Path, default=None, help="CSV or JSON Lines (default: the test split)")
    parser.add_argument("--limit", type=int, default=1000, help="tickets per body (default 1000)")
    parser.add_argument("--email", action="store_true", help="the tickets wrapped as e-mail bodies")
    parser.add_argument("--requests", type=int, default=5, help="bodies POSTed, one after another")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--serve-recording", type=Path, help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args(argv)
    if args.serve_recording:
        return serve_recording(args.serve_recording)

    texts = load_texts(args.data or default_data(args.model), args.limit)
    if args.email:
        texts = email_texts(texts)
    body = jsonl_body(texts)
    cores = available_cpus()
    with tempfile.TemporaryDirectory(prefix="timeline-") as tmp:
        out, port = Path(tmp) / "calls.json", _free_port()
        env = dict(item.split("=", 1) for item in args.server_env)
        argv_child = ["-m", "benchmarks.timeline", "--model", str(args.model), "--serve-recording", str(out)]
        proc = start_server(args.model, port, Path(tmp) / "server.log", env, argv_child)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        windows, before, after = [], [], []
        try:
            _post(conn, body[: 200 * 1024], "application/jsonlines", "application/jsonlines")  # warm-up
            for _ in range(args.requests):
                before.append(thread_cpu(proc.pid))
                cpu, start = process_cpu(proc.pid), time.perf_counter()
                _post(conn, body, "application/jsonlines", "application/jsonlines")
                windows.append((start, time.perf_counter(), process_cpu(proc.pid) - cpu))
                after.append(thread_cpu(proc.pid))
        finally:
            conn.close()
            proc.terminate()
            proc.wait(30)
        calls = json.loads(out.read_text())
    rows = [summarize(calls, start, end, cpu, cores) for start, end, cpu in windows]
    for row in rows:
        print(
            f"{row['wall_ms']:8.1f} ms ({len(texts) / row['wall_ms'] * 1000:,.0f} tickets/s)"
            f"  busy {row['busy']:.3f}  cpu {row['cpu']:.3f}  first call {row['first_call_ms']} ms"
            f"  idle {row['idle_ms']} ms (longest {row['longest_idle_ms']} ms"
            f" at {row['longest_idle_at_ms']} ms)  calls {row['model_calls']}"
        )
    medians = {key: round(statistics.median(row[key] or 0 for row in rows), 3) for key in MEDIANS}
    per_ticket = cpu_per_ticket(calls, windows, before, after, len(texts))
    print(
        json.dumps(
            {"tickets": len(texts), "email": args.email, "requests": len(rows), **medians, **per_ticket}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
