"""Property tests of the ticket reader (issue #21): generated tickets, written by independent
writers, read back exactly; then the bytes damaged, and every record still read exactly or failed
with a reason: none merged, none invented, none under another's key.

The files come from :mod:`chaos.generated` (the chaos workload draws from it too): ids of every
documented type and none; texts with quotes, delimiters, every kind of line break, BOMs, control
characters, emoji, lone surrogates, very long and empty; written by Python's ``json`` and ``csv``
modules, ``codecs`` in every supported encoding, ``gzip``. The reader is fed the bytes in chunks
of drawn sizes, whole or streamed, as the server and the dispatcher feed it.

Bounded: each property runs at most ``max_examples`` files (settings below; the whole module
takes about 15 s on one core). Failing examples Hypothesis found while this was written are kept
as ``@example`` s / regression tests at the end.
"""

from __future__ import annotations

import codecs
import gzip
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chaos.generated import (
    CSV_TYPE,
    JSON_TYPE,
    JSONL,
    Expect,
    GeneratedFile,
    Ticket,
    expected_record,
    write_file,
)
from triage_core.reader import TicketReader
from triage_core.records import RecordFormatError, TicketRecord

PROPERTY = settings(
    max_examples=60,
    deadline=None,  # a file of 3,000-word tickets read 1 byte at a time takes a while; bounded by count
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,  # the same files on every run: a failure is reproducible from the log
)


class HypothesisDraw:
    def __init__(self, draw):
        self._draw = draw

    def integer(self, low: int, high: int) -> int:
        return self._draw(st.integers(low, high))


@st.composite
def files(draw, fmt: str | None = None) -> GeneratedFile:
    return write_file(HypothesisDraw(draw), fmt=fmt)


@st.composite
def feeds(draw):
    """How the bytes arrive: whole (a small request body) or streamed in chunks of drawn sizes."""
    streamed = draw(st.booleans())
    size = draw(st.sampled_from([1, 2, 3, 7, 64, 4096, 1 << 20]))
    return streamed, size


def chunked(body: bytes, feed: tuple[bool, int]):
    streamed, size = feed
    if len(body) > 4096:
        size = max(size, 64)  # byte-by-byte on small files only: bounded time
    pieces = [body[i : i + size] for i in range(0, len(body), size)] or [b""]
    return iter(pieces) if streamed else pieces


def read(
    body: bytes, gf: GeneratedFile, feed=(False, 1 << 20), **options
) -> tuple[list[TicketRecord], str | None]:
    """The records read (as far as reading went) and the whole-file error, if any."""
    reader = TicketReader(
        chunked(body, feed),
        key=options.pop("key", gf.key),
        content_type=options.pop("content_type", gf.content_type),
        **options,
    )
    records: list[TicketRecord] = []
    try:
        for record in reader:
            records.append(record)
    except RecordFormatError as exc:
        assert str(exc).strip(), "a whole-file error names its reason"
        return records, str(exc)
    return records, None


def assert_record(record: TicketRecord, index: int, want: Expect) -> None:
    assert record.index == index
    assert record.id == want.id, (record, want)
    if want.text is None:
        assert record.text is None and record.error, (record, want)
    else:
        assert record.error is None and record.text == want.text, (record, want)


def assert_exact(records: list[TicketRecord], expected: list[Expect]) -> None:
    """Exactly the written records, in order, under their keys."""
    assert len(records) == len(expected), ([tuple(r) for r in records], expected)
    for index, (record, want) in enumerate(zip(records, expected, strict=True)):
        assert_record(record, index, want)


