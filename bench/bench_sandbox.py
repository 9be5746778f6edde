"""Sandbox cost: per-run overhead over a bare interpreter start, and throughput when saturated.

    sudo uv run python bench/bench_sandbox.py [--runs 30] [--burst 60] [--degraded] [--uvloop]

Per-run latency: median (and p90) of N sequential runs after 3 warm-ups (bare and sandboxed
interleaved, so load from elsewhere hits both alike), both for a bare
`python3 -c 'print(1)'` / `node -e 'console.log(1)'` spawned the same async way with a clean
environment, and for ExecutionService.run() of the same program. Throughput: `--burst` runs
submitted at once to a pool of `workers` slots (queue large enough to hold them all).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable

import anyio

from crdt_server.config import Settings
from crdt_server.execution import ExecutionService, ExecutionSettings

PROGRAMS = {
    "python": (["/usr/bin/python3", "-c", "print(1)"], "print(1)\n"),
    "javascript": (["/usr/bin/node", "-e", "console.log(1)"], "console.log(1)\n"),
}
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8"}


async def bare(argv: list[str]) -> None:
    await anyio.run_process(argv, env=CLEAN_ENV, stdin=subprocess.DEVNULL)


async def measure(fns: list[Callable[[], Awaitable[object]]], runs: int) -> list[list[float]]:
    """Interleaved (a, b, a, b...) so that load from elsewhere hits both alike."""
    for fn in fns * 3:
        await fn()
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, out in zip(fns, samples, strict=True):
            started = time.perf_counter()
            await fn()
            out.append((time.perf_counter() - started) * 1000)
    return samples


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10)[-1]


async def main(args: argparse.Namespace) -> None:
    settings = ExecutionSettings.from_settings(
        Settings(),  # the server's defaults, but every run admitted and its own uids
        uid_base=63000,
        queue_size=max(args.burst, 16),
        session_rate=1e6,
        session_burst=10**6,
        use_namespaces=not args.degraded,
        probe_languages=False,
    )
    logging.getLogger("crdt_server.execution").setLevel(logging.ERROR)  # not one warning per run
    async with ExecutionService(settings) as svc:
        print(f"sandbox mode: {svc.mode}  workers: {settings.workers}  layers: {svc.layers}")
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print()
        print(f"{'language':<11} {'bare median':>12} {'sandbox median':>15} {'sandbox p90':>12} {'overhead':>9}"
              f" {'saturated runs/s':>17}")
        for language, (argv, code) in PROGRAMS.items():

            async def sandboxed(language: str = language, code: str = code) -> None:
                result = await svc.run(language=language, code=code)
                assert result.stdout == "1\n", result

            bare_ms, box_ms = await measure([lambda argv=argv: bare(argv), sandboxed], args.runs)
            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for _ in range(args.burst):
                    tg.start_soon(sandboxed)
            rate = args.burst / (time.perf_counter() - started)
            b, s = statistics.median(bare_ms), statistics.median(box_ms)
            print(f"{language:<11} {b:>9.1f} ms {s:>12.1f} ms {p90(box_ms):>9.1f} ms {s - b:>6.1f} ms {rate:>17.1f}")

        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--burst", type=int, default=60)
    parser.add_argument("--degraded", action="store_true", help="force the no-namespace fallback")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the server does")
    cli = parser.parse_args()
    anyio.run(main, cli, backend_options={"use_uvloop": cli.uvloop})
