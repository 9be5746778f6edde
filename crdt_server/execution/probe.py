"""Start-up probe: which isolation layers actually work on this host, hence the mode.

Nothing is assumed from the distribution or kernel version: each layer is tried for real
(a uid switch needs CAP_SETUID/SETGID, namespaces are proven by running /usr/bin/true under
bwrap as a slot uid, cgroups by creating the slot groups, seccomp by compiling the filter).
What each mode means and leaks: docs/design/sandbox.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from . import _forkserver
from .settings import MODES

log = logging.getLogger(__name__)

CAP_SETGID, CAP_SETUID = 6, 7


@dataclass
class Layers:
    namespaces: bool = False
    uid_switch: bool = False
    seccomp: bool = False
    cgroup: str = ""  # "v1" | "v2" | "" (none)
    landlock_abi: int = 0
    subreaper: bool = False
    bwrap: str = ""  # which bubblewrap binary the full sandbox uses (bwrap.py), "" when none
    uid_base: int = 0  # the claimed slot uid range starts here (uidclaim.py)
    reasons: dict[str, str] = field(default_factory=dict)  # layer -> why it is missing

    @property
    def mode(self) -> str:
        if not self.uid_switch:
            return "unavailable"  # never run submitted code as the server's own uid
        if self.namespaces and self.seccomp:
            return "full"
        return "degraded"

    def as_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "namespaces": self.namespaces,
            "uidSwitch": self.uid_switch,
            "seccomp": self.seccomp,
            "cgroup": self.cgroup or None,
            "landlock": self.landlock_abi,
            "subreaper": self.subreaper,
            "bwrap": self.bwrap or None,
            "uidBase": self.uid_base or None,
            "reasons": dict(self.reasons),
        }


def can_switch_uid() -> tuple[bool, str]:
    try:
        with open("/proc/self/status") as f:
            caps = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    except (OSError, StopIteration, ValueError) as exc:
        return False, f"cannot read capabilities: {exc}"
    if caps & (1 << CAP_SETUID) and caps & (1 << CAP_SETGID):
        return True, ""
    return False, "the server lacks CAP_SETUID/CAP_SETGID (run it as root) so it cannot drop to a slot uid"


def landlock_abi() -> int:
    return _forkserver.landlock_abi()


def mode_rank(mode: str) -> int:
    return MODES.index(mode)
