"""Files as upstream systems drop them, through the real dispatcher handler against moto's S3,
DynamoDB and SNS (real boto3, S3 events in Lambda's shape).

For each file: every record of the file is either a ticket in a chunk (with its id and its text
as written) or a rejected record, exactly once; a file the dispatcher cannot read as a whole still
produces a results message with the reason. (Chunks are invoked on moto's SageMaker runtime,
which answers with canned results: what the endpoint does with them is tested elsewhere.)
"""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest
from pipeline_helpers import Aws, Context, s3_put_event

from local_pipeline.aws import patched_environ
from tests.core.ticket_files import (
    EXCEL_ROWS,
    broken_quote_csv,
    excel_csv,
    excel_unicode_text,
    expected_excel_texts,
    gzip_cli,
    jsonl,
    mac_classic_csv,
    zendesk_export,
    zendesk_texts,
)
from ticket_pipeline import dispatcher

EXCEL_METADATA = {"id-field": "ticket_id", "text-fields": "subject,body"}


def drop_file(aws: Aws, key: str, body: bytes, **put: Any) -> dict[str, Any]:
    """Upload like an upstream system (content type, encoding, metadata) and run the dispatcher
    on the object's S3 event."""
    aws.s3.put_object(Bucket=aws.names.input_bucket, Key=key, Body=body, **put)
    (job,) = dispatcher.handler(s3_put_event(aws.names.input_bucket, key, len(body)), Context())["jobs"]
    return job


def dispatched(aws: Aws, job: dict[str, Any]) -> tuple[list[dict], list[dict]]:
    """The tickets written to the job's chunks, and its rejected records."""
    tickets = []
    for chunk in aws.jobs().list_chunks(job["job_id"]):
        rows = aws.read_jsonl(chunk["input_location"])
        assert [r["id"] for r in rows] == chunk["ticket_ids"]
        tickets += rows
    meta = aws.jobs().get_job(job["job_id"])
    rejected = [row for part in meta.get("rejected_parts", []) for row in aws.read_jsonl(part)]
    assert job["tickets"] == len(tickets) + len(rejected)
    return tickets, rejected


def excel_tickets() -> list[dict]:
    return [{"id": r[0], "text": t} for r, t in zip(EXCEL_ROWS, expected_excel_texts(), strict=True)]


def test_an_excel_cp1252_export_mapped_by_the_objects_metadata(aws: Aws, lambda_env):
    job = drop_file(aws, "incoming/export.csv", excel_csv(), ContentType="text/csv", Metadata=EXCEL_METADATA)
    assert job["outcome"] == "submitted"
    assert dispatched(aws, job) == (excel_tickets(), [])


def test_excel_unicode_text_and_csv_utf8_with_bom(aws: Aws, lambda_env):
    job = drop_file(aws, "incoming/export.tsv", excel_unicode_text(), Metadata=EXCEL_METADATA)
    assert dispatched(aws, job) == (excel_tickets(), [])
    job = drop_file(aws, "incoming/export-utf8.csv", excel_csv("utf-8", bom=True), Metadata=EXCEL_METADATA)
    assert dispatched(aws, job) == (excel_tickets(), [])


def test_cr_only_line_endings_are_dispatched_not_dead_lettered(aws: Aws, lambda_env):
    job = drop_file(aws, "incoming/classic-mac.csv", mac_classic_csv())
    assert job["outcome"] == "submitted"
    tickets, rejected = dispatched(aws, job)
    assert [t["id"] for t in tickets] == ["1", "2", "3"] and rejected == []
    assert tickets[0]["text"] == "my card\nhas not arrived"


def test_a_utf8_bom_keeps_the_first_record(aws: Aws, lambda_env):
    body = b"\xef\xbb\xbf" + jsonl([{"id": "first", "text": "card lost"}, {"id": "second", "text": "rate"}])
    tickets, _ = dispatched(aws, drop_file(aws, "incoming/bom.jsonl", body))
    assert [t["id"] for t in tickets] == ["first", "second"]


@pytest.mark.parametrize(
    "key, put",
    [
        ("incoming/tickets.jsonl.gz", {}),  # gzip -c tickets.jsonl > tickets.jsonl.gz
        ("incoming/tickets.jsonl", {"ContentEncoding": "gzip"}),  # aws s3 cp --content-encoding gzip
    ],
)
def test_gzip_files_by_name_or_content_encoding_and_concatenated_members(aws: Aws, lambda_env, key, put):
    first = jsonl([{"id": f"a{i}", "text": "card lost"} for i in range(4)])
    second = jsonl([{"id": f"b{i}", "text": "exchange rate"} for i in range(3)])
    job = drop_file(aws, key, gzip_cli(first) + gzip_cli(second), **put)  # cat a.gz b.gz
    tickets, rejected = dispatched(aws, job)
    assert [t["id"] for t in tickets] == [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(3)]
    assert rejected == [] and job["chunks"] == 3


def test_a_help_desk_json_export_mapped_by_the_deployment_setting(aws: Aws, lambda_env):
    with patched_environ({"TICKET_FIELDS": '{"id": "id", "text": ["subject", "description"]}'}):
        dispatcher.runtime.cache_clear()
        job = drop_file(
            aws, "incoming/zendesk-2026-07.json", zendesk_export(), ContentType="application/json"
        )
    tickets, rejected = dispatched(aws, job)
    assert tickets == [
        {"id": i, "text": t} for i, t in zip(["35436", "35437", "35438"], zendesk_texts(), strict=True)
    ]
    assert rejected == []


def test_a_file_without_the_configured_fields_is_a_whole_file_failure_with_a_results_message(
    aws: Aws, lambda_env
):
    job = drop_file(aws, "incoming/zendesk.json.gz", gzip.compress(zendesk_export()))  # default map id/text
    assert job["outcome"] == "rejected_file"
    for reason in ("no record has the text field(s) ['text']", "'description'", "'subject'"):
        assert reason in job["error"]
    (message,) = aws.results_messages()
    assert message["status"] == "partial" and message["tickets"] == 0
    assert "no record has the text field(s) ['text']" in message["error"]
    assert "'subject'" in aws.read_json(message["summary"])["error"]
    assert aws.jobs().get_job(job["job_id"])["status"] == "partial"


def test_a_broken_quote_rejects_one_row_naming_it_and_the_rows_after_it_are_dispatched(aws: Aws, lambda_env):
    job = drop_file(aws, "incoming/broken.csv", broken_quote_csv())
    tickets, rejected = dispatched(aws, job)
    assert [t["id"] for t in tickets] == ["1", "3", "4", "5"]
    (bad,) = rejected
    assert (bad["id"], bad["record"], bad["source_id"]) == ("2", 2, "2")
    assert bad["error"].startswith("unclosed quote") and "line 3" in bad["error"]
    assert json.dumps(tickets[1]) == json.dumps({"id": "3", "text": "what is the exchange rate, please?"})


def test_windows_1252_text_in_a_utf8_json_lines_file_is_a_ticket(aws: Aws, lambda_env):
    body = jsonl([{"id": "u", "text": "déjà vu"}]) + '{"id": "w", "text": "“Word” – 20 €"}\n'.encode("cp1252")
    tickets, rejected = dispatched(aws, drop_file(aws, "incoming/mixed.jsonl", body))
    assert (
        tickets == [{"id": "u", "text": "déjà vu"}, {"id": "w", "text": "“Word” – 20 €"}] and rejected == []
    )
