"""Prometheus metrics: every metric of the server, defined once, in a registry of the app's own.

Why a registry per app (not prometheus-client's global one): two apps in one process (tests)
would otherwise register the same names twice. ``create_app`` builds one ``Metrics`` and passes
it down to the store, the rooms and the service.

Why it is cheap on the hot path: nothing here has labels that are looked up per message. The
room adds to plain counters once per committed batch (updates, broadcast bytes); gauges that
can be read off the live objects (connections, rooms loaded, queue depth) are callbacks run at
scrape time, never updated per event. Labels never carry a session id, a token or code: the
run language is a canonical language name or ``other``, the outcome one of ``RUN_OUTCOMES``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .execution import ExecutionError, ExecutionService, RunResult

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # the classic text format every Prometheus version scrapes

__all__ = ["CONTENT_TYPE", "RUN_OUTCOMES", "Metrics", "run_outcome"]

# A run's outcome: the closed set of the `outcome` label of crdt_server_runs_total.
RUN_OUTCOMES = (
    "ok",  # the program ran and exited 0
    "error",  # it ran and exited non-zero (or died of a signal)
    "timeout",  # killed at its wall-clock limit
    "compile_error",  # the compile step failed; the program never ran
    "oom",  # killed at its memory limit
    "output_limit",  # killed for writing more than --run-output-limit
    "sandbox_error",  # the sandbox itself failed
    # not run, by the refusal's error code (HTTP 422 / 429 / 503):
    "refused:unknown_language",
    "refused:invalid_field",  # code or stdin too large, bad timeout
    "refused:queue_full",
    "refused:run_in_progress",  # the session already has a run in flight
    "refused:rate_limited",  # per session (Run button) or per address (POST /api/execute)
    "refused:execution_unavailable",
)

# Group commits take tens of microseconds to a few milliseconds (fsync with --durability full).
COMMIT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# Runs: interpreter start-up (tens of ms) up to the largest timeout plus a compile step.
RUN_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)


def run_outcome(result: RunResult) -> str:
    """The ``outcome`` label of a run that produced a result."""
    if result.compile_error:
        return "compile_error"
    if result.timed_out:
        return "timeout"
    if result.oom_killed:
        return "oom"
    if result.truncated:
        return "output_limit"
    return "ok" if result.exit_code == 0 else "error"


class Metrics:
    """The server's metrics; ``exposition()`` is the text ``GET /metrics`` answers."""

    def __init__(self) -> None:
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.updates = Counter("crdt_server_updates", "Document updates committed and applied (all sessions).",
                               registry=r)
        self.broadcast_bytes = Counter(
            "crdt_server_broadcast_bytes", "Bytes of document-update frames fanned out, counted once per recipient.",
            registry=r)
        self.slow_consumer_closes = Counter(
            "crdt_server_slow_consumer_closes", "WebSockets closed with 1013 because their send queue was full.",
            registry=r)
        self.commit_seconds = Histogram(
            "crdt_server_commit_seconds", "Duration of one storage group-commit transaction.",
            buckets=COMMIT_BUCKETS, registry=r)
        self.runs = Counter("crdt_server_runs", "Runs (Run button and POST /api/execute) by language and outcome.",
                            ("language", "outcome"), registry=r)
        self.run_seconds = Histogram(
            "crdt_server_run_seconds", "Wall time of a run that produced a result, queue wait included.",
            buckets=RUN_BUCKETS, registry=r)
        self.connections = Gauge("crdt_server_connections", "Open WebSocket connections.", registry=r)
        self.rooms_loaded = Gauge("crdt_server_rooms_loaded", "Session documents loaded in memory.", registry=r)
        self.run_queue_depth = Gauge("crdt_server_run_queue_depth", "Runs waiting for a free worker.", registry=r)
        self.sandbox_mode = Info("crdt_server_sandbox_mode", "The sandbox mode Run uses (full, degraded, "
                                 "unavailable; off when Run is disabled).", registry=r)
        for gauge in (self.connections, self.rooms_loaded, self.run_queue_depth):
            gauge.set_function(lambda: 0)
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):  # stateless, read at scrape time
            r.register(collector)
        self._languages: dict[str, str] = {}  # accepted spellings -> canonical name (the label)

    def watch(self, *, connections: Callable[[], float], rooms_loaded: Callable[[], float],
              run_queue_depth: Callable[[], float]) -> None:
        """Read these gauges off the live objects at scrape time (nothing is updated per event)."""
        self.connections.set_function(connections)
        self.rooms_loaded.set_function(rooms_loaded)
        self.run_queue_depth.set_function(run_queue_depth)

    def sandbox_started(self, mode: str, runner: ExecutionService | None) -> None:
        """Once at start: the sandbox mode and the language names runs may be labelled with."""
        self.sandbox_mode.info({"mode": mode})
        for lang in runner.languages() if runner is not None else ():
            for spelling in (lang.name, *lang.aliases):
                self._languages[spelling.lower()] = lang.name

    def _language(self, requested: str) -> str:
        """A label value from a closed set: never the raw request string (any client could pick it)."""
        return self._languages.get(requested.strip().lower(), "other")

    async def run(self, runner: ExecutionService, *, language: str, **kwargs: Any) -> RunResult:
        """``runner.run`` counted by language and outcome, and timed when it produced a result."""
        started = time.perf_counter()
        try:
            result = await runner.run(language=language, **kwargs)
        except ExecutionError as exc:
            outcome = f"refused:{exc.code}"
            self.runs.labels(self._language(language), outcome if outcome in RUN_OUTCOMES else "sandbox_error").inc()
            raise
        self.run_seconds.observe(time.perf_counter() - started)
        self.runs.labels(self._language(result.language), run_outcome(result)).inc()
        return result

    def run_rate_limited(self) -> None:
        """A run refused before its body was read (the per-address limit): its language is unknown."""
        self.runs.labels("other", "refused:rate_limited").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
