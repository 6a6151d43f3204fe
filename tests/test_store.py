"""The SQLite outbox: order, idempotency, bounds, atomic checkpoints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from daemon.service.store import QueuedAlert, Store


def alert(i: int, pool: str = "0xA") -> QueuedAlert:
    return QueuedAlert(f"id{i}", f"alvh/alerts/c/{pool}/L1", f"payload{i}".encode(), 1, pool)


def test_order_dedupe_and_sent_ids(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    assert store.commit([alert(i) for i in range(5)]) == 5
    assert store.commit([alert(3), alert(5)]) == 1  # id3 already queued
    items = store.pending(10)
    assert [i.id for i in items] == ["id0", "id1", "id2", "id3", "id4", "id5"]
    store.mark_sent(items[:2])
    assert store.was_sent("id0")
    assert store.commit([alert(0)]) == 0  # already sent: re-processing does not re-queue
    assert [i.id for i in store.pending(10)] == ["id2", "id3", "id4", "id5"]
    assert store.depth() == 4
    store.close()


def test_survives_reopen_and_keeps_order(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    store = Store(path)
    store.commit(
        [alert(i, pool=f"0x{i % 2}") for i in range(10)], kv=[("checkpoint", {"block": 7})]
    )
    store.close()
    again = Store(path)
    assert [i.id for i in again.pending(100)] == [f"id{i}" for i in range(10)]
    assert again.get("checkpoint") == {"block": 7}
    again.close()


def test_bounded_outbox_drops_oldest_and_counts(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite", max_rows=100)
    store.commit([alert(i) for i in range(150)])
    assert store.depth() == 100
    assert store.dropped == 50
    assert store.pending(1)[0].id == "id50"
    store.close()


def test_commit_is_atomic_across_a_crash(tmp_path: Path) -> None:
    """A process killed inside commit() leaves either all of it or nothing."""
    path = tmp_path / "s.sqlite"
    code = f"""
import os, signal
from daemon.service.store import Store, QueuedAlert
s = Store(__import__("pathlib").Path({str(path)!r}))
s.commit([QueuedAlert("a", "t", b"x", 1, "p")], kv=[("k", 1)])
class Proxy:
    def __init__(self, db): self.db = db
    def cursor(self):
        cur = self.db.cursor()
        class C:
            def execute(_, sql, *a):
                if sql.startswith("COMMIT"):
                    os.kill(os.getpid(), signal.SIGKILL)
                return cur.execute(sql, *a)
            def __getattr__(_, n): return getattr(cur, n)
        return C()
    def __getattr__(self, n): return getattr(self.db, n)
s._db = Proxy(s._db)
s.commit([QueuedAlert("b", "t", b"y", 1, "p")], kv=[("k", 2)])
"""
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True)
    assert proc.returncode == -9
    store = Store(path)
    assert [i.id for i in store.pending(10)] == ["a"]
    assert store.get("k") == 1
    store.close()


def test_journal_records_suppressed(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    store.commit([], journal=[("x1", "inhibited", "alvh/alerts/c/p/L1", b"{}", "inhibited by L2")])
    assert store.journal("inhibited")[0][0] == "x1"
    assert store.depth() == 0
    store.close()
