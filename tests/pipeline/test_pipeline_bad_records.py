"""Issue #21 through the real dispatcher handler against moto: one bad record never fails the
file (a lone surrogate, a record nested 50,000 deep: each a rejected record, the others
dispatched, no crash, no DLQ), help-desk ids such as "#1" keep their own key, bytes that are not
text and a truncated gzip end with an error that says so, never "complete"."""

from __future__ import annotations

import gzip
import json

from pipeline_helpers import Aws
from test_pipeline_ingest import dispatched, drop_file

from ticket_pipeline import intake


def test_a_lone_surrogate_and_a_deeply_nested_record_are_rejected_records_not_a_crash(aws: Aws, lambda_env):
    body = (
        b'{"id": "ok-1", "text": "my card has not arrived"}\n'
        b'{"id": "cut", "text": "emoji cut in half \\ud83d"}\n'
        b'{"id": "deep", "text": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n"
        b'{"id": "ok-2", "text": "refund please"}\n'
    )
    job = drop_file(aws, "incoming/js-service.jsonl", body)
    assert job["outcome"] == "submitted" and "error" not in job
    tickets, rejected = dispatched(aws, job)
    assert [t["id"] for t in tickets] == ["ok-1", "ok-2"]
    reasons = {r["id"]: r["error"] for r in rejected}
    assert set(reasons) == {"cut", "deep"}
    assert "lone UTF-16 surrogate" in reasons["cut"] and "nested deeper" in reasons["deep"]


def test_help_desk_ids_like_hash_one_keep_their_own_key(aws: Aws, lambda_env):
    body = b'{"text": "no id"}\n{"id": "#1", "text": "ticket number one"}\n{"id": "#2", "text": "two"}\n'
    job = drop_file(aws, "incoming/helpdesk.jsonl", body)
    tickets, rejected = dispatched(aws, job)
    assert [(t["id"], t["text"]) for t in tickets] == [
        ("<record 1>", "no id"),
        ("#1", "ticket number one"),
        ("#2", "two"),
    ]
    assert rejected == []


def test_an_xlsx_dropped_as_json_lines_is_a_whole_file_failure_naming_it(aws: Aws, lambda_env):
    job = drop_file(
        aws, "incoming/export.jsonl", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00[Content_Types].xml"
    )
    assert job["outcome"] == "rejected_file" and "a ZIP archive (an .xlsx" in job["error"]
    (message,) = aws.results_messages()
    assert message["status"] == "partial" and message["tickets"] == 0


def test_a_truncated_gzip_ends_partial_saying_where_reading_stopped(aws: Aws, lambda_env):
    lines = b"".join(
        json.dumps({"id": f"t{i}", "text": f"ticket {i} " * 30}).encode() + b"\n" for i in range(4000)
    )
    packed = gzip.compress(lines)
    job = drop_file(aws, "incoming/cut.jsonl.gz", packed[: len(packed) // 2])
    tickets, rejected = dispatched(aws, job)
    assert 0 < len(tickets) < 4000 and rejected == []
    assert [t["id"] for t in tickets] == [f"t{i}" for i in range(len(tickets))]
    assert job["error"].startswith("wrong format: the gzip data is corrupt or truncated")
    assert f"(the last line read whole: {len(tickets):,})" in job["error"]
    # the job keeps the error: its results message, when its chunks are answered, is partial
    assert aws.jobs().get_job(job["job_id"])["error"] == job["error"]


def test_a_reader_bug_on_one_record_ends_the_job_with_the_records_read_so_far(monkeypatch):
    """The safety net: an unexpected error while reading becomes the job's error, saying where
    reading stopped (the dispatcher is not retried into the DLQ while the job waits for its
    deadline)."""

    def records():
        yield from ("first", "second")
        raise RecursionError("maximum recursion depth exceeded")

    guarded = intake._guarded(records())  # type: ignore[arg-type]
    assert next(guarded) == "first" and next(guarded) == "second"
    try:
        next(guarded)
    except intake.RecordFormatError as exc:
        assert str(exc) == "reading stopped after record 2: RecursionError: maximum recursion depth exceeded"
    else:
        raise AssertionError("no error")
