"""Generated ticket files, written by independent writers, with the records they must read back.

One generator for two users: the property tests (tests/core/test_reader_properties.py,
tests/container/test_ingest_damage.py) drive it with Hypothesis, which shrinks a failing file to a
small one; the chaos workload (:mod:`chaos.workload`) drives it with a seeded ``random.Random``. Every
choice goes through :class:`Draw` (one method, ``integer``), so both see the same files.

The files are written by the standard library's own writers (``json``, ``csv``, ``gzip``, ``codecs``
in each supported encoding), never by this project's reader, and what must come back is derived
from the tickets as generated, by the documented rules (docs/formats.md):

* JSON keeps a text exactly; CSV too, except that its line breaks read as ``\\n`` ("Line endings");
* an id is a JSON string or integer, a CSV cell (trimmed); no id or an empty cell is none;
* blank or whitespace-only text, a lone UTF-16 surrogate (``\\ud83d``, which only JSON can
  carry), an id that is neither string nor integer: a record error, under its id when it has one.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

JSONL = "application/jsonlines"
CSV_TYPE = "text/csv"
JSON_TYPE = "application/json"

# Pieces texts are made of: words, and what breaks naive readers.
WORDS = ("card", "arrived", "refund", "exchange", "rate", "top-up", "failed", "PIN", "blocked", "help")
TRICKY = (
    '"',
    "'",
    ",",
    ";",
    "\t",
    "|",
    "\\",
    "\n",
    "\r\n",
    "\r",
    "\u2028",
    "\u2029",
    "\x85",
    "\x0b",
    "\x0c",
    "\ufeff",
    "\x01",
    "\x1f",
    "\x7f",
    "😀",
    "👍🏽",
    "é",
    "€",
    "ß",
    "日本語",
    "עברית",
    " ",
    "{",
    "}",
    "[",
    "]",
    ":",
    "<record 1>",
    "id,text",
)
LONE_SURROGATE = "\ud83d"  # what JavaScript leaves when it cuts a string inside an emoji
ID_STRINGS = ("#1", "#2", "T-1001", "42", "ticket 7", "Ünïcode-ид", 'quo"te', "a,b;c|d", "1#2")


class Draw(Protocol):
    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]; small values are the simple ones (what shrinking seeks)."""


class RandomDraw:
    """:class:`Draw` from a seeded ``random.Random`` (the chaos workload)."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)


def _choice(draw: Draw, items: Sequence[Any]) -> Any:
    return items[draw.integer(0, len(items) - 1)]


def _flag(draw: Draw, one_in: int = 2) -> bool:
    return draw.integer(0, one_in - 1) == 0


@dataclass(frozen=True)
class Ticket:
    """One record as generated: ``id`` None (no id), a str, an int, or ``BAD_ID`` (a float:
    not an id); ``text`` as written."""

    id: Any
    text: str


BAD_ID = 1.5


@dataclass(frozen=True)
class Expect:
    """What the reader must give for one record: its id and either its text or an error."""

    id: str | None
    text: str | None  # None: a record error


@dataclass
class GeneratedFile:
    body: bytes
    key: str  # a file name with the format's extension (and .gz)
    content_type: str
    format: str  # jsonl | csv | json
    encoding: str
    compressed: bool
    tickets: list[Ticket] = field(default_factory=list)
    expected: list[Expect] = field(default_factory=list)
    description: str = ""


def draw_text(draw: Draw, *, allow_surrogate: bool = True) -> str:
    kind = draw.integer(0, 9)
    if kind == 0:
        return _choice(draw, ("", " ", "\t", "\r\n", "   \n "))  # blank: an error
    if kind == 1:
        return "long " + "ticket text " * draw.integer(200, 700)
    parts = []
    for _ in range(draw.integer(1, 8)):
        parts.append(_choice(draw, WORDS) if _flag(draw) else _choice(draw, TRICKY))
        if _flag(draw, 3):
            parts.append(" ")
    if allow_surrogate and _flag(draw, 12):
        parts.insert(draw.integer(0, len(parts)), LONE_SURROGATE)
    return "".join(parts)


def draw_id(draw: Draw, serial: int, *, json_ids: bool) -> Any:
    kind = draw.integer(0, 5 if json_ids else 3)
    if kind == 0:
        return None
    if kind == 1:
        return f"t{serial}"
    if kind == 2:
        return f"{_choice(draw, ID_STRINGS)}-{serial}" if _flag(draw) else _choice(draw, ID_STRINGS)
    if kind == 3:
        return serial * 1000 + draw.integer(0, 999)
    if kind == 4:
        return f"t{serial}"
    return BAD_ID


def _csv_text(text: str) -> str:
    """A text as CSV gives it back: its line breaks are ``\\n`` (universal newlines)."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


def expected_record(ticket: Ticket, fmt: str) -> Expect:
    raw_id, text = ticket.id, ticket.text
    if raw_id is BAD_ID:
        return Expect(None, None)
    ticket_id = None if raw_id is None else str(raw_id).strip() if fmt == "csv" else str(raw_id)
    ticket_id = ticket_id or None
    if fmt == "csv":
        text = _csv_text(text)
    if not text.strip() or LONE_SURROGATE in text:
        return Expect(ticket_id, None)
    return Expect(ticket_id, text)


ENCODINGS = ("utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-16-be", "utf-32", "windows-1252")
# how each encoding is written (codecs name) and what the Content-Type declares
_DECLARED = {"utf-16-le": "utf-16le", "utf-16-be": "utf-16be", "windows-1252": "windows-1252"}


