"""`crowd`: 10,000 open sockets over 2,500 rooms in one server process, with the `typing` load beside
them (issue 15, item 4): what many idle interviews cost (RSS, CPU) and what they do to the latency of
the ones being typed in.

The idle clients connect first (split over two load-generator processes); once all are synced the
typing worker connects its rooms, then everyone starts together. The idle clients stay for the
typing window plus its drain, so the whole measured phase has every socket open.
"""

from __future__ import annotations

from .scenarios import (
    CONNECT_DEADLINE_S,
    IDLE_CONNECT_DEADLINE_S,
    MB,
    base_common,
    client_summary,
    idle_specs,
    latency_stats,
    rooms_spec,
    run_phase,
)


def scenario_crowd(server, args, logdir, tag):
    s = args.sizes
    per_room = max(1, s.crowd_sockets // s.crowd_rooms)
    idle_rooms = server.create_rooms(s.crowd_rooms)
    typing_rooms = server.create_rooms(s.typing_rooms)
    window = s.typing_duration + s.drain
    idle = idle_specs(server, args, idle_rooms, per_room, window, 2)
    typing = dict(rooms_spec(server, args, rate=s.typing_rate, duration=s.typing_duration),
                  rooms=[r.spec() for r in typing_rooms], observersPerRoom=s.typing_clients - 1)
    ph = run_phase(server, idle, logdir, tag, ready_timeout=IDLE_CONNECT_DEADLINE_S + CONNECT_DEADLINE_S + 60,
                   result_timeout=window + 60, extra_specs=[typing])
    idle_ready = ph.readies[:len(idle)]  # the workers' order: the idle ones, then the typing one
    typed = [r for r in ph.results if "samples" in r]
    connected = per_room * s.crowd_rooms - sum(r.get("failed", 0) for r in idle_ready)
    delivered = sum(r["delivered"] for r in typed)
    sockets = connected + s.typing_rooms * s.typing_clients  # every socket open at the end
    out = {"idle sockets connected": connected,
           "connect+sync all idle (s)": max(r["connectMs"] for r in idle_ready) / 1000,
           "server RSS before (MB)": ph.rss_before / MB,
           "server RSS with sockets (MB)": ph.rss_after / MB,
           "RSS per open socket (KB)": (ph.rss_after - ph.rss_before) / 1024 / sockets if connected else None,
           "server CPU (% of a core)": 100 * ph.cpu_s / ph.wall_s}
    out.update(latency_stats([x for r in typed for x in r["samples"]], "typing latency"))
    out["typing deliveries missing"] = sum(r["expected"] for r in typed) - delivered
    out["server CPU per delivered update (us)"] = 1e6 * ph.cpu_s / delivered if delivered else None
    out["client reconnects"] = sum(r["reconnects"] for r in ph.results)
    out.update(client_summary(ph))
    out.update(base_common(ph, args))
    return out
