"""The edges of the ticket reader where a ticket could be dropped or doubled without anyone
noticing: blank lines and rows in the middle of a file, records without the text field, bare
JSON strings, byte-order marks, malformed and oversized CSV, records exactly at the size limit.

Each case reads through :class:`triage_core.reader.TicketReader` (bytes in, as the dispatcher
and the server read) and checks every record: its position, id, text and error. "Every ticket
once" means the count of records equals the count of tickets in the file, good or bad.
"""

from __future__ import annotations

import codecs
import gzip
import json

import pytest

from tests.core.ticket_files import chunked
from triage_core.formats import detect_delimiter, iter_csv, iter_jsonl, numbered
from triage_core.reader import CSV, JSON, JSONL, TicketReader, detect_format, read_tickets, split_media_type
from triage_core.records import (
    FieldMap,
    RecordFormatError,
    TicketRecord,
    at_line,
    check_shape,
    escapes_surrogate,
    make_record,
    normalise_id,
    record_from_cells,
    record_from_object,
    sniff_id,
)


def read(data: bytes, size: int = 5, **options) -> list[tuple]:
    """Every record of ``data`` streamed in ``size``-byte chunks, as (index, id, text, error)."""
    return [(r.index, r.id, r.text, r.error) for r in TicketReader(iter(chunked(data, size)), **options)]


# --- blank lines and rows in the middle ------------------------------------------------------
@pytest.mark.parametrize("blank", [b"\n", b"   \n", b"\t\r\n", b"\r\n"])
def test_a_blank_line_mid_jsonl_is_not_a_record_and_the_rest_is_read(blank: bytes):
    data = b'{"id": "a", "text": "one"}\n' + blank + b'{"id": "b", "text": "two"}\n' + blank
    data += b'{"id": "c", "text": "three"}\n'
    assert read(data, key="t.jsonl") == [
        (0, "a", "one", None),
        (1, "b", "two", None),
        (2, "c", "three", None),
    ]


@pytest.mark.parametrize("blank", [b"\n", b",\n", b" , \n", b"\r\n"])
def test_a_blank_csv_row_mid_file_is_not_a_record_and_the_rest_is_read(blank: bytes):
    data = b"id,text\n" + blank + b"1,one\n" + blank + blank + b"2,two\n3,three\n"
    assert read(data, key="t.csv") == [
        (0, "1", "one", None),
        (1, "2", "two", None),
        (2, "3", "three", None),
    ]


def test_blank_lines_before_the_csv_header_are_skipped():
    assert read(b"\n  \n\nid,text\n1,one\n", key="t.csv") == [(0, "1", "one", None)]
    assert read(b"\n\n \n", key="t.csv") == []


# --- JSON Lines records that are not the usual object ----------------------------------------
def test_a_jsonl_record_without_the_text_field_is_a_record_error_naming_its_line():
    data = b'{"id": "a", "text": "ok"}\n{"id": "b", "body": "wrong field"}\n{"body": "no id"}\n'
    assert read(data, key="t.jsonl") == [
        (0, "a", "ok", None),
        (1, "b", None, "missing field 'text'"),
        (2, None, None, "missing field 'text' (line 3)"),
    ]


def test_a_bare_json_string_line_is_a_ticket_without_id():
    data = b'{"id": "a", "text": "ok"}\n"printer on fire"\n""\n"   "\n42\n[1]\nnull\n'
    assert read(data, key="t.jsonl") == [
        (0, "a", "ok", None),
        (1, None, "printer on fire", None),
        (2, None, None, "empty text (line 3)"),
        (3, None, None, "empty text (line 4)"),
        (4, None, None, "a ticket must be a JSON object with 'text' (line 5)"),
        (5, None, None, "a ticket must be a JSON object with 'text' (line 6)"),
        (6, None, None, "a ticket must be a JSON object with 'text' (line 7)"),
    ]


def test_a_json_array_of_bare_strings_and_other_values():
    data = b'[{"id": 1, "text": "ok"}, "just text", 3, {"id": "x", "text": ""}]'
    assert read(data, key="t.json") == [
        (0, "1", "ok", None),
        (1, None, "just text", None),
        (2, None, None, "a ticket must be a JSON object with 'text'"),
        (3, "x", None, "empty text"),
    ]


def test_invalid_json_lines_keep_their_id_when_it_can_be_read():
    data = b'{"id": "a", "text": "ok"}\n{"id": "b", "text": "cut\n{"id": 12, oops}\n{oops}\n'
    records = read(data, key="t.jsonl")
    assert [(r[0], r[1]) for r in records] == [(0, "a"), (1, "b"), (2, "12"), (3, None)]
    assert records[1][3].startswith("invalid JSON: Unterminated string")
    assert records[3][3].startswith("invalid JSON: ") and records[3][3].endswith("(line 4)")
    assert all(r[2] is None for r in records[1:])


def test_invalid_bytes_in_a_jsonl_line_are_one_record_error():
    lines = [b'{"id": "a", "text": "ok"}\n', b"\xff\xfe{bad\n", b'{"id": "c", "text": "fine"}\n']
    records = list(iter_jsonl(lines))
    assert [(r.index, r.id, r.ok) for r in records] == [(0, "a", True), (1, None, False), (2, "c", True)]
    assert records[1].error.endswith("(line 2)")


# --- byte-order marks -------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["utf-8-sig", "utf-16", "utf-32"])
@pytest.mark.parametrize("size", [1, 2, 5, 4096])
def test_a_csv_with_a_bom_has_the_same_header_and_rows(codec: str, size: int):
    data = "id,text\r\n1,café\r\n2,naïve €\r\n".encode(codec)
    assert data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF8[:2], codecs.BOM_UTF32_LE[:2])
    assert read(data, size=size, key="t.csv") == [(0, "1", "café", None), (1, "2", "naïve €", None)]


def test_a_bom_is_dropped_only_at_the_start():
    data = codecs.BOM_UTF8 + b'{"id": "a", "text": "x"}\n{"id": "b", "text": "\xef\xbb\xbfkeeps it"}\n'
    assert read(data, key="t.jsonl") == [(0, "a", "x", None), (1, "b", "\ufeffkeeps it", None)]


# --- malformed and oversized CSV ---------------------------------------------------------------
def test_a_malformed_csv_row_is_one_error_and_every_later_row_is_read():
    data = b'id,text\n1,ok\n2,"closed" stray\n3,fine\n4,"also "bad\n5,last\n'
    records = read(data, key="t.csv")
    assert [(r[0], r[1], r[2]) for r in records] == [
        (0, "1", "ok"),
        (1, "2", None),
        (2, "3", "fine"),
        (3, "4", None),
        (4, "5", "last"),
    ]
    assert records[1][3] == (
        "stray text after a closing quote in the row starting on line 3 "
        '(a quote inside a quoted field is written "")'
    )
    assert records[3][3].startswith("stray text after a closing quote in the row starting on line 5")


def test_an_unclosed_quote_at_the_end_never_closes_and_loses_only_its_row():
    data = b'id,text\n1,ok\n2,"never closed\n3,swallowed?\n'
    records = read(data, key="t.csv")
    assert records[0] == (0, "1", "ok", None)
    assert records[1][:3] == (1, "2", None)
    assert records[1][3] == "unclosed quote: the quoted field in the row starting on line 3 never closes"
    assert records[2] == (2, "3", "swallowed?", None)  # resumed at the line after the row's first
    assert len(records) == 3


def test_a_quote_closing_lines_later_with_stray_text_names_both_lines():
    data = b'id,text\n1,"opens\nstill open" stray\n2,next\n'
    records = read(data, key="t.csv")
    assert records[0][3] == (
        "unclosed quote: the quoted field in the row starting on line 2 closes on line 3 "
        "followed by stray text"
    )
    # reading resumes at line 3, the line after the broken row's first: a row of its own here
    assert records[1] == (1, 'still open" stray', None, "empty text")
    assert records[-1] == (2, "2", "next", None)


def test_a_row_with_a_line_over_the_limit_is_one_error():
    data = b'id,text\n1,"short\n' + b"x" * 50 + b'"\n2,next\n'
    records = read(data, key="t.csv", max_record_chars=20)
    assert records[0] == (
        0,
        "1",
        None,
        "the row starting on line 2 has a line larger than 20 characters (line 3)",
    )
    assert records[-1] == (len(records) - 1, "2", "next", None)
    one_line = read(b"id,text\n1," + b"y" * 30 + b"\n2,ok\n", key="t.csv", max_record_chars=20)
    assert one_line == [(0, None, None, "record is larger than 20 characters (line 2)"), (1, "2", "ok", None)]


def test_an_oversized_or_malformed_header_fails_the_file():
    with pytest.raises(RecordFormatError, match=r"^the CSV header \(line 2\) is larger than 10 characters$"):
        read(b"\nid,text," + b"c" * 20 + b"\n1,x\n", key="t.csv", max_record_chars=10)
    with pytest.raises(RecordFormatError, match=r"^the CSV header \(line 1\) is malformed$"):
        read(b'id,"text\n1,x\n', key="t.csv")
    with pytest.raises(RecordFormatError, match=r"^the CSV header \(line 1\) is malformed$"):
        read(b'id,"te"xt\n1,x\n', key="t.csv")
    with pytest.raises(RecordFormatError) as exc:
        read(b"id,body\n1,x\n", key="t.csv")
    assert str(exc.value) == (
        "the CSV header has columns ['id', 'body']; expected text column(s) ['text'] (missing ['text']) "
        "and optionally id column 'id': set the field mapping to the file's column names"
    )


