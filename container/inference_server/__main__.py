"""``python -m inference_server serve``: the image's entry point (SageMaker runs ``<image> serve``).

uvicorn (httptools parser, uvloop event loop) serves the ASGI app in ``app.py``. SIGTERM and
SIGINT stop accepting connections, let in-flight requests finish (up to the request timeout),
stop the batcher and exit 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from types import FrameType

import uvicorn

from inference_server import logs
from inference_server.app import InferenceApp
from inference_server.settings import Settings, SettingsError
from triage_core.artifact import ArtifactError, load_manifest

log = logging.getLogger("inference_server")


def create_app() -> InferenceApp:
    """App factory for uvicorn's multi-process mode (each worker reads the settings once)."""
    settings = Settings.from_env()
    logs.configure(settings.log_level)
    return InferenceApp(settings)


def _uvicorn_options(settings: Settings) -> dict[str, object]:
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
        # On SIGTERM, in-flight requests get up to the request timeout to finish.
        "timeout_graceful_shutdown": int(settings.timeout_seconds),
    }


class _Server(uvicorn.Server):
    """uvicorn's graceful shutdown on SIGTERM, then exit 0 (uvicorn would re-raise the signal,
    which makes a clean stop look like a crash in SageMaker's and Docker's logs)."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig != signal.SIGTERM:
            super().handle_exit(sig, frame)
        elif self.should_exit:
            self.force_exit = True  # a second SIGTERM: stop waiting for in-flight requests
        else:
            self.should_exit = True


def serve(settings: Settings) -> int:
    logs.configure(settings.log_level)
    try:
        load_manifest(settings.model_dir)  # fail fast, with a clear message, on a bad model dir
    except ArtifactError as exc:
        log.error("cannot serve: %s", exc)
        return 1
    log.info(
        "starting",
        extra={
            "port": settings.port,
            "workers": settings.workers,
            "threads_per_worker": settings.threads_per_worker,
            "max_payload_mb": settings.max_payload_bytes // (1024 * 1024),
            "timeout_s": settings.timeout_seconds,
        },
    )
    if settings.workers > 1:
        # One process per worker, each with its own model, batcher and ``threads_per_worker``.
        uvicorn.run(
            "inference_server.__main__:create_app",
            factory=True,
            workers=settings.workers,
            **_uvicorn_options(settings),
        )
        return 0
    failed = []
    server: _Server | None = None

    def on_fatal() -> None:
        failed.append(True)
        if server is not None:
            server.should_exit = True

    app = InferenceApp(settings, on_fatal=on_fatal)
    server = _Server(uvicorn.Config(app, **_uvicorn_options(settings)))
    server.run()
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    # The batcher's runner threads already use every core; the tokenizer's own thread pool
    # would only compete with them (and it warns after a fork).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="python -m inference_server", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the model in MODEL_DIR on SAGEMAKER_BIND_TO_PORT (8080)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        try:
            settings = Settings.from_env()
        except SettingsError as exc:
            print(f"invalid settings: {exc}", file=sys.stderr)
            return 2
        return serve(settings)
    return 2


if __name__ == "__main__":
    sys.exit(main())
