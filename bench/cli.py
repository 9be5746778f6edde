"""`python -m bench`: run the scenarios against our server, the reference and Hocuspocus, print a table."""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import platform
import sys
import time
import traceback
from pathlib import Path

from . import procs
from .scenarios import OPT_IN, Sizes, log, quick_sizes, scenario_table
from .servers import (
    BENCH_DIR,
    DEFAULT_OURS_CMD,
    FloorServer,
    HocuspocusAsOurs,
    HocuspocusServer,
    OursServer,
    ReferenceAsOurs,
    ReferenceServer,
    ServerSide,
    StartFailed,
    ensure_node_modules,
    node_package_version,
)

# The servers, in column order; SHORT names the ratio columns.
SIDES = ("ours", "reference", "hocuspocus", "floor")
DEFAULT_SIDES = ("ours", "reference", "hocuspocus")  # floor: opt-in (bench/floor_server.py)
SHORT = {"ours": "ours", "reference": "ref", "hocuspocus": "hp", "floor": "floor"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark crdt-server against the Node servers @y/websocket-server (the reference) "
                    "and @hocuspocus/server.",
    )
    p.add_argument("--only", metavar="SCENARIO",
                   help="run only these scenarios (comma separated; 'bigroom' = every bigroom-N). "
                        "Scenarios: typing, bigroom-200, bigroom-500, idle, joinstorm, presence")
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run (~2-3 min)")
    p.add_argument("--ours-cmd", default=DEFAULT_OURS_CMD,
                   help="command that starts our server; {port}, {tmpdir} and {host} are substituted; "
                        "run from the repository root. The special values 'reference' and 'hocuspocus' put "
                        "that server in the 'ours' column (harness self-check). Default: %(default)r")
    p.add_argument("--json", metavar="OUT.json", help="also write every figure (and the config) as JSON")
    p.add_argument("--workers", type=int, default=None,
                   help="node load-generator processes per scenario (default: 1; 2 for joinstorm and presence, "
                        "3 for bigroom-500). A single room is split by observers: only the writer's process "
                        "measures latency, the others count deliveries")
    p.add_argument("--duration", type=float, default=None,
                   help="override the measured window of typing/bigroom/presence/idle (seconds)")
    p.add_argument("--reader-role", default="observer", choices=("observer", "candidate", "interviewer"),
                   help="token role of the non-writing clients on our server (default: observer)")
    p.add_argument("--no-deflate", action="store_true",
                   help="clients do not offer permessage-deflate (browsers do; default is to offer it)")
    p.add_argument("--servers", metavar="LIST", default=",".join(DEFAULT_SIDES),
                   help="the servers to run, comma separated, in column order (default: %(default)s)")
    p.add_argument("--skip-ours", action="store_true", help="do not run our server")
    p.add_argument("--skip-reference", action="store_true", help="do not run the reference server")
    p.add_argument("--skip-hocuspocus", action="store_true", help="do not run Hocuspocus")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------ table
def fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        a = abs(v)
        if a >= 1000:
            return f"{v:,.0f}"
        if a >= 100:
            return f"{v:.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a >= 0.1 or a == 0:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def ratio_columns(sides: list[str]) -> list[tuple[str, str]]:
    """(numerator, denominator) pairs: ours against each peer run; without ours, Hocuspocus against
    the reference."""
    pairs = [("ours", d) for d in sides if d != "ours"] if "ours" in sides else []
    if "floor" in sides and "reference" in sides:  # the stack's own floor against the reference
        pairs.append(("floor", "reference"))
    if not pairs and "hocuspocus" in sides and "reference" in sides:
        pairs.append(("hocuspocus", "reference"))
    return pairs


def ratio(o, r) -> str:
    if isinstance(o, bool) or isinstance(r, bool):
        return ""
    if not isinstance(o, (int, float)) or not isinstance(r, (int, float)):
        return ""
    if r == 0:
        return "=" if o == 0 else "inf"
    return f"{o / r:.2f}x"


def side_cell(res: dict, side: str, key: str):
    s = res.get(side)
    if s is None:
        return None, "skipped"
    if s.get("status") == "failed_to_start":
        return None, "failed to start"
    if s.get("status") == "error":
        return None, "error"
    v = s["metrics"].get(key)
    return v, fmt(v)