def test_a_csv_without_an_id_column_and_a_mixed_case_header():
    assert read(b"Subject;TEXT\nhello;world\n", key="t.csv") == [(0, None, "world", None)]
    fields = FieldMap("Ticket", ("Subject", "Body"))
    data = b"ticket|subject|body\nT1| Printer | on fire \nT2||\n"
    assert read(data, key="t.csv", fields=fields) == [
        (0, "T1", "Printer\n\non fire", None),
        (1, "T2", None, "empty text"),
    ]


def test_too_many_cells_keeps_the_id_and_names_the_line():
    records = read(b"id,text\n1,a,b\n,c,d\n", key="t.csv")
    assert records == [
        (0, "1", None, "expected 2 columns, got 3"),
        (1, None, None, "expected 2 columns, got 3 (line 3)"),
    ]


def test_the_id_of_a_broken_row_is_read_from_its_first_line_only_when_safe():
    from triage_core.formats import _id_from_line

    assert _id_from_line('7,"open', ",", 0) == "7"
    assert _id_from_line('"7,"open', ",", 0) is None
    assert _id_from_line("7", ",", 0) is None  # the id alone: not before a broken field
    assert _id_from_line('a,7,"x', ",", 1) == "7"
    assert _id_from_line('a,7,"x', ",", None) is None
    assert _id_from_line('a,7,"x', ",", 2) is None


@pytest.mark.parametrize(
    "header, delimiter",
    [("id,text", ","), ("id;text", ";"), ("id\ttext", "\t"), ("id|text", "|"), ("id:text", ","), ('"x', ",")],
)
def test_the_delimiter_is_the_one_that_finds_the_text_column(header: str, delimiter: str):
    assert detect_delimiter(header + "\n", FieldMap()) == delimiter


def test_headerless_csv_with_configured_columns():
    data = b"1,first\n2,second\n"
    records = list(TicketReader(iter([data]), format=CSV, csv_columns=["id", "text"]))
    assert [(r.index, r.id, r.text) for r in records] == [(0, "1", "first"), (1, "2", "second")]
    with_header = list(TicketReader(iter([b"ID,Text\n1,first\n"]), format=CSV, csv_columns=["id", "text"]))
    assert [(r.id, r.text) for r in with_header] == [("1", "first")]


# --- the record size limit, exactly ------------------------------------------------------------
@pytest.mark.parametrize("key", ["t.jsonl", "t.csv"])
def test_a_record_exactly_at_the_limit_is_read_one_over_is_not(key: str):
    def line(n: int) -> bytes:
        if key == "t.csv":
            return b"1," + b"x" * (n - 2)
        body = b'{"id": "1", "text": "'
        return body + b"x" * (n - len(body) - 2) + b'"}'

    limit = 64
    header = b"id,text\n" if key == "t.csv" else b""
    at = read(header + line(limit) + b"\n", key=key, max_record_chars=limit)
    assert len(at) == 1 and at[0][3] is None and at[0][1] == "1"
    at_eof = read(header + line(limit), key=key, max_record_chars=limit)  # no final newline
    assert len(at_eof) == 1 and at_eof[0][3] is None
    over = read(header + line(limit + 1) + b"\n2\n", key=key, max_record_chars=limit)
    assert over[0] == (
        0,
        None,
        None,
        f"record is larger than {limit} characters (line {len(header) // 8 + 1})",
    )
    over_eof = read(header + line(limit + 1), key=key, max_record_chars=limit)
    assert over_eof == [
        (0, None, None, f"record is larger than {limit} characters (line {len(header) // 8 + 1})")
    ]


# --- format detection and media types ----------------------------------------------------------
@pytest.mark.parametrize(
    "key, content_type, expected",
    [
        ("in/a.JSONL.GZ", None, JSONL),
        ("in/a.ndjson.gzip", "text/csv", JSONL),
        ("a.jsonlines", None, JSONL),
        ("a.tsv", None, CSV),
        ("a.json.gz", None, JSON),
        ("dir.csv/file", "application/x-ndjson; charset=utf-8", JSONL),
        ("noext", "Application/JSON", JSON),
        ("noext", "text/json", JSON),
        ("noext", "application/csv", CSV),
        ("noext", "text/tab-separated-values", CSV),
        ("a.gz", "application/jsonl", JSONL),
        ("a.gz.csv", None, CSV),
        ("a.txt", "application/x-jsonlines", JSONL),
    ],
)
def test_detect_format(key: str, content_type: str | None, expected: str):
    assert detect_format(key, content_type) == expected


@pytest.mark.parametrize(
    "key, content_type", [("a.txt", None), ("a.gz", None), ("a", "text/plain"), ("", "")]
)
def test_an_unsupported_type_names_the_key_and_the_content_type(key: str, content_type: str | None):
    with pytest.raises(RecordFormatError) as exc:
        detect_format(key, content_type)
    assert str(exc.value).startswith(f"unsupported file type for {key!r} (content type {content_type!r}): ")


def test_split_media_type():
    assert split_media_type(' Text/CSV ; Charset="Windows-1252" ; header=present') == (
        "text/csv",
        {"charset": "windows-1252", "header": "present"},
    )
    assert split_media_type(None) == ("", {})
    assert split_media_type("application/json;x") == ("application/json", {"x": ""})


def test_a_declared_charset_is_used_and_reported():
    reader = TicketReader(
        iter(["id,text\n1,café\n".encode("cp1252")]), key="t", content_type="text/csv; charset=cp1252"
    )
    assert reader.format == CSV and reader.charset == "cp1252"
    assert [(r.id, r.text) for r in reader] == [("1", "café")]
    assert reader.encoding == "windows-1252" and reader.compressed is False
    plain = TicketReader(iter([b"id,text\n1,x\n"]), key="t.csv", content_type="text/csv")
    assert plain.charset is None


def test_reader_options_reach_the_formats():
    fields = FieldMap("key", ("body",))
    meta = {"Id-Field": "ref", "Text-Fields": "subject,message"}
    reader = read_tickets(
        iter([b'{"ref": 5, "subject": "a", "message": "b"}\n']), key="x.jsonl", fields=fields, metadata=meta
    )
    assert isinstance(reader, TicketReader)
    assert reader.fields == FieldMap("ref", ("subject", "message"))
    assert [(r.id, r.text) for r in reader] == [("5", "a\n\nb")]
    assert reader.members == {}


def test_json_members_are_kept_when_asked():
    data = b'{"parameters": {"top_k": 2}, "inputs": [{"id": "a", "text": "x"}], "other": 1}'
    reader = TicketReader(iter([data]), format=JSON, keep_members=("parameters",))
    assert [(r.id, r.text) for r in reader] == [("a", "x")]
    assert reader.members == {"parameters": {"top_k": 2}}
    assert reader.json is not None and reader.json.objects == 1


def test_an_empty_body_is_no_records_in_every_format():
    for key in ("t.jsonl", "t.csv", "t.json"):
        reader = TicketReader(iter([b""]), key=key)
        assert list(reader) == []


def test_whole_source_errors_become_record_format_errors():
    with pytest.raises(RecordFormatError, match=r"^the gzip data is corrupt or truncated"):
        read(b"\x1f\x8b\x08\x00garbage-not-gzip", key="t.jsonl")
    with pytest.raises(RecordFormatError, match=r"^the JSON array ends without"):
        read(b'[{"id": 1, "text": "x"}, 2', key="t.json")
    with pytest.raises(RecordFormatError, match=r"^unexpected data after the JSON document"):
        read(b'[{"id": 1, "text": "x"}] junk', key="t.json")


def test_the_decompressed_size_limit_is_passed_on():
    data = gzip.compress(b'{"id": "a", "text": "' + b"x" * 1000 + b'"}\n')
    with pytest.raises(RecordFormatError, match=r"^the data decompresses to more than 100 bytes$"):
        read(data, key="t.jsonl", max_decoded_bytes=100)
    assert read(data, key="t.jsonl", max_decoded_bytes=2000)[0][:2] == (0, "a")


# --- records.py, function by function ----------------------------------------------------------
def test_make_record():
    assert make_record(3, 7, "hi") == TicketRecord(3, "7", "hi", None)
    assert make_record(0, "  ", "hi") == TicketRecord(0, None, "hi", None)
    assert make_record(0, None, None) == TicketRecord(0, None, None, "missing field 'text'")
    assert make_record(0, "a", 5) == TicketRecord(0, "a", None, "field 'text' must be a string")
    assert make_record(0, "a", " \n") == TicketRecord(0, "a", None, "empty text")
    assert make_record(0, True, "x") == TicketRecord(0, None, None, "id must be a string or an integer")
    assert make_record(0, 1.5, "x").error == "id must be a string or an integer"
    assert TicketRecord(0, None, "x").ok and not TicketRecord(0, None, None, "e").ok


def test_normalise_id_and_at_line():
    assert normalise_id(None) is None and normalise_id("") is None and normalise_id(" \t") is None
    assert normalise_id(0) == "0" and normalise_id(" a ") == " a "
    for bad in (False, 1.0, [], {}):
        with pytest.raises(ValueError, match=r"^id must be a string or an integer$"):
            normalise_id(bad)
    assert at_line("e", "id", 7) == "e"
    assert at_line("e", None, None) == "e"
    assert at_line("e", None, 7) == "e (line 7)"
    assert at_line("e", None, "row 3") == "e (row 3)"


