"""Scenarios: sizes, the run of one scenario against one server, and the metrics it yields."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from . import procs
from .servers import BENCH_DIR, ServerSide

MB = 1024 * 1024
# Connecting gives up after this long (clients not synced by then count as failed), so a server
# that cannot take a scenario's load still yields a bounded, smaller measurement.
CONNECT_DEADLINE_S = 45
IDLE_CONNECT_DEADLINE_S = 90


# ------------------------------------------------------------------------------------ sizes
@dataclass
class Sizes:
    # typing
    typing_rooms: int = 20
    typing_clients: int = 10  # per room, incl. the writer
    typing_rate: float = 20.0
    typing_duration: float = 20.0
    # one big room
    bigroom_observers: tuple = (200, 500)
    bigroom_rate: float = 10.0
    bigroom_duration: float = 15.0
    # idle
    idle_sockets: int = 5000
    idle_rooms: int = 1000
    idle_window: float = 15.0
    # crowd: many open sockets in one process, typing beside them (bench/crowd.py)
    crowd_sockets: int = 10_000
    crowd_rooms: int = 2_500
    # join storm
    storm_doc_bytes: int = 1 * MB
    storm_joiners: int = 100
    storm_rounds: int = 3
    storm_workers: int = 2  # joiners are split over this many node processes
    # presence
    presence_clients: int = 200
    presence_hz: float = 1.0
    presence_rate: float = 10.0
    presence_duration: float = 20.0
    # common
    drain: float = 5.0


def quick_sizes() -> Sizes:
    return Sizes(
        typing_rooms=5, typing_clients=5, typing_duration=5.0,
        bigroom_observers=(50, 100), bigroom_duration=5.0,
        idle_sockets=500, idle_rooms=100, idle_window=5.0, crowd_sockets=1000, crowd_rooms=250,
        storm_doc_bytes=256 * 1024, storm_joiners=20, storm_rounds=2,
        presence_clients=50, presence_duration=5.0,
        drain=3.0,
    )


# ------------------------------------------------------------------------------------ stats
def percentile(sorted_xs: list[float], p: float) -> float | None:
    if not sorted_xs:
        return None
    k = (len(sorted_xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (k - lo)


def latency_stats(samples: list[float], prefix: str = "latency") -> dict:
    xs = sorted(samples)
    return {
        f"{prefix} p50 (ms)": percentile(xs, 50),
        f"{prefix} p99 (ms)": percentile(xs, 99),
        f"{prefix} max (ms)": xs[-1] if xs else None,
    }


# ------------------------------------------------------------------------------------ workers
class Worker:
    """One `node loadgen.mjs` process and its line protocol."""

    def __init__(self, spec: dict, logdir: Path, tag: str, idx: int):
        self.idx = idx
        spec = dict(spec, workerId=idx)
        self.spec = spec
        self.spec_path = logdir / f"{tag}-worker{idx}.spec.json"
        self.spec_path.write_text(json.dumps(spec))
        node = shutil.which("node") or "node"
        argv = [node, "--max-old-space-size=6144", str(BENCH_DIR / "loadgen.mjs"), str(self.spec_path)]
        self.m = procs.Managed(
            argv, name=f"loadgen {tag}#{idx}", cwd=BENCH_DIR,
            log_path=logdir / f"{tag}-worker{idx}.log",
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self.events: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            for line in self.m.proc.stdout:
                try:
                    self.events.put(json.loads(line))
                except ValueError:
                    pass
        except (OSError, ValueError):
            pass
        self.events.put({"event": "eof"})

    def send(self, cmd: str) -> None:
        try:
            self.m.proc.stdin.write((cmd + "\n").encode())
            self.m.proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def expect(self, name: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"loadgen #{self.idx}: no '{name}' within {timeout:.0f}s (see {self.m.log_path})")
            try:
                ev = self.events.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            if ev.get("event") == name:
                return ev
            if ev.get("event") == "error":
                raise RuntimeError(f"loadgen #{self.idx}: {ev.get('message')} (see {self.m.log_path})")
            if ev.get("event") == "eof":
                raise RuntimeError(f"loadgen #{self.idx} exited (see {self.m.log_path})")

    def stop(self) -> None:
        self.send("stop")
        try:
            self.m.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.m.stop(grace=2)


@dataclass
class Phase:
    readies: list
    results: list
    cpu_s: float  # server CPU seconds between "start" and the last result
    wall_s: float
    rss_before: int  # server RSS before any client connected (rooms already made)
    rss_ready: int  # server RSS once every client was synced
    rss_after: int  # server RSS at the end of the measured phase
    rss_peak: int  # peak sampled over the whole scenario
    other_cpu_s: float  # CPU used by everything else on the machine during the phase
    connect_cpu_s: float = 0.0  # server CPU seconds from the first client's connect until all were synced


def run_phase(server: ServerSide, specs: list[dict], logdir: Path, tag: str,
              ready_timeout: float, result_timeout: float, settle: float = 1.0,
              extra_specs: list[dict] = ()) -> Phase:
    """Spawn one worker per spec (speaking the server's client protocol); wait until all are ready;
    start; collect results; stop.

    `extra_specs` are spawned only once the first workers are ready (e.g. after the document fill).
    """
    rss_before = server.rss_bytes()
    cpu_connect0 = server.cpu_seconds()
    sampler = procs.RssSampler(server.measured_pid)
    sampler.start()
    workers: list[Worker] = []
    try:
        for i, spec in enumerate(specs):
            workers.append(Worker(dict(spec, protocol=server.protocol), logdir, tag, i))
        readies = [w.expect("ready", ready_timeout) for w in workers]
        for i, spec in enumerate(extra_specs, start=len(workers)):
            workers.append(Worker(dict(spec, protocol=server.protocol), logdir, tag, i))
        readies += [w.expect("ready", ready_timeout) for w in workers[len(readies):]]
        connect_cpu_s = server.cpu_seconds() - cpu_connect0
        time.sleep(settle)  # let join-time traffic (awareness fan-out to every peer) settle
        rss_ready = server.rss_bytes()
        cpu0, t0, busy0, own0 = (server.cpu_seconds(), time.monotonic(), procs.system_busy_seconds(),
                                 procs.own_cpu_seconds())
        for w in workers:
            w.send("start")
        primaries = [w for w in workers if not w.spec.get("secondary")]
        secondaries = [w for w in workers if w.spec.get("secondary")]
        results = [w.expect("result", result_timeout) for w in primaries]
        if secondaries:  # observers-only workers: tell them what each room's writer sent
            sent_by: dict = {}
            for r in results:
                sent_by.update(r.get("sentByRoom") or {})
            for w in secondaries:
                w.send("drain " + json.dumps(sent_by))
            results += [w.expect("result", result_timeout) for w in secondaries]
        cpu1, t1, busy1, own1 = (server.cpu_seconds(), time.monotonic(), procs.system_busy_seconds(),
                                 procs.own_cpu_seconds())
        rss_after = server.rss_bytes()
    finally:
        for w in workers:
            w.send("stop")  # all at once; each then gets up to 5 s to exit before it is killed
        for w in workers:
            w.stop()
        peak = sampler.stop()
    client_cpu = sum(r.get("client", {}).get("cpuS", 0.0) for r in results)
    other = max(0.0, (busy1 - busy0) - (cpu1 - cpu0) - client_cpu - (own1 - own0))
    return Phase(readies, results, cpu1 - cpu0, t1 - t0, rss_before, rss_ready, rss_after, max(peak, rss_after),
                 other, connect_cpu_s)


def split(xs: list, n: int) -> list[list]:
    n = max(1, min(n, len(xs)))
    return [xs[i::n] for i in range(n)]


def client_summary(ph: Phase) -> dict:
    cl = [r["client"] for r in ph.results]
    rx: dict = {}
    rxkb: dict = {}
    for c in cl:
        for k, v in (c.get("rxPerS") or {}).items():
            rx[k] = rx.get(k, 0) + v
        for k, v in (c.get("rxKBPerS") or {}).items():
            rxkb[k] = rxkb.get(k, 0) + v
    return {
        "_client_rx_msgs_per_s": rx,
        "_client_rx_kb_per_s": rxkb,
        "client messages received (/s)": sum(rx.values()),
        "client CPU (% of a core, max worker)": max(c["cpuPct"] for c in cl),
        "client event-loop delay p99 (ms)": max(c["loopDelayP99Ms"] for c in cl),
    }


def base_common(ph: Phase, args) -> dict:
    failed = sum(r.get("failed", 0) for r in ph.readies)
    return {
        "_other_cpu_pct": 100 * ph.other_cpu_s / ph.wall_s if ph.wall_s else None,
        "_connect_reconnects": sum(r.get("reconnects", 0) for r in ph.readies),
        "_connect_failed": failed,
        "_deflate": ph.readies[0].get("deflate") if ph.readies else None,
        "_workers": len(ph.readies),
    }


# ------------------------------------------------------------------------------------ scenarios
def rooms_spec(server, args, *, rate, duration, presence_hz=0.0, concurrency=50) -> dict:
    """A `rooms` worker's spec (writers and observers), without its rooms."""
    return {
        "mode": "rooms",
        "url": server.ws_url,
        "editsPerSec": rate,
        "durationS": duration,
        "presenceHz": presence_hz,
        "drainS": args.sizes.drain,
        "connectConcurrency": concurrency,
        "connectTimeoutS": CONNECT_DEADLINE_S,
        "deflate": not args.no_deflate,
        "deadlineS": 120 + duration + args.sizes.drain + 60,
    }


def idle_specs(server, args, rooms, per_room: int, duration: float, workers: int) -> list[dict]:
    """`idle` workers' specs: `per_room` synced, silent clients in each of `rooms`, for `duration` s."""
    return [{
        "mode": "idle",
        "url": server.ws_url,
        "rooms": [r.spec() for r in chunk],
        "clientsPerRoom": per_room,
        "durationS": duration,
        "connectConcurrency": 100,
        "connectTimeoutS": IDLE_CONNECT_DEADLINE_S,
        "deflate": not args.no_deflate,
        "deadlineS": 300 + duration,
    } for chunk in split(rooms, workers)]


def _rooms_scenario(server, args, logdir, tag, *, n_rooms, observers, rate, duration, presence_hz=0.0,
                    workers=1, concurrency=50):
    rooms = server.create_rooms(n_rooms)
    base = rooms_spec(server, args, rate=rate, duration=duration, presence_hz=presence_hz, concurrency=concurrency)
    specs = []
    if n_rooms >= workers:
        # whole rooms per worker: every worker has writers and measures latency
        for chunk in split(rooms, workers):
            specs.append(dict(base, rooms=[r.spec() for r in chunk], observersPerRoom=observers))
    else:
        # fewer rooms than workers (one big room): worker 0 has the writers and the latency
        # observers; the others hold the remaining observers and only count deliveries
        shares = [len(range(i, observers, workers)) for i in range(workers)]
        for i, share in enumerate(shares):
            specs.append(dict(base, rooms=[r.spec() for r in rooms], observersPerRoom=share, secondary=i > 0,
                              connectConcurrency=max(1, concurrency // workers)))
    n_clients = n_rooms * (observers + 1)
    ph = run_phase(server, specs, logdir, tag, ready_timeout=CONNECT_DEADLINE_S + 30,
                   result_timeout=duration + args.sizes.drain + 30,
                   settle=1.0 + (observers + 1) ** 2 / 50_000)
    samples = [x for r in ph.results for x in r["samples"]]
    sent = sum(r["sent"] for r in ph.results if not r.get("secondary"))
    expected = sum(r["expected"] for r in ph.results)
    delivered = sum(r["delivered"] for r in ph.results)
    out = {}
    out.update(latency_stats(samples))
    out["updates sent"] = sent
    out["_updates_planned"] = sum(r.get("planned", 0) for r in ph.results)
    out["deliveries (observer x update)"] = delivered
    out["deliveries missing"] = expected - delivered
    out["server CPU per delivered update (us)"] = 1e6 * ph.cpu_s / delivered if delivered else None
    out["server CPU (% of a core)"] = 100 * ph.cpu_s / ph.wall_s
    out["server RSS end (MB)"] = ph.rss_after / MB
    out["server RSS peak (MB)"] = ph.rss_peak / MB
    out["client reconnects"] = sum(r["reconnects"] for r in ph.results)
    out.update(client_summary(ph))
    out.update(base_common(ph, args))
    out["_clients"] = n_clients
    out["_latency_observers"] = sum(r.get("observers", 0) for r in ph.results if not r.get("secondary"))
    out["_count_only_observers"] = sum(r.get("observers", 0) for r in ph.results if r.get("secondary"))
    out["_awareness_applied_per_s"] = sum(r["awarenessAppliedPerS"] for r in ph.results)
    out["_server_cpu_s"] = ph.cpu_s
    out["_window_s"] = ph.wall_s
    timeline: list = []
    for r in ph.results:
        for i, v in enumerate(r.get("timelineMaxMs") or []):
            if i >= len(timeline):
                timeline.append(v)
            else:
                timeline[i] = max(timeline[i], v)
    out["_latency_max_per_second_ms"] = timeline
    return out


def scenario_typing(server, args, logdir, tag):
    s = args.sizes
    return _rooms_scenario(server, args, logdir, tag, n_rooms=s.typing_rooms, observers=s.typing_clients - 1,
                           rate=s.typing_rate, duration=s.typing_duration, workers=args.workers or 1)


def make_bigroom(n_obs):
    def scenario_bigroom(server, args, logdir, tag):
        s = args.sizes
        return _rooms_scenario(server, args, logdir, tag, n_rooms=1, observers=n_obs,
                               rate=s.bigroom_rate, duration=s.bigroom_duration, concurrency=25,
                               workers=args.workers or (3 if n_obs >= 300 else 1))  # 3: one node process saturates at 500 observers on 2 cores
    return scenario_bigroom


def scenario_presence(server, args, logdir, tag):
    s = args.sizes
    out = _rooms_scenario(server, args, logdir, tag, n_rooms=1, observers=s.presence_clients,
                          rate=s.presence_rate, duration=s.presence_duration, presence_hz=s.presence_hz,
                          concurrency=25, workers=args.workers or (2 if s.presence_clients >= 100 else 1))
    out["awareness states applied by clients (/s)"] = out.pop("_awareness_applied_per_s")
    return out


def scenario_idle(server, args, logdir, tag):
    s = args.sizes
    per_room = max(1, s.idle_sockets // s.idle_rooms)
    rooms = server.create_rooms(s.idle_rooms)
    specs = idle_specs(server, args, rooms, per_room, s.idle_window, args.workers or 1)
    n = per_room * s.idle_rooms
    ph = run_phase(server, specs, logdir, tag, ready_timeout=IDLE_CONNECT_DEADLINE_S + 30,
                   result_timeout=s.idle_window + 30)
    connected = n - sum(r.get("failed", 0) for r in ph.readies)
    out = {
        "sockets connected": connected,
        "connect+sync all (s)": max(r["connectMs"] for r in ph.readies) / 1000,
        "server CPU per connect (us)": 1e6 * ph.connect_cpu_s / connected if connected else None,
        "server RSS before (MB)": ph.rss_before / MB,
        "server RSS with sockets (MB)": ph.rss_after / MB,
        "RSS per socket (KB)": (ph.rss_after - ph.rss_before) / 1024 / connected if connected else None,
        "idle CPU per socket (us/s)": 1e6 * ph.cpu_s / ph.wall_s / connected if connected else None,
        "server CPU idle (% of a core)": 100 * ph.cpu_s / ph.wall_s,
        "sockets still synced at end": sum(r["stillSynced"] for r in ph.results),
        "client reconnects": sum(r["reconnects"] for r in ph.results),
    }
    out.update(client_summary(ph))
    out.update(base_common(ph, args))
    return out


def scenario_joinstorm(server, args, logdir, tag):
    s = args.sizes
    room = server.create_rooms(1)[0]
    n_workers = max(1, min(args.workers or s.storm_workers, s.storm_joiners))
    specs = []
    for i in range(n_workers):
        specs.append({
            "mode": "joinstorm",
            "url": server.ws_url,
            "rooms": [room.spec()],
            "fill": i == 0,  # worker 0 writes the document; the others only join
            "docBytes": s.storm_doc_bytes,
            "chunkBytes": 1024,
            "joiners": len(range(i, s.storm_joiners, n_workers)),
            "rounds": s.storm_rounds,
            "connectTimeoutS": 45,  # filler sync; verification
            "joinTimeoutS": 30,  # per storm: joiners not synced by then count as not synced
            "deflate": not args.no_deflate,
            "deadlineS": 400,
        })
    ph = run_phase(server, specs[:1], logdir, tag, ready_timeout=150, result_timeout=s.storm_rounds * 32 + 30,
                   extra_specs=specs[1:])
    rd = ph.readies[0]
    step2 = [x for r in ph.results for x in r["step2Samples"]]
    synced = [x for r in ph.results for x in r["samples"]]
    rounds = ph.results[0]["rounds"]
    out = {}
    out.update(latency_stats(step2, "time to sync step 2 received"))
    out.update(latency_stats(synced, "time to synced"))
    out["client time applying step 2, per storm (ms)"] = sum(r["applyTotalMs"] for r in ph.results)
    out["joiners synced with full text (all storms)"] = sum(r["complete"] for r in ph.results)
    out["doc text (KB)"] = rd["textLength"] / 1024
    out["server CPU per storm (s)"] = ph.cpu_s / rounds
    out["server RSS before storm (MB)"] = ph.rss_ready / MB
    out["server RSS peak (MB)"] = ph.rss_peak / MB
    out.update(client_summary(ph))
    out.update(base_common(ph, args))
    out["_fill_ms"] = rd["fillMs"]
    out["_doc_update_bytes"] = rd["docUpdateBytes"]
    return out


def scenario_table(sizes: Sizes):
    """name -> (description, function)."""
    s = sizes
    t = {
        "typing": (f"{s.typing_rooms} rooms x {s.typing_clients} clients, 1 writer/room at "
                   f"{s.typing_rate:g} edits/s for {s.typing_duration:g}s", scenario_typing),
    }
    for n in s.bigroom_observers:
        t[f"bigroom-{n}"] = (f"1 room, 1 writer at {s.bigroom_rate:g} edits/s + {n} observers, "
                             f"{s.bigroom_duration:g}s", make_bigroom(n))
    t["idle"] = (f"{s.idle_sockets} idle sockets over {s.idle_rooms} rooms, {s.idle_window:g}s window", scenario_idle)
    t["joinstorm"] = (f"{s.storm_joiners} clients join a {s.storm_doc_bytes // 1024} KB document at once "
                      f"({s.storm_rounds} storms, samples pooled)",
                      scenario_joinstorm)
    t["presence"] = (f"1 room: {s.presence_clients} clients updating awareness at {s.presence_hz:g} Hz "
                     f"+ 1 writer at {s.presence_rate:g} edits/s, {s.presence_duration:g}s", scenario_presence)
    from .crowd import scenario_crowd  # it builds on this module's specs

    t["crowd"] = (f"{s.crowd_sockets} idle sockets over {s.crowd_rooms} rooms, typing ({s.typing_rooms} x "
                  f"{s.typing_clients}) beside them for {s.typing_duration:g}s; only with --only crowd", scenario_crowd)
    return t


OPT_IN = {"crowd"}  # scenarios a full run leaves out (each takes minutes per server)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
