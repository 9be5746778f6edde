"""Playback of a moment in a 20,000-update session, and what the checkpoints cost in storage.

Two simulated editors (pycrdt docs, one update per editor transaction: mostly typing, some
backspaces, select-deletes and pastes, a few concurrent pairs) write their rows through the real
SQLiteStore, with a snapshot every 2,000 rows as the room writes them (or every N with a checkpoint interval N). Then ``playback.moment`` is
timed at random moments (by seq and by time), with the checkpoints kept and, for comparison, with
only the newest snapshot (a full replay from row 1). Not a test: it only reports.

    uv run python bench/bench_playback.py [--updates 20000] [--samples 200]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from crdt_server.document import initial_document
from crdt_server.playback import moment
from crdt_server.storage import EventRecord, SessionRecord, SQLiteStore, UpdateRecord

WORDS = "def for in range return if else print while import class self value total item".split()


START = initial_document("t", "python", "# starter\n")  # the session's row 1, which every edit builds on


def simulate(n: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """``n`` (role, update) pairs from two editors that stay in sync except for concurrent pairs."""
    rng = random.Random(seed)
    docs = {r: Doc() for r in ("candidate", "interviewer")}
    for d in docs.values():
        d.apply_update(START)
    # What an editor sends is its transaction's update (get_update(state) would carry the whole delete set).
    sent: dict[str, list[bytes]] = {r: [] for r in docs}
    for r, d in docs.items():
        d.observe(lambda event, r=r: sent[r].append(event.update))
    out: list[tuple[str, bytes]] = []
    cursor = {r: 10 for r in docs}  # in code points; typing goes on where the editor's cursor is
    while len(out) < n:
        role = "candidate" if rng.random() < 0.59 else "interviewer"
        concurrent = rng.random() < 0.05
        editors = [role, "interviewer" if role == "candidate" else "candidate"] if concurrent else [role]
        made = []
        for who in editors:
            text = docs[who].get("code", type=Text)
            s = str(text)
            if rng.random() < 0.03 or cursor[who] > len(s):  # the editor clicks somewhere else
                cursor[who] = rng.randint(0, len(s))
            pos = cursor[who]
            r = rng.random()
            if r < 0.86 or len(s) < 50:
                ch = rng.choice("abcdefghijklmnop  (){}:=\n é😀中")
                text.insert(_utf8(s, pos), ch)
                cursor[who] = pos + 1
            elif r < 0.94:
                if pos:
                    del text[_utf8(s, pos - 1):_utf8(s, pos)]
                    cursor[who] = pos - 1
            elif r < 0.985:
                a = max(0, pos - rng.randint(2, 20))
                del text[_utf8(s, a):_utf8(s, pos)]
                cursor[who] = a
            else:
                paste = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "\n"
                text.insert(_utf8(s, pos), paste)
                cursor[who] = pos + len(paste)
            made.append((who, sent[who].pop()) if sent[who] else None)
        for entry in made:
            if entry is None:  # nothing changed (a backspace at 0)
                continue
            who, update = entry
            out.append((who, update))
            for other, d in docs.items():
                if other != who:
                    d.apply_update(update)
                    sent[other].clear()  # applying a remote update is not something this editor sends
    return out[:n]


def _utf8(s: str, pos: int) -> int:
    """pycrdt Text offsets are UTF-8 bytes."""
    return len(s[:pos].encode())


async def build(path: Path, rows: list[tuple[str, bytes]], checkpoint_every: int) -> tuple[SessionRecord, dict[str, Any]]:
    now = time.time()
    record = SessionRecord("bench", "t", "python", "active", now, now, now + 86400)
    async with SQLiteStore(path, checkpoint_every=checkpoint_every) as store:
        await store.create_session(record, START,
                                   EventRecord("bench", "created", {}))
        live: Doc = Doc()
        live.apply_update((await store.read_updates("bench", 0, 1))[0].data)
        seq = 1
        batch: list[UpdateRecord] = []
        for role, update in rows:
            batch.append(UpdateRecord("bench", update, role, f"conn-{role}", role.title()))
            live.apply_update(update)
            if len(batch) == 20:  # rooms commit what arrived together in one append
                seq = (await store.append_updates(batch))[-1]
                batch = []
                if seq % (checkpoint_every or 2000) < 20 and seq > 20:  # the room's --snapshot-every
                    await store.write_snapshot("bench", seq, live.get_update())
        if batch:
            seq = (await store.append_updates(batch))[-1]
    conn = sqlite3.connect(path)
    log_bytes = conn.execute("SELECT SUM(length(data)) FROM updates").fetchone()[0]
    snaps = conn.execute("SELECT COUNT(*), COALESCE(SUM(length(data)), 0) FROM snapshots").fetchone()
    conn.close()
    return record, {"rows": seq, "log_bytes": log_bytes, "snapshots": snaps[0], "snapshot_bytes": snaps[1]}


async def time_moments(path: Path, record: SessionRecord, last: int, samples: int, by: str) -> list[float]:
    rng = random.Random(7)
    out = []
    async with SQLiteStore(path) as store:
        first = (await store.read_updates("bench", 0, 1))[0].ts
        end = (await store.read_updates("bench", last - 1, 1))[0].ts
        for _ in range(samples):
            started = time.perf_counter()
            if by == "seq":
                await moment(store, record, seq=rng.randint(1, last))
            else:
                await moment(store, record, at=rng.uniform(first, end))
            out.append((time.perf_counter() - started) * 1000)
    return out


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=20_000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--checkpoints", default="2000,500,0", help="checkpoint intervals to compare (0: newest only)")
    args = ap.parse_args()
    rows = simulate(args.updates)
    print(f"simulated {len(rows)} updates, mean {statistics.mean(len(u) for _, u in rows):.1f} B")
    with tempfile.TemporaryDirectory() as tmp:
        for every in (int(x) for x in args.checkpoints.split(",")):
            label = f"snapshot and checkpoint every {every}" if every else "snapshot every 2000, newest kept only"
            path = Path(tmp) / f"{every}.sqlite"
            record, stats = await build(path, rows, every)
            print(f"\n{label}: {stats['rows']} rows, log {stats['log_bytes'] / 1024:.0f} KiB, "
                  f"{stats['snapshots']} snapshots {stats['snapshot_bytes'] / 1024:.0f} KiB "
                  f"({stats['snapshot_bytes'] / stats['log_bytes']:.2f}x the log)")
            for by in ("seq", "at"):
                ms = await time_moments(path, record, stats["rows"], args.samples, by)
                print(f"  moment by {by}: p50 {pct(ms, 50):.2f} ms  p99 {pct(ms, 99):.2f} ms  max {max(ms):.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
