"""Start-up, readiness, settings and SIGTERM: the SageMaker container lifecycle."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path

import pytest

from inference_server.app import InferenceApp
from inference_server.settings import MB, Settings, SettingsError
from tests.container.serverproc import free_port, run_until_exit, server_env, start_server, stop_server


def test_settings_defaults_are_sized_to_the_cpus():
    settings = Settings.from_env({})
    assert settings.port == 8080
    assert settings.model_dir == Path("/opt/ml/model")
    assert settings.workers == 1
    assert settings.threads_per_worker >= 1
    # a batch that runs while the other runners are idle may use all of the worker's threads
    assert settings.solo_threads == settings.threads_per_worker
    assert settings.max_payload_bytes == 1024 * MB  # async inference sends up to 1 GB
    assert settings.timeout_seconds == 3600  # ... and waits up to an hour


def test_settings_from_environment():
    env = {
        "SAGEMAKER_BIND_TO_PORT": "9000",
        "MODEL_DIR": "/models/x",
        "SAGEMAKER_MODEL_SERVER_WORKERS": "2",
        "SAGEMAKER_MODEL_SERVER_TIMEOUT": "3600",
        "TRIAGE_THREADS_PER_WORKER": "3",
        "TRIAGE_MAX_BATCH_SIZE": "16",
        "TRIAGE_MAX_PAYLOAD_MB": "1024",
        "TRIAGE_REVIEW_THRESHOLD": "0.7",
        "TRIAGE_SOLO_THREADS": "1",
        "LOG_LEVEL": "debug",
    }
    s = Settings.from_env(env)
    assert (s.port, s.model_dir, s.workers, s.threads_per_worker) == (9000, Path("/models/x"), 2, 3)
    assert (s.max_batch_size, s.max_payload_bytes, s.review_threshold) == (16, 1024 * MB, 0.7)
    assert (s.timeout_seconds, s.log_level, s.solo_threads) == (3600, "DEBUG", 1)


def test_review_threshold_comes_from_the_environment_else_the_artifact_else_half():
    from inference_server.settings import review_threshold

    assert Settings.from_env({}).review_threshold is None  # unset: the artifact decides
    assert Settings.from_env({"TRIAGE_REVIEW_THRESHOLD": " "}).review_threshold is None
    assert review_threshold(0.7, 0.72) == (0.7, "TRIAGE_REVIEW_THRESHOLD")
    assert review_threshold(0.0, 0.72) == (0.0, "TRIAGE_REVIEW_THRESHOLD")  # 0 is a value, not unset
    assert review_threshold(None, 0.72) == (0.72, "artifact")
    assert review_threshold(None, None) == (0.5, "default")  # an artifact trained before it had one


def test_server_applies_the_artifacts_review_threshold_unless_the_environment_sets_one(
    tiny_artifact, tmp_path
):
    """The real server process: an artifact whose manifest says 1.0 (review everything) flags
    every ticket; TRIAGE_REVIEW_THRESHOLD=0 overrides it (review nothing); the log says which."""
    import shutil

    from triage_core.artifact import load_manifest, write_manifest

    artifact = Path(shutil.copytree(tiny_artifact, tmp_path / "model"))
    manifest = load_manifest(artifact)
    write_manifest(artifact, manifest.model_validate({**manifest.model_dump(), "review_threshold": 1.0}))
    body = b"".join(
        json.dumps({"id": str(k), "text": f"card {k} not arrived"}).encode() + b"\n" for k in range(20)
    )
    for env, flagged, source in (
        ({}, True, "artifact"),
        ({"TRIAGE_REVIEW_THRESHOLD": "0"}, False, "TRIAGE_REVIEW_THRESHOLD"),
    ):
        srv = start_server(artifact, tmp_path / f"{source}.log", **env)
        try:
            resp = srv.invoke(body, "application/jsonlines", "application/jsonlines")
            assert resp.status == 200
            predictions = resp.jsonl()
            assert len(predictions) == 20 and all(p["needs_review"] is flagged for p in predictions)
            (ready,) = [line for line in srv.log_lines() if line.get("msg") == "model ready"]
            assert (ready["review_threshold"], ready["review_threshold_from"]) == (
                0.0 if env else 1.0,
                source,
            )
        finally:
            stop_server(srv)


@pytest.mark.parametrize(
    "name,value",
    [
        ("SAGEMAKER_BIND_TO_PORT", "http"),
        ("TRIAGE_REVIEW_THRESHOLD", "2"),
        ("TRIAGE_MAX_BATCH_SIZE", "0"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_settings_are_rejected_with_the_variable_name(name, value):
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_bad_setting_exits_2_with_a_message(tiny_artifact):
    env = server_env(tiny_artifact, free_port(), TRIAGE_MAX_BATCH_SIZE="lots")
    proc = run_until_exit(env, timeout=30)
    assert proc.returncode == 2
    assert b"TRIAGE_MAX_BATCH_SIZE" in proc.stderr


def test_missing_model_exits_1_with_a_clear_log(tmp_path):
    env = server_env(tmp_path / "no-model", free_port())
    proc = run_until_exit(env, timeout=30)
    assert proc.returncode == 1
    (entry,) = [json.loads(line) for line in proc.stdout.splitlines() if b"cannot serve" in line]
    assert entry["level"] == "ERROR" and "is not a model artifact" in entry["msg"]


def _asgi_call(app: InferenceApp, method: str, path: str, body: bytes = b"", headers=()) -> tuple[int, bytes]:
    """Drive the ASGI app in-process (used only where timing makes the process route flaky)."""
    sent: list[dict] = []

    async def run() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "headers": list(headers)}
        await app(scope, receive, send)

    asyncio.run(run())
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_ping_is_503_until_the_model_is_loaded_and_warm(tiny_artifact):
    app = InferenceApp(Settings(model_dir=tiny_artifact, threads_per_worker=1))
    assert _asgi_call(app, "GET", "/ping")[0] == 503
    status, body = _asgi_call(
        app, "POST", "/invocations", b'{"inputs": "card"}', [(b"content-type", b"application/json")]
    )
    assert status == 503 and json.loads(body)["error"] == "model is loading"
    app.start_loading()
    deadline = time.monotonic() + 30
    while _asgi_call(app, "GET", "/ping")[0] != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    status, body = _asgi_call(
        app, "POST", "/invocations", b'{"inputs": "card"}', [(b"content-type", b"application/json")]
    )
    assert status == 200 and len(json.loads(body)) == 1
    app.close()


def test_sigterm_finishes_the_in_flight_request_then_exits_0(tiny_artifact, tmp_path):
    server = start_server(tiny_artifact, tmp_path / "server.log")
    line = b'{"id": "x", "text": "my card has not arrived"}\n'
    result: dict = {}

    def slow_upload() -> None:
        conn = server.connection(timeout=30)
        conn.putrequest("POST", "/invocations")
        conn.putheader("Content-Type", "application/jsonlines")
        conn.putheader("Accept", "application/jsonlines")
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        for _ in range(6):
            chunk = line * 100
            conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            time.sleep(0.25)
        conn.send(b"0\r\n\r\n")
        resp = conn.getresponse()
        result["status"] = resp.status
        result["records"] = len(resp.read().splitlines())
        conn.close()

    client = threading.Thread(target=slow_upload)
    client.start()
    time.sleep(0.5)  # the upload is in progress
    server.proc.send_signal(signal.SIGTERM)
    client.join(30)
    assert result == {"status": 200, "records": 600}
    assert server.proc.wait(15) == 0
    messages = [entry.get("msg") for entry in server.log_lines()]
    assert "server stopped" in messages
    stop_server(server)


# --- deadlines: every record gets exactly one line ---------------------------------------------
TICKET = "my card has not arrived yet and the app says it was delivered, what now? " * 6


def _jsonl(first: int, n: int, text: str = TICKET) -> bytes:
    return b"".join(
        json.dumps({"id": f"id-{i}", "text": text}).encode() + b"\n" for i in range(first, first + n)
    )


def _one_line_per_record(lines: list[dict], n: int, reason: str) -> tuple[int, int]:
    """Every index once, in order, with its id: the records scored before the deadline, then an
    error line with the deadline's reason for each of the others."""
    assert [line["index"] for line in lines] == list(range(n))
    assert all(line["id"] == f"id-{line['index']}" for line in lines)
    scored = next((i for i, line in enumerate(lines) if "label" not in line), n)
    assert all("label" in line for line in lines[:scored])
    assert all(reason in line["error"] for line in lines[scored:])
    return scored, n - scored