def assert_prefix(records: list[TicketRecord], expected: list[Expect], *, cut_row: bool = False) -> None:
    """Every record read is the written record at its position (a positional prefix); with
    ``cut_row``, the last one may be a CSV row cut short: as far as it goes, or an error."""
    assert len(records) <= len(expected)
    for index, record in enumerate(records):
        want = expected[index]
        if index == len(records) - 1 and record.error:  # the record the cut went through
            assert record.id is None or record.id == want.id or (cut_row and _cut(record.id, want.id))
            continue
        if cut_row and index == len(records) - 1:
            assert _cut(record.text, want.text), (record, want)
            assert record.id is None or _cut(record.id, want.id), (record, want)
            continue
        assert_record(record, index, want)


def _cut(got: str | None, want: str | None) -> bool:
    """``got`` is ``want`` cut short (its last character may be part of a cut one)."""
    if got is None or want is None:
        return got == want
    return want.startswith(got) or want.startswith(got[:-1]) or want.startswith(got.rstrip("\ufffd"))


def assert_nothing_invented(records: list[TicketRecord], expected: list[Expect]) -> None:
    """Every ticket read is one that was written, with its own id (no position asked)."""
    written = [(e.id, e.text) for e in expected if e.text is not None]
    for record in records:
        if record.error is None:
            assert (record.id, record.text) in written, (record, expected)
            written.remove((record.id, record.text))


# --- written by independent writers: read back exactly ---------------------------------------------
@PROPERTY
@given(files(), feeds())
def test_generated_files_read_back_exactly(gf: GeneratedFile, feed) -> None:
    records, error = read(gf.body, gf, feed)
    assert error is None, (error, gf.description)
    assert_exact(records, gf.expected)


# --- damaged: truncated ---------------------------------------------------------------------------
@PROPERTY
@given(files(), st.floats(0, 1), feeds())
def test_a_truncated_file_loses_no_record_silently(gf: GeneratedFile, where: float, feed) -> None:
    cut = gf.body[: int(len(gf.body) * where)]
    records, error = read(cut, gf, feed)
    # What was read is what was written, position by position; a CSV row cut short (CSV has no
    # end marker) is read as far as it goes. gzip and JSON know they were cut: a whole-file error.
    assert_prefix(records, gf.expected, cut_row=gf.format == "csv")
    if gf.compressed and 0 < len(cut) < len(gf.body):
        assert error is not None and ("gzip" in error or "not text" in error or "empty" in error)
    if gf.format == "json" and 2 < len(cut) < len(gf.body) - 4 and error is None:
        # a JSON document cut short always fails (its end is missing)
        pytest.fail(f"a cut JSON document read as complete: {[tuple(r) for r in records]}")


# --- damaged: two files joined (cat a b), same writer ----------------------------------------------
@PROPERTY
@given(st.data(), feeds())
def test_two_files_joined_read_as_both_files(data, feed) -> None:
    first = data.draw(files())
    second = _same_writer(data, first)
    records, error = read(first.body + second.body, first, feed)
    expected = first.expected + second.expected
    if first.format == "json" and error is not None:
        # [..] followed by {"tickets": [..]}: the second document is refused, by name
        assert "after the JSON document" in error
        assert_prefix(records, expected)
        return
    assert error is None, error
    if first.format == "csv" and not first.body.endswith((b"\n", b"\n\x00", b"\x00\n")):
        # the first file's last row runs into the second's header: that row is an error
        assert_prefix(records, expected, cut_row=True)
        assert_nothing_invented(records, expected)
        return
    assert_exact(records, expected)


def _same_writer(data, first: GeneratedFile) -> GeneratedFile:
    """A second file as the same tool writes it (format, encoding, compression)."""
    for _ in range(50):
        second = data.draw(files(first.format))
        if (second.encoding, second.compressed) == (first.encoding, first.compressed):
            return second
    return first


# --- damaged: a second BOM, double encoding, a wrong charset label --------------------------------
BOMS = {"utf-8": codecs.BOM_UTF8, "utf-8-sig": codecs.BOM_UTF8, "utf-16": codecs.BOM_UTF16_LE}


