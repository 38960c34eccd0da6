"""The ticket keys a file has used so far, kept on local disk instead of in memory.

Duplicate-id detection needs every key of the file at hand, and a 1 GB file holds millions of
them: a Python set would grow by ~100 bytes per ticket. :class:`KeyRegistry` keeps them in a
SQLite table in a temporary directory (``/tmp`` on Lambda: ephemeral storage, ~25 bytes per key
on disk) behind a page cache of fixed size, so memory stays flat whatever the file holds.
SQLite ships with Python (the python3.13 Lambda runtime, on Amazon Linux 2023, has a SQLite far
newer than the 3.8.2 that ``WITHOUT ROWID`` tables need). The registry lives for one run: a
dispatcher run that continues a file rebuilds it while re-reading the records already
dispatched, and the aggregator builds its own while it writes the results.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile

CACHE_KIB = 16 * 1024  # SQLite page cache: the registry's whole memory footprint


class KeyRegistry:
    """Exact set of keys, each with the record that used it first. Use as a context manager."""

    def __init__(self, directory: str | None = None):
        self._dir = tempfile.mkdtemp(prefix="ticket-keys-", dir=directory)
        self._db = sqlite3.connect(
            os.path.join(self._dir, "keys.db"), isolation_level=None, check_same_thread=False
        )
        for pragma in (
            "journal_mode=OFF",  # scratch data: no rollback journal, no fsync
            "synchronous=OFF",
            "locking_mode=EXCLUSIVE",
            "temp_store=FILE",
            f"cache_size=-{CACHE_KIB}",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE keys (key TEXT PRIMARY KEY, record INTEGER NOT NULL) WITHOUT ROWID")
        self._db.execute("BEGIN")
        self.size = 0

    def claim(self, key: str, record: int) -> int | None:
        """Record ``key`` as used by ``record``; if it was already used, return the first record."""
        if self._db.execute("INSERT OR IGNORE INTO keys VALUES (?, ?)", (key, record)).rowcount:
            self.size += 1
            return None
        row = self._db.execute("SELECT record FROM keys WHERE key = ?", (key,)).fetchone()
        return int(row[0])

    def __contains__(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM keys WHERE key = ?", (key,)).fetchone() is not None

    def disk_bytes(self) -> int:
        return os.path.getsize(os.path.join(self._dir, "keys.db"))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> KeyRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