def test_a_timeout_mid_stream_gives_each_unscored_record_its_own_error_line(tiny_artifact, tmp_path):
    """The client sends 20,000 long tickets, pauses past the 1 s timeout, then sends 5,000 more:
    what was scored in time is answered; every other record, including those read after the
    deadline, gets an error line with its index and id (no single ``index: null`` line)."""
    server = start_server(
        tiny_artifact,
        tmp_path / "server.log",
        SAGEMAKER_MODEL_SERVER_TIMEOUT="1",
        TRIAGE_THREADS_PER_WORKER="1",
    )
    try:

        def chunks():
            yield _jsonl(0, 20_000)
            time.sleep(1.5)
            yield _jsonl(20_000, 5_000, "top up failed")

        resp = server.invoke(chunks(), "application/jsonlines", "application/jsonlines")
        assert resp.status == 200
        _, unscored = _one_line_per_record(resp.jsonl(), 25_000, "request timed out after 1 s")
        assert unscored >= 5_000  # at least those that arrived after the deadline
        (entry,) = [e for e in server.log_lines() if e.get("msg") == "invocation" and e["records"] == 25_000]
        assert entry["unscored"] == unscored
        server.assert_healthy()
    finally:
        stop_server(server)


def test_the_shutdown_window_fits_inside_sagemakers_30_seconds():
    """SageMaker sends SIGKILL 30 s after SIGTERM ("Custom Inference Code with Hosting Services",
    docs.aws.amazon.com/sagemaker/latest/dg/your-algorithms-inference-code.html)."""
    from inference_server.process import uvicorn_options
    from inference_server.settings import SAGEMAKER_STOP_SECONDS

    settings = Settings.from_env({})
    assert settings.timeout_seconds == 3600  # a request may run for an hour ...
    assert settings.shutdown_seconds < SAGEMAKER_STOP_SECONDS == 30  # ... but not past SIGKILL
    assert uvicorn_options(settings)["timeout_graceful_shutdown"] < 30


