"""The write-ahead cost of one keystroke: ``SQLiteStore.append_updates`` against the bare statements.

    uv run python bench/bench_append.py [--appends 20000] [--rounds 3]

While typing, every update is committed alone before anyone sees it (``sqlite_writer.py``: inline,
one transaction per loop turn). This prints the CPU per append through the store, as the room calls
it, beside the reference run in the same invocation: the same database, one update row inserted and
the session's counters bumped in one transaction by a bare ``sqlite3`` connection (what any server
with write-ahead persistence must at least do). The difference is the store's own work: the event-loop
hand-off, the savepoint, the quota and expiry rules. Best of ``--rounds``, to read through noise.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from pathlib import Path

from crdt_server.document import initial_document
from crdt_server.storage import EventRecord, SessionRecord, SQLiteStore, UpdateRecord
from crdt_server.storage.connections import connect

KEYSTROKE = b"\x01\x01\xb1\xa4\xdc\xe5\x05\x05\x84\xb1\xa4\xdc\xe5\x05\x04\x01x\x00"  # ~ a 1-char insert


async def through_store(path: Path, n: int) -> float:
    """CPU seconds per ``append_updates`` of one small update, as the room does per keystroke."""
    async with SQLiteStore(path) as store:
        now = time.time()
        await store.create_session(SessionRecord("s" * 22, "t", "python", "active", now, now, now + 3600),
                                   initial_document("t", "python", ""), EventRecord("s" * 22, "created", {}))
        update = [UpdateRecord("s" * 22, KEYSTROKE, "candidate", "c1", "Cand")]
        for _ in range(min(n, 500)):  # warm: statement cache, pages
            await store.append_updates(update)
        started = time.process_time()
        for _ in range(n):
            await store.append_updates(update)
        return (time.process_time() - started) / n


def bare(path: Path, n: int) -> float:
    """CPU seconds per transaction of the bare statements on the same database and schema."""
    conn: sqlite3.Connection = connect(path, "normal")
    seq = conn.execute("SELECT last_seq FROM sessions WHERE id = ?", ("s" * 22,)).fetchone()[0]

    def one() -> None:
        nonlocal seq
        seq += 1
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE sessions SET last_seq = ?, updated_at = ?, stored_bytes = stored_bytes + ? "
                     "WHERE id = ?", (seq, time.time(), len(KEYSTROKE), "s" * 22))
        conn.execute("INSERT INTO updates VALUES (?, ?, ?, ?, ?, ?, ?)",
                     ("s" * 22, seq, time.time(), "c1", "candidate", "Cand", KEYSTROKE))
        conn.execute("COMMIT")

    for _ in range(min(n, 500)):
        one()
    started = time.process_time()
    for _ in range(n):
        one()
    conn.close()
    return (time.process_time() - started) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--appends", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    store_s, bare_s = [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "crdt-server.db"
            store_s.append(asyncio.run(through_store(path, args.appends)))
            bare_s.append(bare(path, args.appends))
    ours, ref = min(store_s), min(bare_s)
    print(f"| one keystroke's write-ahead ({args.appends} appends, best of {args.rounds}) | CPU per append (us) |")
    print("|---|---:|")
    print(f"| SQLiteStore.append_updates (inline commit) | {ours * 1e6:.1f} |")
    print(f"| bare statements, same database (reference) | {ref * 1e6:.1f} |")
    print(f"| ratio | {ours / ref:.2f}x |")


if __name__ == "__main__":
    main()
