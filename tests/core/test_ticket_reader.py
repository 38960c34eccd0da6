"""triage_core.reader on files written the way real tools write them, cut into arbitrary chunks.

Every case checks what a data engineer feeding the bucket would: every ticket comes out with its
id and its text as written (accents, euro signs, line breaks), or as one error record that says
which ticket (its id, or its line when the id cannot be read) and why.
"""

from __future__ import annotations

import gzip
import json
import tracemalloc

import pytest

from tests.core.ticket_files import (
    EXCEL_FIELDS,
    EXCEL_ROWS,
    FRESHDESK_FIELDS,
    ZENDESK_FIELDS,
    broken_quote_csv,
    chunked,
    excel_csv,
    excel_unicode_text,
    expected_excel_texts,
    freshdesk_export,
    gzip_cli,
    jsonl,
    mac_classic_csv,
    zendesk_export,
    zendesk_texts,
)
from triage_core.reader import TicketReader, detect_format
from triage_core.records import FieldMap, RecordFormatError

CHUNK_SIZES = [1, 2, 3, 7, 64, 4096, 1 << 20]


def read(data: bytes, size: int = 4096, **options) -> list[tuple]:
    """Records of ``data`` streamed in ``size``-byte chunks (an iterator: the streaming path)."""
    reader = TicketReader(iter(chunked(data, size)), **options)
    return [(r.index, r.id, r.text, r.error) for r in reader]


def oks(records: list[tuple]) -> list[tuple]:
    return [(ticket_id, text) for _, ticket_id, text, error in records if error is None]


# --- spreadsheets ----------------------------------------------------------------------------
@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_excel_windows_cp1252_export_reads_every_accent_and_euro_sign(size):
    records = read(excel_csv(), size, key="export.csv", fields=EXCEL_FIELDS)
    assert oks(records) == list(zip([r[0] for r in EXCEL_ROWS], expected_excel_texts(), strict=True))


@pytest.mark.parametrize(
    "data, what",
    [
        (excel_csv("utf-8", bom=True), "CSV UTF-8 (BOM)"),
        (excel_csv("cp1252", separator=";"), "de-DE / fr-FR separator ';'"),
        (excel_unicode_text(), "Unicode Text: UTF-16 LE BOM, tabs"),
    ],
)
def test_other_excel_exports_read_the_same(data, what):
    records = read(data, 5, key="export.csv", fields=EXCEL_FIELDS)
    assert oks(records) == list(zip([r[0] for r in EXCEL_ROWS], expected_excel_texts(), strict=True)), what


@pytest.mark.parametrize("size", [1, 2, 5, 4096])
def test_cr_only_line_endings(size):
    records = read(mac_classic_csv(), size, key="mac.csv")
    assert oks(records) == [
        ("1", "my card\nhas not arrived"),
        ("2", "exchange rate please"),
        ("3", "top up failed"),
    ]


def test_mixed_line_endings_in_one_file():
    data = b'{"id": "a", "text": "x"}\r\n{"id": "b", "text": "y"}\r{"id": "c", "text": "z"}\n'
    assert [r[1] for r in read(data, 3, key="t.jsonl")] == ["a", "b", "c"]


# --- CSV quoting that cannot swallow ---------------------------------------------------------
@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_an_unclosed_quote_is_one_error_naming_its_line_and_the_rows_after_it_are_read(size):
    records = read(broken_quote_csv(), size, key="broken.csv")
    assert [(r[0], r[1]) for r in records] == [(0, "1"), (1, "2"), (2, "3"), (3, "4"), (4, "5")]
    assert records[1][3].startswith("unclosed quote: the quoted field in the row starting on line 3")
    assert oks(records) == [
        ("1", "my card has not arrived"),
        ("3", "what is the exchange rate, please?"),
        ("4", "top up failed"),
        ("5", "refund, not showing up"),
    ]


