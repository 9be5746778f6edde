"""Drive a real JavaScript Yjs client (by default yjs 13.6 + y-websocket 3.x under Node) from pytest.

`tests/js/client.mjs` runs one `WebsocketProvider` per Node process and is driven over
stdin/stdout, one JSON object per line. This module installs its npm dependencies on demand and
wraps the process in an anyio-based async API:

    from .jsclient import js_client

    @pytest.mark.anyio
    async def test_two_editors_converge(server_url, session):  # your own fixtures
        url = f"{server_url}/ws/sessions"                        # ws://127.0.0.1:PORT/ws/sessions
        async with js_client(url, session.id, session.tokens["interviewer"], name="Ada") as a, \
                   js_client(url, session.id, session.tokens["candidate"], name="Bob") as b:
            await a.insert(0, "print(1)\n")
            await b.wait_text(equals="print(1)\n")
            await b.wait_awareness(lambda s: "Ada" in s.names)

Rules:
* Node missing, npm missing or `npm ci` failing raises `JSClientSetupError`: tests error, they are
  never skipped.
* Another client generation (tests/peers: y-websocket 2, the next major with Yjs 14) is the same
  client.mjs given that package and its *flavour* module (which Yjs and provider to import):
  `JSClient(package=..., flavour=...)`, `js_client(..., package=..., flavour=...)`.
* `start()`/`aclose()` (and so `async with`) must run in the same task: the client owns an anyio
  task group that reads the process's stdout/stderr.
* Events (`status`, `synced`, `connection-close`, `closed`, `connection-error`, `awareness`,
  `permission-denied`, `uncaught`, `ready`) are kept in `client.events` for the client's whole
  life; `wait_event` looks at past events too (from `since`, an index from `client.mark()`).
"""

from __future__ import annotations

import base64
import collections
import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

from .nodepkg import NodePackage, NodeSetupError, node_executable

try:  # a session fixture for test modules that want the install to happen up front
    import pytest
except ImportError:  # pragma: no cover - pytest is a dev dependency
    pytest = None  # type: ignore[assignment]

__all__ = [
    "JS_DIR",
    "JSClient",
    "JSClientDied",
    "JSClientError",
    "JSClientSetupError",
    "AwarenessSnapshot",
    "ensure_node_modules",
    "js_client",
    "js_deps",
    "node_executable",
]

log = logging.getLogger("jsclient")

JS_DIR = Path(__file__).resolve().parent / "js"
CLIENT_JS = JS_DIR / "client.mjs"
NODE_MODULES = JS_DIR / "node_modules"
REQUIRED_PACKAGES = ("yjs", "y-websocket", "y-protocols", "ws", "lib0")
MAX_LINE = 256 * 1024 * 1024


class JSClientSetupError(RuntimeError):
    """Node/npm missing or the npm install failed. Never a reason to skip."""


class JSClientError(RuntimeError):
    """The JS client answered a command with ok:false."""

    def __init__(self, cmd: str, error: str, response: dict[str, Any]):
        super().__init__(f"JS client command {cmd!r} failed: {error}")
        self.cmd = cmd
        self.error = error
        self.response = response


class JSClientDied(RuntimeError):
    """The Node process exited (or its stdout closed) while we were waiting for it."""


# --------------------------------------------------------------------------------------- install

JS_PACKAGE = NodePackage(JS_DIR, REQUIRED_PACKAGES)
JSClientSetupError = NodeSetupError


def ensure_node_modules() -> None:
    """`npm ci` in tests/js when node_modules is missing or older than package-lock.json (nodepkg.py)."""
    JS_PACKAGE.ensure()


if pytest is not None:

    @pytest.fixture(scope="session")
    def js_deps() -> Path:
        """Session fixture: make sure tests/js/node_modules is installed; returns JS_DIR."""
        ensure_node_modules()
        return JS_DIR

else:  # pragma: no cover
    js_deps = None  # type: ignore[assignment]


# ---------------------------------------------------------------------------------------- client


