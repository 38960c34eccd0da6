"""What a ticket record is, and which fields of a file hold its id and its text.

Shared by the inference server (request bodies) and the dispatcher Lambda (files dropped in the
input bucket) so both agree on what a valid ticket is; :mod:`triage_core.reader` reads files and
bodies into these records, :mod:`triage_core.formats` holds the per-format parsers. Standard
library only (the Lambda bundle ships nothing else).

A record is one per input record, good or bad (``error`` set), so a caller can account for every
ticket. Records are tuples (:class:`TicketRecord`): a request of a million short tickets must not
cost a Python object with a ``__dict__`` per ticket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

TEXT_JOINER = "\n\n"  # several text fields (subject, description) become one text, paragraph apart
MAX_TEXT_FIELDS = 16
SHAPE_SAMPLE_RECORDS = 100  # object records looked at before a missing field fails the whole file
SHAPE_SAMPLE_CHARS = 16 * 1024 * 1024


class RecordFormatError(ValueError):
    """The file or body as a whole cannot be read (a CSV header without the text column, ...)."""


class TicketRecord(NamedTuple):
    """One input record. ``error`` is set when the record itself is unusable."""

    index: int  # 0-based position among the file's records
    id: str | None
    text: str | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class FieldMap:
    """Which field holds a ticket's id, and which fields (joined) make its text.

    Defaults ``id`` / ``text``. A help-desk export is e.g. ``FieldMap("ticket_id", ("subject",
    "description"))``. Field names match case-insensitively in CSV headers and, when the exact
    name is absent, in JSON objects.
    """

    id: str = "id"
    text: tuple[str, ...] = ("text",)

    def __post_init__(self) -> None:
        if isinstance(self.text, str):
            object.__setattr__(self, "text", (self.text,))
        names = [self.id, *self.text]
        if not self.text or any(not isinstance(n, str) or not n.strip() or len(n) > 128 for n in names):
            raise ValueError("field names must be non-empty strings of at most 128 characters")
        if len(self.text) > MAX_TEXT_FIELDS:
            raise ValueError(f"at most {MAX_TEXT_FIELDS} text fields")
        if len({n.lower() for n in names}) != len(names):
            raise ValueError(f"field names must differ: {names}")

    @classmethod
    def parse(cls, id_field: str | None, text_fields: str | Sequence[str] | None) -> FieldMap:
        """From settings strings: ``text_fields`` is ``"subject,description"`` or a list."""
        if isinstance(text_fields, str):
            text_fields = [name.strip() for name in text_fields.split(",")]
        return cls(
            (id_field or "id").strip(),
            tuple(name.strip() for name in text_fields) if text_fields else ("text",),
        )

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | str) -> FieldMap:
        """From ``{"id": "ticket_id", "text": ["subject", "description"]}`` or that JSON (the
        deployment setting: CDK context ``triage:ticketFields``, Lambda env ``TICKET_FIELDS``)."""
        if isinstance(spec, str):
            try:
                spec = json.loads(spec)
            except ValueError:
                raise ValueError(f"not JSON: {spec!r}") from None
        if not isinstance(spec, Mapping) or not set(spec) <= {"id", "text"}:
            raise ValueError('expected {"id": "<field>", "text": ["<field>", ...]}')
        text = spec.get("text", ["text"])
        if isinstance(text, str):
            text = [text]
        if not isinstance(text, list):
            raise ValueError('"text" must be a field name or a list of field names')
        return cls(spec.get("id", "id"), tuple(text))

    def spec(self) -> dict[str, Any]:
        return {"id": self.id, "text": list(self.text)}

    def override(self, metadata: Mapping[str, str] | None) -> FieldMap:
        """This map with a file's own ``id-field`` / ``text-fields`` (S3 object metadata, set with
        ``x-amz-meta-id-field`` / ``x-amz-meta-text-fields``) taking precedence."""
        if not metadata:
            return self
        lowered = {k.lower(): v for k, v in metadata.items()}
        id_field = lowered.get("id-field")
        text_fields = lowered.get("text-fields")
        if id_field is None and text_fields is None:
            return self
        try:
            return FieldMap.parse(id_field or self.id, text_fields or ",".join(self.text))
        except ValueError as exc:
            raise RecordFormatError(f"invalid field mapping in the object metadata: {exc}") from None

    def describe(self) -> str:
        return f"id field {self.id!r}, text field(s) {' + '.join(repr(t) for t in self.text)}"


DEFAULT_FIELDS = FieldMap()
_MISSING = object()


def normalise_id(value: object) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return str(value)
    raise ValueError("id must be a string or an integer")


def at_line(error: str, ticket_id: str | None, line: int | str | None) -> str:
    """A record's error names where it is when its id cannot tell (``(line 7)``)."""
    if ticket_id is not None or line is None:
        return error
    return f"{error} ({line})" if isinstance(line, str) else f"{error} (line {line})"