def _encode(text: str, encoding: str) -> bytes:
    # "utf-16" / "utf-32" / "utf-8-sig": Python's codecs write the BOM themselves
    return codecs.encode(text, encoding)


def write_file(draw: Draw, tickets: list[Ticket] | None = None, *, fmt: str | None = None) -> GeneratedFile:
    """A file of generated tickets in a drawn format, encoding and compression."""
    fmt = fmt or _choice(draw, ("jsonl", "csv", "json"))
    if tickets is None:
        tickets = [
            Ticket(
                draw_id(draw, n, json_ids=fmt != "csv"),
                draw_text(draw, allow_surrogate=fmt != "csv"),
            )
            for n in range(1, draw.integer(1, 12) + 1)
        ]
    if fmt == "csv":
        tickets = [_csv_safe(t) for t in tickets]
    encoding = _choice(draw, ENCODINGS)
    if encoding == "windows-1252" and not _encodable(tickets, "cp1252"):
        encoding = "utf-8"
    if fmt == "jsonl":
        text = _jsonl(draw, tickets)
        content_type = JSONL
    elif fmt == "csv":
        text = _csv(draw, tickets)
        content_type = CSV_TYPE
    else:
        text = _json(draw, tickets)
        content_type = JSON_TYPE
    body = _encode(text, encoding)
    if encoding in _DECLARED:  # BOM-less: the label says what it is (as an HTTP client sends it)
        content_type += f"; charset={_DECLARED[encoding]}"
    compressed = _flag(draw, 3)
    if compressed:
        body = gzip.compress(body, mtime=0)
    ext = {"jsonl": ".jsonl", "csv": ".csv", "json": ".json"}[fmt]
    return GeneratedFile(
        body,
        f"generated{ext}{'.gz' if compressed else ''}",
        content_type,
        fmt,
        encoding,
        compressed,
        tickets,
        [expected_record(t, fmt) for t in tickets],
        f"{fmt} {encoding}{' gzip' if compressed else ''}, {len(tickets)} tickets",
    )


def _encodable(tickets: list[Ticket], codec: str) -> bool:
    try:
        for t in tickets:
            t.text.encode(codec)
            str(t.id).encode(codec)
    except UnicodeError:
        return False
    return True


def _csv_safe(ticket: Ticket) -> Ticket:
    """CSV carries what its cells can: no NUL, no surrogate, no bad-id type; a row of the header's
    own names (``id``, ``text``) is a header row (docs/formats.md), so it is not generated."""
    text = ticket.text.replace(LONE_SURROGATE, "?").replace("\x00", "")
    raw_id = None if ticket.id is BAD_ID else ticket.id
    if raw_id is not None:
        raw_id = str(raw_id).replace("\r", " ").replace("\n", " ").strip() or None
    if raw_id is not None and raw_id.lower().lstrip("\ufeff") == "id" and text.strip().lower() == "text":
        text = "text of a ticket"
    return Ticket(raw_id, text)


def _jsonl(draw: Draw, tickets: list[Ticket]) -> str:
    newline = _choice(draw, ("\n", "\r\n"))
    ascii_only = _flag(draw)
    lines = []
    for t in tickets:
        obj: dict[str, Any] = {} if t.id is None and _flag(draw) else {"id": t.id}
        obj["text"] = t.text
        lines.append(json.dumps(obj, ensure_ascii=ascii_only or LONE_SURROGATE in t.text))
    return newline.join(lines) + (newline if _flag(draw, 4) is False else "")


def _json(draw: Draw, tickets: list[Ticket]) -> str:
    objects = [{"id": t.id, "text": t.text} for t in tickets]
    ascii_only = _flag(draw) or any(LONE_SURROGATE in t.text for t in tickets)
    indent = _choice(draw, (None, 2, "\t"))
    if _flag(draw):
        return json.dumps(objects, ensure_ascii=ascii_only, indent=indent)
    # an array before the tickets: the first array of an object is not taken for them (issue #21)
    export = {"tags": ["a", "b"], "tickets": objects, "next_page": None, "count": len(objects)}
    return json.dumps(export, ensure_ascii=ascii_only, indent=indent)


def _csv(draw: Draw, tickets: list[Ticket]) -> str:
    out = io.StringIO(newline="")
    delimiter = _choice(draw, (",", ";", "\t", "|"))
    quoting = _choice(draw, (csv.QUOTE_MINIMAL, csv.QUOTE_ALL))
    terminator = _choice(draw, ("\r\n", "\n"))
    if terminator == "\n" and any("\r" in t.text for t in tickets):
        # Python's csv leaves a bare CR unquoted when rows end in LF: that file is ambiguous (a
        # reader with universal newlines, as docs/formats.md says this one is, ends the row there)
        quoting = csv.QUOTE_ALL
    writer = csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator=terminator)
    with_id = any(t.id is not None for t in tickets) or _flag(draw)
    if not with_id:
        # one column: no header can say which separator the rows use, and the reader takes ","
        # (docs/formats.md), so a one-column file is written with ","
        delimiter = ","
        writer = csv.writer(out, delimiter=delimiter, quoting=quoting, lineterminator=terminator)
    writer.writerow(["id", "text"] if with_id else ["text"])
    for t in tickets:
        cells = [("" if t.id is None else str(t.id)), t.text] if with_id else [t.text]
        if all(not cell.strip() for cell in cells):
            # an unquoted row of blanks is a blank line (not a record): quote its text, as a
            # writer that means a record with an empty text must
            quoted = '"' + t.text.replace('"', '""') + '"'
            out.write(delimiter.join([*cells[:-1], quoted]) + writer.dialect.lineterminator)
        else:
            writer.writerow(cells)
    return out.getvalue()
