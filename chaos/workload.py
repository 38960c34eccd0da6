"""What goes in: seeded ticket files, written the way upstream tools write them, with broken records,
and for each file the manifest of ticket keys it must come out with.

The manifest is derived here from the *documented* keying rules (docs/pipeline.md, "Ticket ids"), from the
records as the generator wrote them, never by running the pipeline's parser:

* records are numbered from 1 in file order; blank lines are not records;
* a record keeps its own ``id`` (a JSON string, a JSON integer as its decimal digits, a CSV ``id``
  cell) if no earlier record of the file used it; so does a broken one whose id can be read
  (docs/formats.md: a line that is not JSON "with its id if one can be read from the
  text", a CSV row with more cells than the header, its ``id`` cell);
* a record without a readable id (none given, an empty cell, an id that is neither a string nor
  an integer) gets ``<record n>``; so does one whose id starts with ``<record `` (reserved), and
  it fails;
* a record repeating an id used by an earlier record (good or bad) is rejected as ``<record n>``;
* a bad record (invalid JSON, empty or whitespace text, missing text, bad id type, more CSV cells
  than the header) is rejected: its key must be among the failures;
* a line that is not UTF-8 in a UTF-8 file (windows-1252, "a line pasted from Word") is a ticket:
  "a ticket that can be decoded is never a failure".

A file that cannot be read as a whole (empty, an unsupported type, a CSV without a ``text``
column) has no keys and must come out with an ``error``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from chaos.generated import RandomDraw, write_file
from local_pipeline.model_server import REPO_ROOT

BUNDLED = REPO_ROOT / "data" / "banking77" / "train.csv"


@dataclass(frozen=True)
class Record:
    """One record as written: its readable id (None: no id, or one the reader cannot use) and
    whether it is broken (rejected before inference whatever its id)."""

    id: str | None
    broken: str | None = None  # what is wrong with it, for reports
    text: str | None = None  # the text the reader must give it (a good record), to score it


@dataclass
class TicketFile:
    key: str  # object key in the input bucket
    body: bytes
    kind: str  # what the generator made, for reports
    records: list[Record] = field(default_factory=list)
    whole_file_error: bool = False  # the file as a whole must be rejected (no tickets)
    content_type: str | None = None

    @property
    def expected(self) -> dict[str, bool]:
        """Ticket key -> must be a failure (a broken or duplicate record)."""
        return {key: must_fail for key, must_fail, _ in self._keyed()}

    @property
    def texts(self) -> dict[str, str]:
        """Ticket key -> its text, for every record that must be classified (what the checker
        scores on its own to check the label the pipeline gave that key)."""
        return {key: text for key, must_fail, text in self._keyed() if not must_fail and text is not None}

    def _keyed(self) -> list[tuple[str, bool, str | None]]:
        keyed = []
        used: set[str] = set()
        for number, record in enumerate(self.records, 1):
            if record.id is None or record.id.startswith("<record "):  # the reserved namespace
                key = f"<record {number}>"
                must_fail = record.broken is not None or record.id is not None
            elif record.id in used:
                key, must_fail = f"<record {number}>", True
            else:
                key, must_fail = record.id, record.broken is not None
                used.add(record.id)
            keyed.append((key, must_fail, record.text))
        return keyed


@cache
def _texts() -> tuple[str, ...]:
    with Path(BUNDLED).open(encoding="utf-8", newline="") as handle:
        return tuple(row["text"] for row in csv.DictReader(handle) if row.get("text", "").strip())


class _Writer:
    """Builds one file's lines and its records side by side."""

    def __init__(self, rng: random.Random, prefix: str):
        self.rng = rng
        self.prefix = prefix
        self.records: list[Record] = []
        self.used: list[str] = []
        self._serial = 0

    def text(self) -> str:
        return self.rng.choice(_texts())

    def new_id(self) -> str:
        self._serial += 1
        return f"{self.prefix}-{self._serial:03d}"

    def reused_id(self) -> str | None:
        return self.rng.choice(self.used) if self.used else None


