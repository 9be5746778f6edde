"""What the timeline costs: ``GET /api/sessions/{id}/timeline`` of a long two-participant session.

    uv run python bench/bench_timeline.py [--updates 20000] [--repeat 5]

Simulates an interview like the playback research: two pycrdt editors (a candidate with ~59 % of the
updates, an interviewer), one update per editor transaction — 86 % typing (with some é, 中, 😀),
8 % backspace, 4.5 % select-delete, 1.5 % pastes of 41–200 characters — and writes the rows through the
real ``SQLiteStore`` into a server's data directory, then times the endpoint on the real server:
the first call (the whole log replayed), the cached call, and a call after one more edit (the tail).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from pycrdt import Doc, Text

from crdt_server.storage import SQLiteStore, UpdateRecord
from crdt_server.testing import ServerProcess

ALPHABET = "abcdefghijklmnopqrstuvwxyz    \n()=:é中😀"


def simulate(base: bytes, n: int, seed: int = 1) -> list[tuple[str, str, str, bytes]]:
    """``n`` (role, connection, name, update) rows of two editors who see each other's edits at once."""
    rnd = random.Random(seed)
    docs: list[Doc[Any]] = [Doc(client_id=1001), Doc(client_id=2002)]
    last = [b""]
    subs = []
    for d in docs:
        d.apply_update(base)
        subs.append(d.observe(lambda e: last.__setitem__(0, e.update)))
    texts = [d.get("code", type=Text) for d in docs]
    cursors = [0, 0]
    out: list[tuple[str, str, str, bytes]] = []
    while len(out) < n:
        w = 0 if rnd.random() < 0.5875 else 1
        t = texts[w]
        s = str(t)
        pos = min(cursors[w], len(s))
        if rnd.random() < 0.05:
            pos = rnd.randint(0, len(s))
        b = len(s[:pos].encode())
        r = rnd.random()
        if r < 0.86 or len(s) < 20:
            t.insert(b, rnd.choice(ALPHABET))
            pos += 1
        elif r < 0.94:
            if not pos:
                continue
            del t[b - len(s[pos - 1].encode()):b]
            pos -= 1
        elif r < 0.985:
            start = max(0, pos - rnd.randint(2, 15))
            if start == pos:
                continue
            del t[len(s[:start].encode()):b]
            pos = start
        else:
            paste = "".join(rnd.choice(ALPHABET) for _ in range(rnd.randint(41, 200)))
            t.insert(b, paste)
            pos += len(paste)
        cursors[w] = pos
        update = last[0]
        out.append(("candidate", "c-cand", "Ada", update) if w == 0 else ("interviewer", "c-int", "Bob", update))
        docs[1 - w].apply_update(update)
    return out


def simulate_for(db: Path, sid: str, n: int) -> list[tuple[str, str, str, bytes]]:
    """Simulate ``n`` updates on the session's stored first update and append them through the store."""
    async def run() -> list[tuple[str, str, str, bytes]]:
        store = SQLiteStore(db)
        await store.open()
        try:
            _, stored, _ = await store.load(sid)
            t = time.perf_counter()
            rows = simulate(stored[0].data, n)
            print(f"simulated {len(rows)} updates ({sum(len(r[3]) for r in rows) / 1024:.0f} KiB) "
                  f"in {time.perf_counter() - t:.1f} s")
            for i in range(0, len(rows), 500):
                await store.append_updates([UpdateRecord(sid, u, role, conn, name) for role, conn, name, u in rows[i:i + 500]])
            return rows
        finally:
            await store.close()

    return asyncio.run(run())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srv = ServerProcess(Path(tmp) / "data")
        srv.start()
        with httpx.Client(base_url=srv.base_url, timeout=120) as http:
            s = http.post("/api/sessions", json={}).json()
        srv.stop()
        db = srv.data_dir / "crdt-server.db"
        simulate_for(db, s["id"], args.updates)
        headers = {"Authorization": f"Bearer {s['tokens']['interviewer']}"}
        url = f"/api/sessions/{s['id']}/timeline"
        firsts, cached = [], []
        for _ in range(args.repeat):
            srv.start()  # a fresh process: nothing cached
            with httpx.Client(base_url=srv.base_url, timeout=120) as http:
                t = time.perf_counter()
                r = http.get(url, headers=headers)
                firsts.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 200, r.text
                for _ in range(20):
                    t = time.perf_counter()
                    again = http.get(url, headers=headers)
                    cached.append((time.perf_counter() - t) * 1000)
                    assert again.json() == r.json()
            srv.stop()
        body = r.json()
        for p in body["participants"]:
            print(f"  {p['role']} {p['name']}: +{p['inserted']} / -{p['deleted']} code points, {len(p['points'])} points")
        print(f"  pastes: {sum(e['type'] == 'paste' for e in body['events'])}; response {len(r.content) / 1024:.0f} KiB")
        print(f"first call (whole log replayed), {args.repeat} fresh servers: median {statistics.median(firsts):.0f} ms, "
              f"max {max(firsts):.0f} ms")
        print(f"cached call: median {statistics.median(cached):.1f} ms, max {max(cached):.1f} ms")


if __name__ == "__main__":
    main()