def make_record(index: int, raw_id: object, text: object) -> TicketRecord:
    """Validate one record's fields; a bad id or text becomes a per-record error."""
    try:
        ticket_id = normalise_id(raw_id)
    except ValueError as exc:
        return TicketRecord(index, None, None, str(exc))
    if text is None:
        return TicketRecord(index, ticket_id, None, "missing field 'text'")
    if not isinstance(text, str):
        return TicketRecord(index, ticket_id, None, "field 'text' must be a string")
    if not text.strip():
        return TicketRecord(index, ticket_id, None, "empty text")
    return without_surrogates(TicketRecord(index, ticket_id, text))


# A JSON "\ud83d" escape on its own (JavaScript cutting a string inside an emoji) decodes to a
# lone surrogate: a Python string no codec can encode, so no tokenizer, response or chunk can
# carry it. Only JSON escapes make them (every decoder here replaces what it cannot decode).
_SURROGATE = re.compile("[\ud800-\udfff]")


def without_surrogates(record: TicketRecord) -> TicketRecord:
    """``record``, or its per-record error when its text or id holds a lone UTF-16 surrogate."""
    for what, value in (("text", record.text), ("id", record.id)):
        if value is not None and not value.isascii():
            match = _SURROGATE.search(value)
            if match is not None:
                ticket_id = record.id if what == "text" else None
                code = f"\\u{ord(match.group()):04x}"
                error = (
                    f"the {what} holds a lone UTF-16 surrogate ({code} at character {match.start()}, "
                    "e.g. a string cut inside an emoji): not valid Unicode"
                )
                return TicketRecord(record.index, ticket_id, None, error)
    return record


def escapes_surrogate(raw: str, start: int = 0, end: int | None = None) -> bool:
    """Whether JSON text may hold a surrogate escape (``\\ud800``-``\\udfff``, any case): a
    substring scan, so the decoded record is searched only when it can hold one."""
    end = len(raw) if end is None else end
    return raw.find("\\ud", start, end) >= 0 or raw.find("\\uD", start, end) >= 0


def _field(obj: Mapping[str, Any], name: str) -> Any:
    value = obj.get(name, _MISSING)
    if value is _MISSING:
        lowered = name.lower()
        for key, candidate in obj.items():
            if key.lower() == lowered:
                return candidate
    return value


def record_from_object(
    index: int, obj: Mapping[str, Any], fields: FieldMap, line: int | None
) -> TicketRecord:
    """A JSON object as a record, through the field map."""
    if len(fields.text) == 1:  # the usual shape, checked in one go
        raw_id = obj.get(fields.id)
        text = obj.get(fields.text[0])
        if isinstance(text, str) and text.strip():
            if type(raw_id) is str and raw_id.strip():
                return TicketRecord(index, raw_id, text)
            if type(raw_id) is int:
                return TicketRecord(index, str(raw_id), text)
            if raw_id is None and fields.id in obj:
                return TicketRecord(index, None, text)
    raw_id = _field(obj, fields.id)
    try:
        ticket_id = None if raw_id is _MISSING else normalise_id(raw_id)
    except ValueError as exc:
        return TicketRecord(index, None, None, at_line(str(exc), None, line))
    if len(fields.text) == 1:
        name = fields.text[0]
        text = _field(obj, name)
        if text is _MISSING or text is None:
            return TicketRecord(index, ticket_id, None, at_line(f"missing field {name!r}", ticket_id, line))
        if not isinstance(text, str):
            error = f"field {name!r} must be a string"
            return TicketRecord(index, ticket_id, None, at_line(error, ticket_id, line))
        if not text.strip():
            return TicketRecord(index, ticket_id, None, at_line("empty text", ticket_id, line))
        return TicketRecord(index, ticket_id, text)
    parts = []
    present = False  # some text field is there (possibly empty)
    for name in fields.text:
        value = _field(obj, name)
        if value is _MISSING or value is None:
            continue
        present = True
        if not isinstance(value, str):
            error = f"field {name!r} must be a string"
            return TicketRecord(index, ticket_id, None, at_line(error, ticket_id, line))
        if value.strip():
            parts.append(value.strip())
    if not present:
        names = ", ".join(repr(n) for n in fields.text)
        return TicketRecord(index, ticket_id, None, at_line(f"missing fields {names}", ticket_id, line))
    if not parts:
        return TicketRecord(index, ticket_id, None, at_line("empty text", ticket_id, line))
    return TicketRecord(index, ticket_id, TEXT_JOINER.join(parts))