def _jsonl_file(rng: random.Random, key: str, prefix: str, size: int, crlf: bool, flaws: bool) -> TicketFile:
    """JSON Lines; ``flaws``: about one record in five broken (or a duplicate id)."""
    w = _Writer(rng, prefix)
    lines: list[bytes] = []
    end = b"\r\n" if crlf else b"\n"
    kinds = ["bad_json", "cp1252_line", "empty_text", "no_text", "bad_id_type", "duplicate", "duplicate"]
    for _ in range(size):
        roll = rng.random()
        if roll < 0.05:
            lines.append(end)  # a blank line: not a record
            continue
        if flaws and roll < 0.27:
            flaw = rng.choice(kinds)
            ticket_id = w.new_id()
            if flaw == "bad_json":
                lines.append(b'{"id": "' + ticket_id.encode() + b'", "text": "unterminated' + end)
                w.records.append(Record(ticket_id, flaw))  # its id can be read from the text
                w.used.append(ticket_id)
            elif flaw == "cp1252_line":  # not a flaw to the reader: a ticket, read as windows-1252
                lines.append(
                    b'{"id": "' + ticket_id.encode() + b'", "text": "r\xe9sum\xe9 of my issue"}' + end
                )
                w.records.append(Record(ticket_id, text="résumé of my issue"))
                w.used.append(ticket_id)
            elif flaw == "empty_text":
                lines.append(
                    json.dumps({"id": ticket_id, "text": rng.choice(["", "   ", "\t"])}).encode() + end
                )
                w.records.append(Record(ticket_id, flaw))
                w.used.append(ticket_id)
            elif flaw == "no_text":
                lines.append(json.dumps({"id": ticket_id, "subject": w.text()}).encode() + end)
                w.records.append(Record(ticket_id, flaw))
                w.used.append(ticket_id)
            elif flaw == "bad_id_type":
                lines.append(json.dumps({"id": [ticket_id], "text": w.text()}).encode() + end)
                w.records.append(Record(None, flaw))
            else:  # a second ticket with an id already used: the first is classified
                again = w.reused_id()
                if again is None:
                    continue
                lines.append(json.dumps({"id": again, "text": w.text()}).encode() + end)
                w.records.append(Record(again, None))  # the keying rule makes it a failure
            continue
        style = rng.random()
        text = w.text()
        if style < 0.08:  # "a bare JSON string is a ticket without id"
            lines.append(json.dumps(text).encode() + end)
            w.records.append(Record(None, text=text))
        elif style < 0.16:  # no id field
            lines.append(json.dumps({"text": text}).encode() + end)
            w.records.append(Record(None, text=text))
        elif style < 0.24:  # an integer id: "integers as strings"
            number = rng.randrange(10_000, 99_999)
            lines.append(json.dumps({"id": number, "text": text}).encode() + end)
            w.records.append(Record(str(number), text=text))
            w.used.append(str(number))
        else:
            ticket_id = w.new_id()
            extra = {"channel": "email"} if style > 0.9 else {}
            lines.append(
                json.dumps({"id": ticket_id, "text": text, **extra}, ensure_ascii=False).encode() + end
            )
            w.records.append(Record(ticket_id, text=text))
            w.used.append(ticket_id)
    return TicketFile(key, b"".join(lines), "jsonl-crlf" if crlf else "jsonl", w.records)


def _csv_file(rng: random.Random, key: str, prefix: str, size: int, excel: bool, flaws: bool) -> TicketFile:
    """CSV as a help desk exports it (``id,subject,text``, quoted commas and newlines); ``excel``:
    a UTF-8 BOM and CRLF row endings, as Excel's "CSV UTF-8" writes it; ``flaws``: empty texts,
    rows with more cells than the header, repeated ids."""
    w = _Writer(rng, prefix)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n" if excel else "\n")
    writer.writerow(["id", "subject", "text"])
    for _ in range(size):
        roll = rng.random()
        ticket_id = w.new_id()
        if roll < 0.06:
            buffer.write("\r\n" if excel else "\n")  # a blank line: not a record
        elif not flaws and roll < 0.24:
            text = w.text()
            writer.writerow([ticket_id, "card", text])
            w.records.append(Record(ticket_id, text=text))
            w.used.append(ticket_id)
        elif roll < 0.12:
            writer.writerow([ticket_id, "re: card", "   "])
            w.records.append(Record(ticket_id, "empty_text"))
            w.used.append(ticket_id)
        elif roll < 0.17:
            buffer.write(
                f"{ticket_id},too,many,columns\n" if not excel else f"{ticket_id},too,many,columns\r\n"
            )
            w.records.append(Record(ticket_id, "column_count"))  # its id cell can be read
            w.used.append(ticket_id)
        elif roll < 0.24 and w.used:
            again = w.reused_id()
            writer.writerow([again, "follow-up", w.text()])
            w.records.append(Record(again))
        elif roll < 0.30:
            text = w.text()
            writer.writerow(["", "no id", text])
            w.records.append(Record(None, text=text))
        else:
            text = w.text()
            if rng.random() < 0.15:
                text = f"Hello,\n{text}\nThanks, Sam"  # quoted newlines
            writer.writerow([ticket_id, "support, please", text])
            w.records.append(Record(ticket_id, text=text))
            w.used.append(ticket_id)
    body = buffer.getvalue().encode("utf-8")
    if excel:
        body = b"\xef\xbb\xbf" + body
    return TicketFile(key, body, "csv-excel" if excel else "csv", w.records)


