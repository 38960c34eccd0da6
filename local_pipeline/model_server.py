"""The real inference server (``python -m inference_server serve``) as a child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ModelServerProcess:
    """Spawns the container's server on a free loopback port with ``MODEL_DIR`` and waits for
    ``GET /ping`` to answer 200 (model loaded and warmed up)."""

    def __init__(
        self,
        model_dir: str | Path,
        log_path: str | Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        startup_timeout: float = 180.0,
    ):
        self.model_dir = Path(model_dir).resolve()
        self.log_path = Path(log_path)
        self.port = port or free_port()
        self.extra_env = env or {}
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ModelServerProcess:
        env = {
            **os.environ,
            "MODEL_DIR": str(self.model_dir),
            "SAGEMAKER_BIND_TO_PORT": str(self.port),
            "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "container")]),
            "TOKENIZERS_PARALLELISM": "false",
            "TRIAGE_BIND_HOST": "127.0.0.1",
            "SAGEMAKER_MODEL_SERVER_WORKERS": os.environ.get("SAGEMAKER_MODEL_SERVER_WORKERS", "1"),
            "LOG_LEVEL": os.environ.get("TRIAGE_SERVER_LOG_LEVEL", "WARNING"),
            **self.extra_env,
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "inference_server", "serve"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the terminal reaches us; we stop the server ourselves
        )
        log.close()
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"inference server exited with {code} during start-up:\n{self.log_tail()}")
            try:
                if requests.get(self.url + "/ping", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(
            f"inference server not ready after {self.startup_timeout:.0f}s:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # SIGTERM: the server shuts down cleanly
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
