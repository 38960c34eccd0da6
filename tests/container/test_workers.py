"""Several worker processes (SAGEMAKER_MODEL_SERVER_WORKERS > 1): one health, one exit code.

SageMaker sends ``/ping`` to the container, which may land on any worker: it must be 200 only
when every worker can serve. A model that cannot load must stop the container (exit non-zero),
not leave it answering 503 forever or 200 from the workers that did load.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time

import pytest

from tests.container.serverproc import free_port, run_until_exit, server_env, start_server, stop_server


def _workers(parent: int) -> list[int]:
    """The worker processes of the server (spawned Python processes, not the resource tracker)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(parent)], capture_output=True, text=True)
    return [
        int(line.split()[0])
        for line in out.stdout.splitlines()
        if "multiprocessing.spawn" in line and "resource_tracker" not in line
    ]


def _ping(server) -> int:
    try:
        return server.request("GET", "/ping", timeout=2).status
    except OSError:
        return 0


def _wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_two_workers_serve_and_ping_is_healthy_only_when_both_are(tiny_artifact, tmp_path):
    server = start_server(
        tiny_artifact, tmp_path / "server.log", timeout=90, SAGEMAKER_MODEL_SERVER_WORKERS="2",
        TRIAGE_THREADS_PER_WORKER="1",
    )  # fmt: skip
    try:
        workers = _workers(server.proc.pid)
        assert len(workers) == 2
        server.assert_healthy()
        # A worker dies (out of memory, say): /ping turns 503 on the survivor until the
        # replacement has loaded its model, then 200 again.
        subprocess.run(["kill", "-9", str(workers[0])], check=True)
        assert _wait_for(lambda: _ping(server) == 503, 10), "ping stayed 200 with a worker down"
        body = server.request("GET", "/ping").json()
        if body.get("workers") == 2:
            assert body["workers_ready"] < 2
        assert _wait_for(lambda: _ping(server) == 200, 60), "the replacement worker never became ready"
        assert len(_workers(server.proc.pid)) == 2
        server.assert_healthy()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        assert not _workers(server.proc.pid)
    finally:
        stop_server(server)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_model_that_fails_to_load_stops_the_server_with_exit_1(tiny_artifact, tmp_path, workers):
    broken = tmp_path / "model"
    shutil.copytree(tiny_artifact, broken)
    (broken / "model.onnx").write_bytes(b"this is not an ONNX model")  # the manifest is still valid
    port = free_port()
    env = server_env(broken, port, SAGEMAKER_MODEL_SERVER_WORKERS=workers)
    started = time.monotonic()
    proc = run_until_exit(env, timeout=90)
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert time.monotonic() - started < 60
    messages = [json.loads(line).get("msg") for line in proc.stdout.splitlines() if line.startswith(b"{")]
    assert "model failed to load" in messages
    if workers == "2":
        assert "a worker's model failed to load: stopping the server" in messages
