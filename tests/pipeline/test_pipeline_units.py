"""Pure logic: ticket keys and chunking, event and notification parsing, inference ids."""

from __future__ import annotations

import json

import pytest

from ticket_pipeline.chunking import MAX_ID_CHARS, plan_chunks
from ticket_pipeline.events import S3Event
from ticket_pipeline.jobs import inference_id_for, parse_inference_id
from ticket_pipeline.notifications import AsyncInferenceNotification
from ticket_pipeline.settings import DispatcherSettings
from triage_core.formats import iter_jsonl

# The success notification as AWS documents it for async inference (SNS Message body).
DOCUMENTED_SUCCESS = {
    "awsRegion": "us-east-1",
    "eventTime": "2022-01-25T22:46:00.608Z",
    "receivedTime": "2022-01-25T22:46:00.455Z",
    "invocationStatus": "Completed",
    "requestParameters": {
        "contentType": "text/csv",
        "endpointName": "example-endpoint",
        "inputLocation": "s3://bucket/input-directory/input-data.csv",
    },
    "responseParameters": {
        "contentType": "text/csv; charset=utf-8",
        "outputLocation": "s3://bucket/output_directory/prediction.out",
    },
    "inferenceId": "11111111-2222-3333-4444-555555555555",
    "eventVersion": "1.0",
    "eventSource": "aws:sagemaker",
    "eventName": "InferenceResult",
}
DOCUMENTED_ERROR = {
    "awsRegion": "us-east-1",
    "eventTime": "2022-01-25T22:46:00.608Z",
    "receivedTime": "2022-01-25T22:46:00.455Z",
    "invocationStatus": "Failed",
    "failureReason": "ClientError: Received server error (500) from model. See the SageMaker Endpoint logs.",
    "requestParameters": {"endpointName": "example-endpoint", "inputLocation": "s3://bucket/in.csv"},
    "inferenceId": "11111111-2222-3333-4444-555555555555",
    "eventVersion": "1.0",
    "eventSource": "aws:sagemaker",
    "eventName": "InferenceResult",
}


def _records(*lines: bytes):
    return list(iter_jsonl(lines))


def test_ticket_keys_follow_the_documented_rule():
    records = _records(
        b'{"id": "a", "text": "card lost"}\n',
        b'{"text": "no id here"}\n',
        b'{"id": "a", "text": "same id again"}\n',
        b"{not json\n",
        b'{"id": "e", "text": "   "}\n',
        b'{"id": 7, "text": "integer id"}\n',
        json.dumps({"id": "x" * (MAX_ID_CHARS + 1), "text": "long id"}).encode() + b"\n",
    )
    plan = plan_chunks(records, chunk_size=10)
    assert plan.records == 7
    assert [c.ticket_ids for c in plan.chunks] == [["a", "#2", "7"]]
    rejected = {r.id: r for r in plan.rejected}
    assert set(rejected) == {"a#3", "#4", "e", "#7"}
    assert rejected["a#3"].error.startswith("duplicate id 'a' (first used by record 1)")
    assert rejected["a#3"].source_id == "a"
    assert rejected["#4"].error.startswith("invalid JSON")
    assert rejected["e"].error == "empty text"
    assert "longer than" in rejected["#7"].error
    all_keys = [k for c in plan.chunks for k in c.ticket_ids] + [r.id for r in plan.rejected]
    assert len(all_keys) == len(set(all_keys)) == plan.records


def test_generated_keys_never_collide_with_explicit_ids():
    records = _records(b'{"text": "no id"}\n', b'{"id": "#1", "text": "explicitly #1"}\n')
    plan = plan_chunks(records, chunk_size=10)
    keys = [k for c in plan.chunks for k in c.ticket_ids] + [r.id for r in plan.rejected]
    assert len(set(keys)) == 2 and "#1" in keys


