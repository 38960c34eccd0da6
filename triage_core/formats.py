"""The three ticket formats, read from decoded text into :class:`TicketRecord` s.

* **JSON Lines**: one JSON object per line (a bare JSON string is a ticket without id); blank
  lines are not records; every JSON value of a line is a record (files joined without a final
  newline), a line of stray text names the values it holds (issue #21).
* **CSV**: a header row naming the fields (case-insensitive), or configured column names for
  headerless data (batch transform's mini-batches). The delimiter is the first of ``,`` ``;``
  tab ``|`` that splits the header into the configured text field(s) (Excel writes ``;`` in
  locales with a decimal comma). Quoting cannot swallow the file: a quoted field may span at
  most ``max_lines`` lines and ``max_chars`` characters; a row whose quote never closes, or
  whose closing quote is followed by stray text, is one per-record error naming its line, and
  reading resumes at the line after that row's first line.
* **JSON**: an array of ticket objects, an object holding one under a known name, or one ticket
  object (:mod:`triage_core.jsonstream`).
* A CSV row that names the text field(s) is a header (of a file joined to this one), not a record.

Every record that cannot be used is a record with an ``error``, never skipped; its error names
its line when its id cannot be read. A source that as a whole has none of the configured text
fields is a :class:`RecordFormatError`.
"""

from __future__ import annotations

import csv
import json
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence

from triage_core.jsonstream import JsonRecords
from triage_core.records import (
    DEFAULT_FIELDS,
    FieldMap,
    RecordFormatError,
    TicketRecord,
    at_line,
    check_shape,
    escapes_surrogate,
    id_pattern,
    make_record,
    normalise_id,
    record_from_cells,
    record_from_object,
    sniff_id,
    without_surrogates,
)
from triage_core.textstream import decode_bytes

CSV_MAX_LINES = 1000  # lines one quoted CSV field may span
CSV_DELIMITERS = (",", ";", "\t", "|")
Line = tuple[int, str | None]  # (1-based line number, text with its "\n"; None = over the limit)

# Python's csv module refuses fields over 128 KiB by default; records are bounded by the
# reader's own limits instead.
csv.field_size_limit(max(csv.field_size_limit(), 1 << 30))


def numbered(lines: Iterable[Line] | Iterable[bytes] | Iterable[str]) -> Iterator[Line]:
    """Accept ``(number, text)`` pairs as :func:`textstream.iter_lines` makes them, or plain
    lines (bytes decoded with the reader's never-fail rules)."""
    for number, line in enumerate(lines, start=1):
        if isinstance(line, tuple):
            yield line
        elif isinstance(line, bytes):
            yield number, decode_bytes(line)
        else:
            yield number, line


def _too_large(index: int, limit: int | None, line: int) -> TicketRecord:
    size = f"{limit} characters" if limit else "the record limit"
    return TicketRecord(index, None, None, f"record is larger than {size} (line {line})")


# --- JSON Lines ------------------------------------------------------------------------------
def iter_jsonl(
    lines: Iterable[Line] | Iterable[bytes] | Iterable[str],
    fields: FieldMap = DEFAULT_FIELDS,
    max_chars: int | None = None,
) -> Iterator[TicketRecord]:
    """One record per non-blank line; a bad line is a record with an error, never skipped."""
    return check_shape(_jsonl_items(numbered(lines), fields, max_chars), fields)


def _jsonl_items(lines: Iterator[Line], fields: FieldMap, max_chars: int | None):
    loads = json.loads
    id_re = id_pattern(fields)
    index = 0
    for number, line in lines:
        if line is None:
            yield _too_large(index, max_chars, number), None
            index += 1
            continue
        if not line or line.isspace():
            continue
        if index == 0 and line.strip() in ("[", "{"):
            raise RecordFormatError(
                f"line {number} is {line.strip()!r} alone: a JSON document written over several lines, "
                "not JSON Lines (one ticket per line): send it as JSON (.json, application/json)"
            )
        try:
            obj = loads(line.rstrip("\n"))
        except (ValueError, RecursionError):
            # Not one JSON value: maybe several (files joined without a final newline), a BOM
            # of a joined file, or broken JSON. Each value is a record of its own.
            for item in _line_values(index, line, number, fields, id_re):
                yield item
                index += 1
            continue
        if isinstance(obj, dict):
            record = record_from_object(index, obj, fields, number)
            if "\\ud" in line or "\\uD" in line:  # may hold a lone surrogate: look (rarely true)
                record = without_surrogates(record)
            yield record, obj.keys()
        elif isinstance(obj, list) and obj and all(isinstance(item, dict) for item in obj):
            # a JSON array of tickets on one line (a .json file sent as JSON Lines): its tickets
            surrogates = escapes_surrogate(line)
            for item in obj:
                record = record_from_object(index, item, fields, number)
                yield (without_surrogates(record) if surrogates else record), item.keys()
                index += 1
            continue
        else:
            if index == 0 and isinstance(obj, str) and obj.strip().lower() in _header_names(fields):
                raise RecordFormatError(
                    f"the first line is {obj!r}, a CSV header, not a ticket: send the file as CSV "
                    "(.csv, text/csv)"
                )
            yield _non_object(index, obj, fields, number), None
        index += 1


