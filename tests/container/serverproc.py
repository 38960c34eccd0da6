"""Run the real inference server as a separate process on a free loopback port; talk HTTP to it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(model_dir: Path, port: int, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAGEMAKER_", "TRIAGE_"))}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "container")]),
            "MODEL_DIR": str(model_dir),
            "SAGEMAKER_BIND_TO_PORT": str(port),
            "TRIAGE_BIND_HOST": "127.0.0.1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    env.update(overrides)
    return env


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)

    def jsonl(self) -> list[dict]:
        return [json.loads(line) for line in self.body.splitlines() if line.strip()]


@dataclass
class Server:
    """A running ``python -m inference_server serve`` process."""

    proc: subprocess.Popen
    port: int
    log_path: Path
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | Iterator[bytes] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> Response:
        conn = self.connection(timeout)
        try:
            chunked = body is not None and not isinstance(body, bytes)
            conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
            resp = conn.getresponse()
            return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def invoke(
        self,
        body: bytes | Iterator[bytes],
        content_type: str | None,
        accept: str | None = None,
        **headers: str,
    ) -> Response:
        hdrs = dict(headers)
        if content_type is not None:
            hdrs["Content-Type"] = content_type
        if accept is not None:
            hdrs["Accept"] = accept
        return self.request("POST", "/invocations", body, hdrs)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"raw": line})
        return out

    def assert_healthy(self) -> None:
        """The server still answers /ping and a good request after whatever came before."""
        assert self.proc.poll() is None, "server process died"
        assert self.request("GET", "/ping").status == 200
        resp = self.invoke(b'{"inputs": "my card has not arrived yet"}', "application/json")
        assert resp.status == 200, resp.body
        (prediction,) = resp.json()  # the Hugging Face toolkit's shape: [{"label", "score"}]
        assert set(prediction) == {"label", "score"}


def run_until_exit(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    """``python -m inference_server serve`` run to its end (a server that must not start)."""
    return subprocess.run(
        [sys.executable, "-m", "inference_server", "serve"],
        env=env,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
    )


def start_server(model_dir: Path, log_path: Path, timeout: float = 60, **env: str) -> Server:
    port = free_port()
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "inference_server", "serve"],
        env=server_env(model_dir, port, **env),
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    server = Server(proc, port, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log_path.read_text()[-2000:]}")
        try:
            if server.request("GET", "/ping", timeout=2).status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.05)
    stop_server(server)
    raise RuntimeError(f"server not ready after {timeout} s: {log_path.read_text()[-2000:]}")


def stop_server(server: Server, timeout: float = 15) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
        try:
            server.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode
