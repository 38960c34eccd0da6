"""The chaos harness's own parts, without a stack: the injected AWS errors are what botocore makes
of the real services' answers, the fault plan is a function of the seed, and the manifest of
expected ticket keys agrees with the dispatcher on every generated file."""

from __future__ import annotations

import re
from collections import Counter

import boto3
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from chaos import faults
from chaos.faults import FaultPlan
from chaos.workload import plan_uploads
from ticket_pipeline.chunking import plan_chunks
from triage_core.reader import read_tickets


def _client(service: str, answer) -> object:
    """A boto3 client whose every HTTP attempt gets ``answer(url)`` (nothing leaves the process);
    botocore's standard retry policy, one retry (each retry sleeps)."""
    client = boto3.client(
        service,
        region_name="us-east-1",
        endpoint_url="http://127.0.0.1:9",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"mode": "standard", "total_max_attempts": 2}),
    )
    attempts = Counter()

    def before_send(request, **_):
        attempts["n"] += 1
        return answer(request.url)

    client.meta.events.register("before-send", before_send)
    client.attempts = attempts  # type: ignore[attr-defined]
    return client


def _doc(service: str, shape: str) -> str:
    """A shape's documentation in botocore's service model (the API reference's text)."""
    text = botocore.session.get_session().get_service_model(service).shape_for(shape).documentation
    return " ".join(re.sub(r"<[^>]+>", " ", text).split())


@pytest.mark.parametrize("code", sorted(faults.S3_ERRORS))
def test_s3_errors_are_retried_by_botocore_then_raised_with_their_code(code: str):
    s3 = _client("s3", lambda url: faults.s3_error(url, code))
    with pytest.raises(ClientError) as raised:
        s3.get_object(Bucket="b", Key="k")
    assert raised.value.response["Error"]["Code"] == code
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == faults.S3_ERRORS[code][0]
    assert s3.attempts["n"] > 1  # botocore's retry policy ran on the injected answers


@pytest.mark.parametrize("code", sorted(faults.DYNAMODB_THROTTLES))
def test_dynamodb_throttling_is_a_modeled_error_of_the_data_operations(code: str):
    model = botocore.session.get_session().get_service_model("dynamodb")
    for operation in ("GetItem", "PutItem", "UpdateItem", "Query"):
        assert code in {e.name for e in model.operation_model(operation).error_shapes}
    dynamodb = _client(
        "dynamodb", lambda url: faults.dynamodb_error(url, code, faults.DYNAMODB_THROTTLES[code])
    )
    with pytest.raises(dynamodb.exceptions.ClientError) as raised:
        dynamodb.get_item(TableName="t", Key={"pk": {"S": "a"}})
    assert type(raised.value).__name__ == code
    assert dynamodb.attempts["n"] > 1


@pytest.mark.parametrize("reason", sorted(faults.TRANSACTION_CANCEL_REASONS))
def test_transaction_cancellations_carry_the_documented_reason_codes_and_messages(reason: str):
    """DynamoDB API Reference, TransactWriteItems, Errors, TransactionCanceledException:
    "Cancellation reason codes and possible error messages" (the same text in botocore's model)."""
    documented = _doc("dynamodb", "TransactionCanceledException")
    assert f"Code: {reason}" in documented
    assert " ".join(faults.TRANSACTION_CANCEL_REASONS[reason].split()) in documented
    dynamodb = _client("dynamodb", lambda url: faults.transaction_canceled(url, 2, reason))
    item = {"Update": {"TableName": "t", "Key": {"pk": {"S": "a"}}, "UpdateExpression": "SET a = :a"}}
    item["Update"]["ExpressionAttributeValues"] = {":a": {"S": "x"}}
    with pytest.raises(dynamodb.exceptions.TransactionCanceledException) as raised:
        dynamodb.transact_write_items(TransactItems=[item, item])
    reasons = raised.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", reason]  # what ticket_pipeline.jobs reads
    assert dynamodb.attempts["n"] == 1  # botocore does not retry a cancelled transaction