def test_stray_text_after_a_closing_quote_is_one_error_and_reading_resumes():
    data = b'id,text\n1,"quoted" then more\n2,fine\n,"no id" here\n4,last\n'
    records = read(data, key="t.csv")
    assert [(r[1], r[3] is None) for r in records] == [("1", False), ("2", True), (None, False), ("4", True)]
    assert records[0][3].startswith("stray text after a closing quote in the row starting on line 2")
    assert "line 4" in records[2][3]  # no id: the line says which


def test_a_quoted_field_is_bounded_by_lines_and_characters():
    long_field = b'id,text\n1,"' + b"line\n" * 20 + b'end"\n2,after\n'
    from triage_core.formats import iter_csv
    from triage_core.textstream import DecodedText, iter_lines

    text = DecodedText(chunked(long_field, 8))
    records = list(iter_csv(iter_lines(text.stream, 1000), max_chars=1000, max_lines=5))
    assert records[0].error.startswith("unclosed quote") and "after 5 lines" in records[0].error
    assert records[-1].id == "2" and records[-1].ok  # resumed at the next line, not swallowed
    records = read(
        b'id,text\n1,"' + b"x" * 90 + b"\n" + b"y" * 90 + b'"\n2,after\n', key="t.csv", max_record_chars=100
    )
    assert "still open after 100 characters" in records[0][3]
    assert records[-1][1:3] == ("2", "after")


def test_csv_rows_with_too_many_cells_short_rows_and_blank_lines():
    data = b"id,text,channel\n\n1,fine,mail\n2,a,b,c\n3,short\n\n"
    records = read(data, key="t.csv")
    assert [(r[1], r[2], r[3]) for r in records] == [
        ("1", "fine", None),
        ("2", None, "expected 3 columns, got 4"),
        ("3", "short", None),  # trailing cells left out are empty cells
    ]


# --- compression ----------------------------------------------------------------------------
@pytest.mark.parametrize("size", [1, 7, 4096])
def test_gzip_from_the_command_line_tool_and_concatenated_members(size):
    first = jsonl([{"id": "a", "text": "card lost"}])
    second = jsonl([{"id": "b", "text": "rate"}])
    single = read(gzip_cli(first + second), size, key="tickets.jsonl.gz")
    assert oks(single) == [("a", "card lost"), ("b", "rate")]
    both = read(gzip_cli(first) + gzip_cli(second), size, key="cat.jsonl.gz")  # cat a.gz b.gz
    assert oks(both) == oks(single)


def test_gzip_is_recognised_by_its_bytes_whatever_the_name_says():
    data = gzip.compress(excel_csv())
    reader = TicketReader(chunked(data, 100), key="export.csv", fields=EXCEL_FIELDS)
    assert len(list(reader)) == 3 and reader.compressed and reader.encoding == "windows-1252"
    records = read(
        data, key="export.bin", content_type="text/csv", content_encoding="gzip", fields=EXCEL_FIELDS
    )
    assert len(oks(records)) == 3