@dataclass
class AwarenessSnapshot:
    """Result of `awareness_states()`; keys of `states`/`all` are clientIDs as ints."""

    client_id: int
    states: dict[int, dict[str, Any]]  # only entries with a `user` field (the local one included)
    raw_count: int  # every entry the provider holds, e.g. a server's own `{}` state
    all: dict[int, Any]

    @property
    def count(self) -> int:
        return len(self.states)

    @property
    def users(self) -> list[dict[str, Any]]:
        return [s["user"] for s in self.states.values()]

    @property
    def names(self) -> list[str]:
        return [u.get("name") for u in self.users if isinstance(u, dict)]

    @property
    def others(self) -> dict[int, dict[str, Any]]:
        """States (with `user`) of every client except this one."""
        return {cid: s for cid, s in self.states.items() if cid != self.client_id}


class JSClient:
    """One Node process running tests/js/client.mjs (one WebsocketProvider, one Y.Doc).

    ``package`` is where its Yjs, provider and protocol modules are installed, ``flavour`` the module there
    that exports them (client.mjs imports it); by default tests/js and its yjs13.mjs.
    """

    def __init__(self, *, default_timeout: float = 15.0, label: str | None = None,
                 echo_stderr: bool | None = None, package: NodePackage | None = None,
                 flavour: Path | None = None, script: Path = CLIENT_JS) -> None:
        # ``script``: another line-driven client (same protocol), e.g. tests/js14/client.mjs, installed
        # from its own directory
        self.script = script
        self.package = package or (JS_PACKAGE if script == CLIENT_JS else NodePackage(script.parent, ()))
        self.flavour = flavour
        self.default_timeout = default_timeout
        self.label = label or "js"
        if echo_stderr is None:
            echo_stderr = os.environ.get("JSCLIENT_ECHO_STDERR", "") not in ("", "0")
        self.echo_stderr = echo_stderr
        self.events: list[dict[str, Any]] = []
        self.stderr_lines: collections.deque[str] = collections.deque(maxlen=500)
        self.returncode: int | None = None
        self._proc: anyio.abc.Process | None = None
        self._stack: AsyncExitStack | None = None
        self._tg: anyio.abc.TaskGroup | None = None
        self._next_id = 0
        self._pending: dict[int, list[Any]] = {}  # id -> [anyio.Event, response | None]
        self._new_event = anyio.Event()
        self._dead = False
        self._death_reason: str | None = None
        self._write_lock = anyio.Lock()
        self._closed = False

    # -------------------------------------------------------------------- lifecycle
    async def start(self, *, wait_ready: bool = True) -> JSClient:
        """Start the Node process; with ``wait_ready=False`` return at once (several clients then load
        their modules in parallel: ``await client.wait_event("ready")`` before the first command)."""
        if self._proc is not None:
            raise RuntimeError("JSClient already started")
        await anyio.to_thread.run_sync(self.package.ensure)
        node = node_executable()
        stack = AsyncExitStack()
        try:
            self._proc = await anyio.open_process(
                [node, str(self.script), *([str(self.flavour)] if self.flavour else [])],
                cwd=str(self.package.directory),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            self._tg = await stack.enter_async_context(anyio.create_task_group())
            self._tg.start_soon(self._read_stdout)
            self._tg.start_soon(self._read_stderr)
            self._stack = stack
        except BaseException:
            if self._proc is not None and self._proc.returncode is None:
                self._proc.kill()
            await stack.aclose()
            raise
        if wait_ready:
            try:
                await self.wait_event("ready", timeout=30)
            except BaseException:
                await self.aclose()
                raise
        return self

    async def aclose(self) -> None:
        """Kill the Node process (abrupt: no close frame, no awareness removal) and clean up.

        Use `await client.exit()` first for a graceful leave.
        """
        if self._closed:
            return
        self._closed = True
        proc, stack = self._proc, self._stack
        self._stack = None
        with anyio.CancelScope(shield=True):
            if proc is not None:
                if proc.returncode is None:
                    try:
                        proc.kill()
                    except ProcessLookupError:
                        pass
                with anyio.move_on_after(10):
                    self.returncode = await proc.wait()
        # the task group must be exited outside any scope opened here (anyio scope nesting)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()
        try:
            if stack is not None:
                await stack.aclose()
        finally:
            if proc is not None:
                with anyio.CancelScope(shield=True):
                    await proc.aclose()
            self._mark_dead("client closed")

    async def __aenter__(self) -> JSClient:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def alive(self) -> bool:
        return self._proc is not None and not self._dead

    @property
    def stderr_tail(self) -> str:
        return "\n".join(list(self.stderr_lines)[-40:])

    # -------------------------------------------------------------------- readers
    async def _read_stdout(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        stream = BufferedByteReceiveStream(self._proc.stdout)
        reason = "stdout closed"
        try:
            while True:
                try:
                    raw = await stream.receive_until(b"\n", MAX_LINE)
                except (anyio.IncompleteRead, anyio.EndOfStream, anyio.ClosedResourceError,
                        anyio.BrokenResourceError):
                    break
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                try:
                    msg = json.loads(line)
                except ValueError:
                    self.stderr_lines.append(f"[non-JSON stdout] {line[:1000]}")
                    continue
                self._dispatch(msg)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # never let a reader bug cancel the test's task
            reason = f"stdout reader failed: {exc!r}"
            log.exception("%s: stdout reader failed", self.label)
        if self._proc is not None:
            with anyio.move_on_after(2):
                self.returncode = await self._proc.wait()
        self._mark_dead(f"{reason} (exit code {self.returncode})")

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        stream = BufferedByteReceiveStream(self._proc.stderr)
        try:
            while True:
                try:
                    raw = await stream.receive_until(b"\n", MAX_LINE)
                except (anyio.IncompleteRead, anyio.EndOfStream, anyio.ClosedResourceError,
                        anyio.BrokenResourceError, anyio.DelimiterNotFound):
                    return
                line = raw.decode("utf-8", "replace").rstrip()
                self.stderr_lines.append(line)
                log.debug("%s stderr: %s", self.label, line)
                if self.echo_stderr:
                    print(f"[{self.label} stderr] {line}", file=sys.stderr)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception:
            log.exception("%s: stderr reader failed", self.label)

    def _dispatch(self, msg: dict[str, Any]) -> None:
        if "event" in msg:
            self.events.append(msg)
            log.debug("%s event: %s", self.label, msg)
            self._notify()
            return
        slot = self._pending.get(msg.get("id"))  # type: ignore[arg-type]
        if slot is None:
            self.stderr_lines.append(f"[unexpected response] {json.dumps(msg)[:1000]}")
            return
        slot[1] = msg
        slot[0].set()

    def _notify(self) -> None:
        ev, self._new_event = self._new_event, anyio.Event()
        ev.set()

    def _mark_dead(self, reason: str) -> None:
        if self._dead:
            return
        self._dead = True
        self._death_reason = reason
        for slot in self._pending.values():
            slot[0].set()
        self._notify()

    def _died(self, what: str) -> JSClientDied:
        return JSClientDied(
            f"{self.label}: Node process gone while {what}: {self._death_reason}\n"
            f"--- stderr tail ---\n{self.stderr_tail}"
        )

    # -------------------------------------------------------------------- core API
    async def call(self, cmd: str, *, timeout: float | None = None, **kwargs: Any) -> dict[str, Any]:
        """Send one command with `kwargs` as its arguments and return the response (without
        `id`/`ok`). `timeout` (seconds, default `default_timeout`) is the Python-side wait; use
        `request` to send an argument that is itself named `timeout`.

        Raises JSClientError if the client answered ok:false, TimeoutError after `timeout`
        seconds, JSClientDied if the process is gone.
        """
        return await self.request(cmd, kwargs, timeout=timeout)

    async def request(self, cmd: str, args: dict[str, Any] | None = None, *,
                      timeout: float | None = None) -> dict[str, Any]:
        """Like `call`, with the command's arguments as a dict."""
        if self._proc is None:
            raise RuntimeError("JSClient not started")
        if self._dead:
            raise self._died(f"sending {cmd!r}")
        self._next_id += 1
        req_id = self._next_id
        slot: list[Any] = [anyio.Event(), None]
        self._pending[req_id] = slot
        timeout = self.default_timeout if timeout is None else timeout
        line = json.dumps({**(args or {}), "id": req_id, "cmd": cmd}, separators=(",", ":")) + "\n"
        try:
            with anyio.fail_after(timeout):
                async with self._write_lock:
                    assert self._proc.stdin is not None
                    try:
                        await self._proc.stdin.send(line.encode("utf-8"))
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
                        raise self._died(f"sending {cmd!r} ({exc!r})") from exc
                await slot[0].wait()
        except TimeoutError:
            raise TimeoutError(
                f"{self.label}: no answer to {cmd!r} within {timeout} s\n"
                f"--- stderr tail ---\n{self.stderr_tail}"
            ) from None
        finally:
            self._pending.pop(req_id, None)
        resp = slot[1]
        if resp is None:
            raise self._died(f"waiting for {cmd!r}")
        if not resp.get("ok"):
            raise JSClientError(cmd, str(resp.get("error")), resp)
        return {k: v for k, v in resp.items() if k not in ("id", "ok")}

    def mark(self) -> int:
        """Index to pass as `since=` to only consider events that arrive from now on."""
        return len(self.events)

    def find_events(self, name: str | None = None,
                    predicate: Callable[[dict[str, Any]], bool] | None = None,
                    since: int = 0) -> list[dict[str, Any]]:
        return [
            e for e in self.events[since:]
            if (name is None or e.get("event") == name) and (predicate is None or predicate(e))
        ]

    async def wait_event(self, name: str | None,
                         predicate: Callable[[dict[str, Any]], bool] | None = None,
                         timeout: float | None = None, *, since: int = 0) -> dict[str, Any]:
        """Return the first event (from index `since`, past ones included) named `name` that
        satisfies `predicate`; wait up to `timeout` seconds for it."""
        timeout = self.default_timeout if timeout is None else timeout
        idx = since
        try:
            with anyio.fail_after(timeout):
                while True:
                    while idx < len(self.events):
                        ev = self.events[idx]
                        idx += 1
                        if (name is None or ev.get("event") == name) and (
                            predicate is None or predicate(ev)
                        ):
                            return ev
                    if self._dead:
                        raise self._died(f"waiting for event {name!r}")
                    await self._new_event.wait()
        except TimeoutError:
            recent = [e for e in self.events[since:] if e.get("event") != "awareness"][-15:]
            raise TimeoutError(
                f"{self.label}: no {name!r} event matching within {timeout} s; recent events: "
                f"{json.dumps(recent)[:3000]}\n--- stderr tail ---\n{self.stderr_tail}"
            ) from None

    async def wait_until(self, check: Callable[[], Awaitable[Any]], timeout: float | None = None,
                         interval: float = 0.05, what: str = "condition") -> Any:
        """Poll the async `check()` until it returns something truthy; return that value."""
        timeout = self.default_timeout if timeout is None else timeout
        last: Any = None
        try:
            with anyio.fail_after(timeout):
                while True:
                    last = await check()
                    if last:
                        return last
                    await anyio.sleep(interval)
        except TimeoutError:
            raise TimeoutError(
                f"{self.label}: {what} not reached within {timeout} s (last: {last!r})"
            ) from None

    # -------------------------------------------------------------------- conveniences
    async def ping(self) -> dict[str, Any]:
        """{"pong": true, "node": "v20…", "versions": {"yjs": …, "y-websocket": …, …}}"""
        return await self.call("ping")

    async def connect(self, url: str, room: str, token: str | None = None, *,
                      name: str | None = None, color: str | None = None,
                      params: dict[str, str] | None = None, **opts: Any) -> dict[str, Any]:
        """Create the WebsocketProvider (serverUrl `url`, room name `room`, `?token=`).

        `opts`: connect (bool, default True), maxBackoffTime (ms), disableBc (default True),
        awarenessEvents (default True), awareness (initial local state, replaces name/color),
        textName (the Y.Text the text commands act on, default "code").
        Returns {"clientId", "url"} (url = what the provider opens).
        """
        args: dict[str, Any] = {"url": url, "room": room, **opts}
        if token is not None:
            args["token"] = token
        if name is not None:
            args["name"] = name
        if color is not None:
            args["color"] = color
        if params:
            args["params"] = params
        return await self.call("connect", **args)

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until the provider is synced (it received a sync step 2)."""
        timeout = self.default_timeout if timeout is None else timeout
        await self._call_js_timeout("waitSynced", timeout, {})

    async def _call_js_timeout(self, cmd: str, timeout: float,
                               args: dict[str, Any]) -> dict[str, Any]:
        # the JS side enforces `timeout` (ms) and answers with a useful error; Python waits longer
        return await self.request(cmd, {**args, "timeout": int(timeout * 1000)},
                                  timeout=timeout + 5)

    async def status(self) -> dict[str, Any]:
        """connected, connecting, synced, status, shouldConnect, url, unsuccessfulReconnects,
        syncedCount, closes, lastClose, terminalClose, permanentlyClosed, errors, permissionDenied"""
        return await self.call("status")

    async def client_id(self) -> int:
        return int((await self.call("clientId"))["clientId"])

    async def reconnect(self) -> None:
        await self.call("reconnect")

    async def disconnect(self) -> None:
        await self.call("disconnect")

    async def terminate(self) -> bool:
        """Drop the TCP connection without a close frame (the provider reconnects by itself)."""
        return bool((await self.call("terminate"))["terminated"])

    async def destroy(self) -> None:
        """provider.destroy() + fresh Y.Doc: graceful leave; `connect` may be called again."""
        await self.call("destroy")

    async def exit(self) -> None:
        """Graceful leave, then the Node process exits (aclose still needed/harmless)."""
        try:
            await self.call("exit")
        except JSClientDied:
            pass
        if self._proc is not None:
            with anyio.move_on_after(5):
                self.returncode = await self._proc.wait()

    async def insert(self, index: int, text: str) -> int:
        """Insert into Y.Text 'code' at UTF-16 `index` (-1 = end); returns the new length."""
        return int((await self.call("insert", index=index, text=text))["length"])

    async def append(self, text: str) -> int:
        return await self.insert(-1, text)

    async def delete(self, index: int, length: int) -> int:
        return int((await self.call("delete", index=index, length=length))["length"])

    async def set_text(self, text: str) -> int:
        """Replace the whole text in one transaction (delete all + insert)."""
        return int((await self.call("setText", text=text))["length"])

    async def type_chars(self, text: str, interval_ms: float = 0, timeout: float | None = None) -> int:
        """Append `text` one character (code point) per transaction, `interval_ms` apart."""
        if timeout is None:
            timeout = self.default_timeout + len(text) * interval_ms / 1000.0 * 1.5
        return int((await self.call("typeChars", text=text, intervalMs=interval_ms,
                                    timeout=timeout))["typed"])

    async def get_text(self) -> str:
        return str((await self.call("getText"))["text"])

    async def wait_text(self, *, equals: str | None = None, contains: str | None = None,
                        timeout: float | None = None) -> str:
        """Wait until the text equals / contains the given string; returns the text."""
        timeout = self.default_timeout if timeout is None else timeout
        args: dict[str, Any] = {}
        if equals is not None:
            args["equals"] = equals
        if contains is not None:
            args["contains"] = contains
        return str((await self._call_js_timeout("waitText", timeout, args))["text"])

    async def get_meta(self) -> dict[str, Any]:
        return dict((await self.call("getMeta"))["meta"])

    async def set_meta(self, key: str, value: Any) -> None:
        await self.call("setMeta", key=key, value=value)

    async def get_runs(self) -> list[Any]:
        return list((await self.call("getRuns"))["runs"])

    async def transact(self, *ops: list[Any]) -> dict[str, Any]:
        """Several document changes in one transaction (one update); see ``transact`` in client.mjs."""
        return await self.call("transact", ops=[list(op) for op in ops])

    async def put_content(self, op: str, *args: Any) -> str:
        """Content beyond code/meta/runs, in one transaction (ops and tagged values: client.mjs
        ``putContent``, content.mjs ``revive``); returns what this client now reads (``read_content``)."""
        return str((await self.call("putContent", op=op, args=list(args)))["content"])

    async def read_content(self) -> str:
        """The roots m, a, t, x as content.mjs ``readContent`` shows them (key order, -0, BigInt… told apart)."""
        return str((await self.call("readContent"))["content"])

    async def state_vector(self) -> bytes:
        return base64.b64decode((await self.call("stateVector"))["stateVector"])

    async def encode_state(self) -> bytes:
        """Y.encodeStateAsUpdate(doc)"""
        return base64.b64decode((await self.call("encodeState"))["update"])

    async def apply_update(self, update: bytes) -> None:
        await self.call("applyUpdate", update=base64.b64encode(update).decode("ascii"))

    async def set_awareness(self, state: dict[str, Any] | None) -> None:
        """awareness.setLocalState(state); None = leave (removal is broadcast)."""
        await self.call("setAwareness", state=state)

    async def set_awareness_field(self, field: str, value: Any) -> None:
        await self.call("setAwarenessField", field=field, value=value)

    async def awareness_states(self) -> AwarenessSnapshot:
        r = await self.call("awarenessStates")
        return AwarenessSnapshot(
            client_id=int(r["clientId"]),
            states={int(k): v for k, v in r["states"].items()},
            raw_count=int(r["rawCount"]),
            all={int(k): v for k, v in r["all"].items()},
        )

    async def wait_awareness(self, predicate: Callable[[AwarenessSnapshot], bool],
                             timeout: float | None = None) -> AwarenessSnapshot:
        """Wait until predicate(awareness_states()) holds (re-checked on every awareness event)."""
        timeout = self.default_timeout if timeout is None else timeout
        last: AwarenessSnapshot | None = None
        try:
            with anyio.fail_after(timeout):
                while True:
                    since = self.mark()
                    last = await self.awareness_states()
                    if predicate(last):
                        return last
                    # wake on the next awareness change (or re-poll every 0.5 s)
                    with anyio.move_on_after(0.5):
                        await self.wait_event("awareness", since=since, timeout=3600)
        except TimeoutError:
            raise TimeoutError(
                f"{self.label}: awareness condition not met within {timeout} s; last: {last}"
            ) from None

    async def wait_close(self, code: int | None = None, timeout: float | None = None,
                         *, since: int = 0) -> dict[str, Any]:
        """Wait for a server-initiated `connection-close` event (optionally with `code`):
        {"code", "reason", "wasClean", "local": false, "permanent", "t"}."""
        return await self.wait_event(
            "connection-close",
            lambda e: not e.get("local") and (code is None or e.get("code") == code),
            timeout,
            since=since,
        )


@asynccontextmanager
async def js_client(url: str, room: str, token: str | None = None, *, name: str | None = None,
                    color: str | None = None, wait_synced: bool = True,
                    timeout: float = 15.0, label: str | None = None,
                    package: NodePackage | None = None, flavour: Path | None = None,
                    **connect_opts: Any) -> AsyncIterator[JSClient]:
    """Start a JS client, connect it to `url` + '/' + `room` + '?token=…', optionally wait for
    the first sync, yield it, and kill the process on exit.

    `url` is the provider's serverUrl, e.g. "ws://127.0.0.1:PORT/ws/sessions".
    With wait_synced=False (e.g. for refused connections) it returns right after `connect`.
    """
    client = JSClient(default_timeout=timeout, label=label or (f"js:{name}" if name else None),
                      package=package, flavour=flavour)
    async with client:
        await client.connect(url, room, token, name=name, color=color, **connect_opts)
        if wait_synced:
            await client.wait_synced(timeout)
        yield client
