"""A set of keys that does not grow in memory: 8-byte digests in a temporary SQLite file.

    with DigestSet() as seen:
        for key in keys:
            for dup in seen.add(key):      # buffered: duplicates come back when a batch is
                ...                        # written (every `batch` adds), in the order added
        for dup in seen.flush(): ...       # the rest
        "some key" in seen                 # membership (flushes first)
        seen.contains(["a", "b"])          # many at once: [True, False]

Keys are str or bytes (a str is taken as its UTF-8 bytes, so "a" and b"a" are the same key).
Each is stored as its 64-bit digest (`digest`): the first `memory` (100,000: about
7 MB) in a Python set, then all of them in a temporary SQLite file, the table's INTEGER
PRIMARY KEY, so a million keys take about 20 MB of disk and a few MB of memory (SQLite's page
cache). Two different keys share a digest with probability about n^2 / 2^65: 3e-8 for a
million keys. The file is unlinked as soon as it is opened, so a crash leaves nothing behind.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

Key = str | bytes
BATCH = 10_000
MEMORY = 100_000  # keys held in a set before they move to the SQLite file
QUERY_CHUNK = 500  # host parameters per SELECT ... IN (...)


def digest(key: Key) -> int:
    """Python's own 64-bit hash of the key's bytes (SipHash, keyed afresh in every process):
    a set lives in one process, so its digests need not agree with another's."""
    return hash(key.encode() if isinstance(key, str) else key)


class DigestSet:
    """A disk-backed set of keys; see the module docstring for the API."""

    def __init__(
        self, directory: Path | None = None, batch: int = BATCH, memory: int = MEMORY
    ) -> None:
        self.directory, self.batch, self.memory = directory, batch, memory
        self.held: set[int] | None = set()  # the digests, until there are more than `memory`
        self._db: sqlite3.Connection | None = None
        self.pending: dict[int, tuple[int, Key]] = {}  # digest -> (order, key), not yet written
        self.repeats: list[tuple[int, Key]] = []  # (order, key) added twice in the pending batch
        self.count = self.order = 0

    def add(self, key: Key) -> list[Key]:
        """Add a key; returns the duplicates found when this add completes a batch."""
        d = digest(key)
        self.order += 1
        if d in self.pending:
            self.repeats.append((self.order, key))
        else:
            self.pending[d] = (self.order, key)
        if len(self.pending) + len(self.repeats) >= self.batch:
            return self.flush()
        return []

    @property
    def db(self) -> sqlite3.Connection:
        """The SQLite file, made when the keys outgrow memory (with the ones held so far)."""
        if self._db is None:
            fd, name = tempfile.mkstemp(dir=self.directory, prefix=".digests-", suffix=".db")
            os.close(fd)
            try:
                self._db = db = sqlite3.connect(name, isolation_level=None)
                for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-8000"):
                    db.execute(f"PRAGMA {pragma}")
                db.execute("CREATE TABLE d(k INTEGER PRIMARY KEY)")
            finally:
                os.unlink(name)  # the open connection keeps the file; nothing is left on a crash
            db.execute("BEGIN")  # one transaction for the move, not one per digest
            db.executemany("INSERT INTO d VALUES (?)", ((d,) for d in self.held or ()))
            db.execute("COMMIT")
            self.held = None
        return self._db

    def flush(self) -> list[Key]:
        """Write pending keys; returns those already present (before or within the batch)."""
        if not self.pending and not self.repeats:
            return []
        digests = list(self.pending)
        held = self.held
        if held is not None and len(held) + len(digests) <= self.memory:
            existing = {d for d in digests if d in held}
            held.update(digests)
            return self.found(len(digests) - len(existing), existing)
        before = self.db.total_changes
        self.db.execute("BEGIN")
        self.db.executemany("INSERT OR IGNORE INTO d VALUES (?)", ((d,) for d in digests))
        added = self.db.total_changes - before
        existing: set[int] = set()
        if added < len(digests):  # some were there already: find them (rare, so slower)
            self.db.execute("ROLLBACK")
            existing = self._present(digests)
            self.db.execute("BEGIN")
            fresh = [(d,) for d in digests if d not in existing]
            self.db.executemany("INSERT INTO d VALUES (?)", fresh)
            added = len(fresh)
        self.db.execute("COMMIT")
        return self.found(added, existing)

    def found(self, added: int, existing: set[int]) -> list[Key]:
        """The pending batch is stored: its keys that were there already, in the order added."""
        self.count += added
        found = [self.pending[d] for d in existing] + self.repeats
        self.pending, self.repeats = {}, []
        return [key for _, key in sorted(found, key=lambda item: item[0])]

    def _present(self, digests: list[int]) -> set[int]:
        if self.held is not None:
            return {d for d in digests if d in self.held}
        present: set[int] = set()
        for i in range(0, len(digests), QUERY_CHUNK):
            part = digests[i : i + QUERY_CHUNK]
            marks = ",".join("?" * len(part))
            present.update(
                r[0] for r in self.db.execute(f"SELECT k FROM d WHERE k IN ({marks})", part)
            )
        return present

    def contains(self, keys: Iterable[Key]) -> list[bool]:
        """Membership of many keys at once, in order."""
        self.flush()
        digests = [digest(k) for k in keys]
        present = self._present(digests)
        return [d in present for d in digests]

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, (str, bytes)):
            return False
        return self.contains([key])[0]

    def __len__(self) -> int:
        self.flush()
        return self.count

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> DigestSet:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