def test_record_from_object_fast_path_and_general_path_agree():
    fields = FieldMap()
    cases = [
        ({"id": "a", "text": "x"}, TicketRecord(0, "a", "x")),
        ({"id": 4, "text": "x"}, TicketRecord(0, "4", "x")),
        ({"id": None, "text": "x"}, TicketRecord(0, None, "x")),
        ({"text": "x"}, TicketRecord(0, None, "x")),
        ({"id": " ", "text": "x"}, TicketRecord(0, None, "x")),
        ({"ID": "b", "Text": "y"}, TicketRecord(0, "b", "y")),
        (
            {"id": True, "text": "x"},
            TicketRecord(0, None, None, "id must be a string or an integer (line 9)"),
        ),
        ({"id": "a", "text": None}, TicketRecord(0, "a", None, "missing field 'text'")),
        ({"id": "a", "text": 3}, TicketRecord(0, "a", None, "field 'text' must be a string")),
        ({"text": 3}, TicketRecord(0, None, None, "field 'text' must be a string (line 9)")),
        ({"id": "a", "text": "  "}, TicketRecord(0, "a", None, "empty text")),
        ({"text": ""}, TicketRecord(0, None, None, "empty text (line 9)")),
        ({"id": "a"}, TicketRecord(0, "a", None, "missing field 'text'")),
    ]
    for obj, expected in cases:
        assert record_from_object(0, obj, fields, 9) == expected, obj


def test_record_from_object_with_several_text_fields():
    fields = FieldMap("ticket", ("subject", "body"))
    assert record_from_object(1, {"ticket": "T", "subject": " A ", "body": "B"}, fields, 2) == TicketRecord(
        1, "T", "A\n\nB"
    )
    assert record_from_object(1, {"ticket": "T", "subject": None, "body": "B"}, fields, 2).text == "B"
    assert record_from_object(1, {"Subject": "A", "BODY": " "}, fields, 2) == TicketRecord(1, None, "A")
    assert record_from_object(1, {"ticket": "T"}, fields, 2).error == "missing fields 'subject', 'body'"
    assert record_from_object(1, {}, fields, 2).error == "missing fields 'subject', 'body' (line 2)"
    assert record_from_object(1, {"subject": "", "body": " "}, fields, 2).error == "empty text (line 2)"
    assert (
        record_from_object(1, {"subject": "a", "body": 1}, fields, 2).error
        == "field 'body' must be a string (line 2)"
    )
    assert record_from_object(1, {"ticket": [], "subject": "a"}, fields, 2).error == (
        "id must be a string or an integer (line 2)"
    )


def test_record_from_cells():
    assert record_from_cells(0, " 7 ", [" keep spaces "], 2) == TicketRecord(0, "7", " keep spaces ")
    assert record_from_cells(0, "  ", ["x"], 2) == TicketRecord(0, None, "x")
    assert record_from_cells(0, None, ["a", " ", " b "], 2) == TicketRecord(0, None, "a\n\nb")
    assert record_from_cells(0, None, [" ", ""], 4) == TicketRecord(0, None, None, "empty text (line 4)")
    assert record_from_cells(0, "9", [""], 4) == TicketRecord(0, "9", None, "empty text")


def test_sniff_id():
    from triage_core.records import id_pattern

    pattern = id_pattern(FieldMap("ticket.id", ("text",)))
    assert sniff_id('{"ticket.id": "A-1", "text": "cut', pattern) == "A-1"
    assert sniff_id('{"ticket.id" :  42, "text', pattern) == "42"
    assert sniff_id('{"ticketXid": "A-1"', pattern) is None
    assert sniff_id('{"ticket.id": 4.5, "text', pattern) is None
    assert sniff_id('{"ticket.id": "", "text', pattern) is None
    assert sniff_id('{"ticket.id": "a\\"b", "t', pattern) == 'a"b'
    assert sniff_id('{"ticket.id": "\\ud800", "t', pattern) == "\ud800"
    assert sniff_id('{"ticket.id": "' + "x" * 300 + '"', pattern) is None


def test_check_shape_holds_records_until_the_fields_are_seen():
    fields = FieldMap("id", ("text",))
    good = TicketRecord(1, "b", "x")
    items = [(TicketRecord(0, None, None, "invalid JSON"), None), (good, {"ID": 1, "TEXT": 2}.keys())]
    assert list(check_shape(items, fields)) == [items[0][0], good]
    assert list(check_shape([], fields)) == []
    assert list(check_shape([(TicketRecord(0, None, "s"), None)], fields)) == [TicketRecord(0, None, "s")]
    with pytest.raises(RecordFormatError) as exc:
        list(check_shape([(TicketRecord(0, None, None, "e"), {"body": 1}.keys())], fields))
    assert str(exc.value) == (
        "no record has the text field(s) ['text'] (the first 1 records have ['body']; expected id field "
        "'id', text field(s) 'text'): set the field mapping to the file's field names"
    )


def test_check_shape_gives_up_after_the_sample():
    from triage_core import records

    fields = FieldMap()
    many = [(TicketRecord(i, str(i), None, "missing field 'text'"), {"id": 1}.keys()) for i in range(500)]
    with pytest.raises(RecordFormatError, match=r"the first 100 records have \['id'\]"):
        list(check_shape(iter(many), fields))
    # text seen late, within the sample: every record comes out, in order, once
    late = [
        *many[: records.SHAPE_SAMPLE_RECORDS - 1],
        (TicketRecord(99, "t", "x"), {"text": 1}.keys()),
        (TicketRecord(100, "u", "y"), {"text": 1}.keys()),
    ]
    assert [r.index for r in check_shape(iter(late), fields)] == list(range(101))


def test_field_map_rules():
    assert FieldMap("id", "text").text == ("text",)
    for bad in [
        ("id", ()),
        ("id", ("",)),
        ("", ("t",)),
        ("id", ("x" * 129,)),
        ("id", ("Id",)),
        ("a", ("b", "B")),
    ]:
        with pytest.raises(ValueError):
            FieldMap(bad[0], bad[1])
    assert FieldMap("id", tuple(f"f{i}" for i in range(16))).text[-1] == "f15"
    with pytest.raises(ValueError, match=r"^at most 16 text fields$"):
        FieldMap("id", tuple(f"f{i}" for i in range(17)))
    assert FieldMap.parse(None, None) == FieldMap()
    assert FieldMap.parse(" key ", " a , b ") == FieldMap("key", ("a", "b"))
    assert FieldMap.parse("key", ["a", " b"]) == FieldMap("key", ("a", "b"))
    assert FieldMap.from_spec('{"id": "k", "text": "t"}') == FieldMap("k", ("t",))
    assert FieldMap.from_spec({}) == FieldMap()
    assert FieldMap.from_spec({"text": ["a", "b"]}).spec() == {"id": "id", "text": ["a", "b"]}
    for spec, message in [
        ("nope", "not JSON: 'nope'"),
        ({"id": "a", "other": 1}, 'expected {"id": "<field>", "text": ["<field>", ...]}'),
        ("[1]", 'expected {"id": "<field>", "text": ["<field>", ...]}'),
        ({"text": 5}, '"text" must be a field name or a list of field names'),
    ]:
        with pytest.raises(ValueError) as exc:
            FieldMap.from_spec(spec)
        assert str(exc.value) == message
    base = FieldMap("k", ("a", "b"))
    assert base.override(None) is base and base.override({}) is base and base.override({"x": "y"}) is base
    assert base.override({"ID-FIELD": "n"}) == FieldMap("n", ("a", "b"))
    assert base.override({"text-fields": "c"}) == FieldMap("k", ("c",))
    with pytest.raises(RecordFormatError, match=r"^invalid field mapping in the object metadata: "):
        base.override({"text-fields": "k"})
    assert base.describe() == "id field 'k', text field(s) 'a' + 'b'"


def test_numbered_accepts_pairs_bytes_and_text():
    assert list(numbered([(5, "a\n"), (6, None)])) == [(5, "a\n"), (6, None)]
    assert list(numbered([b"caf\xe9\n", "x\n"])) == [(1, "café\n"), (2, "x\n")]


def test_iter_csv_over_plain_lines():
    assert [(r.id, r.text) for r in iter_csv(["id,text\n", "1,a\n"])] == [("1", "a")]
    assert list(iter_csv([])) == []
    assert [json.dumps(r) for r in iter_jsonl([])] == []


# --- records.py: what the first mutation run left unpinned ------------------------------------
def test_field_names_are_bounded_at_128_characters_with_a_clear_error():
    assert FieldMap("i" * 128, ("t" * 128,)).id == "i" * 128
    with pytest.raises(ValueError) as exc:
        FieldMap("id", ("t" * 129,))
    assert str(exc.value) == "field names must be non-empty strings of at most 128 characters"


def test_a_record_without_text_keeps_its_id():
    assert make_record(4, "a", None) == TicketRecord(4, "a", None, "missing field 'text'")


def test_the_exact_field_name_wins_over_a_case_variant():
    fields = FieldMap("id", ("subject", "body"))
    obj = {"Subject": "variant", "subject": "exact", "body": "b", "ID": "v", "id": "e"}
    assert record_from_object(0, obj, fields, 1) == TicketRecord(0, "e", "exact\n\nb")
    assert record_from_object(0, {"ID": "b", "text": "y"}, FieldMap(), 1) == TicketRecord(0, "b", "y")


def test_record_errors_keep_index_and_id_with_several_text_fields():
    fields = FieldMap("ticket", ("subject", "body"))
    assert record_from_object(5, {"ticket": "T", "subject": "a", "body": 1}, fields, 2) == TicketRecord(
        5, "T", None, "field 'body' must be a string"
    )
    assert record_from_object(5, {"ticket": "T"}, fields, 2) == TicketRecord(
        5, "T", None, "missing fields 'subject', 'body'"
    )
    assert record_from_object(5, {"ticket": "T", "subject": " ", "body": None}, fields, 2) == TicketRecord(
        5, "T", None, "empty text"
    )