def test_chunks_hold_at_most_chunk_size_tickets_and_are_written_as_they_fill():
    written = []
    records = _records(
        *[json.dumps({"id": f"t{i}", "text": f"ticket {i}"}).encode() + b"\n" for i in range(7)]
    )
    plan = plan_chunks(records, chunk_size=3, on_chunk=written.append)
    assert [len(c.ticket_ids) for c in plan.chunks] == [3, 3, 1]
    assert [c.number for c in written] == [1, 2, 3]
    lines = [json.loads(line) for line in written[0].body.splitlines()]
    assert lines == [{"id": f"t{i}", "text": f"ticket {i}"} for i in range(3)]


def test_documented_success_notification_parses():
    n = AsyncInferenceNotification.model_validate(DOCUMENTED_SUCCESS)
    assert n.succeeded
    assert n.output_location == "s3://bucket/output_directory/prediction.out"
    assert n.requestParameters.inputLocation == "s3://bucket/input-directory/input-data.csv"


def test_error_notification_variants_are_failures_with_reasons():
    plain = AsyncInferenceNotification.model_validate(DOCUMENTED_ERROR)
    assert not plain.succeeded and plain.failure_location is None
    assert plain.failure_description.startswith("ClientError: Received server error (500)")
    nested = AsyncInferenceNotification.model_validate(
        {**DOCUMENTED_ERROR, "responseParameters": {"failureLocation": "s3://b/f-error.out"}}
    )
    top = AsyncInferenceNotification.model_validate(
        {**DOCUMENTED_ERROR, "failureLocation": "s3://b/g-error.out"}
    )
    assert nested.failure_location == "s3://b/f-error.out"
    assert top.failure_location == "s3://b/g-error.out"
    expired = AsyncInferenceNotification.model_validate(
        {k: v for k, v in DOCUMENTED_ERROR.items() if k != "failureReason"} | {"invocationStatus": "Expired"}
    )
    assert not expired.succeeded and "Expired" in expired.failure_description
    body = AsyncInferenceNotification.model_validate(
        {**DOCUMENTED_SUCCESS, "responseBody": {"content": "eyJ4IjogMX0=", "encoding": "BASE64"}}
    )
    assert body.succeeded
    no_output = AsyncInferenceNotification.model_validate({**DOCUMENTED_SUCCESS, "responseParameters": {}})
    assert not no_output.succeeded and "without an outputLocation" in no_output.failure_description


def test_s3_event_keys_are_url_decoded_and_test_events_have_no_records():
    event = S3Event.model_validate(
        {
            "Records": [
                {
                    "eventSource": "aws:s3",
                    "eventName": "ObjectCreated:Put",
                    "eventTime": "2026-01-01T00:00:00.000Z",
                    "s3": {
                        "bucket": {"name": "in"},
                        "object": {"key": "incoming/my+file%281%29%2Bv2.jsonl", "size": 10, "eTag": "e"},
                    },
                }
            ]
        }
    )
    assert event.Records[0].s3.object.key == "incoming/my file(1)+v2.jsonl"
    assert event.Records[0].is_object_created
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "in", "RequestId": "x"}
    assert S3Event.model_validate(test_event).Records == []


def test_inference_ids_round_trip_and_fit_the_api_limit():
    inference_id = inference_id_for("a-very-long-file-stem-xx-0123456789ab", 12345)
    assert len(inference_id) <= 64
    assert parse_inference_id(inference_id) == ("a-very-long-file-stem-xx-0123456789ab", 12345)
    assert parse_inference_id("11111111-2222-3333-4444-555555555555") is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("REQUEST_TTL_SECONDS", "59"), ("INVOCATION_TIMEOUT_SECONDS", "3601"), ("CHUNK_SIZE", "0")],
)
def test_settings_reject_values_the_api_would_reject(name: str, value: str):
    env = {
        "ENDPOINT_NAME": "ep",
        "JOBS_TABLE": "jobs",
        "OUTPUT_BUCKET": "out",
        "RESULTS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:results",
        name: value,
    }
    with pytest.raises(ValueError, match=name):
        DispatcherSettings.from_env(env)
