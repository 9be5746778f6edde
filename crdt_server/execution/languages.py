"""Table-driven language registry: how to find each toolchain and how to compile/run it.

The ids and aliases are the session language registry's (``crdt_server/languages.py``); this
table attaches a toolchain to some of them. Argv templates use placeholders resolved per run: tool paths ({python}, {gcc}...), {box}
(read-only dir holding the source), {src}, {tmp} (private writable tmpfs), {exe}, {main},
{heap_mb}. A toolchain outside /usr (rustup under /root, a GOROOT in /opt) is bind-mounted
read-only at /opt/<lang>; if the sandbox uid cannot traverse its host path it is "staged"
through a private mount namespace (see _forkserver.py). Whether a language is offered is decided
by actually running it in the sandbox at start-up (service.py), not by its presence on disk.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..languages import LANGUAGES as REGISTRY

log = logging.getLogger(__name__)

STANDARD_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
VISIBLE_PREFIXES = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/")  # bound as-is in the sandbox


@dataclass(frozen=True)
class Mount:
    """A read-only bind of a host directory at `sandbox` inside the sandbox."""

    host: str
    sandbox: str
    staged: bool = False  # host path not traversable by the slot uid: bind it via a private mount ns


@dataclass(frozen=True)
class Toolchain:
    """A language located on this host, with tool paths as seen from inside the sandbox."""

    tools: Mapping[str, str]
    mounts: tuple[Mount, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    variant: str = ""


LocateFn = Callable[[], "Toolchain | str"]  # a Toolchain, or the reason it is unavailable


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    aliases: tuple[str, ...]
    source: str  # file name in {box}; Java derives it from the public class
    run: tuple[str, ...]
    version: tuple[str, ...]
    hello: str  # a program printing "hello", used by the start-up probe
    locate: LocateFn
    compile: tuple[str, ...] | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    etc: tuple[str, ...] = ()  # extra host /etc entries (glob-free names) bound read-only
    address_space_ok: bool = True  # tolerates RLIMIT_AS (not V8/JVM/Go: they reserve GBs)
    variants: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)

    def commands(self, variant: str) -> tuple[tuple[str, ...] | None, tuple[str, ...], tuple[str, ...]]:
        """(compile, run, version) argv templates for a toolchain variant."""
        over = self.variants.get(variant, {})
        return over.get("compile", self.compile), over.get("run", self.run), over.get("version", self.version)

    def source_name(self, code: str) -> str:
        if self.name == "java":
            m = re.search(r"\bpublic\s+(?:(?:final|abstract|strictfp)\s+)*class\s+([A-Za-z_$][\w$]*)", code)
            return f"{m.group(1) if m else 'Main'}.java"
        return self.source


# --- locating toolchains -------------------------------------------------------------------


def _host_search_dirs() -> list[str]:
    dirs = list(STANDARD_DIRS)
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and d not in dirs and "shims" not in d:  # pyenv/asdf shims are shell scripts
            dirs.append(d)
    return dirs


def find_host(name: str, extra_dirs: tuple[str, ...] = ()) -> str | None:
    for d in (*STANDARD_DIRS, *extra_dirs, *_host_search_dirs()):
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


def traversable_by_others(path: str) -> bool:
    """Can an unrelated uid reach `path`? (o+x on every ancestor directory)."""
    current = os.path.realpath(path)
    while True:
        try:
            mode = os.stat(current).st_mode
        except OSError:
            return False
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def _visible(host_path: str) -> bool:
    return host_path.startswith(VISIBLE_PREFIXES)


def _tree_mount(lang: str, root: str) -> Mount:
    return Mount(root, f"/opt/{lang}", staged=not traversable_by_others(root))


def _simple(lang: str, **tools: str) -> LocateFn:
    """Locate tools by name; a tool outside /usr gets its install prefix mounted at /opt/<lang>."""

    def locate() -> Toolchain | str:
        resolved: dict[str, str] = {}
        mounts: list[Mount] = []
        for key, binary in tools.items():
            path = find_host(binary)
            if path is None:
                return f"{binary} not found"
            if _visible(path):
                resolved[key] = path
                continue
            real = os.path.realpath(path)
            prefix = os.path.dirname(os.path.dirname(real))
            mount = _tree_mount(lang, prefix)
            if mount not in mounts:
                if mounts:
                    return f"{binary} lives in a second prefix {prefix}"
                mounts.append(mount)
            resolved[key] = real.replace(prefix, mount.sandbox, 1)
        return Toolchain(resolved, tuple(mounts))

    return locate


def _host_output(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _locate_rust() -> Toolchain | str:
    home = os.path.expanduser("~")
    extra = (os.path.join(os.environ.get("CARGO_HOME", f"{home}/.cargo"), "bin"), "/usr/local/cargo/bin")
    rustc = find_host("rustc", extra)
    if rustc is None:
        return "rustc not found"
    if find_host("cc") is None:
        return "rustc needs a C linker (cc) and none was found"
    # ~/.cargo/bin/rustc is usually the rustup proxy: ask it for the real toolchain directory.
    sysroot = _host_output([rustc, "--print", "sysroot"])
    if not sysroot or not os.path.isfile(os.path.join(sysroot, "bin", "rustc")):
        return f"could not resolve the rustc sysroot from {rustc}"
    if _visible(sysroot + "/"):
        return Toolchain({"rustc": os.path.join(sysroot, "bin", "rustc")})
    mount = _tree_mount("rust", sysroot)
    return Toolchain({"rustc": "/opt/rust/bin/rustc"}, (mount,))


def _locate_go() -> Toolchain | str:
    go = find_host("go", ("/usr/local/go/bin", "/usr/lib/go/bin"))
    if go is None:
        return "go not found"
    goroot = _host_output([go, "env", "GOROOT"])
    if not goroot or not os.path.isfile(os.path.join(goroot, "bin", "go")):
        return f"could not resolve GOROOT from {go}"
    if _visible(goroot + "/"):
        return Toolchain({"go": os.path.join(goroot, "bin", "go")}, env={"GOROOT": goroot})
    mount = _tree_mount("go", goroot)
    return Toolchain({"go": "/opt/go/bin/go"}, (mount,), env={"GOROOT": "/opt/go"})


def _locate_typescript() -> Toolchain | str:
    node = find_host("node")
    if node is None or not _visible(node):
        return "node not found under /usr"
    tsc = find_host("tsc")
    if tsc and _visible(os.path.realpath(tsc)):
        return Toolchain({"node": node, "tsc": os.path.realpath(tsc)}, variant="tsc")
    # No tsc: node >= 22.6 can strip types itself; the start-up probe finds out.
    return Toolchain({"node": node}, variant="strip-types")


LANGUAGES: tuple[LanguageSpec, ...] = (
    LanguageSpec(
        name="python",
        aliases=REGISTRY["python"],
        source="main.py",
        run=("{python}", "-I", "-B", "-u", "{src}"),
        version=("{python}", "--version"),
        hello='print("hello")\n',
        locate=_simple("python", python="python3"),
    ),
    LanguageSpec(
        name="javascript",
        aliases=REGISTRY["javascript"],
        source="main.js",
        run=("{node}", "--max-old-space-size={heap_mb}", "{src}"),
        version=("{node}", "--version"),
        hello='console.log("hello");\n',
        locate=_simple("node", node="node"),
        etc=("ssl/openssl.cnf",),  # node reads it at start-up; Landlock denies it otherwise
        address_space_ok=False,
    ),
    LanguageSpec(
        name="typescript",
        aliases=REGISTRY["typescript"],
        source="main.ts",
        run=("{node}", "--experimental-strip-types", "--no-warnings", "--max-old-space-size={heap_mb}", "{src}"),
        version=("{node}", "--experimental-strip-types", "--no-warnings", "-p", "process.versions.node"),
        hello='const s: string = "hello";\nconsole.log(s);\n',
        locate=_locate_typescript,
        etc=("ssl/openssl.cnf",),
        address_space_ok=False,
        variants={
            "tsc": {
                "compile": ("{node}", "{tsc}", "--target", "es2022", "--module", "commonjs",
                            "--outDir", "{tmp}", "{src}"),
                "run": ("{node}", "--max-old-space-size={heap_mb}", "{tmp}/main.js"),
                "version": ("{node}", "{tsc}", "--version"),
            }
        },
    ),
    LanguageSpec(
        name="bash",
        aliases=REGISTRY["bash"],
        source="main.sh",
        run=("{bash}", "{src}"),
        version=("{bash}", "--version"),
        hello="echo hello\n",
        locate=_simple("bash", bash="bash"),
    ),
    LanguageSpec(
        name="c",
        aliases=REGISTRY["c"],
        source="main.c",
        compile=("{gcc}", "-O2", "-pipe", "-std=gnu17", "-Wall", "-o", "{exe}", "{src}", "-lm"),
        run=("{exe}",),
        version=("{gcc}", "-dumpfullversion"),
        hello='#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n',
        locate=_simple("c", gcc="gcc", bash="bash"),
    ),
    LanguageSpec(
        name="cpp",
        aliases=REGISTRY["cpp"],
        source="main.cpp",
        compile=("{gxx}", "-O2", "-pipe", "-std=gnu++17", "-Wall", "-o", "{exe}", "{src}"),
        run=("{exe}",),
        version=("{gxx}", "-dumpfullversion"),
        hello='#include <iostream>\nint main() { std::cout << "hello" << std::endl; }\n',
        locate=_simple("cpp", gxx="g++", bash="bash"),
    ),
    LanguageSpec(
        name="java",
        aliases=REGISTRY["java"],
        source="Main.java",
        compile=("{javac}", "-J-Xmx{heap_mb}m", "-J-XX:+UseSerialGC", "-J-XX:TieredStopAtLevel=1",
                 "-J-XX:-UsePerfData", "-encoding", "UTF-8", "-d", "{tmp}", "{src}"),
        run=("{java}", "-Xmx{heap_mb}m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:-UsePerfData",
             "-cp", "{tmp}", "{main}"),
        version=("{java}", "-version"),
        hello='public class Main {\n  public static void main(String[] a) { System.out.println("hello"); }\n}\n',
        locate=_simple("java", java="java", javac="javac", bash="bash"),
        etc=("java-17-openjdk", "java-21-openjdk", "java-11-openjdk"),
        address_space_ok=False,
    ),
    LanguageSpec(
        name="go",
        aliases=REGISTRY["go"],
        source="main.go",
        compile=("{go}", "build", "-o", "{exe}", "{src}"),
        run=("{exe}",),
        version=("{go}", "version"),
        hello='package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("hello") }\n',
        locate=_locate_go,
        env={"GOCACHE": "{tmp}/.gocache", "GOPATH": "{tmp}/go", "GOTOOLCHAIN": "local",
             "CGO_ENABLED": "0", "GO111MODULE": "off", "GOFLAGS": "-buildvcs=false"},
        address_space_ok=False,
    ),
    LanguageSpec(
        name="rust",
        aliases=REGISTRY["rust"],
        source="main.rs",
        compile=("{rustc}", "--edition", "2021", "-C", "opt-level=1", "-o", "{exe}", "{src}"),
        run=("{exe}",),
        version=("{rustc}", "--version"),
        hello='fn main() { println!("hello"); }\n',
        locate=_locate_rust,
    ),
)

_VERSION_RE = re.compile(r"(\d+\.\d+(?:\.\d+)*)")


def parse_version(output: str) -> str:
    for line in output.splitlines():
        m = _VERSION_RE.search(line)
        if m:
            return m.group(1)
    return output.strip().splitlines()[0][:40] if output.strip() else "unknown"

assert {spec.name for spec in LANGUAGES} <= set(REGISTRY), "every runnable language is a registry id"