def test_sigterm_mid_request_accounts_for_every_ticket_and_exits_in_the_window(tiny_artifact, tmp_path):
    """SIGTERM while a large body is being scored: the request stops scoring early enough to
    answer every record (scored, or an error line saying the server is shutting down) and the
    process exits 0 inside the window (6 s here; 25 s by default)."""
    server = start_server(
        tiny_artifact, tmp_path / "server.log", TRIAGE_SHUTDOWN_SECONDS="6", TRIAGE_THREADS_PER_WORKER="1"
    )
    result: dict = {}
    n = 200_000  # still being scored at SIGTERM (40,000 were done by then once tokenizing got fast)
    body = _jsonl(0, n)
    sending = threading.Event()

    def chunks():
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]
            sending.set()

    def client() -> None:
        resp = server.invoke(chunks(), "application/jsonlines", "application/jsonlines")
        result["status"], result["lines"] = resp.status, resp.jsonl()

    thread = threading.Thread(target=client)
    thread.start()
    assert sending.wait(30)
    time.sleep(1.0)  # the request is under way: scoring has started
    signalled = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        assert server.proc.wait(10) == 0
        stopped = time.monotonic() - signalled
        thread.join(10)
        assert result["status"] == 200
        _, unscored = _one_line_per_record(result["lines"], n, "the server is shutting down (SIGTERM)")
        assert unscored > 0
        assert stopped < 8, f"stopped {stopped:.1f} s after SIGTERM"  # window 6 s; SIGKILL at 30
    finally:
        stop_server(server)


def test_a_body_that_stops_arriving_ends_with_one_line_for_the_records_never_read(tiny_artifact, monkeypatch):
    """The last resort: past the deadline the records already read are answered one by one, but
    records that never arrive cannot be; after the drain budget the stream ends with a single
    ``index: null`` line naming the first index not accounted for. (In-process, with the drain
    budget cut from 30 s to 0.5 s.)"""
    import inference_server.pipeline as pipeline_module

    monkeypatch.setattr(pipeline_module, "DRAIN_SECONDS", 0.5)
    app = InferenceApp(Settings(model_dir=tiny_artifact, threads_per_worker=1, timeout_seconds=1.0))
    app.start_loading()
    deadline = time.monotonic() + 30
    while not app.ready:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    sent: list[dict] = []

    async def run() -> None:
        first = [{"type": "http.request", "body": _jsonl(0, 300, "top up failed"), "more_body": True}]

        async def receive() -> dict:
            if first:
                return first.pop()
            await asyncio.Event().wait()  # the rest of the body never comes
            return {}

        async def send(message: dict) -> None:
            sent.append(message)

        headers = [(b"content-type", b"application/jsonlines"), (b"accept", b"application/jsonlines")]
        scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
        await asyncio.wait_for(app(scope, receive, send), 20)

    try:
        asyncio.run(run())
    finally:
        app.close()
    assert sent[0]["status"] == 200 and sent[-1].get("more_body") is False
    lines = [json.loads(line) for line in b"".join(m.get("body", b"") for m in sent[1:]).splitlines()]
    assert [line["index"] for line in lines[:-1]] == list(range(300))
    assert lines[-1]["index"] is None
    assert lines[-1]["error"].endswith("the records from index 300 on were not read")


def test_sigusr1_writes_every_threads_stack_to_the_log_and_the_server_keeps_serving(tiny_artifact, tmp_path):
    server = start_server(tiny_artifact, tmp_path / "server.log")
    try:
        server.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 10
        # the runner threads' stacks and the event loop thread's (serve_one), written as they come
        frames = ("inference_server/batching.py", "inference_server/process.py")
        while not all(frame in server.log_path.read_text() for frame in frames):
            assert time.monotonic() < deadline, "no stack dump in the log"
            time.sleep(0.05)
        server.assert_healthy()
    finally:
        stop_server(server)