def _header_names(fields: FieldMap) -> set[str]:
    return {fields.id.lower(), *(name.lower() for name in fields.text)}


_DECODE = json.JSONDecoder().raw_decode
_JSON_WS = " \t\n\r\ufeff"  # JSON's whitespace, and the BOM of a file joined mid-line


def _line_values(index: int, line: str, number: int, fields: FieldMap, id_re):
    """The records of a line that is not one JSON value.

    Every JSON value on the line is a record, in order (two files joined without a final
    newline put two tickets on one line). Text that is not a JSON value is: a record error of
    its own when it starts like a record (``{`` or ``"``: a record cut short); otherwise stray
    text, and then nothing on the line is trusted: each value seen is a record error naming it,
    so no record is made up of the stray text and none is read from a damaged line."""
    line = line.rstrip("\n")
    pos, end = 0, len(line)
    items: list[tuple[TicketRecord, object]] = []
    exc: Exception
    while True:
        while pos < end and line[pos] in _JSON_WS:
            pos += 1
        if pos >= end:
            yield from items
            return
        try:
            value, stop = _DECODE(line, pos)
        except (ValueError, RecursionError) as err:
            exc = err
            break
        number_here = index + len(items)
        if isinstance(value, dict):
            record = record_from_object(number_here, value, fields, number)
            if escapes_surrogate(line, pos, stop):
                record = without_surrogates(record)
            items.append((record, value.keys()))
        else:
            items.append((_non_object(number_here, value, fields, number), None))
        pos = stop
    if isinstance(exc, json.JSONDecodeError):
        message = f"invalid JSON: {exc.msg}"
    elif isinstance(exc, RecursionError):
        message = "invalid JSON: nested deeper than the JSON decoder allows"
    else:
        message = "invalid JSON"
    if items and line[pos] not in '{"':
        where = f"stray text after the {len(items)} JSON value(s) of line {number} (column {pos + 1})"
        for record, _ in items:
            yield TicketRecord(record.index, record.id, None, where), None  # where names the line
        return
    yield from items
    ticket_id = sniff_id(line[pos:], id_re)
    if items:
        message += f" (after {len(items)} record(s) on the same line)"
    yield TicketRecord(index + len(items), ticket_id, None, at_line(message, ticket_id, number)), None


def _non_object(index: int, value: object, fields: FieldMap, line: int | None) -> TicketRecord:
    if isinstance(value, str):
        record = make_record(index, None, value)
        return record if record.ok else record._replace(error=at_line(record.error, None, line))
    names = " + ".join(repr(n) for n in fields.text)
    return TicketRecord(
        index, None, None, at_line(f"a ticket must be a JSON object with {names}", None, line)
    )


# --- JSON (array of tickets) -----------------------------------------------------------------
class JsonTickets:
    """Records of a JSON document; afterwards ``members`` / ``records_key`` / ``top_level`` as in
    :class:`JsonRecords` (the server reads ``parameters`` and ``inputs`` from them)."""

    def __init__(
        self,
        read: Callable[[int], str],
        fields: FieldMap = DEFAULT_FIELDS,
        max_chars: int = 8 * 1024 * 1024,
        keep_members: Collection[str] = (),
    ):
        self.document = JsonRecords(read, max_chars, keep_members, capture=(fields.id, *fields.text))
        self.fields = fields
        self.objects = 0  # elements that were JSON objects (the rest: strings, other values, errors)

    def __iter__(self) -> Iterator[TicketRecord]:
        return check_shape(self._items(), self.fields)

    def _items(self):
        # An element is located by its position (the record number); an error found in its
        # text also names its line.
        id_re = id_pattern(self.fields)
        fields = self.fields
        for index, (value, error, raw, escapes) in enumerate(self.document):
            if error is not None:
                yield TicketRecord(index, sniff_id(raw, id_re), None, error), None
            elif isinstance(value, dict):
                self.objects += 1
                record = record_from_object(index, value, fields, None)
                yield without_surrogates(record) if escapes else record, value.keys()
            else:
                yield _non_object(index, value, fields, None), None


# --- CSV -------------------------------------------------------------------------------------
class _Unbounded(Exception):
    """A quoted field went on past the line or character bound."""


class _Oversized(Exception):
    """A physical line over the record limit is part of the row."""


