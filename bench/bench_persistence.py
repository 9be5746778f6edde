"""Foundation benchmarks: write-ahead cost, load time of a long session, RSS per idle socket.

    uv run python bench/bench_persistence.py [--updates 20000] [--writers 4] [--sockets 1000]

Prints a table. Each figure is measured in this invocation; the write-ahead row is compared with
the same server started with ``--persistence off`` (the reference run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import procs  # bench/procs.py: run as a script, this file's folder is on sys.path
from pycrdt import Doc, Text
from websockets.asyncio.client import connect

from crdt_server.document import initial_document
from crdt_server.storage import EventRecord, SessionRecord, SQLiteStore, UpdateRecord
from crdt_server.sync import load_document
from crdt_server.sync import protocol as p
from crdt_server.testing import ServerProcess


def rss_kib(pid: int) -> int:
    return procs.rss_bytes(pid) // 1024


def make_updates(n: int) -> list[bytes]:
    """n one-character inserts, as a typing client would send them."""
    doc: Doc = Doc()
    text = doc.get("code", type=Text)
    out = []
    for i in range(n):
        before = doc.get_state()
        text.insert(len(text), "abcdefghij"[i % 10])
        out.append(doc.get_update(before))
    return out


async def create(srv: ServerProcess) -> dict:
    async with httpx.AsyncClient(base_url=srv.base_url) as http:
        r = await http.post("/api/sessions", json={})
        r.raise_for_status()
        return r.json()


async def throughput(mode: str, updates_per_writer: int, writers: int,
                     database: tuple[str, str] | None = None) -> dict[str, float]:
    """Writers each send pre-built updates as fast as the socket takes them, in separate rooms
    watched by one observer each; the figure is updates delivered to observers per second.
    ``database``: (postgresql:// URL, schema) instead of the data directory's SQLite file."""
    with tempfile.TemporaryDirectory() as tmp:
        srv = ServerProcess(Path(tmp) / "data", ["--persistence", mode, "--log-level", "warning"], database=database)
        srv.start()
        try:
            streams = [make_updates(updates_per_writer) for _ in range(writers)]
            sessions = [await create(srv) for _ in range(writers)]
            done = asyncio.Event()
            received = [0] * writers
            progress = [asyncio.Event() for _ in range(writers)]
            window = 256

            async def observe(i: int, ready: asyncio.Event) -> None:
                s = sessions[i]
                async with connect(f"{srv.ws_url}/{s['id']}?token={s['tokens']['observer']}", max_size=None) as ws:
                    ready.set()
                    async for frame in ws:
                        if frame[:2] == bytes((0, 2)):
                            received[i] += 1
                            progress[i].set()
                            if received[i] == updates_per_writer:
                                return

            async def write(i: int) -> None:
                s = sessions[i]
                async with connect(f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}", max_size=None) as ws:
                    for n, u in enumerate(streams[i]):
                        while n - received[i] >= window:  # bounded in flight: measure the server, not a pile-up
                            progress[i].clear()
                            await progress[i].wait()
                        await ws.send(p.sync_frame(p.SYNC_UPDATE, u))
                    await done.wait()

            readies = [asyncio.Event() for _ in range(writers)]
            observers = [asyncio.create_task(observe(i, readies[i])) for i in range(writers)]
            for r in readies:
                await r.wait()
            cpu0 = procs.cpu_seconds(srv.proc.pid)
            t0 = time.perf_counter()
            writers_t = [asyncio.create_task(write(i)) for i in range(writers)]
            await asyncio.wait_for(asyncio.gather(*observers), 300)
            elapsed = time.perf_counter() - t0
            cpu = procs.cpu_seconds(srv.proc.pid) - cpu0
            done.set()
            await asyncio.gather(*writers_t)
            total = updates_per_writer * writers
            return {"updates_per_s": total / elapsed, "cpu_us_per_update": cpu / total * 1e6}
        finally:
            srv.stop()


async def load_time(n: int, snapshot_every: int) -> dict[str, float]:
    """A session with n stored updates: load via snapshot + tail (as the server does) and by a
    full replay of the log, median of 5 each."""
    with tempfile.TemporaryDirectory() as tmp:
        async with SQLiteStore(Path(tmp) / "db.sqlite") as store:
            now = time.time()
            sid = "b" * 22
            await store.create_session(SessionRecord(sid, "", "python", "active", now, now, now + 3600),
                                       initial_document("", "python", ""), EventRecord(sid, "created", {}))
            updates = make_updates(n)
            doc: Doc = Doc()
            doc.apply_update((await store.read_updates(sid, 0, 1))[0].data)
            for start in range(0, n, snapshot_every):
                chunk = updates[start : start + snapshot_every]
                seqs = await store.append_updates([UpdateRecord(sid, u, "candidate", "c") for u in chunk])
                for u in chunk:
                    doc.apply_update(u)
                if start + snapshot_every < n:  # the last chunk stays a tail: the worst case
                    await store.write_snapshot(sid, seqs[-1], doc.get_update())
            timings = []
            for _ in range(5):
                t0 = time.perf_counter()
                loaded, _, _, _ = await load_document(store, sid)
                timings.append(time.perf_counter() - t0)
            assert len(str(loaded.get("code", type=Text))) == n
            replay = []
            for _ in range(5):
                t0 = time.perf_counter()
                rows = await store.read_updates(sid, 0, n + 10)
                d: Doc = Doc()
                with d.transaction():
                    for r in rows:
                        d.apply_update(r.data)
                replay.append(time.perf_counter() - t0)
            return {"snapshot_ms": statistics.median(timings) * 1e3, "replay_ms": statistics.median(replay) * 1e3}


async def idle_rss(sockets: int, rooms: int) -> dict[str, float]:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, sockets * 2 + 256)), hard))
    with tempfile.TemporaryDirectory() as tmp:
        srv = ServerProcess(Path(tmp) / "data", ["--log-level", "warning"])
        srv.start()
        try:
            sessions = [await create(srv) for _ in range(rooms)]
            # warm up every room (loaded documents are not what we measure here)
            warm = [await connect(f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}") for s in sessions]
            await asyncio.sleep(0.5)
            before = rss_kib(srv.proc.pid)
            conns = []
            for i in range(sockets):
                s = sessions[i % rooms]
                conns.append(await connect(f"{srv.ws_url}/{s['id']}?token={s['tokens']['candidate']}"))
            await asyncio.sleep(1.0)
            after = rss_kib(srv.proc.pid)
            for c in conns + warm:
                await c.close()
            return {"rss_before_mib": before / 1024, "rss_after_mib": after / 1024,
                    "kib_per_socket": (after - before) / sockets}
        finally:
            srv.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--updates", type=int, default=20000, help="updates per writer")
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--stored", type=int, default=100_000, help="stored updates for the load test")
    ap.add_argument("--sockets", type=int, default=1000)
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved throughput runs per mode")
    a = ap.parse_args()

    # interleaved runs, best of each: the client side shares the 2 cores and warms up too
    runs: dict[str, list[dict[str, float]]] = {"off": [], "write-ahead": []}
    for _ in range(a.repeat):
        for mode in runs:
            runs[mode].append(await throughput(mode, a.updates, a.writers))
    off = max(runs["off"], key=lambda r: r["updates_per_s"])
    wal = max(runs["write-ahead"], key=lambda r: r["updates_per_s"])
    load = await load_time(a.stored, 2000)
    rss = await idle_rss(a.sockets, a.rooms)
    print(f"machine: {os.cpu_count()} cores; python {sys.version.split()[0]}")
    print("| metric | value | reference | ratio |")
    print("|---|---:|---:|---:|")
    print(f"| updates/s end to end, {a.writers} writers x {a.updates}, write-ahead (ref: persistence off) | "
          f"{wal['updates_per_s']:,.0f} | {off['updates_per_s']:,.0f} | {wal['updates_per_s'] / off['updates_per_s']:.2f} |")
    print(f"| server CPU us per update, write-ahead (ref: off) | {wal['cpu_us_per_update']:.1f} | "
          f"{off['cpu_us_per_update']:.1f} | {wal['cpu_us_per_update'] / off['cpu_us_per_update']:.2f} |")
    print(f"| load {a.stored:,} stored updates: snapshot + tail, ms (ref: full replay) | {load['snapshot_ms']:.1f} | "
          f"{load['replay_ms']:.1f} | {load['snapshot_ms'] / load['replay_ms']:.2f} |")
    print(f"| RSS per idle socket, KiB ({a.sockets} sockets / {a.rooms} rooms) | {rss['kib_per_socket']:.1f} | | |")


if __name__ == "__main__":
    asyncio.run(main())