def record_from_cells(index: int, raw_id: str | None, cells: Sequence[str], line: int) -> TicketRecord:
    """A CSV row's id and text cells as a record (an empty cell is an empty field)."""
    ticket_id = (raw_id.strip() or None) if raw_id is not None else None
    parts = [cell.strip() for cell in cells if cell.strip()]
    if not parts:
        return TicketRecord(index, ticket_id, None, at_line("empty text", ticket_id, line))
    return TicketRecord(index, ticket_id, cells[0] if len(cells) == 1 else TEXT_JOINER.join(parts))


def id_pattern(fields: FieldMap) -> re.Pattern[str]:
    """Finds the id in a record's raw text when the record itself cannot be parsed."""
    name = re.escape(json.dumps(fields.id)[1:-1])
    # an integer id only when something follows it (a record cut inside its id has no id)
    return re.compile(r'"' + name + r'"\s*:\s*("(?:[^"\\\n]|\\.){0,256}"|-?\d{1,20}(?=\s*[,}]))')


def sniff_id(raw: str, pattern: re.Pattern[str]) -> str | None:
    """The id of an unparseable JSON record, if it can still be read."""
    match = pattern.search(raw)
    if match is None:
        return None
    try:
        return normalise_id(json.loads(match.group(1)))
    except ValueError:
        return None


def check_shape(
    items: Iterable[tuple[TicketRecord, Iterable[str] | None]], fields: FieldMap
) -> Iterator[TicketRecord]:
    """Records of a JSON / JSON Lines source, after checking the source has the configured fields.

    ``items`` pairs each record with the keys of its JSON object (None when it was not an object).
    Records are held back (at most :data:`SHAPE_SAMPLE_RECORDS` objects or
    :data:`SHAPE_SAMPLE_CHARS` characters of text) until every configured text field has been seen
    in some object. If one never is, the source as a whole is the wrong shape: a
    :class:`RecordFormatError` names the fields expected and the fields the records have.
    """
    wanted = {name.lower(): name for name in fields.text}
    held: list[TicketRecord] = []
    seen: set[str] = set()
    objects = chars = 0
    iterator = iter(items)
    for record, keys in iterator:
        held.append(record)
        if keys is None:
            continue
        objects += 1
        chars += len(record.text) if record.text else 0
        for key in keys:
            lowered = key.lower() if isinstance(key, str) else key
            if lowered in wanted or len(seen) < 200:
                seen.add(lowered)
        if all(name in seen for name in wanted):
            break
        if objects >= SHAPE_SAMPLE_RECORDS or chars >= SHAPE_SAMPLE_CHARS:
            _wrong_shape(fields, wanted, seen, objects)
    else:
        if objects:
            _wrong_shape(fields, wanted, seen, objects)
    yield from held
    del held
    for record, _ in iterator:
        yield record


def _wrong_shape(fields: FieldMap, wanted: dict[str, str], seen: set[str], objects: int) -> None:
    missing = [name for lowered, name in wanted.items() if lowered not in seen]
    have = sorted(str(k) for k in seen)[:50]
    raise RecordFormatError(
        f"no record has the text field(s) {missing} (the first {objects} records have {have}; "
        f"expected {fields.describe()}): set the field mapping to the file's field names"
    )


def join_text_fields(values: Iterable[str]) -> str:
    """Several text fields (subject, body) as one ticket text: stripped, the empty ones left
    out, joined by :data:`TEXT_JOINER` in the given order (what :func:`record_from_object` and
    :func:`record_from_cells` do; training's loader uses it for ``--text-column subject,body``)."""
    return TEXT_JOINER.join(stripped for value in values if (stripped := value.strip()))
