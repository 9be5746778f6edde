"""Per-slot memory and pids cgroups.

bubblewrap sets no limits. Only a memory cgroup stops a memory bomb spread over several
processes (RLIMIT_AS is per process), and a pids cgroup bounds a fork bomb however the uid
accounting goes. Hosts differ: a systemd host has a pure v2 hierarchy; the Firecracker guest
the project was developed on is hybrid (v1 memory and pids writable by root, a v2 mount without
those controllers); a container may have neither. So the layout is probed, never assumed (see
docs/design/sandbox.md). Slot groups are created *under the
server's own cgroup*, delegation-style, so sandboxes stay inside whatever limit the server
itself runs under, and are removed on shutdown.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GROUP_PREFIX = "crdt-exec-"


class CgroupUnavailable(Exception):
    """No writable memory/pids controller for this process."""


@dataclass(frozen=True)
class SlotCgroup:
    kind: str  # "v1" | "v2"
    join_dirs: tuple[Path, ...]  # a run writes its pid into <dir>/cgroup.procs of each
    memory_dir: Path | None
    pids_dir: Path | None

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(str(d / "cgroup.procs") for d in self.join_dirs)

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.join_dirs:
            try:
                found.update(int(x) for x in (d / "cgroup.procs").read_text().split())
            except OSError:
                pass
        return found

    def kill(self, exclude: frozenset[int] | set[int] = frozenset()) -> int:
        """SIGKILL everything in the group except `exclude` (the slot's fork server, which
        lives in the group on purpose); returns how many pids were signalled."""
        victims = self.pids() - set(exclude)
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        return len(victims)

    def oom_kills(self) -> int:
        """Cumulative OOM kills in this group (compare before/after a run)."""
        if self.memory_dir is None:
            return 0
        name = "memory.oom_control" if self.kind == "v1" else "memory.events"
        try:
            for line in (self.memory_dir / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0


def _own_cgroups() -> dict[str, str]:
    """controller -> path of this process, from /proc/self/cgroup ("" key = the v2 hierarchy)."""
    result: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if not controllers:
            result[""] = path
        for controller in controllers.split(","):
            if controller:
                result[controller] = path
    return result


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(fstype, root, mountpoint, super options) for each cgroup mount, from mountinfo."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        parts, rparts = left.split(), right.split()
        if len(rparts) >= 3 and rparts[0] in ("cgroup", "cgroup2"):
            found.append((rparts[0], parts[3], parts[4], set(rparts[2].split(","))))
    return found


def _v1_dir(controller: str, own: dict[str, str]) -> Path | None:
    if controller not in own:
        return None
    for fstype, root, mountpoint, opts in _mounts():
        if fstype == "cgroup" and controller in opts:
            rel = os.path.relpath(own[controller], root) if own[controller].startswith(root) else None
            if rel is None:
                return None
            path = Path(mountpoint) if rel == "." else Path(mountpoint) / rel
            return path if path.is_dir() else None
    return None


def _v2_dir(own: dict[str, str]) -> Path | None:
    if "" not in own:
        return None
    for fstype, root, mountpoint, _ in _mounts():
        if fstype == "cgroup2":
            rel = os.path.relpath(own[""], root)
            path = Path(mountpoint) if rel == "." else Path(mountpoint) / rel
            return path if path.is_dir() else None
    return None


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _rmdir(path: Path) -> None:
    """rmdir a cgroup, retrying briefly: just-killed tasks leave it busy for a moment."""
    for attempt in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if attempt == 49:
                log.warning("could not remove cgroup %s: %s", path, exc)
                return
            time.sleep(0.02)


def _remove_tree(base: Path) -> None:
    """rmdir the slot groups then the base (cgroup dirs are removed with rmdir, not unlink)."""
    if not base.is_dir():
        return
    for child in base.iterdir():
        if child.is_dir():
            _rmdir(child)
    _rmdir(base)


def _kill_group_tree(base: Path) -> None:
    for child in [base, *[c for c in base.iterdir() if c.is_dir()]]:
        try:
            for pid in (child / "cgroup.procs").read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        except OSError:
            pass


def _remove_stale(parent: Path) -> None:
    """Remove groups left by a crashed server (its pid is in the name and no longer alive)."""
    try:
        candidates = [p for p in parent.iterdir() if p.name.startswith(GROUP_PREFIX)]
    except OSError:
        return
    for base in candidates:
        try:
            pid = int(base.name[len(GROUP_PREFIX):].split("-")[0])
        except ValueError:
            continue
        if pid == os.getpid() or Path(f"/proc/{pid}").exists():
            continue
        _kill_group_tree(base)
        _remove_tree(base)


class CgroupManager:
    """Creates <own cgroup>/crdt-exec-<pid>-<n>/slot<N> groups with memory and pids limits."""

    _instances = itertools.count()

    def __init__(self) -> None:
        self.kind = ""
        self._bases: list[Path] = []
        self._instance = next(self._instances)  # several services may live in one process (tests)

    def setup(self, slots: int, memory_bytes: int, pids_max: int) -> list[SlotCgroup]:
        own = _own_cgroups()
        mem, pids = _v1_dir("memory", own), _v1_dir("pids", own)
        errors: list[str] = []
        if mem or pids:
            try:
                return self._setup_v1(mem, pids, slots, memory_bytes, pids_max)
            except OSError as exc:
                errors.append(f"v1: {exc}")
                self.cleanup()
        v2 = _v2_dir(own)
        if v2:
            try:
                return self._setup_v2(v2, slots, memory_bytes, pids_max)
            except (OSError, CgroupUnavailable) as exc:
                errors.append(f"v2: {exc}")
                self.cleanup()
        raise CgroupUnavailable("; ".join(errors) or "no cgroup memory/pids controller mounted")

    def _make_base(self, parent: Path) -> Path:
        _remove_stale(parent)
        base = parent / f"{GROUP_PREFIX}{os.getpid()}-{self._instance}"
        if base.exists():
            _kill_group_tree(base)
            _remove_tree(base)
        base.mkdir()
        self._bases.append(base)
        return base

    def _setup_v1(
        self, mem: Path | None, pids: Path | None, slots: int, memory_bytes: int, pids_max: int
    ) -> list[SlotCgroup]:
        self.kind = "v1"
        mem_base = self._make_base(mem) if mem else None
        pids_base = self._make_base(pids) if pids else None
        result = []
        for i in range(slots):
            mem_dir = pids_dir = None
            if mem_base:
                mem_dir = mem_base / f"slot{i}"
                mem_dir.mkdir()
                _write(mem_dir / "memory.limit_in_bytes", str(memory_bytes))
                try:  # swap accounting: keep memory+swap at the same cap (absent without swapaccount)
                    _write(mem_dir / "memory.memsw.limit_in_bytes", str(memory_bytes))
                except OSError:
                    pass
                try:
                    _write(mem_dir / "memory.swappiness", "0")
                except OSError:
                    pass
            if pids_base:
                pids_dir = pids_base / f"slot{i}"
                pids_dir.mkdir()
                _write(pids_dir / "pids.max", str(pids_max))
            dirs = tuple(d for d in (mem_dir, pids_dir) if d is not None)
            result.append(SlotCgroup("v1", dirs, mem_dir, pids_dir))
        return result

    def _setup_v2(self, own: Path, slots: int, memory_bytes: int, pids_max: int) -> list[SlotCgroup]:
        self.kind = "v2"
        available = set((own / "cgroup.controllers").read_text().split())
        wanted = {"memory", "pids"} & available
        if not wanted:
            raise CgroupUnavailable(f"{own} has no memory/pids controller (has: {sorted(available) or 'none'})")
        enabled = set((own / "cgroup.subtree_control").read_text().split())
        if not wanted <= enabled:
            # Fails with EBUSY when our own group holds processes (v2's no-internal-process rule).
            _write(own / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted - enabled)))
        base = self._make_base(own)
        _write(base / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(wanted)))
        result = []
        for i in range(slots):
            d = base / f"slot{i}"
            d.mkdir()
            if "memory" in wanted:
                _write(d / "memory.max", str(memory_bytes))
                try:
                    _write(d / "memory.swap.max", "0")
                except OSError:
                    pass
            if "pids" in wanted:
                _write(d / "pids.max", str(pids_max))
            result.append(SlotCgroup("v2", (d,), d if "memory" in wanted else None, d if "pids" in wanted else None))
        return result

    def cleanup(self) -> None:
        for base in self._bases:
            try:
                _kill_group_tree(base)
            except OSError:
                pass
            _remove_tree(base)
        self._bases.clear()
