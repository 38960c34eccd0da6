"""Fixtures for the pipeline tests: moto's real server on loopback (one per session, reset per
test), the pipeline's resources created with real boto3, Lambda-shaped events, and the real
inference server process on the tiny artifact."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_helpers import Aws

from local_pipeline.aws import DUMMY_CREDENTIALS, MotoServer, patched_environ, provision
from local_pipeline.model_server import ModelServerProcess


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    with patched_environ(DUMMY_CREDENTIALS):
        server = MotoServer().start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[Aws]:
    moto_server.reset()
    clients = {s: moto_server.client(s) for s in ("s3", "sns", "sqs", "dynamodb")}
    resources = provision(clients["s3"], clients["sns"], clients["sqs"], clients["dynamodb"])
    yield Aws(moto_server, resources, **clients)


@pytest.fixture(scope="session")
def model_server(
    tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ModelServerProcess]:
    """The real inference server process serving the tiny artifact on a free loopback port."""
    log = tmp_path_factory.mktemp("model-server") / "server.log"
    server = ModelServerProcess(tiny_artifact, log, env={"TRIAGE_THREADS_PER_WORKER": "1"}).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def lambda_env(aws: Aws) -> Iterator[dict[str, str]]:
    """Process env as the Lambda sees it; the handlers' cached clients/settings are reset."""
    from ticket_pipeline import aggregator, dispatcher

    env = aws.env()
    with patched_environ(env):
        dispatcher.runtime.cache_clear()
        aggregator.runtime.cache_clear()
        yield env
    dispatcher.runtime.cache_clear()
    aggregator.runtime.cache_clear()
