"""triage_core.records as the server uses it: bodies cut into arbitrary chunks, size limits."""

from __future__ import annotations

import json

import pytest

from triage_core.records import OversizedLine, iter_csv, iter_jsonl, split_lines


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 3, 7, 64, 10_000])
def test_split_lines_is_independent_of_chunk_boundaries(size):
    data = b'{"text": "a"}\n\n{"text": "bb"}\r\n{"text": "ccc"}'
    assert list(split_lines(chunked(data, size), 1000)) == data.splitlines(keepends=True)


def test_split_lines_replaces_an_oversized_line_and_resyncs():
    data = b"short\n" + b"x" * 50 + b"\nafter\n" + b"y" * 30
    lines = list(split_lines(chunked(data, 8), 20))
    assert lines[0] == b"short\n"
    assert isinstance(lines[1], OversizedLine) and lines[1].limit == 20
    assert lines[2] == b"after\n"
    assert isinstance(lines[3], OversizedLine)


def test_jsonl_oversized_line_is_a_record_error_in_place():
    data = b"\n".join(
        json.dumps({"id": str(i), "text": t}).encode() for i, t in enumerate(["a", "b" * 100, "c"])
    )
    records = list(iter_jsonl(split_lines(chunked(data, 5), 60)))
    assert [r.index for r in records] == [0, 1, 2]
    assert [r.error for r in records] == [None, "record is larger than 60 bytes", None]


def test_csv_quoted_newlines_across_chunks_and_a_big_field():
    big = "word " * 60_000  # 300 kB: over the csv module's default 128 kB field limit
    data = ('id,text\n1,"two\nlines"\n2,' + big + "\n3,last\n").encode()
    records = list(iter_csv(split_lines(chunked(data, 4096), 1 << 20)))
    assert [(r.id, r.error) for r in records] == [("1", None), ("2", None), ("3", None)]
    assert records[0].text == "two\nlines"


def test_csv_oversized_row_and_nul_byte_are_record_errors():
    data = b"id,text\n1,ok\n2," + b"z" * 100 + b"\n3,fine\n4,nul\x00byte\n5,end\n"
    records = list(iter_csv(split_lines(chunked(data, 16), 50)))
    assert [r.index for r in records] == [0, 1, 2, 3, 4]
    assert records[1].error == "record is larger than 50 bytes"
    assert records[0].ok and records[2].ok and records[4].ok
    assert records[3].ok or records[3].error.startswith("malformed CSV row")