@pytest.mark.parametrize("number", ["4E5", "4e5", "4.5", "45.0"])
def test_a_non_integer_number_is_not_sniffed_as_an_id(number: str):
    from triage_core.records import id_pattern

    assert sniff_id('{"id": ' + number + ', "text": "cut', id_pattern(FieldMap())) is None


def test_a_bare_string_first_does_not_skip_the_shape_check():
    items = [
        (TicketRecord(0, None, "a bare string"), None),
        (TicketRecord(1, "b", None, "x"), {"body": 1}.keys()),
    ]
    with pytest.raises(RecordFormatError, match=r"the first 1 records have \['body'\]"):
        list(check_shape(iter(items), FieldMap()))


def test_the_shape_sample_is_bounded_by_characters_too(monkeypatch: pytest.MonkeyPatch):
    from triage_core import records

    monkeypatch.setattr(records, "SHAPE_SAMPLE_CHARS", 10)
    fields = FieldMap("id", ("subject", "body"))  # "body" never comes
    five = [(TicketRecord(i, None, "abcde"), {"subject": 1}.keys()) for i in range(5)]
    with pytest.raises(RecordFormatError, match=r"the first 2 records have \['subject'\]"):
        list(check_shape(iter(five), fields))
    exactly = [(TicketRecord(0, None, "x" * 10), {"subject": 1}.keys()), *five]
    with pytest.raises(RecordFormatError, match=r"the first 1 records"):
        list(check_shape(iter(exactly), fields))
    textless = [(TicketRecord(i, str(i), None, "missing"), {"id": 1}.keys()) for i in range(12)]
    with pytest.raises(RecordFormatError, match=r"the first 12 records"):
        list(check_shape(iter(textless), fields))


def test_the_keys_kept_for_the_message_are_bounded_but_the_wanted_ones_always_count():
    many = {f"z{i:03d}": i for i in range(250)}
    late_text = [(TicketRecord(0, None, "x"), [*many, "text"])]
    assert list(check_shape(iter(late_text), FieldMap())) == [TicketRecord(0, None, "x")]
    # 200 keys are kept for the message: a 201st ("a", first in sorted order) is not
    no_text = [(TicketRecord(0, None, None, "missing"), [*list(many)[:200], "a"])]
    with pytest.raises(RecordFormatError) as exc:
        list(check_shape(iter(no_text), FieldMap()))
    have = [f"z{i:03d}" for i in range(50)]
    assert f"the first 1 records have {have};" in str(exc.value)


# --- reader.py: what the first mutation run left unpinned -------------------------------------
def test_media_type_parameters_lose_only_their_quotes():
    assert split_media_type('text/csv; charset="X-Mac-Roman"') == ("text/csv", {"charset": "x-mac-roman"})
    assert split_media_type("text/csv; charset=XX") == ("text/csv", {"charset": "xx"})


def test_an_unsupported_type_says_what_is_accepted():
    with pytest.raises(RecordFormatError) as exc:
        TicketReader(iter([b"x"]), content_type="text/plain")
    assert str(exc.value) == (
        "unsupported file type for '' (content type 'text/plain'): expected .jsonl/.ndjson "
        "(JSON Lines), .csv/.tsv or .json (an array of tickets), optionally .gz"
    )


def test_how_the_data_was_read_is_unknown_until_it_is_read():
    reader = TicketReader(iter([gzip.compress(b'{"id": "a", "text": "x"}\n')]), key="t.jsonl")
    assert (reader.encoding, reader.compressed, reader.json) == (None, False, None)
    assert [r.id for r in reader] == ["a"]
    assert (reader.encoding, reader.compressed) == ("utf-8", True)


# --- formats.py: what the first mutation run left unpinned ------------------------------------
def test_a_non_object_names_every_text_field():
    fields = FieldMap("id", ("subject", "body"))
    records = list(iter_jsonl(['{"subject": "a", "body": "b"}\n', "7\n"], fields))
    assert records[1] == TicketRecord(
        1, None, None, "a ticket must be a JSON object with 'subject' + 'body' (line 2)"
    )


def test_a_broken_json_element_keeps_its_position():
    data = b'[{"id": "a", "text": "x"}, {"id": "b", "text": tru}, {"id": "c", "text": "z"}]'
    records = read(data, key="t.json")
    assert [(r[0], r[1], r[3] is None) for r in records] == [(0, "a", True), (1, "b", False), (2, "c", True)]


def test_the_id_of_a_broken_row_may_hold_any_letter():
    from triage_core.formats import _id_from_line

    assert _id_from_line('X7,"open', ",", 0) == "X7"
    assert _id_from_line('a\rb,"open', ",", 0) is None


def test_the_unclosed_quote_error_names_the_bound_that_was_hit():
    lines = ["id,text\n", '1,"aaaaaaa\n', "bbbbbbbb\n", "cccccccccc\n", '"\n', "2,next\n"]
    records = list(iter_csv(lines, max_chars=20, max_lines=3))
    assert records[0].error == (
        "unclosed quote: the quoted field in the row starting on line 2 is still open after 20 characters"
    )
    records = list(iter_csv(lines, max_chars=100, max_lines=2))
    assert records[0].error == (
        "unclosed quote: the quoted field in the row starting on line 2 is still open after 2 lines"
    )


def test_json_objects_are_counted():
    reader = TicketReader(iter([b'[{"id": 1, "text": "a"}, "s", {"id": 2, "text": "b"}]']), format=JSON)
    assert [r.id for r in reader] == ["1", None, "2"]
    assert reader.json is not None and reader.json.objects == 2


def test_the_csv_row_bound_counts_characters_but_not_the_rows_line_break():
    quoted = ["id,text\n", '1,"abc\n', 'def"\n', "2,next\n"]  # the row: 7 + 5 characters with breaks
    assert [r.ok for r in iter_csv(quoted, max_chars=11)] == [True, True]
    over = list(iter_csv(quoted, max_chars=10))
    assert over[0].error == (
        "unclosed quote: the quoted field in the row starting on line 2 is still open after 10 characters"
    )
    assert (over[-1].id, over[-1].text) == ("2", "next")
    at_eof = ["id,text\n", '1,"abc\n', 'def"']  # no final line break: every character counts
    assert [r.ok for r in iter_csv(at_eof, max_chars=11)] == [True]
    assert next(r.ok for r in iter_csv(at_eof, max_chars=10)) is False


def test_csv_row_errors_without_an_id_column_name_their_line():
    data = b"text,channel\nA,b,c\n ,mail\nok,\n"
    assert read(data, key="t.csv") == [
        (0, None, None, "expected 2 columns, got 3 (line 2)"),
        (1, None, None, "empty text (line 3)"),
        (2, None, "ok", None),
    ]


def test_records_after_an_oversized_line_keep_counting_from_it():
    lines = [(1, '{"id": "a", "text": "x"}\n'), (2, None), (3, '{"id": "b", "text": "y"}\n'), (4, "7\n")]
    records = list(iter_jsonl(lines, max_chars=30))
    assert [(r.index, r.id) for r in records] == [(0, "a"), (1, None), (2, "b"), (3, None)]
    assert records[1].error == "record is larger than 30 characters (line 2)"
    no_limit = list(iter_jsonl([(1, None)]))
    assert no_limit == [TicketRecord(0, None, None, "record is larger than the record limit (line 1)")]


def test_text_after_a_json_line_is_invalid_json():
    # (issue #21) stray text after a value: the record is an error naming it, and the stray text
    # is not a record of its own
    records = list(iter_jsonl(['{"id": "a", "text": "t"}X\n', '{"id": "b", "text": "u"}  \r\n']))
    assert len(records) == 2
    stray = "stray text after the 1 JSON value(s) of line 1 (column 25)"
    assert (records[0].id, records[0].error) == ("a", stray)
    assert (records[1].id, records[1].text) == ("b", "u")


def test_a_number_python_will_not_convert_is_one_invalid_record():
    line = '{"id": "a", "text": "t", "n": 1' + "1" * 5000 + "}\n"
    records = list(iter_jsonl([line, '{"id": "b", "text": "u"}\n']))
    assert (records[0].id, records[0].error) == ("a", "invalid JSON")
    assert records[1].ok


def test_a_header_of_exactly_the_text_fields_finds_its_delimiter_and_is_a_header():
    fields = FieldMap("id", ("subject", "body"))
    assert detect_delimiter("subject;body\n", fields) == ";"
    reader = TicketReader(iter([b"text\nhello\n"]), format=CSV, csv_columns=["id", "text"])
    assert [(r.id, r.text) for r in reader] == [(None, "hello")]


# --- textstream: what the bytes say about themselves (issue #21) ---------------------------------
# Unit cases of the rules in docs/formats.md ("Encodings", "Bytes that are not text"), at their
# boundaries: the reader-level tests above reach these functions, these pin their thresholds.
from triage_core import textstream as ts  # noqa: E402

ASCII16 = "{}".format('{"id": "a", "text": "card"}\n' * 2)


@pytest.mark.parametrize(
    "codec, order",
    [
        ("utf-16-le", "utf-16-le"),
        ("utf-16-be", "utf-16-be"),
        ("utf-32-le", "utf-32-le"),
        ("utf-32-be", "utf-32-be"),
    ],
)
def test_the_nul_pattern_of_wide_text_gives_its_width_and_byte_order(codec: str, order: str) -> None:
    sample = ASCII16.encode(codec)
    assert ts._wide_order(sample) == order
    assert ts._wide_order(sample[:16]) == order  # the shortest sample that is judged
    assert ts._wide_order(sample[:15]) is None  # too short to tell


