"""Edit propagation while Run is busy: p50/p99 latency of edits with 20 runs queued vs idle.

    uv run python bench/bench_run_latency.py [--edits 200] [--rate 20] [--runs 20]

One writer sends one-character updates at --rate per second; an observer in the same process
timestamps their arrival (one clock). The reference run is the same server with no runs queued.
Needs root and bubblewrap (the sandbox).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from bench_persistence import create, make_updates  # bench/: run as a script, this folder is on sys.path
from websockets.asyncio.client import connect

from crdt_server.sync import protocol as p
from crdt_server.testing import ServerProcess

BURN = {"language": "python", "code": "x = 0\nfor i in range(20_000_000):\n    x += i\n", "timeout": 10}


async def latencies(srv: ServerProcess, edits: int, rate: float) -> list[float]:
    s = await create(srv)
    updates = make_updates(edits)
    sent: dict[int, float] = {}
    arrived: dict[int, float] = {}
    url = f"{srv.ws_url}/{s['id']}?token="
    async with connect(url + s["tokens"]["observer"]) as obs, connect(url + s["tokens"]["candidate"]) as w:
        await obs.recv()
        await w.recv()

        async def observe() -> None:
            while len(arrived) < edits:
                frame = await obs.recv()
                if frame[:2] == bytes((0, 2)):
                    arrived[len(arrived)] = time.perf_counter()

        task = asyncio.create_task(observe())
        for i, u in enumerate(updates):
            sent[i] = time.perf_counter()
            await w.send(p.sync_frame(p.SYNC_UPDATE, u))
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(task, 60)
    return [(arrived[i] - sent[i]) * 1e3 for i in range(edits)]


async def keep_runs_queued(srv: ServerProcess, n: int, stop: asyncio.Event, counts: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=srv.base_url, timeout=60) as http:
        async def one() -> None:
            while not stop.is_set():
                r = await http.post("/api/execute", json=BURN)
                counts[str(r.status_code)] = counts.get(str(r.status_code), 0) + 1
                if r.status_code != 200:
                    await asyncio.sleep(0.05)

        await asyncio.gather(*(one() for _ in range(n)))


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srv = ServerProcess(Path(tmp) / "data", ["--log-level", "warning", "--exec-queue-size", str(a.runs + 4),
                                                 "--run-rate", "1000", "--run-burst", "1000"],
                            env={"CRDT_SERVER_EXECUTION": "on"})
        srv.start()
        try:
            idle = await latencies(srv, a.edits, a.rate)
            stop = asyncio.Event()
            counts: dict[str, int] = {}
            runs = asyncio.create_task(keep_runs_queued(srv, a.runs, stop, counts))
            await asyncio.sleep(1.0)
            busy = await latencies(srv, a.edits, a.rate)
            stop.set()
            await runs
        finally:
            srv.stop()
    print(f"edits: {a.edits} at {a.rate}/s; busy = {a.runs} CPU-bound runs kept in flight "
          f"(answers: {counts})")
    print("| metric | busy | idle (reference) | ratio |")
    print("|---|---:|---:|---:|")
    for name, q in (("p50", 50), ("p99", 99)):
        b, i = pct(busy, q), pct(idle, q)
        print(f"| edit propagation {name}, ms | {b:.2f} | {i:.2f} | {b / i:.2f} |")
    print(f"| edit propagation max, ms | {max(busy):.2f} | {max(idle):.2f} | {max(busy) / max(idle):.2f} |")


if __name__ == "__main__":
    asyncio.run(main())