def _whole_file_failure(rng: random.Random, key_base: str) -> TicketFile:
    kind = rng.choice(["empty", "unsupported", "csv_without_text"])
    if kind == "empty":
        return TicketFile(f"{key_base}.jsonl", b"", "empty", whole_file_error=True)
    if kind == "unsupported":
        return TicketFile(
            f"{key_base}.txt", b"my card has not arrived\n", "unsupported", whole_file_error=True
        )
    body = b"id,subject\nq-1,card\nq-2,refund\n"
    return TicketFile(f"{key_base}.csv", body, "csv_without_text", whole_file_error=True)


def generated_file(rng: random.Random, key_base: str, key: str | None = None) -> TicketFile:
    """A file from the property tests' generator (:mod:`chaos.generated`): ids of every type,
    texts with every kind of line break, BOM, control character, emoji and lone surrogate,
    written by ``json`` / ``csv`` / ``codecs`` in any supported encoding, maybe gzip. ``key``: a
    new version of that object (same format, by its extension)."""
    fmt = None
    if key is not None:
        fmt = next(f for f in ("jsonl", "json", "csv") if f".{f}" in key)
    made = write_file(RandomDraw(rng), fmt=fmt)
    records = [Record(e.id, None if e.text is not None else "generated error", e.text) for e in made.expected]
    key = key or f"{key_base}{made.key.removeprefix('generated')}"
    return TicketFile(key, made.body, f"generated {made.description}", records, False, made.content_type)


@dataclass
class Upload:
    """One object version the harness put into the input bucket."""

    index: int
    file: TicketFile
    after_seconds: float  # delay after the previous upload
    version_id: str | None = None
    uploaded_at: float | None = None  # wall clock

    @property
    def label(self) -> str:
        return f"u{self.index}"


def plan_uploads(
    seed: int, files: int, prefix: str = "incoming/", tickets: tuple[int, int] = (8, 40)
) -> list[Upload]:
    """The seed's uploads, in order: ``files`` ticket files (JSON Lines and CSV, some as Excel
    writes them), one of them uploaded twice to the same key in quick succession (two versions),
    now and then a file that fails as a whole."""
    rng = random.Random(f"workload:{seed}")
    uploads: list[Upload] = []
    for n in range(files):
        key_base = f"{prefix}s{seed}/f{n}-{rng.choice(['tickets', 'export', 'batch 2024+q1', 'daily'])}"
        size = rng.randint(*tickets)
        flaws = rng.random() < 0.65  # the other files are clean: they can come out complete
        roll = rng.random()
        if roll < 0.12:
            ticket_file = _whole_file_failure(rng, key_base)
        elif roll < 0.27:
            ticket_file = generated_file(rng, key_base)
        elif roll < 0.55:
            ticket_file = _jsonl_file(
                rng, f"{key_base}.jsonl", f"s{seed}f{n}", size, rng.random() < 0.3, flaws
            )
        else:
            ticket_file = _csv_file(rng, f"{key_base}.csv", f"s{seed}f{n}", size, rng.random() < 0.5, flaws)
        uploads.append(Upload(len(uploads), ticket_file, rng.uniform(0.0, 0.4)))
        if n == 0 and not ticket_file.whole_file_error:  # a second version of the same key, soon after
            size = rng.randint(*tickets)
            if ticket_file.kind.startswith("generated"):
                again = generated_file(rng, key_base, key=ticket_file.key)
            elif ticket_file.key.endswith(".csv"):
                again = _csv_file(rng, ticket_file.key, f"s{seed}f{n}v2", size, False, flaws)
            else:
                again = _jsonl_file(rng, ticket_file.key, f"s{seed}f{n}v2", size, False, flaws)
            uploads.append(Upload(len(uploads), again, rng.uniform(0.0, 0.1)))
    return uploads