@pytest.mark.parametrize("code", sorted(faults.INVOKE_ERRORS))
def test_invoke_endpoint_async_errors_are_the_documented_ones(code: str):
    """InvokeEndpointAsync's modeled errors (its API reference's Errors) plus the common
    ThrottlingException of every SageMaker API (SageMaker API Reference, "Common Errors")."""
    modeled = {
        e.name
        for e in botocore.session.get_session()
        .get_service_model("sagemaker-runtime")
        .operation_model("InvokeEndpointAsync")
        .error_shapes
    }
    assert modeled | {"ThrottlingException"} == set(faults.INVOKE_ERRORS)
    runtime = _client("sagemaker-runtime", lambda url: faults.invoke_error(url, code))
    with pytest.raises(ClientError) as raised:
        runtime.invoke_endpoint_async(EndpointName="e", InputLocation="s3://b/k")
    assert raised.value.response["Error"]["Code"] == code
    retried = code != "ValidationError"
    assert (runtime.attempts["n"] > 1) is retried


def test_the_plan_is_a_function_of_the_seed_and_of_what_a_decision_is_about():
    def decisions(seed: int) -> list:
        plan = FaultPlan(seed)
        return [
            *(plan.burst("s3.PutObject", f"call{i}") for i in range(200)),
            *(plan.crash("ticket-dispatcher", f"u{i}", 1, [True, False] * 7) for i in range(50)),
            *(plan.endpoint_fate(f"u{i}-c00001#1") for i in range(100)),
            *(plan.delivery("notification", f"u{i}-c00001:Completed") for i in range(100)),
        ]

    assert decisions(3) == decisions(3)
    assert decisions(3) != decisions(4)
    assert any(d is not None for d in decisions(3)[:200])  # faults do get chosen


@pytest.mark.parametrize("seed", range(1, 41))
def test_the_manifest_from_the_documented_rules_matches_the_dispatchers_keys(seed: int):
    """The harness's manifest comes from the documented keying rules (docs/pipeline.md, "Ticket ids"), not
    from the pipeline's parser; here, once, the two are compared on every generated file, read by the
    dispatcher's reader (``triage_core.reader``) and keyed by its chunker, so a difference between the
    rules as documented and as implemented shows up as a failing test, not as chaos noise."""
    for upload in plan_uploads(seed, 5):
        ticket_file = upload.file
        if ticket_file.whole_file_error:
            continue
        records = read_tickets([ticket_file.body], key=ticket_file.key, content_type=ticket_file.content_type)
        plan = plan_chunks(records, chunk_size=5)
        keys = {key: False for chunk in plan.chunks for key in chunk.ticket_ids}
        keys.update({rejected.id: True for rejected in plan.rejected})
        assert keys == ticket_file.expected, ticket_file.key


def test_the_harness_keeps_botocores_retries_and_only_scales_their_wait(monkeypatch: pytest.MonkeyPatch):
    """The harness replaces ``Endpoint._needs_retry`` on the handlers' clients with a copy whose
    sleep runs on the virtual clock: the same attempts as botocore's own, and its waits divided by
    the speed."""
    import inspect

    from botocore.endpoint import Endpoint

    from chaos import lambda_service
    from chaos.clock import VirtualClock

    source = inspect.getsource(Endpoint._needs_retry)
    assert "first_non_none_response(responses)" in source and "time.sleep(handler_response)" in source

    def attempts(scaled: bool) -> tuple[int, list[float]]:
        slept: list[float] = []
        monkeypatch.setattr(lambda_service.time, "sleep", slept.append)
        monkeypatch.setattr("botocore.endpoint.time.sleep", slept.append)
        client = _client("s3", lambda url: faults.s3_error(url, "SlowDown"))
        if scaled:
            lambda_service._back_off_on(client, VirtualClock(speed=50))
        with pytest.raises(ClientError):
            client.get_object(Bucket="b", Key="k")
        return client.attempts["n"], slept

    (plain, plain_waits), (scaled, scaled_waits) = attempts(False), attempts(True)
    assert plain == scaled == 2 and len(plain_waits) == len(scaled_waits) == 1
    assert 0 < scaled_waits[0] <= 2 / 50  # botocore's first back-off is at most 1 s (x base 2)
