"""Records of a JSON document one at a time: ``[{...}, ...]`` or ``{"tickets": [{...}, ...], ...}``.

Help-desk APIs export tickets as one JSON array (Freshdesk's list endpoints) or as an object
holding the array next to paging fields (Zendesk's ``{"tickets": [...], "next_page": ...}``).
A 1 GB export cannot be parsed whole, and the dispatcher Lambda ships only the standard library
(plus the Powertools layer), so ijson is not available there. This is a small bounded reader on
top of the standard library's C-accelerated decoder (``json.JSONDecoder.raw_decode``):

* it never parses the document as a whole: each element of the records array is decoded on its
  own from a text buffer that holds one element (plus one read) at a time;
* an element longer than ``max_chars`` is skipped by a scanner that tracks only string and
  nesting state, and reported; so is an element that is not valid JSON (its extent is still
  known from the brackets, so reading resumes at the next element);
* in an object, the records array is the member named by one of :data:`WRAPPER_KEYS` (any
  case) whose value is an array: the first array of an object is not taken for the tickets (a
  ticket's ``tags``, a table's ``columns``); a second such array is an error (which holds the
  tickets would be a guess). Other members are skipped the same bounded way, or, when
  ``keep_members`` names them, decoded (each at most ``max_chars``) into
  :attr:`JsonRecords.members`; members named in ``capture`` (the ticket fields) are decoded
  too, so that an object without a records array that has them is read as *one* ticket;
* arrays written one after another (``cat a.json b.json``) are read in order, as one array;
* a document that ends before its closing bracket (a truncated file) is an error for the whole
  document, since the tickets after the cut are unknown;
* a value nested deeper than the standard decoder can recurse is an invalid element, not a
  crash.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterator
from typing import Any, NamedTuple

from triage_core.textstream import TextFormatError

READ_CHARS = 1 << 18
# Members that hold a file's tickets: help-desk and API exports (Zendesk ``tickets`` /
# ``requests`` / ``results``, ServiceNow ``result``, Jira ``issues``, HubSpot ``results``,
# Front ``_results``, generic ``records`` / ``items`` / ``data`` / ``rows``) and the serving
# shapes ``inputs`` / ``instances`` (SageMaker, Hugging Face).
WRAPPER_KEYS = frozenset(
    {
        *("tickets", "requests", "results", "result", "issues", "_results", "conversations"),
        *("records", "items", "data", "rows", "entries", "inputs", "instances"),
    }
)
_DEEP = "nested deeper than the JSON decoder allows"
_WS = re.compile(r"[ \t\n\r]*")
_SEPARATOR = re.compile(r"[ \t\n\r]*(?:,[ \t\n\r]*)?")  # between two elements
_STRUCT = re.compile(r'["\[\]{}]')
# The rest of a string after its opening quote (closing quote included / excluded), "unrolled" so
# that long strings match at the speed of a character class.
_STRING_REST = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_STRING_BODY = re.compile(r'[^"\\]*(?:\\.[^"\\]*)*', re.DOTALL)
_SCALAR_END = re.compile(r"[,\]}\s]")


class JsonStructureError(ValueError):
    """The document as a whole is not a JSON array of records (or an object holding one)."""


class Element(NamedTuple):
    """One element of the records array: its value, or why it could not be read (the error
    names the element's line; ``raw`` is its text, bounded, to find an id in it).
    ``escapes``: its text holds a ``\\ud...`` escape (it may decode to a lone surrogate)."""

    value: Any = None
    error: str | None = None
    raw: str = ""
    escapes: bool = False


def _escapes(buf: str, start: int, end: int) -> bool:
    return buf.find("\\ud", start, end) >= 0 or buf.find("\\uD", start, end) >= 0


class JsonRecords:
    """Iterate :class:`Element` s; afterwards ``members`` holds the kept top-level members and
    ``records_key`` names the member that held the records (None for a top-level array)."""

    def __init__(
        self,
        read: Callable[[int], str],
        max_chars: int,
        keep_members: Collection[str] = (),
        capture: Collection[str] = (),
    ):
        self._read = read
        self._max = max_chars
        self._keep = frozenset(keep_members)
        self._capture = frozenset(name.lower() for name in capture)
        self.captured: dict[str, Any] = {}
        self._buf = ""
        self._pos = 0
        self._eof = False
        self._line = 1
        self._line_pos = 0  # self._line counts the newlines before this buffer position
        self._decode = json.JSONDecoder().raw_decode
        self.members: dict[str, Any] = {}
        self._captured_escapes = False
        self._captured_error: str | None = None
        self.records_key: str | None = None
        self.top_level: str | None = None  # "array" | "object" | None (empty document)

    # --- buffer ----------------------------------------------------------------------------
    def _fill(self) -> bool:
        """Read more text; drop what was consumed. False at the end of the data."""
        if self._eof:
            return False
        if self._pos > READ_CHARS:
            self._line_at(self._pos)
            self._buf = self._buf[self._pos :]
            self._line_pos -= self._pos
            self._pos = 0
        try:
            piece = self._read(READ_CHARS)
        except TextFormatError as exc:
            line = self._line_at(len(self._buf))
            raise TextFormatError(f"{exc} (the JSON was read up to line {line:,})") from None
        if not piece:
            self._eof = True
            return False
        self._buf += piece
        return True

    def _line_at(self, pos: int) -> int:
        if pos > self._line_pos:
            self._line += self._buf.count("\n", self._line_pos, pos)
            self._line_pos = pos
        return self._line

    def _skip_ws(self) -> bool:
        """Move to the next non-whitespace character; False if the data ends first."""
        while True:
            self._pos = _WS.match(self._buf, self._pos).end()
            if self._pos < len(self._buf):
                return True
            if not self._fill():
                return False

    def _peek(self) -> str:
        return self._buf[self._pos]

    # --- values ----------------------------------------------------------------------------
    def _extent(self, start: int) -> int | None:
        """End of the value starting at ``start`` if it is complete in the buffer (brackets
        and strings only, no validation), else None."""
        buf = self._buf
        first = buf[start]
        if first == '"':
            match = _STRING_REST.match(buf, start + 1)
            return match.end() if match else None
        if first not in "[{":
            match = _SCALAR_END.search(buf, start)
            return match.start() if match else None
        depth, pos = 0, start
        while match := _STRUCT.search(buf, pos):
            char = match.group()
            if char == '"':
                string = _STRING_REST.match(buf, match.end())
                if string is None:
                    return None
                pos = string.end()
                continue
            depth += 1 if char in "[{" else -1
            pos = match.end()
            if depth == 0:
                return pos
        return None

    def _skip_value(self) -> None:
        """Skip the value at the cursor, however long, holding at most one read of it."""
        depth = 0
        in_string = False
        first = True
        scalar = False
        while True:
            buf, pos = self._buf, self._pos
            while pos < len(buf):
                if in_string:
                    pos = _STRING_BODY.match(buf, pos).end()
                    if pos >= len(buf) or buf[pos] == "\\":  # goes on past the buffer
                        break
                    pos, in_string = pos + 1, False  # the closing quote
                    if depth == 0:
                        self._pos = pos
                        return
                    continue
                if first:
                    first = False
                    scalar = buf[pos] not in '"[{'  # a number or a literal
                if scalar:  # it may go on past this read: it ends only at a separator
                    match = _SCALAR_END.search(buf, pos)
                    if match:
                        self._pos = match.start()
                        return
                    pos = len(buf)
                    break
                match = _STRUCT.search(buf, pos)
                if match is None:
                    pos = len(buf)
                    break
                char, pos = match.group(), match.end()
                if char == '"':
                    in_string = True
                    continue
                depth += 1 if char in "[{" else -1
                if depth == 0:
                    self._pos = pos
                    return
            self._pos = pos  # what is before the cursor may be dropped by the next read
            if not self._fill():
                raise JsonStructureError(
                    f"the JSON data ends inside a value (line {self._line_at(self._pos)})"
                )

    def _value(self) -> tuple[Any, str | None, str]:
        """Decode the value at the cursor: (value, error, raw text when invalid). Values longer
        than ``max_chars`` are skipped and reported, never held."""
        want = 0
        while True:
            start, buf = self._pos, self._buf  # the cursor stays at the value until it is read
            try:
                value, end = self._decode(buf, start)
            except (json.JSONDecodeError, RecursionError) as exc:
                end = self._extent(start)
                message = exc.msg if isinstance(exc, json.JSONDecodeError) else _DEEP
                if end is not None:  # the value is complete, so it is invalid JSON
                    self._pos = end
                    lines = self._span(start, end)
                    return None, f"invalid JSON: {message} ({lines})", buf[start : min(end, start + 4096)]
            else:
                if end < len(buf) or self._eof:  # else a number may go on in the next read
                    self._pos = end
                    if end - start > self._max:
                        return None, f"record is larger than {self._max} characters", ""
                    return value, None, buf[start:end] if _escapes(buf, start, end) else ""
                message = "truncated"
            if self._eof:
                line = self._line_at(start)
                raise JsonStructureError(
                    f"the JSON data ends inside the value that starts on line {line} ({message}): "
                    "the data is truncated"
                )
            if len(buf) - start > self._max:
                self._skip_value()
                return None, f"record is larger than {self._max} characters", ""
            want = max(2 * want, len(buf) - start + READ_CHARS)  # doubling: retries stay linear
            while len(self._buf) - self._pos < want and self._fill():
                pass

    def _span(self, start: int, end: int) -> str:
        first = self._line_at(start)
        last = first + self._buf.count("\n", start, end)
        return f"line {first}" if last == first else f"lines {first}-{last}"

    # --- document --------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Element]:
        if not self._skip_ws():
            return
        first = self._peek()
        if first == "[":
            self.top_level = "array"
            self._pos += 1
            yield from self._array()
            while self._skip_bom_ws() and self._peek() == "[":  # arrays joined: cat a.json b.json
                self._pos += 1
                yield from self._array()
        elif first == "{":
            self.top_level = "object"
            self._pos += 1
            yield from self._object()
        else:
            raise JsonStructureError(
                "expected a JSON array of tickets, or an object holding one (such as "
                f'{{"tickets": [...]}}), found {first!r} at line {self._line_at(self._pos)}'
            )
        if self._skip_bom_ws():
            raise JsonStructureError(
                f"unexpected data after the JSON document at line {self._line_at(self._pos)}: "
                "the records after it are not read"
            )

    def _skip_bom_ws(self) -> bool:
        """:meth:`_skip_ws`, also over BOMs (of files joined after this one)."""
        while self._skip_ws():
            if self._peek() != "\ufeff":
                return True
            self._pos += 1
        return False

    def _array(self) -> Iterator[Element]:
        separator, decode = _SEPARATOR.match, self._decode
        while True:
            # Fast path: a complete element right here (the usual case), decoded in C.
            pos = separator(self._buf, self._pos).end()
            buf = self._buf
            if pos < len(buf) and buf[pos] not in "],":
                try:
                    value, end = decode(buf, pos)
                except (json.JSONDecodeError, RecursionError):
                    pass
                else:
                    if end < len(buf) and end - pos <= self._max:
                        self._pos = end
                        if _escapes(buf, pos, end):
                            yield Element(value, None, "", True)
                        else:
                            yield Element(value)
                        continue
            self._pos = pos
            if not self._skip_ws():
                raise JsonStructureError(
                    "the JSON array ends without ']': the data is truncated "
                    f"(line {self._line_at(self._pos)})"
                )
            char = self._peek()
            if char == "]":
                self._pos += 1
                return
            if char == ",":  # also tolerates a trailing or doubled comma
                self._pos += 1
                continue
            value, error, raw = self._value()
            yield Element(value, error, raw if error else "", bool(raw) and not error)

    def _object(self) -> Iterator[Element]:
        names: list[str] = []
        while True:
            if not self._skip_ws():
                raise JsonStructureError("the JSON object ends without '}': the data is truncated")
            char = self._peek()
            if char == "}":
                self._pos += 1
                if self.records_key is None and self.captured:
                    self.records_key = ""  # the object is one ticket
                    if self._captured_error is not None:
                        yield Element(None, self._captured_error)
                    else:
                        yield Element(self.captured, None, "", self._captured_escapes)
                elif self.records_key is None and not self.members:
                    # Nothing to read and nothing the caller asked for: say so, never "0 tickets".
                    found = ", ".join(repr(n) for n in names[:10]) or "none"
                    known = ", ".join(repr(k) for k in sorted(WRAPPER_KEYS))
                    raise JsonStructureError(
                        "expected a JSON array of tickets, an object holding one (such as "
                        f'{{"tickets": [...]}}), or one ticket object; the object has no array of '
                        f"records under a known name ({known}) and no ticket field "
                        f"(its members: {found})"
                    )
                return
            if char == ",":
                self._pos += 1
                continue
            line = self._line_at(self._pos)
            key, error, _ = self._value()
            if error is not None or not isinstance(key, str):
                raise JsonStructureError(f"expected a member name at line {line}")
            names.append(key)
            if not self._skip_ws() or self._peek() != ":":
                raise JsonStructureError(f"expected ':' after {key!r} at line {line}")
            self._pos += 1
            if not self._skip_ws():
                raise JsonStructureError("the JSON object ends without '}': the data is truncated")
            if self._peek() == "[" and key.lower() in WRAPPER_KEYS:
                if self.records_key is not None:
                    raise JsonStructureError(
                        f"a second array of records, {key!r} (line {line}), after "
                        f"{self.records_key!r}: which one holds the tickets is ambiguous"
                    )
                self.records_key = key
                self._pos += 1
                yield from self._array()
            elif key in self._keep or key.lower() in self._capture:
                value, error, raw = self._value()
                if error is not None:
                    if key in self._keep:
                        raise JsonStructureError(f"member {key!r} at line {line}: {error}")
                    value = None  # a ticket field that is not JSON: the ticket is invalid
                    self._captured_error = f"member {key!r}: {error}"
                if key in self._keep:
                    self.members[key] = value
                if key.lower() in self._capture:
                    self.captured[key] = value
                    self._captured_escapes = self._captured_escapes or bool(raw)
            else:
                self._skip_value()
