"""PostgreSQL write-ahead against SQLite write-ahead: updates/s per process, in one invocation.

    uv run python bench/bench_postgres.py [--url postgresql://postgres@127.0.0.1:5432/test] [--updates 20000] [--writers 4]

The same load as ``bench_persistence.py``'s write-ahead row (writers in separate rooms, one observer
each, updates delivered per second, server CPU per update), once on the data directory's SQLite
file and once on a fresh schema of the PostgreSQL database (dropped afterwards), interleaved
``--repeat`` times; best of each. Prints a table with the ratio PostgreSQL / SQLite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import uuid

import asyncpg
from bench_persistence import throughput  # bench/: run as a script, this folder is on sys.path


async def drop(url: str, schema: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=os.environ.get("CRDT_SERVER_TEST_DATABASE_URL",
                                                    "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--updates", type=int, default=20000, help="updates per writer")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved runs per store")
    a = ap.parse_args()

    runs: dict[str, list[dict[str, float]]] = {"sqlite": [], "postgresql": []}
    for _ in range(a.repeat):
        runs["sqlite"].append(await throughput("write-ahead", a.updates, a.writers))
        schema = f"bench_{uuid.uuid4().hex[:12]}"
        try:
            runs["postgresql"].append(await throughput("write-ahead", a.updates, a.writers, (a.url, schema)))
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
    print("all runs (updates/s):", {k: [round(r["updates_per_s"]) for r in v] for k, v in runs.items()})


if __name__ == "__main__":
    asyncio.run(main())