@PROPERTY
@given(files(), feeds())
def test_a_second_byte_order_mark_is_dropped(gf: GeneratedFile, feed) -> None:
    if gf.compressed or gf.encoding not in BOMS:
        return
    records, error = read(BOMS[gf.encoding] + gf.body, gf, feed)
    assert error is None
    assert_exact(records, gf.expected)


@PROPERTY
@given(files("csv"), feeds())
def test_double_encoded_utf8_reads_as_the_text_it_holds_under_the_right_keys(gf: GeneratedFile, feed) -> None:
    if gf.compressed or gf.encoding not in ("utf-8", "utf-8-sig"):
        return
    # read as ISO-8859-1 by a tool and saved again as UTF-8: the texts are what that tool wrote
    # (mojibake, a BOM as "ï»¿" included), each record under its own id, none lost
    twice = gf.body.decode("latin-1").encode("utf-8")
    records, error = read(twice, gf, feed)
    assert error is None, error

    def mangle(value):
        return value.encode("utf-8").decode("latin-1") if isinstance(value, str) else value

    assert_exact(records, [expected_record(Ticket(mangle(t.id), mangle(t.text)), "csv") for t in gf.tickets])


@PROPERTY
@given(files(), st.sampled_from(["utf-16", "utf-16le", "utf-16be", "utf-32", "utf-8", "us-ascii"]), feeds())
def test_a_wrong_charset_label_is_checked_against_the_bytes(gf: GeneratedFile, label: str, feed) -> None:
    if gf.encoding == "windows-1252":
        return  # a single-byte file's label is all there is to go by (docs/formats.md)
    media = gf.content_type.split(";")[0]
    records, error = read(gf.body, gf, feed, content_type=f"{media}; charset={label}")
    if gf.encoding in ("utf-16-le", "utf-16-be") and error is not None:
        assert "not text" in error  # UTF-16 without BOM or a label that says so: refused whole
        return
    if label == "us-ascii" and gf.encoding in ("utf-8",):
        # WHATWG: us-ascii means windows-1252: a UTF-8 file so labelled reads as mojibake, under
        # the right keys, with as many records
        assert error is None and len(records) == len(gf.expected)
        return
    assert error is None, error
    assert_exact(records, gf.expected)


# --- damaged: the wrong content type (a CSV sent as JSON Lines, ...) ------------------------------
@PROPERTY
@given(files(), st.sampled_from([JSONL, CSV_TYPE, JSON_TYPE]), feeds())
def test_a_wrong_content_type_invents_no_ticket(gf: GeneratedFile, content_type: str, feed) -> None:
    records, _ = read(gf.body, gf, feed, key="", content_type=content_type)
    assert_nothing_invented(records, gf.expected)


# --- damaged: nested deeply ---------------------------------------------------------------------
@PROPERTY
@given(files("jsonl"), st.integers(0, 12), st.integers(2_000, 60_000))
def test_a_deeply_nested_record_is_one_record_error(gf: GeneratedFile, at: int, depth: int) -> None:
    lines = [json.dumps({"id": t.id, "text": t.text}) for t in gf.tickets]
    at = min(at, len(lines))
    lines.insert(at, '{"id": "deep", "text": ' + "[" * depth + "]" * depth + "}")
    expected = [expected_record(t, "jsonl") for t in gf.tickets]
    expected.insert(at, Expect("deep", None))
    records, error = read("\n".join(lines).encode(), gf, content_type=JSONL, key="deep.jsonl")
    assert error is None
    assert_exact(records, expected)
    array = "[" + ",".join(lines) + "]"
    records, error = read(array.encode(), gf, content_type=JSON_TYPE, key="deep.json")
    assert error is None
    assert_exact(records, expected)


