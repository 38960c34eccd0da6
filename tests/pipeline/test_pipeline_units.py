"""Pure logic: ticket keys and chunking, event and notification parsing, inference ids."""

from __future__ import annotations

import json

import pytest

from ticket_pipeline.chunking import MAX_ID_CHARS, Chunker, plan_chunks
from ticket_pipeline.events import DispatcherEvent
from ticket_pipeline.jobs import inference_id_for, parse_inference_id
from ticket_pipeline.keys import KeyRegistry
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
    assert [c.ticket_ids for c in plan.chunks] == [["a", "<record 2>", "7"]]
    rejected = {r.id: r for r in plan.rejected}
    assert set(rejected) == {"<record 3>", "<record 4>", "e", "<record 7>"}
    assert rejected["<record 3>"].error.startswith("duplicate id 'a' (first used by record 1)")
    assert rejected["<record 3>"].source_id == "a"
    assert rejected["<record 4>"].error.startswith("invalid JSON")
    assert rejected["e"].error == "empty text"
    assert "longer than" in rejected["<record 7>"].error
    all_keys = [k for c in plan.chunks for k in c.ticket_ids] + [r.id for r in plan.rejected]
    assert len(all_keys) == len(set(all_keys)) == plan.records


def test_generated_keys_never_collide_with_explicit_ids():
    # issue #21: help desks write ticket numbers as "#1"; a record without an id before it must
    # not take that key (and make the real "#1" a duplicate carrying another ticket's label)
    records = _records(
        b'{"text": "no id"}\n',
        b'{"id": "#1", "text": "explicitly #1"}\n',
        b'{"id": "<record 1>", "text": "an id in the reserved namespace"}\n',
    )
    plan = plan_chunks(records, chunk_size=10)
    assert [c.ticket_ids for c in plan.chunks] == [["<record 1>", "#1"]]
    assert [(r.id, r.source_id) for r in plan.rejected] == [("<record 3>", "<record 1>")]
    assert "reserved for records without an id" in plan.rejected[0].error


def test_chunks_hold_at_most_chunk_size_tickets_and_are_handed_out_as_they_fill():
    records = _records(
        *[json.dumps({"id": f"t{i}", "text": f"ticket {i}"}).encode() + b"\n" for i in range(7)]
    )
    with KeyRegistry() as keys:
        chunker = Chunker(3, keys)
        handed_out = [(record.index, chunker.add(record)[0]) for record in records]
        last = chunker.finish()
    full = [(index, chunk.number) for index, chunk in handed_out if chunk is not None]
    assert full == [(2, 1), (5, 2)]  # each chunk leaves as soon as its third ticket is added
    assert (last.number, last.ticket_ids) == (3, ["t6"])
    first = next(chunk for _, chunk in handed_out if chunk is not None)
    lines = [json.loads(line) for line in first.body.splitlines()]
    assert lines == [{"id": f"t{i}", "text": f"ticket {i}"} for i in range(3)]


def test_replayed_records_give_later_records_the_keys_of_a_single_pass():
    """A dispatcher run that continues a file replays the records dispatched before it: the keys
    of the records after the cursor must be the ones one pass over the whole file gives."""
    lines = [
        b'{"id": "a", "text": "x"}\n',
        b'{"text": "no id"}\n',
        b'{"id": "#2", "text": "explicit #2"}\n',
        b'{"id": "a", "text": "duplicate of the first"}\n',
        b'{"text": "no id either"}\n',
        b'{"id": "#2", "text": "explicit #2 again"}\n',
    ]
    one_pass = plan_chunks(_records(*lines), chunk_size=2)
    with KeyRegistry() as keys:
        chunker = Chunker(2, keys, first_chunk=2)
        for record in _records(*lines):
            if chunker.replayed < 3:
                chunker.replay(record)
            else:
                chunker.add(record)
        rejected_after = [r for r in one_pass.rejected if r.record > 3]
        assert chunker.rejected == len(rejected_after) == 2
        last = chunker.finish()
    assert last.ticket_ids == one_pass.chunks[-1].ticket_ids[-1:] == ["<record 5>"]
    assert {r.id for r in rejected_after} == {"<record 4>", "<record 6>"}


def test_the_key_registry_is_exact_and_on_disk():
    with KeyRegistry() as keys:
        for i in range(20_000):
            assert keys.claim(f"T-{i}", i + 1) is None
        assert keys.claim("T-123", 99_999) == 124
        assert "T-19999" in keys and "T-20000" not in keys
        assert keys.size == 20_000
        directory = keys._dir
    import os

    assert not os.path.exists(directory)


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
    event = DispatcherEvent.model_validate(
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
    assert DispatcherEvent.model_validate(test_event).Records == []


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


def test_summary_groups_the_readers_per_record_errors_without_the_line_they_name():
    from ticket_pipeline.results import _reason_class

    # what the reader writes for records whose id it could not read (triage_core.records.at_line)
    first = _reason_class("invalid JSON: Expecting value (line 3)")
    assert (
        first == _reason_class("invalid JSON: Expecting value (line 17)") == "invalid JSON: Expecting value"
    )
    assert _reason_class("unclosed quote (lines 4-9)") == "unclosed quote"
    # a location inside the message is part of the reason, not where the record is
    assert (
        _reason_class("record is larger than 8 MB (line 2) in chunk")
        == "record is larger than 8 MB (line 2) in chunk"
    )
    assert _reason_class("duplicate id 'a#4' (first used by record 1)") == "duplicate id"
