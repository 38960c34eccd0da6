"""Turn a stream of parsed ticket records into endpoint-sized chunks plus rejected records.

Ticket keys (the ``id`` every ticket carries through the pipeline and in the results):

* a record with an id that has not been used yet in this file keeps it;
* a record without an id gets ``#<n>``, where ``n`` is its 1-based record number in the file
  (blank lines are not records);
* a record whose id was already used is rejected as a duplicate and reported under
  ``<id>#<n>``; the first occurrence is the one classified;
* ids longer than :data:`MAX_ID_CHARS` are replaced by ``#<n>`` and the record is rejected.

Keys are unique within a job by construction, which is what lets the aggregator promise that
every ticket appears exactly once in the results or in the failures. Records that
:mod:`triage_core.records` flags (bad JSON, empty text, non-UTF-8, ...) are rejected with its
reason. Every rejected record keeps its record number and its original id, if it had one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from triage_core.records import TicketRecord

MAX_ID_CHARS = 256
# Keeps a chunk's list of ticket keys well inside DynamoDB's 400 KB item limit.
MAX_CHUNK_ID_BYTES = 256 * 1024


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


@dataclass
class ChunkPlan:
    chunks: list[Chunk] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    records: int = 0

    @property
    def tickets(self) -> int:
        """Every record of the file: the ones in chunks plus the rejected ones."""
        return self.records


class Chunker:
    """Accumulates good records into chunks of at most ``chunk_size`` tickets; each full chunk
    is handed to ``on_chunk`` immediately so a large file is never held in memory at once."""

    def __init__(self, chunk_size: int, on_chunk: Callable[[Chunk], None] | None = None):
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self.chunk_size = chunk_size
        self.on_chunk = on_chunk
        self.plan = ChunkPlan()
        self._seen: dict[str, int] = {}
        self._ids: list[str] = []
        self._lines: list[bytes] = []
        self._id_bytes = 0

    def _unique(self, candidate: str) -> str:
        key, n = candidate, 1
        while key in self._seen:  # only for adversarial ids such as "#7" given explicitly
            n += 1
            key = f"{candidate}~{n}"
        return key

    def add(self, record: TicketRecord) -> None:
        self.plan.records += 1
        number = record.index + 1
        source_id = record.id
        if source_id is not None and len(source_id) > MAX_ID_CHARS:
            key = self._unique(f"#{number}")
            self._seen[key] = number
            self._reject(key, number, f"id longer than {MAX_ID_CHARS} characters", source_id[:MAX_ID_CHARS])
            return
        if source_id is None:
            key = self._unique(f"#{number}")
        elif source_id in self._seen:
            key = self._unique(f"{source_id}#{number}")
            self._seen[key] = number
            first = self._seen[source_id]
            self._reject(key, number, f"duplicate id {source_id!r} (first used by record {first})", source_id)
            return
        else:
            key = source_id
        self._seen[key] = number
        if not record.ok:
            self._reject(key, number, record.error or "invalid record", source_id)
            return
        line = json.dumps({"id": key, "text": record.text}, ensure_ascii=False).encode("utf-8") + b"\n"
        id_bytes = len(key.encode("utf-8")) + 4
        if self._ids and self._id_bytes + id_bytes > MAX_CHUNK_ID_BYTES:
            self._flush()
        self._ids.append(key)
        self._lines.append(line)
        self._id_bytes += id_bytes
        if len(self._ids) >= self.chunk_size:
            self._flush()

    def _reject(self, key: str, number: int, error: str, source_id: str | None) -> None:
        self.plan.rejected.append(Rejected(key, number, error, source_id))

    def _flush(self) -> None:
        if not self._ids:
            return
        chunk = Chunk(len(self.plan.chunks) + 1, self._ids, b"".join(self._lines))
        if self.on_chunk is not None:
            self.on_chunk(chunk)
            chunk = Chunk(chunk.number, chunk.ticket_ids, b"")  # the body has been written; drop it
        self.plan.chunks.append(chunk)
        self._ids, self._lines, self._id_bytes = [], [], 0

    def finish(self) -> ChunkPlan:
        self._flush()
        return self.plan


def plan_chunks(
    records: Iterable[TicketRecord], chunk_size: int, on_chunk: Callable[[Chunk], None] | None = None
) -> ChunkPlan:
    chunker = Chunker(chunk_size, on_chunk)
    for record in records:
        chunker.add(record)
    return chunker.finish()
