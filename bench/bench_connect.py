"""A connect storm against our server: CPU and storage commits per connect, against a baseline tree.

    uv run python bench/bench_connect.py --baseline DIR [--sessions 600] [--per-session 5] [--rounds 3]

After a restart every participant reconnects at once, and the room is frozen until all are back (the
harness's ``idle`` scenario times it against the Node servers). This isolates the server's work per
connect: ``--sessions`` sessions are created over REST, then ``--per-session`` sockets per session (the
first with the interviewer's token, the others sharing the observer's, as a shared link does) connect
100 at a time and wait for the server's first message. It prints the server's CPU per connect (from
/proc), the storage commits made meanwhile (``crdt_server_commit_seconds_count``) and the wall time.

``--baseline DIR`` runs a second source tree of the server (e.g. ``git worktree add /tmp/base HEAD~1``
or ``git archive HEAD | tar -x -C DIR``) with the same interpreter and packages, alternating with this
checkout round by round, and prints the ratios of the means: the reference run in the same invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import procs  # bench/procs.py: run as a script, this file's folder is on sys.path
import websockets

from crdt_server.testing import free_port

ROOT = Path(__file__).resolve().parent.parent


async def storm(tree: Path, sessions: int, per_session: int) -> dict[str, float]:
    """Start the server from ``tree``, connect the sockets, return its figures. (Not ``ServerProcess``:
    it runs the installed package, and the baseline is another source tree.)"""
    port, data = free_port(), tempfile.mkdtemp(prefix="bench-connect-")
    code = f"import sys; sys.path.insert(0, {str(tree)!r}); from crdt_server.cli import main; main()"
    server = subprocess.Popen([sys.executable, "-c", code, "--port", str(port), "--data-dir", data,
                               "--web-build", "off", "--execution", "off", "--connect-rate", "0",
                               "--create-rate", "0", "--max-connections-per-ip", "0", "--log-level", "error"])
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for _ in range(300):
                try:
                    if (await http.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            made = [(await http.post("/api/sessions", json={"title": "t", "language": "python", "code": "x = 1\n"}))
                    .json() for _ in range(sessions)]

            async def commits() -> float:
                text = (await http.get("/metrics")).text
                return float(re.search(r"^crdt_server_commit_seconds_count (\S+)", text, re.M).group(1))  # type: ignore[union-attr]

            commits0, cpu0 = await commits(), procs.cpu_seconds(server.pid)
            gate, sockets = asyncio.Semaphore(100), []

            async def connect(sid: str, token: str) -> None:
                async with gate:
                    ws = await websockets.connect(f"ws://127.0.0.1:{port}/ws/sessions/{sid}?token={token}")
                    await ws.recv()
                    sockets.append(ws)

            started = time.perf_counter()
            await asyncio.gather(*[connect(s["id"], s["tokens"]["observer" if k else "interviewer"])
                                   for s in made for k in range(per_session)])
            wall = time.perf_counter() - started
            await asyncio.sleep(0.5)  # the last joins' history events
            n = len(sockets)
            figures = {"cpu_us": (procs.cpu_seconds(server.pid) - cpu0) / n * 1e6,
                       "commits": (await commits() - commits0) / n, "wall_s": wall}
            await asyncio.gather(*(ws.close() for ws in sockets))
            return figures
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline", type=Path, help="another source tree of the server to compare with")
    ap.add_argument("--sessions", type=int, default=600)
    ap.add_argument("--per-session", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    trees = {"this checkout": ROOT}
    if args.baseline is not None:
        trees["baseline"] = args.baseline.resolve()
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    n = args.sessions * args.per_session
    print(f"{n} sockets over {args.sessions} sessions, {args.rounds} round(s), alternating")
    for r in range(args.rounds):
        for name, tree in trees.items():
            f = asyncio.run(storm(tree, args.sessions, args.per_session))
            results[name].append(f)
            print(f"  round {r + 1} {name:>13}: CPU {f['cpu_us']:6.0f} µs/connect, {f['commits']:.2f} commits/connect, "
                  f"all connected in {f['wall_s']:.2f} s")
    means = {name: {k: statistics.mean(f[k] for f in rows) for k in rows[0]} for name, rows in results.items()}
    print("| server | CPU per connect (µs) | commits per connect | connect all (s) |\n|---|---:|---:|---:|")
    for name, m in means.items():
        print(f"| {name} | {m['cpu_us']:.0f} | {m['commits']:.2f} | {m['wall_s']:.2f} |")
    if "baseline" in means:
        ours, base = means["this checkout"], means["baseline"]
        print(f"| ratio | {ours['cpu_us'] / base['cpu_us']:.2f}x | {ours['commits'] / base['commits']:.2f}x | "
              f"{ours['wall_s'] / base['wall_s']:.2f}x |")


if __name__ == "__main__":
    main()
