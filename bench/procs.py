"""Child-process bookkeeping and /proc readings (Linux only, stdlib only).

Every process the harness starts goes through :class:`Managed`, which puts it in its own process
group and registers it so that :func:`kill_all` (run from ``atexit``, signal handlers and the
``finally`` of every scenario) can end it and every process it forked, by id.
"""

from __future__ import annotations

import atexit
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

_registry: list[Managed] = []
_registry_lock = threading.Lock()


def raise_nofile_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; children (node, servers) inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


try:  # loaded up front: the child may only call into it between fork and exec
    import ctypes

    _libc = ctypes.CDLL("libc.so.6", use_errno=True)
except Exception:  # noqa: BLE001 - no libc: fall back to reading /proc
    _libc = None


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    if _libc is not None:
        _libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG: die with the harness


# ------------------------------------------------------------------------------------ /proc
def _read_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces/parens: split after the last ')'
    rest = raw[raw.rfind(")") + 2 :].split()
    return rest  # rest[0] is state (field 3)


def children_of(root: int) -> list[int]:
    """root and all its descendants that are alive now."""
    parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _read_stat(int(entry))
        if st is None:
            continue
        parent.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if not Path(f"/proc/{p}").exists():
            continue
        out.append(p)
        todo.extend(parent.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime (+ reaped children's) of one process, in seconds."""
    st = _read_stat(pid)
    if st is None:
        return 0.0
    # fields 14..17 of stat are utime stime cutime cstime -> rest[11..14]
    return sum(int(x) for x in st[11:15]) / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


def tree_cpu_seconds(root: int) -> float:
    return sum(cpu_seconds(p) for p in children_of(root))


def tree_rss_bytes(root: int) -> int:
    return sum(rss_bytes(p) for p in children_of(root))


def listening_pid(port: int) -> int | None:
    """The pid that owns the TCP socket listening on `port` (lowest pid if shared)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    if not inodes:
        return None
    wanted = {f"socket:[{i}]" for i in inodes}
    owners = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(f"{fd_dir}/{fd}") in wanted:
                        owners.append(int(entry))
                        break
                except OSError:
                    continue
        except OSError:
            continue
    return min(owners) if owners else None


# ------------------------------------------------------------------------------------ processes
class Managed:
    """A child process in its own process group, killed (with its descendants) by stop()."""

    def __init__(self, argv, *, name: str, cwd=None, env=None, log_path: Path | None = None,
                 stdin=subprocess.DEVNULL, stdout=None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=stdin,
            stdout=stdout if stdout is not None else self._log,
            stderr=self._log,
            start_new_session=True,
            preexec_fn=_set_pdeathsig,
        )
        self.pid = self.proc.pid
        with _registry_lock:
            _registry.append(self)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        pids = children_of(self.pid) if self.alive() else []
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        # whatever is left of the group and of the descendants we saw: SIGKILL by id
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass
        if self._log is not subprocess.DEVNULL:
            try:
                self._log.close()
            except OSError:
                pass
        with _registry_lock:
            if self in _registry:
                _registry.remove(self)


def kill_all() -> None:
    with _registry_lock:
        procs = list(_registry)
    for m in reversed(procs):
        try:
            m.stop(grace=2.0)
        except Exception as e:  # noqa: BLE001 - best effort at exit
            print(f"bench: could not stop {m.name}: {e}", file=sys.stderr)


def install_cleanup() -> None:
    atexit.register(kill_all)

    def _on_signal(signum, _frame):
        # turn SIGTERM/SIGHUP into an exception so every `finally` runs, then atexit
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a harness started from a non-interactive shell in the background inherits
    # SIGINT as ignored, and then Ctrl-C / kill -INT would leave everything running.
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    except (ValueError, OSError):
        pass
    for sig in (signal.SIGTERM, signal.SIGHUP):
        try:
            signal.signal(sig, _on_signal)
        except (ValueError, OSError):
            pass


class RssSampler(threading.Thread):
    """Samples the RSS of a process tree every `interval` seconds; keeps the peak."""

    def __init__(self, root_fn, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root_fn = root_fn
        self.interval = interval
        self.peak = 0
        self._stop_evt = threading.Event()

    def run(self) -> None:
        pids: list[int] = []
        last_scan = 0.0
        while not self._stop_evt.is_set():
            try:
                if time.monotonic() - last_scan > 1.0:  # re-scan /proc for the tree once a second
                    pids = children_of(self.root_fn())
                    last_scan = time.monotonic()
                self.peak = max(self.peak, sum(rss_bytes(p) for p in pids))
            except Exception:  # noqa: BLE001 - a process that just exited: sample again next time
                pass
            self._stop_evt.wait(self.interval)

    def stop(self) -> int:
        self._stop_evt.set()
        self.join(timeout=2)
        return self.peak


def wait_until(pred, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()[:80]
    except OSError:
        return "?"


def system_busy_seconds() -> float:
    """CPU seconds the whole machine (all cores) spent in processes (user+nice+system), from
    /proc/stat. Interrupt/softirq time is left out: much of it is the benchmark's own loopback
    traffic and cannot be attributed to a process."""
    try:
        f = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0
    # cpu user nice system idle iowait irq softirq steal guest guest_nice
    vals = [int(x) for x in f[1:4]]
    return sum(vals) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU seconds of this harness process (all threads)."""
    t = os.times()
    return t.user + t.system