class _RowLines:
    """Feeds physical lines to ``csv.reader`` and remembers the current row's lines (bounded),
    so that a broken row can be given up and reading resumed at its second line."""

    def __init__(self, lines: Iterator[Line], max_lines: int, max_chars: int | None):
        self._lines = lines
        self._replay: deque[Line] = deque()
        self._max_lines = max_lines
        self._max_chars = max_chars
        self.row: list[Line] = []
        self._chars = 0

    def __iter__(self) -> _RowLines:
        return self

    def _next_line(self) -> Line:
        return self._replay.popleft() if self._replay else next(self._lines)

    def __next__(self) -> str:
        item = self._next_line()
        self.row.append(item)
        text = item[1]
        if text is None:
            raise _Oversized
        self._chars += len(text)
        # the row's own line break is not part of its record (as in iter_lines: a line of exactly
        # max_chars characters plus its "\n" is within the limit)
        chars = self._chars - 1 if text.endswith("\n") else self._chars
        if len(self.row) > self._max_lines or (self._max_chars and chars > self._max_chars):
            raise _Unbounded
        return text

    def begin_row(self) -> None:
        self.row = []
        self._chars = 0

    def resume_after_first_line(self) -> None:
        self._replay.extendleft(reversed(self.row[1:]))
        self.begin_row()

    def first_nonblank(self) -> Line | None:
        """The first line with content (blank lines before the header are skipped)."""
        while True:
            try:
                item = self._next_line()
            except StopIteration:
                return None
            if item[1] is None or item[1].strip():
                return item

    def push_back(self, item: Line) -> None:
        self._replay.appendleft(item)


def _split(text: str, delimiter: str) -> list[str]:
    try:
        return next(csv.reader([text], delimiter=delimiter), [])
    except csv.Error:
        return []


def _columns(cells: Sequence[str]) -> list[str]:
    # "\ufeff": the BOM of a file joined to another, or one a tool added twice
    return [cell.strip().lstrip("\ufeff").strip().lower() for cell in cells]


def detect_delimiter(header_line: str, fields: FieldMap) -> str:
    """The delimiter whose split of the header line holds every configured text field."""
    wanted = {name.lower() for name in fields.text}
    for delimiter in CSV_DELIMITERS:
        if wanted <= set(_columns(_split(header_line, delimiter))):
            return delimiter
    return ","


def iter_csv(
    lines: Iterable[Line] | Iterable[bytes] | Iterable[str],
    fields: FieldMap = DEFAULT_FIELDS,
    max_chars: int | None = None,
    max_lines: int = CSV_MAX_LINES,
    columns: Sequence[str] | None = None,
) -> Iterator[TicketRecord]:
    """CSV with a header row naming the id and text fields. With ``columns``, data whose first
    row does not name the text fields has no header row and these are its columns."""
    feeder = _RowLines(numbered(lines), max_lines, max_chars)
    first = feeder.first_nonblank()
    if first is None:
        return
    if first[1] is None:
        raise RecordFormatError(f"the CSV header (line {first[0]}) is larger than {max_chars} characters")
    delimiter = detect_delimiter(first[1], fields)
    feeder.push_back(first)
    wanted = {name.lower() for name in fields.text}
    if columns and not wanted <= set(_columns(_split(first[1], delimiter))):
        header = _columns(columns)  # no header row in this data (a batch transform mini-batch)
    else:
        feeder.begin_row()
        try:
            header = _columns(next(csv.reader(feeder, delimiter=delimiter, strict=True)))
        except (csv.Error, _Unbounded, _Oversized):
            raise RecordFormatError(f"the CSV header (line {first[0]}) is malformed") from None
    missing = [name for name in fields.text if name.lower() not in header]
    if missing:
        raise RecordFormatError(
            f"the CSV header has columns {header}; expected text column(s) "
            f"{[n.lower() for n in fields.text]} (missing {missing}) and optionally id column "
            f"{fields.id.lower()!r}: set the field mapping to the file's column names"
        )
    yield from _csv_rows(feeder, delimiter, _Layout(header, fields), max_chars, max_lines)


