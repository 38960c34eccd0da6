"""Fixtures for the pipeline tests: moto's real server on loopback (one per session, reset per
test), the pipeline's resources created with real boto3, Lambda-shaped events, and the real
inference server process on the tiny artifact."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pipeline_helpers import Aws

from local_pipeline.async_endpoint import AsyncEndpoint, AsyncEndpointConfig, AsyncEndpointHTTPServer
from local_pipeline.aws import DUMMY_CREDENTIALS, MotoServer, patched_environ, provision
from local_pipeline.calls import CallRecorder
from local_pipeline.model_server import ModelServerProcess


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's server; ``TRIAGE_TEST_MOTO_URL`` names one already running (``make mutation``
    shares one between its test processes: only tests that never reset it are run there)."""
    shared = os.environ.get("TRIAGE_TEST_MOTO_URL")
    if shared:
        yield MotoServer(port=urlsplit(shared).port)
        return
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
    from ticket_pipeline import aggregator, dispatcher, sweeper

    env = aws.env()
    with patched_environ(env):
        for module in (dispatcher, aggregator, sweeper):
            module.runtime.cache_clear()
        yield env
    for module in (dispatcher, aggregator, sweeper):
        module.runtime.cache_clear()


@pytest.fixture
def endpoint(aws: Aws, lambda_env: dict[str, str]) -> Iterator[AsyncEndpoint]:
    """The async endpoint stand-in (workers not started: requests just queue up), reachable by
    the dispatcher's boto3 sagemaker-runtime client through AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME."""
    ep = AsyncEndpoint(
        AsyncEndpointConfig(
            endpoint_name=aws.names.endpoint_name,
            region="us-east-1",
            model_url="http://127.0.0.1:9",
            s3_output_path=f"s3://{aws.names.output_bucket}/async-results/",
            s3_failure_path=f"s3://{aws.names.output_bucket}/async-failures/",
            success_topic_arn=aws.resources.success_topic_arn,
            error_topic_arn=aws.resources.error_topic_arn,
        ),
        aws.s3,
        aws.sns,
    )
    http = AsyncEndpointHTTPServer(ep).start()
    with patched_environ({"AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": http.url}):
        from ticket_pipeline import dispatcher

        dispatcher.runtime.cache_clear()
        yield ep
    http.stop()


@pytest.fixture
def invocations(lambda_env: dict[str, str]) -> Iterator[list[tuple[str, bytes]]]:
    """Lambda's asynchronous Invoke (the local front): the events the handlers invoke (the
    dispatcher's continuations), collected here for the test to run like Lambda would."""
    from local_pipeline.lambda_front import LambdaInvokeFront
    from ticket_pipeline import dispatcher

    received: list[tuple[str, bytes]] = []
    front = LambdaInvokeFront(
        lambda name, payload: received.append((name, payload)),
        {"ticket-dispatcher", "ticket-aggregator", "ticket-sweeper"},
    ).start()
    with patched_environ({"AWS_ENDPOINT_URL_LAMBDA": front.url}):
        dispatcher.runtime.cache_clear()
        yield received
    front.stop()


class RecordedRuntime:
    """A handler module's ``runtime`` whose clients (built anew after each ``cache_clear``) record
    their AWS calls as the function's (``local_pipeline.calls``)."""

    def __init__(self, original: Any, calls: CallRecorder, function: str):
        self.original, self.calls, self.function = original, calls, function
        self._attached: list[Any] = []

    def __call__(self) -> Any:
        value = self.original()
        if all(value is not seen for seen in self._attached):
            self.calls.attach_runtime(value, self.function)
            self._attached.append(value)
        return value

    def cache_clear(self) -> None:
        self.original.cache_clear()


@dataclass
class ModuleCalls:
    calls: CallRecorder = field(default_factory=CallRecorder)
    resources: Any = None  # the local resources the calls named (the same names in every test)


@pytest.fixture(scope="module")
def module_calls(request: pytest.FixtureRequest, synth: Any) -> Iterator[ModuleCalls]:
    """Every call the handlers made in this module's tests (:func:`iam_calls`); after the module,
    replayed against the template's roles, the grants no call used written to
    ``$TRIAGE_IAM_REPORT/iam-usage-<module>.md`` when that directory is set."""
    recorded = ModuleCalls()
    yield recorded
    directory = os.environ.get("TRIAGE_IAM_REPORT")
    if directory and recorded.resources is not None:
        from iam_replay import stack_replay

        result = stack_replay(synth, recorded.calls.snapshot(), recorded.resources.names, recorded.resources)
        name = request.module.__name__.removeprefix("test_pipeline_").replace("_", "-")
        Path(directory, f"iam-usage-{name}.md").write_text(result.report())


@pytest.fixture
def iam_calls(
    aws: Aws,
    lambda_env: dict[str, str],
    synth: Any,
    module_calls: ModuleCalls,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[CallRecorder]:
    """The AWS calls the three handlers make in this test (their ``runtime()`` clients, recorded as
    their execution roles' on AWS), replayed against the synthesized template's roles afterwards:
    a call the role that makes it would be denied fails the test (``tests/iam_replay.py``)."""
    from iam_replay import stack_replay

    from ticket_pipeline import aggregator, dispatcher, sweeper

    calls = CallRecorder()
    for function, module in (
        ("ticket-dispatcher", dispatcher),
        ("ticket-aggregator", aggregator),
        ("ticket-sweeper", sweeper),
    ):
        monkeypatch.setattr(module, "runtime", RecordedRuntime(module.runtime, calls, function))
    yield calls
    recorded = calls.snapshot()
    for call in recorded:
        module_calls.calls.calls[call] += calls.calls[call]
    module_calls.resources = aws.resources
    denied = stack_replay(synth, recorded, aws.names, aws.resources).denied
    assert denied == [], f"calls the template's roles do not allow: {denied}"