def render_table(results: dict, descriptions: dict, sides: list[str]) -> str:
    pairs = ratio_columns(sides)
    head = ["scenario", "metric", *sides, *(f"{SHORT[n]}/{SHORT[d]}" for n, d in pairs)]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * (len(head) - 2)]
    for name, res in results.items():
        keys: list[str] = []
        for side in sides:
            s = res.get(side) or {}
            for k in (s.get("metrics") or {}):
                if not k.startswith("_") and k not in keys:
                    keys.append(k)
        if not keys:
            cells = [side_cell(res, side, "")[1] for side in sides]
            lines.append("| " + " | ".join([name, "-", *cells, *("" for _ in pairs)]) + " |")
            continue
        for i, k in enumerate(keys):
            cell = {side: side_cell(res, side, k) for side in sides}
            row = [name if i == 0 else "", k, *(cell[side][1] for side in sides),
                   *(ratio(cell[n][0], cell[d][0]) for n, d in pairs)]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def render_notes(results: dict, descriptions: dict, sides: list[str]) -> str:
    notes = []
    for name, res in results.items():
        notes.append(f"- **{name}**: {descriptions.get(name, '')}")
        for side in sides:
            s = res.get(side)
            if not s:
                continue
            if s.get("status") in ("failed_to_start", "error"):
                notes.append(f"  - {side}: {s.get('status').replace('_', ' ')}: {s.get('error', '')}")
                continue
            m = s["metrics"]
            bits = []
            if m.get("_count_only_observers"):
                bits.append(f"latency measured at the {m['_latency_observers']} observers in the writer's process; "
                            f"{m['_count_only_observers']} more in another process count deliveries only")
            if m.get("_connect_failed"):
                bits.append(f"{m['_connect_failed']} clients never synced (dropped)")
            if m.get("_connect_reconnects"):
                bits.append(f"{m['_connect_reconnects']} socket closes while connecting")
            planned, sent = m.get("_updates_planned"), m.get("updates sent")
            if planned and sent is not None and sent < 0.95 * planned:
                bits.append(f"writers sent only {sent} of {planned} planned edits (load generator behind)")
            other = m.get("_other_cpu_pct")
            if other is not None and other > 25:
                bits.append(f"OTHER LOAD: processes outside the benchmark used {other:.0f}% of a core "
                            "meanwhile; figures are noisy")
            if m.get("_deflate") is not None:
                bits.append(f"permessage-deflate {'on' if m['_deflate'] else 'off'}")
            cpu = m.get("client CPU (% of a core, max worker)")
            lag = m.get("client event-loop delay p99 (ms)")
            if (cpu is not None and cpu > 85) or (lag is not None and lag > 50):
                bits.append("LOAD GENERATOR SATURATED (client CPU/event-loop delay high): latencies include "
                            "client-side queuing")
            missing = m.get("deliveries missing")
            if missing:
                bits.append(f"{missing} deliveries missing")
            if bits:
                notes.append(f"  - {side}: " + "; ".join(bits))
    return "\n".join(notes)


