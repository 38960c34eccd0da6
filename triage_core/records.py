"""Ticket batch files: JSON Lines (``{"id": ..., "text": ...}`` per line) and CSV (header with
``text`` and optional ``id``).

Used by the inference server (request bodies) and by the dispatcher Lambda (files dropped in
the input bucket), so both agree on what a valid ticket record is. Parsing streams: it takes an
iterable of raw byte lines and yields one :class:`TicketRecord` per input record, good or bad,
so a caller can account for every record without holding the file in memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

JSONL_TYPES = frozenset({"application/jsonlines", "application/jsonl", "application/x-jsonlines"})
CSV_TYPES = frozenset({"text/csv"})


# Python's csv module refuses fields over 128 KiB by default; a ticket may legitimately be a
# 1 MB e-mail. Record size is bounded by callers instead (see ``split_lines``).
csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))


class RecordFormatError(ValueError):
    """The file as a whole cannot be read (e.g. CSV without a ``text`` column)."""


class OversizedLine(bytes):
    """Stands for a line longer than ``split_lines``'s limit: its bytes were dropped."""

    limit: int


def split_lines(chunks: Iterable[bytes], max_line_bytes: int) -> Iterator[bytes]:
    """Re-cut arbitrary byte chunks (e.g. an HTTP body as it arrives) into lines, ``\\n`` kept.

    A line longer than ``max_line_bytes`` is not kept in memory: it comes out as an empty
    :class:`OversizedLine`, which the parsers turn into a per-record error.
    """
    pending: list[bytes] = []
    pending_len = 0
    oversized = False
    for chunk in chunks:
        start = 0
        find = chunk.find
        while (end := find(b"\n", start)) >= 0:
            piece = chunk[start : end + 1]
            start = end + 1
            if oversized or pending_len + len(piece) > max_line_bytes:
                marker = OversizedLine()
                marker.limit = max_line_bytes
                yield marker
            elif pending:
                yield b"".join((*pending, piece))
            else:
                yield piece
            pending, pending_len, oversized = [], 0, False
        if start < len(chunk) and not oversized:
            rest = chunk[start:]
            pending_len += len(rest)
            if pending_len > max_line_bytes:
                pending, pending_len, oversized = [], 0, True
            else:
                pending.append(rest)
    if oversized:
        marker = OversizedLine()
        marker.limit = max_line_bytes
        yield marker
    elif pending:
        yield b"".join(pending)


@dataclass(frozen=True)
class TicketRecord:
    """One input record. ``error`` is set when the record itself is unusable."""

    index: int  # 0-based position among the file's records
    id: str | None
    text: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _normalise_id(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise ValueError("id must be a string or an integer")


def make_record(index: int, raw_id: object, text: object) -> TicketRecord:
    """Validate one record's fields; a bad id or text becomes a per-record error."""
    try:
        ticket_id = _normalise_id(raw_id)
    except ValueError as exc:
        return TicketRecord(index, None, None, str(exc))
    if text is None:
        return TicketRecord(index, ticket_id, None, "missing field 'text'")
    if not isinstance(text, str):
        return TicketRecord(index, ticket_id, None, "field 'text' must be a string")
    if not text.strip():
        return TicketRecord(index, ticket_id, None, "empty text")
    return TicketRecord(index, ticket_id, text)


def iter_jsonl(lines: Iterable[bytes]) -> Iterator[TicketRecord]:
    """One record per non-blank line; a bad line is a record with an error, never skipped."""
    index = 0
    for raw in lines:
        if isinstance(raw, OversizedLine):
            yield TicketRecord(index, None, None, f"record is larger than {raw.limit} bytes")
            index += 1
            continue
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            yield TicketRecord(index, None, None, "line is not valid UTF-8")
        except json.JSONDecodeError as exc:
            yield TicketRecord(index, None, None, f"invalid JSON: {exc.msg}")
        else:
            if isinstance(obj, dict):
                yield make_record(index, obj.get("id"), obj.get("text"))
            elif isinstance(obj, str):
                yield make_record(index, None, obj)
            else:
                yield TicketRecord(index, None, None, "line must be a JSON object with 'text'")
        index += 1


class _DecodedLines:
    """Lines as str for the csv module. surrogateescape keeps undecodable bytes visible so the
    affected row can be flagged; an :class:`OversizedLine` becomes a newline and is remembered
    so the row it ends up in is flagged."""

    def __init__(self, lines: Iterable[bytes]):
        self._lines = iter(lines)
        self.oversized: int | None = None

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = next(self._lines)
        if isinstance(raw, OversizedLine):
            self.oversized = raw.limit
            return "\n"
        return raw.decode("utf-8", errors="surrogateescape")


def _has_undecodable(value: str) -> bool:
    return any("\udc80" <= ch <= "\udcff" for ch in value)


def iter_csv(lines: Iterable[bytes]) -> Iterator[TicketRecord]:
    """CSV with a header row naming ``text`` (required) and ``id`` (optional)."""
    decoded = _DecodedLines(lines)
    reader = csv.reader(decoded)
    header = next(reader, None)
    if header is None:
        return
    if decoded.oversized is not None:
        raise RecordFormatError(f"CSV header is larger than {decoded.oversized} bytes")
    header = [h.strip().lstrip("\ufeff").lower() for h in header]
    if "text" not in header:
        raise RecordFormatError(f"CSV header must have a 'text' column, got {header}")
    text_col = header.index("text")
    id_col = header.index("id") if "id" in header else None
    index = 0
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # e.g. a NUL byte; the reader resumes at the next line
            decoded.oversized = None
            yield TicketRecord(index, None, None, f"malformed CSV row: {exc}")
            index += 1
            continue
        if decoded.oversized is not None:
            yield TicketRecord(index, None, None, f"record is larger than {decoded.oversized} bytes")
            decoded.oversized = None
            index += 1
            continue
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            record = TicketRecord(index, None, None, f"expected {len(header)} columns, got {len(row)}")
        elif any(_has_undecodable(cell) for cell in row):
            record = TicketRecord(index, None, None, "row is not valid UTF-8")
        else:
            record = make_record(index, row[id_col] if id_col is not None else None, row[text_col])
        yield record
        index += 1


def iter_records(content_type: str, lines: Iterable[bytes]) -> Iterator[TicketRecord]:
    """Dispatch on a (parameter-free, lower-case) content type."""
    if content_type in JSONL_TYPES:
        return iter_jsonl(lines)
    if content_type in CSV_TYPES:
        return iter_csv(lines)
    raise RecordFormatError(f"unsupported content type {content_type!r}")
