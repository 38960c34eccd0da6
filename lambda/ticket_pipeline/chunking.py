"""Turn a stream of parsed ticket records into endpoint-sized chunks plus rejected records.

Ticket keys (the ``id`` every ticket carries through the pipeline and in the results):

* a record with an id that has not been used yet in this file keeps it;
* every other record gets the generated key ``<record n>`` (:func:`generated_key`), where ``n``
  is its 1-based record number in the file (blank lines are not records): a record without an
  id, one whose id was already used (rejected as a duplicate; the first occurrence is the one
  classified), one whose id is longer than :data:`MAX_ID_CHARS`, and one whose own id lies in
  the generated keys' namespace (rejected: no id from a file may take ``<record ...``, so a
  generated key never collides with a ticket's own id, whatever order they come in).

Keys are unique within a job by construction, which is what lets the aggregator promise that
every ticket appears exactly once in the results or in the failures. Records that
:mod:`triage_core.records` flags (bad JSON, empty text, non-UTF-8, ...) are rejected with its
reason. Every rejected record keeps its record number and its original id, if it had one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from ticket_pipeline.keys import KeyRegistry
from triage_core.records import TicketRecord

MAX_ID_CHARS = 256
# Generated keys: "<record n>". Help desks write ids such as "#1" or "42#7", so no plain
# pattern is free; this prefix is reserved instead (docs/formats.md, "Ticket ids").
GENERATED_PREFIX = "<record "


def generated_key(number: int) -> str:
    """The key of record ``number`` (1-based) when it cannot keep an id of its own."""
    return f"{GENERATED_PREFIX}{number}>"


# Keeps a chunk's list of ticket keys well inside DynamoDB's 400 KB item limit.
MAX_CHUNK_ID_BYTES = 256 * 1024
# A chunk is closed early once its body reaches this size (a chunk is held in memory until it
# is written, and a few are in flight at once): with records of up to 8 MB, at most ~16 MB.
MAX_CHUNK_BODY_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Rejected:
    """A record that is never sent to the endpoint, with the reason."""

    id: str
    record: int  # 1-based record number in the source file
    error: str
    source_id: str | None = None

    def as_failure(self) -> dict:
        return {"id": self.id, "error": self.error, "record": self.record, "source_id": self.source_id}


@dataclass
class Chunk:
    number: int  # 1-based
    ticket_ids: list[str]
    body: bytes  # JSON Lines {"id", "text"}


class Chunker:
    """Gives every record its key and packs good records into chunks of at most ``chunk_size``.

    :meth:`add` returns a chunk as soon as it is full (the caller writes it and drops it) and the
    rejection of a bad record, so nothing accumulates but the chunk being filled. Keys used so far
    live in a :class:`KeyRegistry` (on disk). :meth:`replay` gives a record its key without
    emitting anything: a dispatcher run that continues a file replays the records earlier runs
    dispatched, so every later record gets the same key it would have got in one pass.
    """

    def __init__(self, chunk_size: int, keys: KeyRegistry, first_chunk: int = 1):
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.chunk_size = chunk_size
        self.keys = keys
        self.next_chunk = first_chunk
        self.records = 0  # records added (not replayed) in this run
        self.replayed = 0
        self.rejected = 0
        self.tickets = 0  # tickets put into chunks
        self._ids: list[str] = []
        self._lines: list[bytes] = []
        self._id_bytes = 0
        self._body_bytes = 0

    @property
    def at_boundary(self) -> bool:
        """No chunk is being filled: a run may stop here and the next start fresh."""
        return not self._ids

    def _assign(self, record: TicketRecord) -> tuple[str, str | None]:
        """The record's key (registered) and, for a record that is rejected, the reason."""
        number = record.index + 1
        source_id = record.id
        if source_id is None:
            key, reason = generated_key(number), None
        elif len(source_id) > MAX_ID_CHARS:
            key, reason = generated_key(number), f"id longer than {MAX_ID_CHARS} characters"
        elif source_id.startswith(GENERATED_PREFIX):
            key = generated_key(number)
            reason = f"ids starting with {GENERATED_PREFIX!r} are reserved for records without an id"
        else:
            first = self.keys.claim(source_id, number)
            if first is not None:
                return generated_key(number), f"duplicate id {source_id!r} (first used by record {first})"
            key, reason = source_id, None
        if reason is None and not record.ok:
            reason = record.error or "invalid record"
        return key, reason

    def replay(self, record: TicketRecord) -> tuple[str, str | None]:
        """Key the record without emitting it: (its key, why it is rejected or None)."""
        self.replayed += 1
        return self._assign(record)

    def add(self, record: TicketRecord) -> tuple[Chunk | None, Rejected | None]:
        """Key the record; returns (a chunk that is now full, the record's rejection)."""
        self.records += 1
        key, reason = self._assign(record)
        if reason is not None:
            self.rejected += 1
            source_id = record.id[:MAX_ID_CHARS] if record.id is not None else None
            return None, Rejected(key, record.index + 1, reason, source_id)
        try:
            line = json.dumps({"id": key, "text": record.text}, ensure_ascii=False).encode("utf-8") + b"\n"
        except (UnicodeError, ValueError, TypeError) as exc:  # one bad record never stops the file
            self.rejected += 1
            source_id = record.id[:MAX_ID_CHARS] if record.id is not None else None
            return None, Rejected(key, record.index + 1, f"record cannot be encoded: {exc}", source_id)
        id_bytes = len(key.encode("utf-8")) + 4
        closed = None
        if self._ids and (
            self._id_bytes + id_bytes > MAX_CHUNK_ID_BYTES
            or self._body_bytes + len(line) > MAX_CHUNK_BODY_BYTES
        ):
            closed = self._flush()
        self._ids.append(key)
        self._lines.append(line)
        self._id_bytes += id_bytes
        self._body_bytes += len(line)
        if closed is None and len(self._ids) >= self.chunk_size:
            closed = self._flush()
        return closed, None

    def _flush(self) -> Chunk | None:
        if not self._ids:
            return None
        chunk = Chunk(self.next_chunk, self._ids, b"".join(self._lines))
        self.next_chunk += 1
        self.tickets += len(self._ids)
        self._ids, self._lines, self._id_bytes, self._body_bytes = [], [], 0, 0
        return chunk

    def finish(self) -> Chunk | None:
        """The last, partly filled chunk, if any."""
        return self._flush()


@dataclass
class ChunkPlan:
    """Everything :func:`plan_chunks` produced, in memory: for small inputs and tests only."""

    chunks: list[Chunk] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    records: int = 0


def plan_chunks(records: Iterable[TicketRecord], chunk_size: int) -> ChunkPlan:
    plan = ChunkPlan()
    with KeyRegistry() as keys:
        chunker = Chunker(chunk_size, keys)
        for record in records:
            chunk, rejected = chunker.add(record)
            if chunk is not None:
                plan.chunks.append(chunk)
            if rejected is not None:
                plan.rejected.append(rejected)
        last = chunker.finish()
        if last is not None:
            plan.chunks.append(last)
        plan.records = chunker.records
    return plan