# ------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = quick_sizes() if args.quick else Sizes()
    if args.duration:
        sizes.typing_duration = sizes.bigroom_duration = sizes.presence_duration = args.duration
        sizes.idle_window = args.duration
    args.sizes = sizes
    table = scenario_table(sizes)
    if args.list:
        for k, (d, _) in table.items():
            print(f"{k:14s} {d}")
        return 0
    selected = [k for k in table if k not in OPT_IN]
    if args.only:
        want = [w.strip() for w in args.only.split(",") if w.strip()]
        # bigroom-200/-500 name the full sizes; with --quick they map to the quick sizes by position
        full_sizes = list(Sizes().bigroom_observers)
        for i, w in enumerate(want):
            if w not in table and w.startswith("bigroom-") and w[8:].isdigit() and int(w[8:]) in full_sizes:
                want[i] = f"bigroom-{sizes.bigroom_observers[full_sizes.index(int(w[8:]))]}"
        matches = lambda k, w: k == w or k.split("-")[0] == w  # noqa: E731
        unknown = [w for w in want if not any(matches(k, w) for k in table)]
        selected = [k for k in table if any(matches(k, w) for w in want)]
        if unknown or not selected:
            print(f"bench: unknown scenario {args.only!r}; choose from {', '.join(table)}", file=sys.stderr)
            return 2
    descriptions = {k: table[k][0] for k in selected}
    sides = [w.strip() for w in args.servers.split(",") if w.strip()]
    if not sides or any(w not in SIDES for w in sides) or len(set(sides)) != len(sides):
        print(f"bench: --servers {args.servers!r}: name each of {', '.join(SIDES)} at most once", file=sys.stderr)
        return 2
    sides = [s for s in sides if not getattr(args, f"skip_{s}", False)]
    if not sides:
        print("bench: every server is skipped; nothing to run", file=sys.stderr)
        return 2
    if "ours" in sides and args.ours_cmd.strip() in sides:
        log(f"bench: self-check: the {args.ours_cmd.strip()} server runs in the 'ours' column and in its own; "
            "ratios between them show the harness's run-to-run noise")

    procs.install_cleanup()
    nofile = procs.raise_nofile_limit()
    ensure_node_modules()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    logdir = BENCH_DIR / "out" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    log(f"bench: logs in {logdir} (RLIMIT_NOFILE={nofile}); scenarios: {', '.join(selected)}")
    b0, o0 = procs.system_busy_seconds(), procs.own_cpu_seconds()
    time.sleep(2.0)
    busy = 100 * ((procs.system_busy_seconds() - b0) - (procs.own_cpu_seconds() - o0)) / 2.0
    if busy > 25:
        log(f"bench: warning: the machine is already busy ({busy:.0f}% of a core) before the benchmark; "
            "results will be noisy (see the OTHER LOAD notes)")
    if nofile < 2 * sizes.idle_sockets + 1000 and "idle" in selected:
        log(f"bench: warning: RLIMIT_NOFILE {nofile} may be too low for {sizes.idle_sockets} idle sockets")

    def make_side(label: str) -> ServerSide:
        if label == "reference":
            return ReferenceServer(logdir)
        if label == "hocuspocus":
            return HocuspocusServer(logdir)
        if label == "floor":
            return FloorServer(logdir)
        if args.ours_cmd.strip() == "reference":
            return ReferenceAsOurs(logdir)
        if args.ours_cmd.strip() == "hocuspocus":
            return HocuspocusAsOurs(logdir)
        return OursServer(logdir, args.ours_cmd, reader_role=args.reader_role)

    results: dict = {}
    broken: dict[str, str] = {}  # a server that failed to start is not started again
    t_all = time.monotonic()
    interrupted = False
    try:
        for name in selected:
            desc, fn = table[name]
            results[name] = {}
            log(f"\n== {name}: {desc}")
            for label in sides:
                if label in broken:
                    log(f"  {label}: failed to start (skipped; see first failure)")
                    results[name][label] = {"status": "failed_to_start", "error": broken[label]}
                    continue
                side = make_side(label)
                t0 = time.monotonic()
                try:
                    log(f"  {label}: starting server ...")
                    try:
                        side.start(tag=name)
                    except StartFailed as e:
                        log(f"  {label}: failed to start ({e})")
                        results[name][label] = {"status": "failed_to_start", "error": str(e)}
                        broken[label] = str(e)
                        continue
                    tree = procs.children_of(side.measured_pid())
                    log(f"  {label}: server pid {side.measured_pid()} ({procs.comm(side.measured_pid())}) on port "
                        f"{side.port}" + (f", measured with {len(tree) - 1} descendant(s): "
                                           + ", ".join(procs.comm(p)[:40] for p in tree[1:4]) if len(tree) > 1 else "")
                        + "; running ...")
                    metrics = fn(side, args, logdir, name)
                    results[name][label] = {"status": "ok", "metrics": metrics,
                                            "seconds": round(time.monotonic() - t0, 1)}
                    brief = {k: fmt(v) for k, v in metrics.items() if not k.startswith("_")}
                    log(f"  {label}: done in {time.monotonic() - t0:.1f}s: " + json.dumps(brief))
                except KeyboardInterrupt:
                    raise
                except Exception as e:  # noqa: BLE001 - one failed scenario must not stop the others
                    log(f"  {label}: ERROR {e}")
                    log(traceback.format_exc())
                    results[name][label] = {"status": "error", "error": str(e)}
                finally:
                    side.stop()
    except KeyboardInterrupt:
        interrupted = True
        log("\nbench: interrupted; stopping every process and printing what was measured")
    finally:
        procs.kill_all()

    out = render_table(results, descriptions, sides)
    notes = render_notes(results, descriptions, sides)
    versions = {pkg: node_package_version(pkg) for pkg in ("@y/websocket-server", "@hocuspocus/server")}
    print()
    print(f"## crdt-server vs @y/websocket-server {versions['@y/websocket-server']} (reference) and "
          f"@hocuspocus/server {versions['@hocuspocus/server']} ({'quick' if args.quick else 'full'} run, "
          f"{time.monotonic() - t_all:.0f}s)")
    print()
    print(out)
    print()
    print(notes)
    print()
    print("A ratio < 1 means its left-hand server is lower (better for latency, CPU, memory; worse for counts "
          "of delivered/synced). Details: bench/README.md")
    if args.json:
        payload = {
            "when": stamp,
            "mode": "quick" if args.quick else "full",
            "ours_cmd": args.ours_cmd,
            "servers": sides,
            "versions": versions,
            "machine": {"platform": platform.platform(), "python": platform.python_version()},
            "sizes": sizes.__dict__,
            "scenarios": descriptions,
            "results": results,
            "table_markdown": out,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str))
        log(f"bench: wrote {args.json}")
    return 130 if interrupted else 0