def test_text_with_few_nuls_is_not_wide() -> None:
    assert ts._wide_order(ASCII16.encode()) is None
    # a quarter of the bytes NUL is the least wide ASCII-structured text has (UTF-32 has 3/4,
    # UTF-16 1/2); one NUL fewer is not wide text
    sample = b"\x00abc" * 4
    assert sample.count(0) == len(sample) // 4 and ts._wide_order(sample) is None  # not a pattern
    assert ts._wide_order(b"a\x00bcdefghijklmno") is None


def test_utf32_needs_three_nul_slots_and_a_non_nul_one() -> None:
    le = "abcdefgh".encode("utf-32-le")
    assert ts._wide_order(le) == "utf-32-le"
    # a non-NUL byte in a NUL slot of more than a tenth of the units: not UTF-32 (read as UTF-16 LE)
    spoiled = bytearray(le)
    for unit in (0, 1):
        spoiled[unit * 4 + 1] = 0x41
    assert ts._wide_order(bytes(spoiled)) != "utf-32-le"


@pytest.mark.parametrize(
    "odd_nuls, even_nuls, expected",
    [(10, 0, "utf-16-le"), (9, 0, "utf-8"), (10, 1, "utf-8")],
)
def test_utf16_without_bom_needs_nine_tenths_nul_on_one_side(
    odd_nuls: int, even_nuls: int, expected: str
) -> None:
    pairs = [b"a\x00"] * odd_nuls + [b"ab"] * (10 - odd_nuls)
    pairs = [b"\x00\x00" if i < even_nuls else p for i, p in enumerate(pairs)]
    assert ts.sniff_encoding(b"".join(pairs)) == expected
    swapped = b"".join(p[::-1] for p in pairs)
    assert ts.sniff_encoding(swapped) == (expected.replace("le", "be"))


def test_sniffing_utf8_and_windows_1252() -> None:
    assert ts.sniff_encoding("crème brûlée".encode()) == "utf-8"
    assert ts.sniff_encoding("crème".encode() + "é".encode()[:1]) == "utf-8"  # cut inside a character
    assert ts.sniff_encoding("crème brûlée".encode("cp1252")) == "windows-1252"
    assert ts.sniff_encoding("crème".encode() + b" \xe9t\xe9") == "utf-8"  # UTF-8 with a cp1252 line
    assert ts.sniff_encoding(b"a\x00" * 7) == "utf-8"  # 7 pairs: too few to call it UTF-16


@pytest.mark.parametrize(
    "label, expected",
    [
        ("utf-16", "utf-16-le"),
        ("UTF-16LE", "utf-16-le"),
        ("utf-16be", "utf-16-be"),
        ('"UTF8"', "utf-8"),
        (" Latin1 ", "windows-1252"),
        ("us-ascii", "windows-1252"),
        ("koi8-r", "koi8-r"),
    ],
)
def test_charset_labels(label: str, expected: str) -> None:
    assert ts.canonical_charset(label) == expected


def test_an_unknown_charset_label_is_refused_by_name() -> None:
    with pytest.raises(ts.UnsupportedCharset, match="unsupported charset 'klingon'"):
        ts.canonical_charset("klingon")


@pytest.mark.parametrize(
    "declared, codec, expected",
    [
        ("utf-16-le", "utf-8", "utf-8"),  # a UTF-16 label on UTF-8: read by the bytes
        ("utf-16-le", "utf-16-le", None),  # the label is right
        ("utf-16-le", "utf-16-be", "utf-16-be"),  # the byte order comes from the bytes
        ("utf-32", "utf-32-le", "utf-32-le"),
        ("utf-8", "utf-16-le", "utf-16-le"),  # an 8-bit label on wide text
        ("windows-1252", "utf-32-be", "utf-32-be"),
        ("windows-1252", "utf-8", None),  # among 8-bit encodings the label is trusted
    ],
)
def test_a_declared_charset_is_checked_against_the_bytes(
    declared: str, codec: str, expected: str | None
) -> None:
    assert ts.label_mismatch(ASCII16.encode(codec), declared) == expected


def test_a_wide_label_on_bytes_with_nuls_but_no_pattern_is_trusted() -> None:
    # CJK-heavy UTF-16: too few NULs for the pattern, but NULs there are: trust the label
    sample = "日本語のテキスト、カード".encode("utf-16-le") + "{}".encode("utf-16-le")
    assert ts.label_mismatch(sample, "utf-16-le") is None
    assert ts.label_mismatch(b"", "utf-16-le") is None


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("codec, unit", [("utf-16-le", 2), ("utf-32-le", 4)])
def test_wide_text_cut_inside_a_character_is_an_error_naming_its_size(
    codec: str, unit: int, streamed: bool
) -> None:
    data = codecs.BOM_UTF16_LE if unit == 2 else codecs.BOM_UTF32_LE
    data += 'id,text\n1,"card"\n'.encode(codec)
    whole = ts.DecodedText([data])
    assert whole.stream.read() == 'id,text\n1,"card"\n'
    cut = data[:-1]
    size = len(cut) - unit
    chunks = iter([cut[i : i + 3] for i in range(0, len(cut), 3)]) if streamed else [cut]
    with pytest.raises(ts.TextFormatError) as err:
        ts.DecodedText(chunks, charset=None).stream.read()
    assert str(err.value) == (
        f"the UTF-{unit * 8} data ends inside a character ({size:,} bytes after its byte-order mark, "
        f"not a multiple of {unit}): the data is truncated"
    )


def test_every_leading_bom_is_dropped_and_the_mojibake_one() -> None:
    assert ts._strip_boms(codecs.BOM_UTF8 * 3 + b"id", codecs.BOM_UTF8, "utf-8") == b"id"
    mojibake = "\ufeff".encode().decode("cp1252").encode()
    assert (
        ts._strip_boms(codecs.BOM_UTF8 + mojibake + codecs.BOM_UTF8 + b"id", codecs.BOM_UTF8, "utf-8")
        == b"id"
    )
    assert ts._strip_boms(mojibake + b"id", codecs.BOM_UTF16_LE, "utf-16-le") == mojibake + b"id"
    le = codecs.BOM_UTF16_LE
    assert ts._strip_boms(le + le + "id".encode("utf-16-le"), le, "utf-16-le") == "id".encode("utf-16-le")


def test_the_decoding_error_handlers() -> None:
    # windows-1252's five undefined bytes read as ISO-8859-1; a UTF-8 text's stray byte as cp1252
    assert ts.decode_bytes(b"\x81\x8d\x8f\x90\x9d", "windows-1252") == "\x81\x8d\x8f\x90\x9d"
    assert ts.decode_bytes(b"caf\xe9 \x80 \x81", "utf-8") == "café € \x81"
    with pytest.raises(UnicodeEncodeError):
        ts._utf8_then_cp1252(UnicodeEncodeError("utf-8", "\udc80", 0, 1, "surrogate"))
    with pytest.raises(UnicodeEncodeError):
        ts._cp1252_or_latin1(UnicodeEncodeError("cp1252", "\u0100", 0, 1, "x"))


