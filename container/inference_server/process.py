"""Running the app: one uvicorn server, or several worker processes under a small supervisor.

**Shutdown.** SageMaker stops a container with SIGTERM and sends SIGKILL 30 s later (SageMaker
developer guide, "Custom Inference Code with Hosting Services"). On SIGTERM the server stops
accepting connections, ``/ping`` answers 503, and in-flight requests get
``TRIAGE_SHUTDOWN_SECONDS`` (default 25) in all: after half of it they stop scoring and write an
error line for every ticket not scored yet, reading what is left of their bodies to do so (see
``app.py``); by 90 % they end. Then the batcher stops and the process exits 0. A second SIGTERM
stops at once.

**Several workers** (``SAGEMAKER_MODEL_SERVER_WORKERS`` > 1). uvicorn's own multi-process mode
restarts a worker whose model fails to load, forever, while the others answer ``/ping`` with 200,
and exits 0 whatever happened. Here the parent binds the socket and starts the workers (spawned
processes, each with its own model and batcher, all accepting on the one socket) and shares one
state per worker (loading / ready / failed) with all of them:

* every worker's ``/ping`` is 200 only when every worker is ready (SageMaker may ask any of them);
* a worker whose model fails to load marks itself failed and exits: the parent stops the others
  and exits 1, so the container stops instead of serving a fraction of its capacity;
* a worker that dies otherwise (killed, out of memory) is restarted, its state back to loading
  (``/ping`` 503 until it is ready); more than ``MAX_RESTARTS`` deaths in ``RESTART_WINDOW_S``
  count as a failure (exit 1);
* SIGTERM / SIGINT go to every worker, which shut down as above; the parent waits for them
  (stragglers are killed after the shutdown window) and exits 0.
"""

from __future__ import annotations

import faulthandler
import logging
import multiprocessing
import signal
import socket
import sys
import threading
import time
from collections import deque
from types import FrameType
from typing import Any

import uvicorn

from inference_server import logs
from inference_server.app import InferenceApp
from inference_server.settings import Settings

log = logging.getLogger("inference_server")

LOADING, READY, FAILED = 0, 1, 2
FATAL_EXIT = 3  # a worker's exit code when its model failed to load
MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
POLL_S = 0.2


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.host,
        "port": settings.port,
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "log_config": None,
        # SageMaker keeps connections to the container open between invocations.
        "timeout_keep_alive": 75,
        # On SIGTERM, in-flight requests get this long (SageMaker's SIGKILL comes 30 s after).
        "timeout_graceful_shutdown": max(1, int(settings.shutdown_seconds)),
    }


class Server(uvicorn.Server):
    """uvicorn's graceful shutdown on SIGTERM (the app told to wrap up its requests in time),
    then exit 0 (uvicorn would re-raise the signal, which makes a clean stop look like a crash in
    SageMaker's and Docker's logs)."""

    def __init__(self, config: uvicorn.Config, app: InferenceApp):
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:
            if sig == signal.SIGTERM:
                self.force_exit = True  # a second SIGTERM: stop waiting for in-flight requests
            else:
                super().handle_exit(sig, frame)
            return
        loop = self.app._loop
        if loop is not None:
            loop.call_soon_threadsafe(self.app.begin_shutdown)
        if sig == signal.SIGTERM:
            self.should_exit = True
        else:
            super().handle_exit(sig, frame)


def serve_one(
    settings: Settings, health: WorkerHealth | None = None, sock: socket.socket | None = None
) -> int:
    """One server process: 0 after a clean shutdown, 1 (or :data:`FATAL_EXIT` for a worker) when
    the model failed to load."""
    failed: list[bool] = []
    server: Server | None = None

    def on_fatal() -> None:
        failed.append(True)
        if server is not None:
            server.should_exit = True

    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1: thread stacks to stderr
    app = InferenceApp(settings, on_fatal=on_fatal, health=health)
    server = Server(uvicorn.Config(app, **uvicorn_options(settings)), app)
    server.run(sockets=[sock] if sock is not None else None)
    if failed:
        return FATAL_EXIT if health is not None else 1
    return 0


class WorkerHealth:
    """This worker's view of every worker's state (shared memory, one byte per worker)."""

    def __init__(self, states: Any, index: int):
        self._states = states
        self._index = index

    def ready(self) -> None:
        self._states[self._index] = READY

    def failed(self) -> None:
        self._states[self._index] = FAILED

    def all_ready(self) -> bool:
        return all(state == READY for state in self._states[:])

    def counts(self) -> tuple[int, int]:
        states = self._states[:]
        return sum(state == READY for state in states), len(states)


def _worker(index: int, states: Any, sock: socket.socket) -> None:
    """A worker process (spawned: it reads the settings from the environment itself)."""
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    sys.exit(serve_one(settings, WorkerHealth(states, index), sock))


class Supervisor:
    """Runs ``settings.workers`` worker processes on one socket; see the module docstring."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._context = multiprocessing.get_context("spawn")
        self._stop = threading.Event()
        self.exit_code = 0

    def _on_signal(self, sig: int, frame: FrameType | None) -> None:
        log.info("stopping workers", extra={"signal": signal.Signals(sig).name})
        self._stop.set()

    def run(self) -> int:
        settings = self.settings
        sock = uvicorn.Config(InferenceApp(settings), **uvicorn_options(settings)).bind_socket()
        states = self._context.RawArray("b", settings.workers)
        processes = [self._start(i, states, sock) for i in range(settings.workers)]
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)
        deaths: deque[float] = deque()
        while not self._stop.wait(POLL_S):
            for index, process in enumerate(processes):
                if process.is_alive():
                    continue
                if states[index] == FAILED or process.exitcode == FATAL_EXIT:
                    log.error("a worker's model failed to load: stopping the server", extra={"worker": index})
                    self.exit_code = 1
                    self._stop.set()
                    break
                now = time.monotonic()
                deaths.append(now)
                while deaths and deaths[0] < now - RESTART_WINDOW_S:
                    deaths.popleft()
                if len(deaths) > MAX_RESTARTS:
                    log.error("workers keep dying: stopping the server", extra={"deaths": len(deaths)})
                    self.exit_code = 1
                    self._stop.set()
                    break
                log.warning(
                    "worker died: restarting it", extra={"worker": index, "exitcode": process.exitcode}
                )
                states[index] = LOADING
                processes[index] = self._start(index, states, sock)
        self._stop_all(processes)
        sock.close()
        log.info("server stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def _start(self, index: int, states: Any, sock: socket.socket) -> multiprocessing.process.BaseProcess:
        process = self._context.Process(target=_worker, args=(index, states, sock), name=f"worker-{index}")
        process.start()
        return process

    def _stop_all(self, processes: list) -> None:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: the worker's graceful shutdown
        deadline = time.monotonic() + self.settings.shutdown_seconds + 2
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                log.error("worker did not stop in time: killing it", extra={"pid": process.pid})
                process.kill()
                process.join()


__all__ = ["FATAL_EXIT", "Server", "Supervisor", "WorkerHealth", "serve_one", "uvicorn_options"]
