"""PostgreSQL write-ahead against SQLite write-ahead: updates/s per process, in one invocation.

    uv run python bench/bench_postgres.py [--url postgresql://postgres@127.0.0.1:5432/test] [--updates 20000] [--writers 4]

The same load as ``bench_persistence.py``'s write-ahead row (writers in separate rooms, one observer
each, updates delivered per second, server CPU per update), once on the data directory's SQLite
file and once on a fresh schema of the PostgreSQL database (dropped afterwards), interleaved
``--repeat`` times; best of each. Then the stores alone, in this process: ``--rooms`` tasks, each
appending one update and awaiting its commit, then the next (a room that always has one update
in flight; group commit batches the rooms). Prints a table with the ratios PostgreSQL / SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from bench_persistence import make_updates, throughput  # bench/: run as a script, this folder is on sys.path

from crdt_server.document import initial_document
from crdt_server.storage import EventRecord, PostgresStore, SessionRecord, SQLiteStore, UpdateRecord


async def drop(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def store_appends(store: Any, rooms: int, per_room: int) -> float:
    """Appends per second of ``rooms`` tasks appending one update at a time, each awaiting its commit."""
    now = time.time()
    ids = [f"{i:022d}" for i in range(rooms)]
    async with store:
        for sid in ids:
            await store.create_session(SessionRecord(sid, "", "python", "active", now, now, now + 3600),
                                       initial_document("", "python", ""), EventRecord(sid, "created", {}))
        updates = make_updates(per_room)

        async def room(sid: str) -> None:
            for u in updates:
                await store.append_updates([UpdateRecord(sid, u, "candidate", "c", "Bench")])

        t0 = time.perf_counter()
        await asyncio.gather(*(room(sid) for sid in ids))
        return rooms * per_room / (time.perf_counter() - t0)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("CRDT_SERVER_TEST_DATABASE_URL",
                                                    "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--updates", type=int, default=20000, help="updates per writer")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved runs per store")
    ap.add_argument("--rooms", type=int, default=8, help="appending tasks in the store-only run")
    ap.add_argument("--appends", type=int, default=2000, help="appends per task in the store-only run")
    a = ap.parse_args()

    runs: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgresql": []}
    for _ in range(a.repeat):
        runs["sqlite"].append(await throughput("write-ahead", a.updates, a.writers))
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            runs["postgresql"].append(await throughput("write-ahead", a.updates, a.writers, (a.url, schema)))
        finally:
            await drop(a.url, schema)
    alone: dict[str, list[float]] = {"sqlite": [], "sqlite-full": [], "postgresql": []}
    for _ in range(a.repeat):
        for name, durability in (("sqlite", "normal"), ("sqlite-full", "full")):
            with tempfile.TemporaryDirectory() as tmp:
                store = SQLiteStore(Path(tmp) / "db.sqlite", durability=durability)
                alone[name].append(await store_appends(store, a.rooms, a.appends))
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            alone["postgresql"].append(await store_appends(PostgresStore(a.url, schema=schema), a.rooms, a.appends))
        finally:
            await drop(a.url, schema)
    lite = max(runs["sqlite"], key=lambda r: r["updates_per_s"])
    pg = max(runs["postgresql"], key=lambda r: r["updates_per_s"])
    version = subprocess.run(["psql", a.url, "-Atc", "show server_version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}; PostgreSQL {version or '?'} (same host)")
    print("| metric | PostgreSQL | SQLite (ref) | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| updates/s end to end, write-ahead, {a.writers} writers x {a.updates} | {pg['updates_per_s']:,.0f} | "
          f"{lite['updates_per_s']:,.0f} | {pg['updates_per_s'] / lite['updates_per_s']:.2f} |")
    print(f"| server CPU us per update (server process only) | {pg['cpu_us_per_update']:.1f} | "
          f"{lite['cpu_us_per_update']:.1f} | {pg['cpu_us_per_update'] / lite['cpu_us_per_update']:.2f} |")
    pg_alone, lite_alone = max(alone["postgresql"]), max(alone["sqlite"])
    print(f"| store alone: appends/s, {a.rooms} rooms x {a.appends}, one in flight each | {pg_alone:,.0f} | "
          f"{lite_alone:,.0f} | {pg_alone / lite_alone:.2f} |")
    full = max(alone["sqlite-full"])
    print(f"| store alone, against SQLite --durability full (fsync per commit, as synchronous_commit=on) | "
          f"{pg_alone:,.0f} | {full:,.0f} | {pg_alone / full:.2f} |")
    print("all runs (updates/s):", {k: [round(r["updates_per_s"]) for r in v] for k, v in runs.items()},
          {k: [round(x) for x in v] for k, v in alone.items()})


if __name__ == "__main__":
    asyncio.run(main())