def test_a_truncated_or_corrupt_gzip_file_is_a_whole_file_error():
    data = gzip_cli(jsonl([{"id": str(i), "text": "card lost " * 50} for i in range(200)]))
    with pytest.raises(RecordFormatError, match="gzip data is corrupt or truncated"):
        read(data[: len(data) // 2], key="t.jsonl.gz")
    with pytest.raises(RecordFormatError, match="unsupported Content-Encoding 'br'"):
        read(b"{}", key="t.jsonl", content_encoding="br")


def test_decompressed_size_is_bounded():
    data = gzip.compress(b'{"id": "a", "text": "' + b"z" * 200_000 + b'"}\n')
    with pytest.raises(RecordFormatError, match="decompresses to more than 100000 bytes"):
        read(data, key="t.jsonl.gz", max_decoded_bytes=100_000)


# --- byte-order marks and charsets -----------------------------------------------------------
@pytest.mark.parametrize(
    "key, body",
    [
        ("t.jsonl", b'{"id": "a", "text": "first"}\n{"id": "b", "text": "second"}\n'),
        ("t.json", b'[{"id": "a", "text": "first"}, {"id": "b", "text": "second"}]'),
        ("t.csv", b"id,text\na,first\nb,second\n"),
    ],
)
@pytest.mark.parametrize("bom, encoding", [(b"\xef\xbb\xbf", "utf-8"), (b"", "utf-8")])
def test_a_utf8_bom_is_the_same_in_every_format(key, body, bom, encoding):
    assert oks(read(bom + body, 1, key=key)) == [("a", "first"), ("b", "second")]


@pytest.mark.parametrize(
    "codec, bom", [("utf-16-le", b"\xff\xfe"), ("utf-16-be", b"\xfe\xff"), ("utf-32-le", b"\xff\xfe\x00\x00")]
)
def test_utf16_and_utf32_with_bom(codec, bom):
    body = bom + '{"id": "é1", "text": "Überweisung fehlgeschlagen €"}\n'.encode(codec)
    assert oks(read(body, 3, key="t.jsonl")) == [("é1", "Überweisung fehlgeschlagen €")]


def test_declared_charsets_are_honoured_with_whatwg_labels():
    cyrillic = "id,text\n1,Моя карта не пришла\n".encode("cp1251")
    assert oks(read(cyrillic, key="t.csv", content_type="text/csv; charset=windows-1251")) == [
        ("1", "Моя карта не пришла")
    ]
    # WHATWG: the label iso-8859-1 means windows-1252, so 0x80 is the euro sign
    assert oks(read(b"id,text\n1,20 \x80\n", key="t.csv", content_type="text/csv; charset=ISO-8859-1")) == [
        ("1", "20 €")
    ]
    with pytest.raises(RecordFormatError, match="unsupported charset 'klingon'"):
        read(b"id,text\n1,x\n", key="t.csv", content_type="text/csv; charset=klingon")


def test_a_bom_wins_over_a_declared_charset():
    data = b"\xef\xbb\xbfid,text\n1,caf\xc3\xa9\n"
    assert oks(read(data, key="t.csv", content_type="text/csv; charset=windows-1252")) == [("1", "café")]


def test_a_utf8_file_with_stray_windows_1252_lines_loses_nothing():
    utf8 = [{"id": str(i), "text": "déjà vu, ticket number " + str(i)} for i in range(50)]
    data = jsonl(utf8) + '{"id": "cp", "text": "pasted from Word: “smart quotes” – 20 €"}\n'.encode("cp1252")
    records = read(data, 1000, key="t.jsonl")
    assert all(r[3] is None for r in records)
    assert records[0][2] == "déjà vu, ticket number 0"
    assert records[-1][2] == "pasted from Word: “smart quotes” – 20 €"


def test_latin1_bytes_windows_1252_leaves_undefined_still_decode():
    assert oks(read(b"id,text\n1,a\x81b\x8dc\n", key="t.csv")) == [("1", "a\x81b\x8dc")]


# --- help-desk exports (JSON) ---------------------------------------------------------------
@pytest.mark.parametrize("size", CHUNK_SIZES)
def test_zendesk_export_with_subject_and_description(size):
    records = read(zendesk_export(), size, key="zendesk.json", fields=ZENDESK_FIELDS)
    assert oks(records) == list(zip(["35436", "35437", "35438"], zendesk_texts(), strict=True))


def test_freshdesk_export_mapped_per_file_from_object_metadata():
    metadata = {"id-field": "id", "text-fields": "subject,description_text"}  # x-amz-meta-*
    records = read(freshdesk_export(), 50, key="freshdesk.json", metadata=metadata)
    assert oks(records) == [
        ("20", "Refund not showing up\n\nThe refund from last week is not on my statement."),
        ("21", "Lost card\n\nI lost my card yesterday"),
    ]
    assert read(freshdesk_export(), key="f.json", fields=FRESHDESK_FIELDS) == records


def test_a_file_without_the_configured_fields_names_what_it_has_and_what_was_expected():
    with pytest.raises(RecordFormatError) as excinfo:
        read(zendesk_export(), key="zendesk.json")  # default field map: id / text
    message = str(excinfo.value)
    assert "no record has the text field(s) ['text']" in message
    assert "'description'" in message and "'subject'" in message
    with pytest.raises(RecordFormatError, match=r"CSV header has columns \['ticket_id', 'subject'"):
        read(excel_csv(), key="export.csv")
    with pytest.raises(RecordFormatError, match=r"no record has the text field\(s\) \['descriptoin'\]"):
        read(zendesk_export(), key="z.json", fields=FieldMap("id", ("subject", "descriptoin")))


def test_a_record_missing_the_field_among_records_that_have_it_is_a_record_error():
    data = jsonl([{"id": "a"}, {"id": "b", "text": "card"}, {"ref": 7}])
    records = read(data, key="t.jsonl")
    assert [(r[1], r[3]) for r in records] == [
        ("a", "missing field 'text'"),
        ("b", None),
        (None, "missing field 'text' (line 3)"),
    ]


def test_json_array_elements_that_are_broken_or_too_large_are_reported_and_skipped():
    data = (
        b'[\n {"id": "a", "text": "ok"},\n {"id": "b", "text": tru},\n'
        b' {"id": "c", "text": "' + b"x" * 5000 + b'"},\n "a bare string ticket",\n 42\n]'
    )
    records = read(data, 7, key="t.json", max_record_chars=1000)
    assert [(r[1], r[2]) for r in records] == [
        ("a", "ok"),
        ("b", None),
        (None, None),
        (None, "a bare string ticket"),
        (None, None),
    ]
    assert records[1][3] == "invalid JSON: Expecting value (line 3)"  # the id still read from the text
    assert records[2][3] == "record is larger than 1000 characters"
    assert records[4][3].startswith("a ticket must be a JSON object")


@pytest.mark.parametrize(
    "data, message",
    [
        (b'[{"id": "a", "text": "ok"}, {"id": "b", "tex', "ends inside the value that starts on line 1"),
        (b'[{"id": "a", "text": "ok"}', "ends without ']'"),
        (b'[{"id": "a", "text": "ok"}] trailing', "unexpected data after the JSON document"),
        (b'"just a string"', "expected a JSON array of tickets"),
        # an object without an array of records (a count) is not "no tickets": the error names
        # what the object holds (one ticket on its own is one ticket: test_json_shapes.py)
        (b'{"count": 3}', r"no array of records .* and no ticket field \(its members: 'count'\)"),
        (b'{"tickets": 5}', r"no array of records .* \(its members: 'tickets'\)"),
        # the first array of an object is not its tickets (issue #21): a table's columns
        (b'{"columns": ["id", "text"]}', r"\(its members: 'columns'\)"),
        (b'{"tickets": [], "results": []}', r"a second array of records, 'results'"),
    ],
)
def test_a_json_document_that_is_not_an_array_of_tickets_is_a_whole_file_error(data, message):
    with pytest.raises(RecordFormatError, match=message):
        read(data, 3, key="t.json")


def test_ids_of_unreadable_records_are_kept_else_their_line():
    data = b'{"id": "b", "text": "unterminated\n{"text": 5}\n{"id": 7, "text": null}\n'
    records = read(data, key="t.jsonl")
    assert [(r[1], r[3]) for r in records] == [
        ("b", "invalid JSON: Unterminated string starting at"),
        (None, "field 'text' must be a string (line 2)"),
        ("7", "missing field 'text'"),
    ]


def test_a_line_over_the_record_limit_is_skipped_without_being_held():
    """A 30 MB line (a pasted attachment) next to normal tickets: reported, never in memory."""
    huge = b'{"id": "huge", "text": "' + b"a" * (30 * 1024 * 1024) + b'"}\n'
    data = jsonl([{"id": "a", "text": "before"}]) + huge + jsonl([{"id": "b", "text": "after"}])
    chunks = chunked(data, 1 << 20)
    tracemalloc.start()
    try:
        records = [
            (r.id, r.error) for r in TicketReader(iter(chunks), key="t.jsonl", max_record_chars=1 << 20)
        ]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert records == [
        ("a", None),
        (None, f"record is larger than {1 << 20} characters (line 2)"),
        ("b", None),
    ]
    assert peak < 12 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while reading a 30 MB line"


def test_a_small_body_held_whole_reads_like_the_same_body_streamed():
    """The server decodes a small body it holds in one go: the same rules, the same records."""
    files = [
        (excel_csv(), {"key": "x.csv", "fields": EXCEL_FIELDS}),
        (excel_unicode_text(), {"key": "x.tsv", "fields": EXCEL_FIELDS}),
        (excel_csv("utf-8", bom=True), {"key": "x.csv", "fields": EXCEL_FIELDS}),
        (mac_classic_csv(), {"key": "x.csv"}),
        (broken_quote_csv(), {"key": "x.csv"}),
        (zendesk_export(), {"key": "x.json", "fields": ZENDESK_FIELDS}),
        (gzip_cli(zendesk_export()), {"key": "x.json.gz", "fields": ZENDESK_FIELDS}),
        (jsonl([{"id": "u", "text": "déjà"}]) + b'{"id": "w", "text": "caf\xe9 \x80"}\n', {"key": "x.jsonl"}),
    ]
    for data, options in files:
        whole = TicketReader((data,), **options)
        records = [(r.index, r.id, r.text, r.error) for r in whole]
        assert records == read(data, 7, **options), options


def test_every_format_reads_the_same_whatever_the_chunk_boundaries():
    files = [
        (excel_csv(), {"key": "x.csv", "fields": EXCEL_FIELDS}),
        (excel_unicode_text(), {"key": "x.tsv", "fields": EXCEL_FIELDS}),
        (mac_classic_csv(), {"key": "x.csv"}),
        (broken_quote_csv(), {"key": "x.csv"}),
        (zendesk_export(), {"key": "x.json", "fields": ZENDESK_FIELDS}),
        (gzip_cli(zendesk_export()), {"key": "x.json.gz", "fields": ZENDESK_FIELDS}),
    ]
    for data, options in files:
        whole = read(data, len(data), **options)
        assert whole
        for size in CHUNK_SIZES[:-1]:
            assert read(data, size, **options) == whole, (options, size)


@pytest.mark.parametrize(
    "key, content_type, expected",
    [
        ("in/a.jsonl", None, "application/jsonlines"),
        ("in/a.NDJSON.gz", None, "application/jsonlines"),
        ("in/a.csv.gz", "application/gzip", "text/csv"),
        ("in/a.tsv", None, "text/csv"),
        ("in/export.json", "binary/octet-stream", "application/json"),
        ("in/no-extension", "text/csv; charset=windows-1252", "text/csv"),
        ("in/no-extension", "application/x-ndjson", "application/jsonlines"),
    ],
)
def test_format_by_extension_then_content_type(key, content_type, expected):
    assert detect_format(key, content_type) == expected


def test_an_unknown_file_type_names_what_is_accepted():
    with pytest.raises(RecordFormatError, match=r"\.jsonl/\.ndjson.*\.csv/\.tsv or \.json.*\.gz"):
        detect_format("in/notes.txt", "text/plain")


def test_field_map_specs_and_metadata_overrides():
    assert FieldMap.from_spec('{"id": "ticket_id", "text": ["subject", "body"]}') == EXCEL_FIELDS
    assert FieldMap().override({"Text-Fields": "subject, body"}) == FieldMap("id", ("subject", "body"))
    with pytest.raises(RecordFormatError, match="invalid field mapping in the object metadata"):
        FieldMap().override({"text-fields": "id"})
    with pytest.raises(ValueError, match="field names must differ"):
        FieldMap("text", ("text",))
    assert json.loads(json.dumps(EXCEL_FIELDS.spec())) == {"id": "ticket_id", "text": ["subject", "body"]}
