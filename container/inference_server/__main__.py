"""``python -m inference_server serve``: the image's entry point (SageMaker runs ``<image> serve``).

uvicorn (httptools parser, uvloop event loop) serves the ASGI app in ``app.py``; with
``SAGEMAKER_MODEL_SERVER_WORKERS`` > 1 a supervisor runs one process per worker
(``process.py``). SIGTERM and SIGINT stop accepting connections and give in-flight requests the
shutdown window (``TRIAGE_SHUTDOWN_SECONDS``, inside SageMaker's 30 s before SIGKILL), then the
server exits 0. Exit codes: 0 after a clean stop, 1 when the model cannot be served (a bad model
directory, a model that fails to load in any worker), 2 for invalid settings.
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import signal
import sys

from inference_server import logs
from inference_server.process import Supervisor, serve_one
from inference_server.settings import Settings, SettingsError
from triage_core.artifact import ArtifactError, load_manifest

log = logging.getLogger("inference_server")


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
            "shutdown_s": settings.shutdown_seconds,
        },
    )
    if settings.workers > 1:
        return Supervisor(settings).run()
    return serve_one(settings)


def main(argv: list[str] | None = None) -> int:
    # The batcher's runner threads already use every core; the tokenizer's own thread pool
    # would only compete with them (and it warns after a fork).
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # `kill -USR1 <pid>` writes every thread's stack to stderr (the container log): a hang can
    # be diagnosed where it happens (each worker process registers it too).
    faulthandler.register(signal.SIGUSR1, all_threads=True)
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
