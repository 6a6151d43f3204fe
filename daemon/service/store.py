"""Durable state in one SQLite file (WAL): the alert outbox, sent ids, checkpoints.

Guarantees:
- an alert is in the outbox (committed) before anything tries to publish it, and
  leaves it only when the broker acknowledged it (:meth:`Store.mark_sent`);
- the outbox hands alerts out in the order they were produced (per pool, and
  overall), also after a crash;
- an id that was already queued or sent is not queued again (re-processing blocks
  after a restart reproduces the same ids), so a transition is published once
  per id; delivery stays at-least-once (a crash between PUBACK and the delete
  resends);
- a checkpoint (pipeline state + chain cursors) is written in the same transaction
  as the alerts of the blocks it covers, so state and outbox never disagree;
- the outbox is bounded: past ``max_rows`` the oldest rows are dropped, counted in
  :attr:`Store.dropped` and logged by the caller.
"""

from __future__ import annotations

import pickle
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    pool TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sent (
    id TEXT PRIMARY KEY,
    sent_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sent_at_idx ON sent (sent_at);
CREATE TABLE IF NOT EXISTS journal (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    note TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class OutboxItem:
    seq: int
    id: str
    topic: str
    payload: bytes
    qos: int
    pool: str


@dataclass(frozen=True, slots=True)
class QueuedAlert:
    id: str
    topic: str
    payload: bytes
    qos: int
    pool: str


class Store:
    """The daemon's SQLite file. One writer (the daemon's event loop thread)."""

    def __init__(
        self, path: Path, *, max_rows: int = 100_000, sent_retention: float = 14 * 86400
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_rows = max_rows
        self.sent_retention = sent_retention
        self.dropped = 0
        # One thread only (the event loop): sqlite3 raises if another thread ever touches it.
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a commit survives a process crash (kill -9); only an OS
        # crash / power loss can lose the last transactions.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- outbox -----------------------------------------------------------------

    def commit(
        self,
        alerts: Sequence[QueuedAlert] = (),
        *,
        journal: Iterable[tuple[str, str, str, bytes, str]] = (),
        kv: Iterable[tuple[str, Any]] = (),
    ) -> int:
        """Queue ``alerts`` (skipping ids already queued or sent), record ``journal``
        entries (id, kind, topic, payload, note) and write ``kv`` values, atomically.
        Returns the number of alerts newly queued."""
        now = time.time()
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            added = 0
            for a in alerts:
                if cur.execute("SELECT 1 FROM sent WHERE id = ?", (a.id,)).fetchone():
                    continue
                cur.execute(
                    "INSERT OR IGNORE INTO outbox (id, topic, payload, qos, pool, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (a.id, a.topic, a.payload, a.qos, a.pool, now),
                )
                added += cur.rowcount
            for entry in journal:
                cur.execute(
                    "INSERT OR IGNORE INTO journal (id, kind, topic, payload, note, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (*entry, now),
                )
            for key, value in kv:
                cur.execute(
                    "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)",
                    (key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)),
                )
            if added:
                (depth,) = cur.execute("SELECT COUNT(*) FROM outbox").fetchone()
                if depth > self.max_rows:
                    excess = depth - self.max_rows
                    cur.execute(
                        "DELETE FROM outbox WHERE seq IN "
                        "(SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                        (excess,),
                    )
                    self.dropped += excess
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return added

    def pending(self, limit: int = 100) -> list[OutboxItem]:
        rows = self._db.execute(
            "SELECT seq, id, topic, payload, qos, pool FROM outbox ORDER BY seq LIMIT ?", (limit,)
        ).fetchall()
        return [
            OutboxItem(int(r[0]), str(r[1]), str(r[2]), bytes(r[3]), int(r[4]), str(r[5]))
            for r in rows
        ]

    def mark_sent(self, items: Sequence[OutboxItem]) -> None:
        """The broker acknowledged these: move them from the outbox to the sent ids."""
        if not items:
            return
        now = time.time()
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany("DELETE FROM outbox WHERE seq = ?", [(i.seq,) for i in items])
            cur.executemany(
                "INSERT OR REPLACE INTO sent (id, sent_at) VALUES (?, ?)",
                [(i.id, now) for i in items],
            )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def depth(self) -> int:
        (n,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(n)

    def was_sent(self, alert_id: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM sent WHERE id = ?", (alert_id,)).fetchone() is not None
        )

    def housekeeping(self) -> None:
        """Forget sent ids and journal entries past the retention."""
        horizon = time.time() - self.sent_retention
        self._db.execute("DELETE FROM sent WHERE sent_at < ?", (horizon,))
        self._db.execute("DELETE FROM journal WHERE created < ?", (horizon,))
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def journal(
        self, kind: str | None = None, limit: int = 1000
    ) -> list[tuple[str, str, str, bytes, str]]:
        sql = "SELECT id, kind, topic, payload, note FROM journal"
        args: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            args = (kind,)
        sql += " ORDER BY created, rowid LIMIT ?"
        rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), bytes(r[3]), str(r[4])) for r in rows]

    # -- key/value --------------------------------------------------------------------

    def get(self, key: str) -> Any:
        row = self._db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        # Only this daemon writes this file (it lives in its private StateDirectory).
        return pickle.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        self.commit(kv=[(key, value)])
