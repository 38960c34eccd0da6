"""One ticket reader for every way tickets arrive: bytes in, :class:`TicketRecord` s out.

The dispatcher Lambda reads a dropped S3 object with one call::

    reader = TicketReader(body_chunks, key=key, content_type=head.content_type,
                          content_encoding=head.content_encoding, metadata=head.metadata,
                          fields=settings.fields)
    for record in reader: ...

and the inference server reads request bodies with the same class (``format`` from the
request's Content-Type). Streaming throughout: memory holds one read of the data plus one record
(bounded by ``max_record_chars``), whatever the size of the file and whatever its compression.
A problem with the source as a whole (unsupported type, unknown charset, corrupt gzip, no
configured text field) raises :class:`RecordFormatError`, possibly after some records were
yielded (e.g. a gzip file truncated in the middle).

Accepted files (docs/formats.md has the same table):

===========  ===============================================  ====================================
format       recognised by                                    shape
===========  ===============================================  ====================================
JSON Lines   ``.jsonl`` ``.ndjson`` ``.jsonlines``;           one ticket object per line
             ``application/jsonlines`` (+ ``jsonl``, ``x-``)
CSV          ``.csv`` ``.tsv``; ``text/csv``,                  header row (or configured columns),
             ``text/tab-separated-values``                    ``,`` ``;`` tab or ``|``
JSON         ``.json``; ``application/json``                  ``[{...}, ...]`` or
                                                              ``{"tickets": [{...}, ...], ...}``
===========  ===============================================  ====================================

Any of them gzip-compressed (``.gz`` suffix, ``Content-Encoding: gzip`` or just gzip bytes), in
UTF-8 (BOM or not), UTF-16/32 with BOM, windows-1252 / ISO-8859-1, or a declared charset, with
LF, CRLF or CR line endings (:mod:`triage_core.textstream`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from typing import Any

from triage_core.formats import JsonTickets, iter_csv, iter_jsonl
from triage_core.jsonstream import JsonStructureError
from triage_core.records import DEFAULT_FIELDS, FieldMap, RecordFormatError, TicketRecord
from triage_core.textstream import DecodedText, TextFormatError, iter_lines

JSONL = "application/jsonlines"
CSV = "text/csv"
JSON = "application/json"
JSONL_TYPES = frozenset({JSONL, "application/jsonl", "application/x-jsonlines", "application/x-ndjson"})
CSV_TYPES = frozenset({CSV, "text/tab-separated-values", "application/csv"})
JSON_TYPES = frozenset({JSON, "text/json"})
EXTENSIONS = {
    ".jsonl": JSONL,
    ".ndjson": JSONL,
    ".jsonlines": JSONL,
    ".csv": CSV,
    ".tsv": CSV,
    ".json": JSON,
}
COMPRESSED_SUFFIXES = (".gz", ".gzip")
DEFAULT_MAX_RECORD_CHARS = 8 * 1024 * 1024


def split_media_type(value: str | None) -> tuple[str, dict[str, str]]:
    """``"text/csv; charset=Windows-1252"`` -> ``("text/csv", {"charset": "windows-1252"})``."""
    main, *params = (value or "").split(";")
    parsed = {}
    for param in params:
        key, _, val = param.partition("=")
        parsed[key.strip().lower()] = val.strip().strip('"').lower()
    return main.strip().lower(), parsed


def format_of_media_type(media: str) -> str | None:
    if media in JSONL_TYPES:
        return JSONL
    if media in CSV_TYPES:
        return CSV
    if media in JSON_TYPES:
        return JSON
    return None


def detect_format(key: str, content_type: str | None) -> str:
    """A file's format: by its name's extension (a ``.gz`` suffix aside), else its content type."""
    name = key.lower()  # its extension is the file name's: the key's last part
    for suffix in COMPRESSED_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    fmt = format_of_media_type(split_media_type(content_type)[0])
    if fmt is None:
        raise RecordFormatError(
            f"unsupported file type for {key!r} (content type {content_type!r}): expected .jsonl/.ndjson "
            "(JSON Lines), .csv/.tsv or .json (an array of tickets), optionally .gz"
        )
    return fmt


class TicketReader:
    """The records of one file or request body. Iterate once.

    ``fields`` is the deployment's field map; ``metadata`` (S3 user metadata ``id-field`` /
    ``text-fields``) overrides it per file. ``format`` skips detection (the server knows it from
    the Content-Type). ``csv_columns`` reads CSV without a header row. ``keep_members`` names
    top-level JSON members to decode (the server's ``parameters``). After iterating,
    ``encoding``, ``compressed`` and (JSON) ``json`` tell how the data was read.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        *,
        key: str = "",
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
        fields: FieldMap = DEFAULT_FIELDS,
        format: str | None = None,
        max_record_chars: int = DEFAULT_MAX_RECORD_CHARS,
        max_decoded_bytes: int | None = None,
        csv_columns: Sequence[str] | None = None,
        keep_members: Collection[str] = (),
    ):
        self.format = format or detect_format(key, content_type)
        self.fields = fields.override(metadata)
        self.charset = split_media_type(content_type)[1].get("charset") or None
        self._chunks = chunks
        self._content_encoding = content_encoding
        self._max_chars = max_record_chars
        self._max_decoded = max_decoded_bytes
        self._columns = csv_columns
        self._keep = keep_members
        self.encoding: str | None = None
        self.compressed = False
        self.json: JsonTickets | None = None

    def __iter__(self) -> Iterator[TicketRecord]:
        try:
            text = DecodedText(
                self._chunks,
                charset=self.charset,
                content_encoding=self._content_encoding,
                max_decoded_bytes=self._max_decoded,
            )
            self.encoding, self.compressed = text.encoding, text.compressed
            if text.empty:
                return
            if self.format == JSON:
                self.json = JsonTickets(text.read, self.fields, self._max_chars, self._keep)
                yield from self.json
            elif self.format == CSV:
                lines = iter_lines(text.stream, self._max_chars)
                yield from iter_csv(lines, self.fields, self._max_chars, columns=self._columns)
            else:
                yield from iter_jsonl(iter_lines(text.stream, self._max_chars), self.fields, self._max_chars)
        except (TextFormatError, JsonStructureError) as exc:
            raise RecordFormatError(str(exc)) from exc

    @property
    def members(self) -> dict[str, Any]:
        return self.json.document.members if self.json is not None else {}


def read_tickets(chunks: Iterable[bytes], **options: Any) -> TicketReader:
    """``TicketReader(chunks, **options)``: the records of a file or body."""
    return TicketReader(chunks, **options)