def test_a_gzip_cut_says_how_much_it_decompressed_and_the_cap_counts_decompressed_bytes() -> None:
    data = b"".join(b'{"id": "t%d", "text": "ticket"}\n' % i for i in range(20_000))
    packed = gzip.compress(data)
    text = ts.DecodedText(iter([packed[: len(packed) // 2]]))
    with pytest.raises(ts.TextFormatError) as err:
        list(ts.iter_lines(text.stream, 1000))
    message = str(err.value)
    assert message.startswith("the gzip data is corrupt or truncated: ")
    done = int(message.split("reading stopped after ")[1].split(" decompressed")[0].replace(",", ""))
    assert 0 < done < len(data) and data[:done].count(b"\n") >= int(
        message.split("read whole: ")[1][:-1].replace(",", "")
    )
    capped = ts.DecodedText(iter([packed]), max_decoded_bytes=len(data) - 1)
    with pytest.raises(ts.TextFormatError, match=f"more than {len(data) - 1} bytes"):
        capped.stream.read()
    assert ts.DecodedText(iter([packed]), max_decoded_bytes=len(data)).stream.read().count("\n") == 20_000


@pytest.mark.parametrize(
    "head, what",
    [
        (b"\x1f\x8b\x08\x00", "gzip data inside gzip"),
        (b"PK\x03\x04", "a ZIP archive"),
        (b"BZh9", "bzip2 data"),
        (b"%PDF-1.4", "a PDF document"),
    ],
)
def test_signatures_of_files_that_are_not_text(head: bytes, what: str) -> None:
    with pytest.raises(ts.BinaryData, match=what):
        ts.refuse_binary(head + b"rest of the file")
    ts.refuse_binary(b"BZh is a ticket") if what == "bzip2 data" else None  # "BZh" + a letter: text


def test_a_nul_is_not_text_in_8_bit_data_but_is_in_wide_data() -> None:
    with pytest.raises(ts.BinaryData, match="a NUL at byte 3"):
        ts.refuse_binary(b"abc\x00def")
    with pytest.raises(ts.BinaryData, match="a NUL at decompressed byte 0"):
        ts.refuse_binary(b"\x00abc", compressed=True)
    ts.refuse_binary("abcd".encode("utf-16-le"), wide=True, encoding="utf-16-le")  # NUL bytes: fine
    with pytest.raises(ts.BinaryData, match="a NUL at character 1"):
        ts.refuse_binary("a\x00cd".encode("utf-16-le"), wide=True, encoding="utf-16-le")  # a NUL character


def test_what_refusing_binary_says_in_full() -> None:
    with pytest.raises(ts.BinaryData) as err:
        ts.refuse_binary(b"PK\x03\x04rest", compressed=True)
    assert str(err.value) == (
        "the decompressed data is a ZIP archive (an .xlsx, .docx or .zip file), not text: "
        "send JSON Lines, CSV or JSON (optionally gzip)"
    )
    with pytest.raises(ts.BinaryData) as err:
        ts.refuse_binary(b"%PDF-1.7")
    assert str(err.value).startswith("the data is a PDF document, not text")
    with pytest.raises(ts.BinaryData) as err:
        ts.refuse_binary(b"ab\x00")
    assert str(err.value) == (
        "the data is not text: a NUL at byte 2 (a binary file, or UTF-16/32 without its byte-order "
        "mark and mislabelled): send JSON Lines, CSV or JSON as text"
    )
    ts.refuse_binary(b"BZh, a ticket that starts like bzip2")  # "BZh" without a digit is text
    ts.refuse_binary(b"")
    # UTF-32 judged on whole units: a NUL character found in the first ones, a cut unit ignored
    with pytest.raises(ts.BinaryData, match="a NUL at character 1 "):
        ts.refuse_binary("a\x00b".encode("utf-32-le") + b"\x61", wide=True, encoding="utf-32-le")


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize(
    "data, charset, encoding, bom, mismatch, text",
    [
        (codecs.BOM_UTF8 * 2 + b"id,text\n", None, "utf-8", True, None, "id,text\n"),
        (
            codecs.BOM_UTF16_BE + "id,text\n".encode("utf-16-be"),
            "utf-8",
            "utf-16-be",
            True,
            None,
            "id,text\n",
        ),
        (codecs.BOM_UTF32_LE + "id,text\n".encode("utf-32-le"), None, "utf-32-le", True, None, "id,text\n"),
        (b'{"id": 1, "text": "a"}\n', "utf-16", "utf-8", False, "utf-16-le", '{"id": 1, "text": "a"}\n'),
        (
            '{"id": 1, "text": "a"}\n'.encode("utf-16-be"),
            "utf-8",
            "utf-16-be",
            False,
            "utf-8",
            '{"id": 1, "text": "a"}\n',
        ),
        ("crème\n".encode("cp1252"), "latin1", "windows-1252", False, None, "crème\n"),
        ("crème\n".encode("cp1252") * 3, None, "windows-1252", False, None, "crème\n" * 3),
    ],
)
def test_how_a_body_was_read(data, charset, encoding, bom, mismatch, text, streamed: bool) -> None:
    decoded = ts.DecodedText(
        iter([data[i : i + 5] for i in range(0, len(data), 5)]) if streamed else [data], charset=charset
    )
    assert (decoded.encoding, decoded.bom, decoded.declared_mismatch, decoded.compressed) == (
        encoding,
        bom,
        mismatch,
        False,
    )
    assert decoded.read(1 << 20) == text and decoded.empty is False


def test_gzip_small_and_streamed_bodies_and_empty_ones() -> None:
    data = "id,text\n1,crème\n".encode()
    for chunks in ([gzip.compress(data)], iter([gzip.compress(data)])):
        decoded = ts.DecodedText(chunks)
        assert decoded.compressed and decoded.encoding == "utf-8" and decoded.read(100) == data.decode()
    assert ts.DecodedText([b""]).empty and ts.DecodedText(iter([])).empty
    big = [data] * (ts.SMALL_BYTES // len(data) + 1)  # over the in-memory limit: streamed, same text
    assert ts.DecodedText(big).read(1 << 30) == data.decode() * len(big)
    with pytest.raises(ts.UnsupportedEncoding, match="unsupported Content-Encoding 'br'"):
        ts.DecodedText([data], content_encoding="br")
    assert (
        ts.DecodedText([data], content_encoding=" GZIP ").read(100) == data.decode()
    )  # a label, bytes decide


# --- textstream boundaries (issue #21, point 4: what `make mutation` found no test pinning) ----
@pytest.mark.parametrize("codec", ["utf-32-le", "utf-32-be"])
def test_utf32_at_exactly_nine_tenths_and_one_tenth_is_not_utf32(codec: str) -> None:
    # "more than 9/10 of the units NUL" in the NUL slots, "fewer than 1/10" in the other: the
    # bounds themselves are not enough. Ten units, one of them "Ł" (its second byte is not NUL):
    assert ts._wide_order("abcdefghiŁ".encode(codec)) is None
    # one NUL character in ten units: its non-NUL slot is NUL in exactly 1/10 of them
    assert ts._wide_order("abcdefghi\x00".encode(codec)) is None
    # one in twenty: fewer than a tenth, UTF-32 it is
    assert ts._wide_order(("abcdefghi" * 2 + "j\x00").encode(codec)) == codec


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_utf16_without_bom_counts_whole_pairs(codec: str) -> None:
    # 49 bytes: 24 whole pairs (the odd byte out is not a pair), 22 of them with a NUL side:
    # 22 > 0.9 x 24 = 21.6 (half pairs would make it 0.9 x 24.5 = 22.05, and not UTF-16)
    assert ts.sniff_encoding(("x" * 22 + "ŁŁ").encode(codec) + b"x") == codec
    # one NUL character in 24 pairs: its other side NUL in 1 < 0.1 x 24 of them: still UTF-16
    assert ts.sniff_encoding(("x" * 23 + "\x00").encode(codec)) == codec


def test_a_sample_cut_inside_a_utf8_character_is_utf8() -> None:
    # the sample is what the first read brings: its last character may be cut
    assert ts.sniff_encoding(b"plain ascii \xc3") == "utf-8"


@pytest.mark.parametrize("label", ['"UTF-8"', "X-CP1252", "x-cp1252", '"latin1"'])
def test_quoted_and_upper_case_labels(label: str) -> None:
    # HTTP allows a quoted charset value; WHATWG labels match case-insensitively
    # (a quoted "latin1" is windows-1252 as WHATWG says, not Python's iso8859-1)
    assert ts.canonical_charset(label) == ("utf-8" if "8" in label else "windows-1252")


def test_a_declared_codec_replaces_what_it_cannot_decode() -> None:
    decoded = ts.DecodedText([b"id,text\n1,\x81\xff ok\n"], charset="shift_jis")
    assert decoded.encoding == "shift_jis" and decoded.read(100) == "id,text\n1,\ufffd\ufffd ok\n"


@pytest.mark.parametrize("streamed", [False, True])
def test_a_lone_surrogate_in_utf16_is_replaced_not_an_error(streamed: bool) -> None:
    data = codecs.BOM_UTF16_LE + "ab".encode("utf-16-le") + b"\x00\xd8" + "cd".encode("utf-16-le")
    decoded = ts.DecodedText(iter([data]) if streamed else [data])
    assert decoded.read(100) == "ab\ufffdcd"


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize(
    "bom, codec", [(codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF32_BE, "utf-32-be")]
)
def test_a_nul_character_in_wide_text_with_a_bom_is_refused_even_the_last(
    bom: bytes, codec: str, streamed
) -> None:
    # the position is the character's (the text after the BOM, decoded): the bytes are 2 or 4 each
    for text, at in [('{"a": "\x00"}', 7), ('{"a": 1}\x00', 8)]:
        data = bom + text.encode(codec)
        with pytest.raises(ts.BinaryData) as err:
            ts.DecodedText(iter([data]) if streamed else [data])
        assert f"a NUL at character {at} (" in str(err.value)


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_a_nul_in_gzip_data_is_placed_in_the_decompressed_bytes(bom: bytes) -> None:
    for chunks in (
        [gzip.compress(bom + b'{"a":1}\x00\x00')],
        iter([gzip.compress(bom + b'{"a":1}\x00\x00')]),
    ):
        with pytest.raises(ts.BinaryData) as err:
            ts.DecodedText(chunks)
        assert "a NUL at decompressed byte 7 (" in str(err.value)  # the first of the two
    with pytest.raises(ts.BinaryData) as err:
        ts.DecodedText([gzip.compress(bom + b"\x89PNG\r\n")])
    assert str(err.value).startswith("the decompressed data is a PNG image, not text")


@pytest.mark.parametrize("charset", [None, "utf-8"])
def test_a_mojibake_bom_without_a_real_one_is_dropped(charset: str | None) -> None:
    mojibake = "\ufeff".encode().decode("cp1252").encode()  # "ï»¿" saved as UTF-8
    data = mojibake + "id,text\n1,é\n".encode()
    for chunks in ([data], iter([data])):
        decoded = ts.DecodedText(chunks, charset=charset)
        assert (decoded.encoding, decoded.bom) == ("utf-8", False)
        assert decoded.read(100) == "id,text\n1,é\n"


@pytest.mark.parametrize("streamed", [False, True])
def test_decoded_text_is_read_a_bounded_number_of_characters_at_a_time(streamed: bool) -> None:
    data = b"id,text\n1,caf\xc3\xa9\n"
    chunks = iter([data]) if streamed else [data]
    decoded = ts.DecodedText(chunks)  # the JSON reader asks for a bounded read, never the rest
    assert [decoded.read(5), decoded.read(5), decoded.read(5), decoded.read(5)] == [
        "id,te",
        "xt\n1,",
        "café\n",
        "",
    ]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be"])
def test_a_nul_character_in_sniffed_utf16_is_refused_at_the_first_one(codec: str) -> None:
    # no BOM, no label: the NUL pattern says UTF-16, and a NUL *character* in it is not text
    data = '{"id": 1, "text": "a\x00b\x00"}\n'.encode(codec)
    for chunks in ([data], iter([data])):
        with pytest.raises(ts.BinaryData) as err:
            ts.DecodedText(chunks)
        assert "a NUL at character 20 (" in str(err.value)


# --- several JSON values on one line (issue #21: files joined without a final newline) ----------
def test_every_value_on_a_line_is_a_record_in_order_whatever_its_kind():
    """Whitespace around and between the values (JSON's, tabs too) is skipped; an object is a
    record, an object without the text field and a bare number are record errors naming the line,
    a bare string is a ticket, a lone surrogate fails only its own record."""
    line = (
        b' \t {"id": "a", "text": "x"}  {"x": 1}\t"a bare string" 5 {"id": "s", "text": "cut \\ud83d"}'
        b'{"id": "b", "text": "y"}\n{"id": "c", "text": "z"}\n'
    )
    surrogate = (
        "the text holds a lone UTF-16 surrogate (\\ud83d at character 4, e.g. a string cut inside an "
        "emoji): not valid Unicode"
    )
    assert read(line, format=JSONL) == [
        (0, "a", "x", None),
        (1, None, None, "missing field 'text' (line 1)"),
        (2, None, "a bare string", None),
        (3, None, None, "a ticket must be a JSON object with 'text' (line 1)"),
        (4, "s", None, surrogate),
        (5, "b", "y", None),
        (6, "c", "z", None),
    ]


def test_a_value_nested_too_deep_after_another_on_its_line_is_one_record_error():
    line = b'{"id": "a", "text": "x"} ' + b'{"id": "d", "x": ' * 5000 + b'\n{"id": "c", "text": "z"}\n'
    assert read(line, size=4096, format=JSONL) == [
        (0, "a", "x", None),
        (
            1,
            "d",
            None,
            "invalid JSON: nested deeper than the JSON decoder allows (after 1 record(s) on the same line)",
        ),
        (2, "c", "z", None),
    ]


def test_a_no_break_space_after_the_values_of_a_line_is_stray_text_not_whitespace():
    """JSON's whitespace is space, tab, CR and LF: a no-break space (U+00A0) after two values is
    text that is not JSON, so neither value is trusted."""
    line = '{"id": "a", "text": "x"}{"id": "b", "text": "y"}\u00a0\n'.encode()
    stray = "stray text after the 2 JSON value(s) of line 1 (column 49)"
    assert read(line, format=JSONL) == [(0, "a", None, stray), (1, "b", None, stray)]


@pytest.mark.parametrize("header", ["TicketId", " subject ", "BODY"])
def test_a_csv_header_sent_as_json_lines_fails_the_file_with_what_to_do(header: str):
    """A one-column CSV file sent as JSON Lines: its first line, a quoted column name (any case,
    the id or a text field), is a JSON string; the file fails as a whole, saying to send it as
    CSV, instead of reading the column name as a ticket."""
    fields = FieldMap("ticketid", ("Subject", "body"))
    body = f'"{header}"\n"card lost"\n'.encode()
    with pytest.raises(RecordFormatError) as caught:
        read(body, format=JSONL, fields=fields)
    assert str(caught.value) == (
        f"the first line is {header!r}, a CSV header, not a ticket: send the file as CSV (.csv, text/csv)"
    )
    assert read(b'"card lost"\n"TicketId"\n', format=JSONL, fields=fields) == [
        (0, None, "card lost", None),
        (1, None, "TicketId", None),  # only the first line can be a header
    ]


@pytest.mark.parametrize(
    "second",
    ["ID,Text\n2,y\n", "\ufeffText;ID\ny;2\n", '"TEXT"\t"id"\ny\t2\n'],
    ids=["upper-case", "bom-other-delimiter-and-order", "quoted-tab"],
)
def test_the_header_of_a_second_csv_file_joined_to_the_first_is_not_a_record(second: str):
    """``cat a.csv b.csv``: the second file's header, in any case, with its BOM, its own column
    order and delimiter, sets the layout of the rows after it; it is not a ticket."""
    body = ("id,text\n1,x\n" + second).encode()
    assert read(body, format=CSV) == [(0, "1", "x", None), (1, "2", "y", None)]


@pytest.mark.parametrize(
    "row, record",
    [
        ("text,text", (1, "text", "text", None)),  # a column name twice: no header, a ticket
        ("id,text,", (1, "id", None, "expected 2 columns, got 3")),  # an empty name: no header
    ],
)
def test_a_row_that_only_starts_like_a_header_is_a_record(row: str, record: tuple):
    body = f"id,text\n1,x\n{row}\n2,y\n".encode()
    assert read(body, format=CSV) == [(0, "1", "x", None), record, (2, "2", "y", None)]


def test_a_second_csv_file_may_bring_the_id_column_the_first_had_not():
    assert read(b"text\nx\nid,text\n2,y\n", format=CSV) == [(0, None, "x", None), (1, "2", "y", None)]


def test_a_lone_surrogate_in_a_json_array_fails_only_its_own_element():
    body = b'[{"id": "a", "text": "cut \\ud83d"}, {"id": "b", "text": "ok"}]'
    error = (
        "the text holds a lone UTF-16 surrogate (\\ud83d at character 4, e.g. a string cut inside an "
        "emoji): not valid Unicode"
    )
    assert read(body, format=JSON) == [(0, "a", None, error), (1, "b", "ok", None)]


@pytest.mark.parametrize("opening", ["[", "{"])
def test_a_json_document_over_several_lines_sent_as_json_lines_fails_the_file(opening: str):
    body = {"[": b'[\n  {"id": "a", "text": "x"}\n]\n', "{": b'{\n "id": "a", "text": "x"\n}\n'}[opening]
    with pytest.raises(RecordFormatError) as caught:
        read(body, format=JSONL)
    assert str(caught.value) == (
        f"line 1 is {opening!r} alone: a JSON document written over several lines, not JSON Lines "
        "(one ticket per line): send it as JSON (.json, application/json)"
    )
    # the rule is the first line's: a bracket alone later is that line's error
    assert read(b'{"id": "a", "text": "x"}\n[\n', format=JSONL) == [
        (0, "a", "x", None),
        (1, None, None, "invalid JSON: Expecting value (line 2)"),
    ]


def test_surrogates_in_json_lines_in_either_case_and_in_an_array_on_one_line():
    """``\\uD83D`` (upper case, as JavaScript's JSON.stringify never writes but other tools do)
    and an array of tickets on one line: each element with a lone surrogate fails alone, the
    others keep their place and their numbering."""
    body = (
        b'{"id": "a", "text": "cut \\uD83D"}\n'
        b'[{"id": "b", "text": "ok"}, {"id": "c", "text": "cut \\ud83d"}, {"x": 1}]\n'
        b'{"id": "d", "text": "z"}\n'
    )
    error = (
        "the text holds a lone UTF-16 surrogate (\\ud83d at character 4, e.g. a string cut inside an "
        "emoji): not valid Unicode"
    )
    assert read(body, format=JSONL) == [
        (0, "a", None, error),
        (1, "b", "ok", None),
        (2, "c", None, error),
        (3, None, None, "missing field 'text' (line 2)"),
        (4, "d", "z", None),
    ]


def test_an_upper_case_surrogate_in_an_array_line_and_one_in_an_id():
    """The id's own surrogate fails the record without an id (the id is not valid Unicode)."""
    body = (
        b'[{"id": "a", "text": "ok"}, {"id": "b", "text": "cut \\uD83D"}]\n'
        b'{"id": "c\\ud83d", "text": "x"} {"id": "d", "text": "y"}\n'
    )
    what = "lone UTF-16 surrogate (\\ud83d at character {}, e.g. a string cut inside an emoji): "
    what += "not valid Unicode"
    assert read(body, format=JSONL) == [
        (0, "a", "ok", None),
        (1, "b", None, "the text holds a " + what.format(4)),
        (2, None, None, "the id holds a " + what.format(1)),
        (3, "d", "y", None),
    ]


# --- surrogate escapes at their bounds (RFC 8259) --------------------------------------------
# RFC 8259, section 7: "If the character is in the Basic Multilingual Plane (U+0000 through
# U+FFFF), then it may be represented as a six-character sequence: a reverse solidus, followed by
# the lowercase letter u, followed by four hexadecimal digits that encode the character's code
# point. The hexadecimal letters A through F can be uppercase or lowercase." ... "To escape an
# extended character that is not in the Basic Multilingual Plane, the character is represented as
# a 12-character sequence, encoding the UTF-16 surrogate pair." Section 8.2: "However, the ABNF in
# this specification allows member names and string values to contain bit sequences that cannot
# encode Unicode characters; for example, "\uDEAD" (a single unpaired UTF-16 surrogate)."
# The surrogates are U+D800-U+DBFF (high) and U+DC00-U+DFFF (low); Python's json module is the
# independent judge of what each escape decodes to.
SURROGATE_ESCAPES = [
    *(f"\\u{code:04x}" for code in (0xD800, 0xDBFF, 0xDC00, 0xDFFF)),
    *(f"\\u{code:04X}" for code in (0xD800, 0xDBFF, 0xDC00, 0xDFFF)),
    "\\uDbFf",  # mixed case: the upper-case D decides which scan finds it
    "\\udC00",
]
# the code points either side of the surrogates, a pair (an emoji), an escaped reverse solidus
# before "ud800" (six characters of text, no escape): characters, read as json reads them
NOT_LONE = [
    "\\ud7ff",
    "\\uD7FF",
    "\\ue000",
    "\\uE000",
    "\\ud83d\\ude00",
    "\\uD83D\\uDE00",
    "\\\\ud800",
    "\\\\uD800",
]


def _decoded(escape: str) -> str:
    return json.loads(f'"{escape}"')


def test_the_escapes_at_the_bounds_are_lone_surrogates_and_their_neighbours_are_not():
    """The oracle agrees with the lists above (so the tests below test what they say)."""
    for escape in SURROGATE_ESCAPES:
        (char,) = _decoded(escape)
        assert 0xD800 <= ord(char) <= 0xDFFF, escape
    for escape in NOT_LONE:
        assert _decoded(escape).encode("utf-8"), escape  # encodable: no lone surrogate


@pytest.mark.parametrize("escape", SURROGATE_ESCAPES)
def test_escapes_surrogate_finds_an_escape_anywhere_in_its_range_and_nowhere_else(escape: str):
    """``escapes_surrogate(raw, start, end)`` looks at ``raw[start:end]`` (as ``str.find``): a
    surrogate escape at its first character, its last six, or inside, is found; one whose reverse
    solidus is outside it, or in the neighbouring value of a joined line, is not that range's.
    The extents are the ones json's own ``raw_decode`` gives each value."""
    assert escapes_surrogate(escape)  # the whole text, the escape at position 0
    assert escapes_surrogate(escape, 0, len(escape))
    assert escapes_surrogate("x" + escape, 1)
    assert not escapes_surrogate(escape + "x", 1)  # its reverse solidus left out
    decode = json.JSONDecoder().raw_decode
    for values in (
        [f'{{"text": "{escape}"}}', '{"text": "a"}'],
        ['{"text": "a"}', f'{{"text": "{escape}"}}'],
    ):
        line = " ".join(values)
        _, first_end = decode(line, 0)
        second_start = first_end + 1
        assert decode(line, second_start)[1] == len(line)
        holds = [
            _decoded(escape) in decode(line, 0)[0]["text"],
            _decoded(escape) in decode(line, second_start)[0]["text"],
        ]
        assert [
            escapes_surrogate(line, 0, first_end),
            escapes_surrogate(line, second_start, len(line)),
        ] == holds
        assert escapes_surrogate(line, second_start) == holds[1]  # to the end of the text


@pytest.mark.parametrize("escape", SURROGATE_ESCAPES)
def test_a_lone_surrogate_at_the_bounds_fails_its_record_on_every_json_path(escape: str):
    """In a text or an id, in either case: one JSON value a line, two values on a line (files
    joined without a final newline), an array on a line, a JSON document; each such record fails
    with the code point json decodes the escape to, and nothing else is lost."""
    code = f"\\u{ord(_decoded(escape)):04x}"
    what = "lone UTF-16 surrogate ({} at character {}, e.g. a string cut inside an emoji): not valid Unicode"
    text_error = "the text holds a " + what.format(code, 4)
    id_error = "the id holds a " + what.format(code, 1)
    bad_text = f'{{"id": "t", "text": "cut {escape}"}}'
    bad_id = f'{{"id": "i{escape}", "text": "x"}}'
    good = '{"id": "g", "text": "fine"}'
    expected = [(None, "t", text_error), (None, None, id_error), ("fine", "g", None)]
    lines = {
        "a value a line": f"{bad_text}\n{bad_id}\n{good}\n",
        "joined on one line": f"{bad_text}{bad_id} {good}\n",
        "joined, the good one first": f"{good} {bad_text}{bad_id}\n",
        "an array on one line": f"[{bad_text}, {bad_id}, {good}]\n",
    }
    for how, body in lines.items():
        records = [(r.text, r.id, r.error) for r in TicketReader(iter([body.encode()]), format=JSONL)]
        want = expected if "first" not in how else [expected[2], *expected[:2]]
        assert records == want, how
    document = f"[{bad_text},\n{bad_id},\n{good}]".encode()
    assert [(r.text, r.id, r.error) for r in TicketReader(iter([document]), format=JSON)] == expected


@pytest.mark.parametrize("escape", NOT_LONE)
def test_a_character_next_to_the_surrogates_a_pair_or_an_escaped_backslash_is_read_as_json_reads_it(
    escape: str,
):
    """The scan only decides where to look: a ``\\ud`` that decodes to a character (U+D7FF, a
    pair, or the text ``\\ud800`` after an escaped reverse solidus) is read exactly, in the text
    and the id, on every JSON path."""
    text, ticket_id = f"a {escape}", f"i{escape}"
    row = f'{{"id": "{ticket_id}", "text": "{text}"}}'
    want = [(_decoded(text), _decoded(ticket_id), None), ("b", "j", None)]
    other = '{"id": "j", "text": "b"}'
    for body, fmt in (
        (f"{row}\n{other}\n", JSONL),
        (f"{row}{other}\n", JSONL),
        (f"[{row}, {other}]\n", JSONL),
        (f"[{row},\n{other}]", JSON),
    ):
        assert [(r.text, r.id, r.error) for r in TicketReader(iter([body.encode()]), format=fmt)] == want, (
            body
        )


# --- CSV headers: BOMs, padding, joined files (issue #21, fourth mutation pass) ---------------
def read_csv(body: str, **options) -> list[tuple]:
    return read(body.encode("utf-8"), format=CSV, **options)


def test_a_bom_inside_a_quoted_header_cell_is_not_part_of_the_column_name():
    """pandas reading a BOM file as plain UTF-8 names its first column ``"\\ufeffid"`` and writes
    it back quoted (``QUOTE_ALL``): the BOM is inside the quotes, in the first file's header and
    in a joined file's header in another delimiter; the id column is still the id."""
    body = '"\ufeffid","text"\n"1","a"\n"\ufeffid";"text"\n"2";"b"\n'
    assert read_csv(body) == [(0, "1", "a", None), (1, "2", "b", None)]


def test_a_joined_files_bom_before_its_quoted_header_is_not_part_of_the_column_name():
    """``cat`` of two files written with every field quoted, each with its BOM: the second
    file's BOM sits before the quote that opens its first header cell, in the same delimiter
    and in another."""
    for second in ('\ufeff"id","text"\n"2","b"\n', '\ufeff"id";"text"\n"2";"b"\n'):
        body = '"id","text"\n"1","a"\n' + second
        assert read_csv(body) == [(0, "1", "a", None), (1, "2", "b", None)], second


def test_a_column_name_starting_with_x_keeps_its_x():
    """Only BOMs are stripped from a header cell's start (an ``XRef`` id column stays
    ``xref``), in the first header and in a joined file's."""
    fields = FieldMap("xref", ("text",))
    body = "XRef,Text\nA-1,a\nXRef;Text\nA-2;b\n"
    assert read_csv(body, fields=fields) == [(0, "A-1", "a", None), (1, "A-2", "b", None)]


def test_a_joined_header_with_a_padded_first_cell_is_a_header():
    """A fixed-width export's header, ``   id ,  text``, joined to another file: a header row,
    not a ticket, however many spaces pad its first cell."""
    for pad in (" ", " " * 9, " " * 30):
        body = f"id,text\n1,a\n{pad}id ,  text\n2,b\n"
        assert read_csv(body) == [(0, "1", "a", None), (1, "2", "b", None)], len(pad)


def test_a_joined_header_whose_first_cell_holds_quotes_is_a_header():
    """``\"\"\"id\"\"\",text``: the first cell is the text ``"id"`` (quotes included), so the
    row names the text column and is a header, not a ticket; its id column is ``"id"``, not
    ``id``, so the rows under it have no id."""
    body = 'id,text\n1,a\n"""id""",text\n2,b\n'
    assert read_csv(body) == [(0, "1", "a", None), (1, None, "b", None)]


def test_a_joined_header_in_another_delimiter_is_found_past_a_split_with_blank_columns():
    """Split on ``,`` first, ``id;text;a,,b`` has a blank column (not a header in ``,``); split
    on ``;`` it names the text column: the header of a ``;`` file."""
    body = "id,text\n1,a\nid;text;a,,b\n2;b;c\n"
    assert read_csv(body) == [(0, "1", "a", None), (1, "2", "b", None)]


@pytest.mark.parametrize(
    "header",
    ["id,text,,", "Text,", "text,text"],
    ids=["trailing-blank-columns", "only-the-text-column-and-a-blank", "a-repeated-column"],
)
def test_a_header_row_is_the_header_even_with_configured_columns(header: str):
    """With ``csv_columns`` configured (data without a header row), a first row that names the
    text field is still the header, blank or repeated columns included (Excel writes a trailing
    ``,,`` for empty columns): never a ticket."""
    cells = "1,hello" if header.startswith("id") else "hello,x"
    want_id = "1" if header.startswith("id") else None
    assert read_csv(f"{header}\n{cells}\n", csv_columns=["id", "text"]) == [(0, want_id, "hello", None)]


@pytest.mark.parametrize("second_header", ["id;text", '"id";"text"'], ids=["plain", "quoted"])
def test_a_quote_error_after_a_joined_header_in_another_delimiter_is_the_rows_error(second_header: str):
    """After a joined file's header switches the delimiter, CSV is read as strictly as before
    (``strict=True``: stray text after a closing quote is an error, not glued to the field):
    that row fails with its reason, the next one is read."""
    body = f'id,text\n1,a\n{second_header}\n2;"b"x\n3;c\n'
    stray = "stray text after a closing quote in the row starting on line 4 "
    stray += '(a quote inside a quoted field is written "")'
    assert read_csv(body) == [(0, "1", "a", None), (1, "2", None, stray), (2, "3", "c", None)]
