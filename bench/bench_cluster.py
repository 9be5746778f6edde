"""Two processes on one PostgreSQL schema joined by Redis, against one process, in one invocation.

    uv run python bench/bench_cluster.py [--updates 2000] [--observers 4] [--stream 4000]

1. Propagation: a writer on A sends one update at a time; an observer on A (same process) and one on
   B (the other process) each time it arrives. p50/p99 of both, and of the difference.
2. CPU per delivered update: a writer streams ``--stream`` updates (at most 256 in flight) to
   ``--observers`` observers, once on one process without Redis (PostgreSQL) and once on two
   processes with Redis (writer on A, observers on B); server CPU (user + system, every process)
   divided by the updates delivered. Redis's own CPU is shown apart (from INFO; a shared Redis may
   count other clients' work too).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from bench_persistence import make_updates  # bench/: run as a script, this folder is on sys.path
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect

from crdt_server.sync import protocol as p
from crdt_server.testing import ServerProcess

UPDATE = bytes((p.MSG_SYNC, p.SYNC_UPDATE))


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def redis_cpu(url: str) -> float:
    r = Redis.from_url(url)
    try:
        info = await r.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    finally:
        await r.aclose()


async def session(srv: ServerProcess) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        r = await http.post("/api/sessions", json={})
        r.raise_for_status()
        return dict(r.json())


def url(srv: ServerProcess, s: dict[str, Any], role: str) -> str:
    return f"{srv.ws_url}/{s['id']}?token={s['tokens'][role]}"


async def next_update(ws: ClientConnection) -> float:
    while True:
        frame = await ws.recv()
        if isinstance(frame, bytes) and frame[:2] == UPDATE:
            return time.perf_counter()


async def propagation(a: ServerProcess, b: ServerProcess, n: int) -> dict[str, list[float]]:
    s = await session(a)
    updates = make_updates(n + 50)
    out: dict[str, list[float]] = {"same": [], "cross": [], "hop": []}
    async with connect(url(a, s, "candidate"), max_size=None) as writer, \
            connect(url(a, s, "observer"), max_size=None) as here, \
            connect(url(b, s, "observer"), max_size=None) as there:
        await asyncio.sleep(0.5)
        for i, u in enumerate(updates):
            t0 = time.perf_counter()
            await writer.send(p.sync_frame(p.SYNC_UPDATE, u))
            t_here, t_there = await asyncio.gather(next_update(here), next_update(there))
            if i >= 50:  # warm-up left out
                out["same"].append((t_here - t0) * 1000)
                out["cross"].append((t_there - t0) * 1000)
                out["hop"].append((t_there - t_here) * 1000)
    return out


async def stream(writer_srv: ServerProcess, observer_srv: ServerProcess, n: int, observers: int) -> int:
    """Updates delivered to the observers."""
    s = await session(writer_srv)
    updates = make_updates(n)
    received = [0] * observers
    progress = asyncio.Event()

    async def observe(i: int, ready: asyncio.Event) -> None:
        async with connect(url(observer_srv, s, "observer"), max_size=None) as ws:
            ready.set()
            async for frame in ws:
                if isinstance(frame, bytes) and frame[:2] == UPDATE:
                    received[i] += 1
                    progress.set()
                    if received[i] == n:
                        return

    readies = [asyncio.Event() for _ in range(observers)]
    tasks = [asyncio.create_task(observe(i, readies[i])) for i in range(observers)]
    for r in readies:
        await r.wait()
    await asyncio.sleep(0.5)
    async with connect(url(writer_srv, s, "candidate"), max_size=None) as ws:
        for k, u in enumerate(updates):
            while k - min(received) >= 256:
                progress.clear()
                await progress.wait()
            await ws.send(p.sync_frame(p.SYNC_UPDATE, u))
        await asyncio.wait_for(asyncio.gather(*tasks), 120)
    return sum(received)


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=os.environ.get("CRDT_SERVER_TEST_DATABASE_URL",
                                                   "postgresql://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--redis", default=os.environ.get("CRDT_SERVER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    ap.add_argument("--updates", type=int, default=2000, help="updates timed one at a time (propagation)")
    ap.add_argument("--stream", type=int, default=4000, help="updates streamed (CPU per delivered update)")
    ap.add_argument("--observers", type=int, default=4)
    a = ap.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    quiet = ["--log-level", "warning"]
    bus = [*quiet, "--redis-prefix", prefix]
    env = {"CRDT_SERVER_REDIS_URL": a.redis}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        a_srv = ServerProcess(root / "a", bus, env, database=(a.db, schema))
        b_srv = ServerProcess(root / "b", bus, env, database=(a.db, schema))
        try:
            a_srv.start()
            b_srv.start()
            lat = await propagation(a_srv, b_srv, a.updates)
            cpu0 = [cpu_seconds(s.proc.pid) for s in (a_srv, b_srv) if s.proc]
            r0 = await redis_cpu(a.redis)
            delivered = await stream(a_srv, b_srv, a.stream, a.observers)
            cpu_bus = sum(cpu_seconds(s.proc.pid) for s in (a_srv, b_srv) if s.proc) - sum(cpu0)
            redis_used = await redis_cpu(a.redis) - r0
        finally:
            a_srv.stop()
            b_srv.stop()
        single = ServerProcess(root / "single", quiet, database=(a.db, schema))
        try:
            single.start()
            assert single.proc is not None
            c0 = cpu_seconds(single.proc.pid)
            delivered_single = await stream(single, single, a.stream, a.observers)
            cpu_single = cpu_seconds(single.proc.pid) - c0
        finally:
            single.stop()
    conn = await asyncpg.connect(a.db)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()

    print(f"propagation, {a.updates} updates one at a time (writer on A), ms:")
    print(f"{'':28} {'p50':>8} {'p99':>8} {'mean':>8}")
    for key, label in (("same", "observer on A (same process)"), ("cross", "observer on B (via Redis)"),
                       ("hop", "B minus A (the extra hop)")):
        v = lat[key]
        print(f"{label:28} {pct(v, 0.5):8.2f} {pct(v, 0.99):8.2f} {statistics.fmean(v):8.2f}")
    print(f"p99 cross / same: {pct(lat['cross'], 0.99) / pct(lat['same'], 0.99):.2f}")
    per_single = cpu_single / delivered_single * 1e6
    per_bus = cpu_bus / delivered * 1e6
    print(f"\nCPU per delivered update ({a.stream} updates to {a.observers} observers), µs:")
    print(f"one process, no Redis:                  {per_single:8.1f}")
    print(f"writer on A, observers on B, via Redis: {per_bus:8.1f}  (A + B; ratio {per_bus / per_single:.2f})")
    print(f"Redis server itself (INFO cpu delta):   {redis_used / delivered * 1e6:8.1f}")


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    asyncio.run(main())