# --- binary content is refused as a whole --------------------------------------------------------
@PROPERTY
@given(files(), st.sampled_from(["gzip-twice", "xlsx", "pdf", "nul"]))
def test_bytes_that_are_not_text_are_refused_as_a_whole(gf: GeneratedFile, kind: str) -> None:
    body = {
        "gzip-twice": gzip.compress(gzip.compress(gf.body)),
        "xlsx": b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + gf.body,
        "pdf": b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n" + gf.body,
        "nul": b"\x00\x00\x01\x00" + gf.body,
    }[kind]
    records, error = read(body, gf)
    assert records == [] and error is not None and "not text" in error


# --- regression cases (issue #21's classes, and what Hypothesis found) -----------------------------
def _gf(fmt: str) -> GeneratedFile:
    return GeneratedFile(
        b"", f"x.{fmt}", {"jsonl": JSONL, "csv": CSV_TYPE, "json": JSON_TYPE}[fmt], fmt, "utf-8", False
    )


@pytest.mark.parametrize(
    "body, fmt, expected",
    [
        # two files joined without a final newline: two records, not one "Extra data" error
        (b'{"id": "a", "text": "x"}{"id": "b", "text": "y"}\n', "jsonl", [("a", "x"), ("b", "y")]),
        # a single ticket object with a tags array is one ticket, not two made of its tags
        (b'{"id": "a", "text": "card", "tags": ["t1", "t2"]}', "json", [("a", "card")]),
        # the tickets are under "tickets", not the first array
        (b'{"columns": ["id", "text"], "tickets": [{"id": "a", "text": "x"}]}', "json", [("a", "x")]),
        # a BOM saved twice: the header keeps its id column
        (codecs.BOM_UTF8 * 2 + b"id,text\n#7,hello\n", "csv", [("#7", "hello")]),
        # a UTF-8 BOM read as cp1252 and saved as UTF-8 ("\xef\xbb\xbf" -> "ï»¿")
        (codecs.BOM_UTF8 + "ï»¿id,text\n1,x\n".encode(), "csv", [("1", "x")]),
        # a lone surrogate is that record's error; its neighbours are read
        (
            b'{"id": "a", "text": "cut \\ud83d"}\n{"id": "b", "text": "ok"}\n',
            "jsonl",
            [("a", None), ("b", "ok")],
        ),
        # a JSON array written on one line and sent as JSON Lines: its tickets
        (b'[{"id": "a", "text": "x"}, {"id": "b", "text": "y"}]\n', "jsonl", [("a", "x"), ("b", "y")]),
        # a quoted empty field is a record (with an error), not a blank line
        (b'text\n""\nhello\n', "csv", [(None, None), (None, "hello")]),
        # Excel's empty rows (separators only) are not records
        (b"id,text\r\n1,hi\r\n,\r\n,\r\n", "csv", [("1", "hi")]),
    ],
)
def test_issue_21_regressions(body: bytes, fmt: str, expected: list[tuple]) -> None:
    records, error = read(body, _gf(fmt))
    assert error is None, error
    assert_exact(records, [Expect(i, t) for i, t in expected])


def test_utf8_json_lines_labelled_utf16_is_read_by_its_bytes() -> None:
    body = b'{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n'
    records, error = read(body, _gf("jsonl"), content_type="application/jsonlines; charset=utf-16")
    assert error is None
    assert [(r.id, r.text) for r in records] == [("a", "x"), ("b", "y")]


def test_a_truncated_gzip_says_where_reading_stopped() -> None:
    lines = b"".join(
        json.dumps({"id": f"t{i}", "text": f"ticket {i} " * 20}).encode() + b"\n" for i in range(3000)
    )
    cut = gzip.compress(lines)[:20_000]
    records, error = read(cut, _gf("jsonl"), key="x.jsonl.gz", feed=(True, 4096))
    assert error is not None and error.startswith("the gzip data is corrupt or truncated")
    assert f"the last line read whole: {len(records):,}" in error
    assert "decompressed bytes" in error
    assert [r.id for r in records] == [f"t{i}" for i in range(len(records))]