class _Layout:
    """Where a CSV header puts the id and text fields."""

    def __init__(self, header: list[str], fields: FieldMap):
        self.fields = fields
        self.width = len(header)
        self.id_col = header.index(fields.id.lower()) if fields.id.lower() in header else None
        self.text_cols = [header.index(name.lower()) for name in fields.text]
        # the text fields are in every header a layout is made of (iter_csv and header_again
        # check), so the header's names and the id's are every name a header row can start with
        self.known = {*header, fields.id.lower()}
        self.longest = max(map(len, self.known))
        self.starts = tuple(self.known)
        # first characters a header row can start with: a row that starts otherwise is a record
        self.initials = frozenset(
            {"\ufeff", '"', " ", *(n[0] for n in self.known if n), *(n[0].upper() for n in self.known if n)}
        )

    def header_again(self, row: list[str], line: str) -> tuple[_Layout, str] | None:
        """The layout and delimiter of a header row (files joined with ``cat``: the second file's
        header, perhaps with its BOM, other columns or another delimiter), else None. An
        ordinary row costs a look at the start of its first cell."""
        # the padding first (a BOM, quotes, spaces: any number), then only as many characters
        # as the longest name are lowered (a first cell may be a ticket's whole text)
        head = row[0].lstrip('\ufeff" ')[: self.longest].lower()
        if not head.startswith(self.starts):
            return None
        line = line.lstrip("\ufeff")
        for delimiter in CSV_DELIMITERS:
            columns = _columns(_split(line, delimiter))
            if "" in columns or len(set(columns)) != len(columns):
                continue
            if all(name.lower() in columns for name in self.fields.text):
                return _Layout(columns, self.fields), delimiter  # names the text field(s) once
        return None


def _csv_rows(
    feeder: _RowLines,
    delimiter: str,
    layout: _Layout,
    max_chars: int | None,
    max_lines: int,
) -> Iterator[TicketRecord]:
    reader = csv.reader(feeder, delimiter=delimiter, strict=True)
    width, id_col, text_cols = layout.width, layout.id_col, layout.text_cols
    index = 0
    while True:
        feeder.begin_row()
        try:
            row = next(reader)
        except StopIteration:
            return
        except (csv.Error, _Unbounded, _Oversized) as exc:
            lines = feeder.row
            number, first_text = lines[0]
            if first_text is not None and (again := layout.header_again([first_text], first_text)):
                # the header of a file joined to this one, quoted and in another delimiter
                layout, delimiter = again
                width, id_col, text_cols = layout.width, layout.id_col, layout.text_cols
                feeder.resume_after_first_line()
                reader = csv.reader(feeder, delimiter=delimiter, strict=True)
                continue
            if first_text is None:
                yield _too_large(index, max_chars, number)
            else:
                ticket_id = _id_from_line(first_text, delimiter, id_col)
                error = _quote_error(exc, number, len(lines), max_lines, max_chars)
                yield TicketRecord(index, ticket_id, None, error)  # the error names its line
            feeder.resume_after_first_line()
            index += 1
            continue
        # a blank line, or a row of separators only (Excel's empty rows), is not a record; a
        # quoted empty or blank field is (a record with an empty text)
        if (not row or all(not cell.strip() for cell in row)) and not any(
            '"' in (text or "") for _, text in feeder.row
        ):
            continue
        number = feeder.row[0][0]
        if row[0][:1] in layout.initials and (again := layout.header_again(row, feeder.row[0][1] or "")):
            layout, new_delimiter = again  # a header row is not a record
            width, id_col, text_cols = layout.width, layout.id_col, layout.text_cols
            if new_delimiter != delimiter:
                delimiter = new_delimiter
                reader = csv.reader(feeder, delimiter=delimiter, strict=True)
            continue
        if len(row) > width:
            ticket_id = _normal_id(row[id_col]) if id_col is not None else None
            error = f"expected {width} columns, got {len(row)}"
            yield TicketRecord(index, ticket_id, None, at_line(error, ticket_id, number))
        else:
            if len(row) < width:  # trailing empty cells left out: they are empty
                row += [""] * (width - len(row))
            raw_id = row[id_col] if id_col is not None else None
            yield record_from_cells(index, raw_id, [row[c] for c in text_cols], number)
        index += 1


def _normal_id(value: str) -> str | None:
    return normalise_id(value.strip())


def _id_from_line(text: str, delimiter: str, id_col: int | None) -> str | None:
    """The id of a broken row, when it comes before the broken field on the row's first line."""
    if id_col is None:
        return None
    cells = _split(text, delimiter)
    if len(cells) <= id_col + 1 or any(ch in cells[id_col] for ch in '"\r\n'):
        return None
    return _normal_id(cells[id_col])


def _quote_error(exc: Exception, line: int, lines: int, max_lines: int, max_chars: int | None) -> str:
    where = f"the row starting on line {line}"
    if isinstance(exc, _Oversized):
        return f"{where} has a line larger than {max_chars} characters (line {line + lines - 1})"
    if isinstance(exc, _Unbounded):
        bound = f"{max_lines} lines" if lines > max_lines else f"{max_chars} characters"
        return f"unclosed quote: the quoted field in {where} is still open after {bound}"
    message = str(exc)
    if "unexpected end of data" in message:
        return f"unclosed quote: the quoted field in {where} never closes"
    if "expected after" in message:
        if lines > 1:
            return (
                f"unclosed quote: the quoted field in {where} closes on line {line + lines - 1} "
                "followed by stray text"
            )
        return f'stray text after a closing quote in {where} (a quote inside a quoted field is written "")'
    return f"malformed CSV in {where}: {message}"
