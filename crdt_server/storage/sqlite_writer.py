"""The SQLite store's one write connection: group commit, in its own thread or inline on the event loop.

Why two ways: the sync layer awaits every append before it broadcasts (write-ahead), so commits are
on the latency path. The writer thread takes *everything* queued while the previous transaction was in
flight and commits it in one transaction, so the event loop never waits on the disk. But each hop to
that thread and back (a queue, a futex wake-up, the GIL handed over twice, a self-pipe write to wake the
loop) costs more CPU than a small commit itself, and on a busy machine each hop waits for a time slice:
the typing benchmark's p50 was 10-20 ms under other load (bench/RESULTS.md, "Profile"). So the small,
frequent writes (``inline=True``: a keystroke's update, a join event) are committed on the loop thread:
the first of a turn of the event loop at once, in its caller (``commit_now``), the others of that turn
collected and committed together right after it, as one transaction. That is only done
when a commit never waits for the disk (``--durability normal``: WAL without fsync per commit; the WAL
checkpoints, which fsync, run in their own thread) and when the writer thread is not in a transaction;
anything else goes to the thread; so does a batch whose ``BEGIN`` would have to wait for a lock another
process holds (a backup, a shell): the loop never waits on a lock. Each operation runs under its own SAVEPOINT so one failing operation
does not roll back its neighbours in the batch (an operation alone in its transaction needs none).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..primitives import Event

log = logging.getLogger("crdt_server.storage.sqlite")
INLINE_BYTES = 64 * 1024  # appends up to this size may commit inline: a paste beyond goes to the thread


@dataclass
class Op:
    fn: Callable[[sqlite3.Connection], Any]
    done: Event = field(default_factory=Event)  # the lean kind (crdt_server/primitives.py): one per keystroke
    result: Any = None
    error: BaseException | None = None


def _wake(ops: list[Op]) -> None:
    for op in ops:
        op.done.set()


class Writer:
    """The write connection and what commits through it (see the module docstring)."""

    def __init__(self, durability: str) -> None:
        self.conn: sqlite3.Connection | None = None
        self.inline_allowed = durability != "full"  # a commit that fsyncs never runs on the event loop
        # The newest failed write's cause, until a later commit succeeds: /health reports it.
        self.write_error: str | None = None
        self.commits = 0  # transactions committed (for benchmarks, tests and the checkpointer)
        self.observe_commit: Callable[[float], None] = lambda seconds: None  # metrics; any thread
        self._queue: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._busy = threading.Lock()  # held for each transaction, whichever thread runs it
        self._inline: list[Op] = []  # collected during this turn of the event loop
        self._inline_scheduled = False
        self._busy_timeout_ms = 30_000  # the connection's own, read at start

    def start(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop) -> None:
        self.conn, self._loop = conn, loop
        self._busy_timeout_ms = int(conn.execute("PRAGMA busy_timeout").fetchone()[0])
        conn.execute("PRAGMA busy_timeout = 0")  # waits only in ``_begin_waiting`` (the thread's)
        self._thread = threading.Thread(target=self._run_thread, name="sqlite-writer", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def submit(self, fn: Callable[[sqlite3.Connection], Any], *, inline: bool = False) -> Op:
        """Queue an operation; its ``done`` is set once its transaction committed (or failed)."""
        op = Op(fn)
        if inline and self.inline_allowed and self._loop is not None:
            self._inline.append(op)
            if not self._inline_scheduled:
                self._inline_scheduled = True
                self._loop.call_soon(self.commit_inline)
        else:
            self._queue.put(op)
        return op

    def commit_now(self, fn: Callable[[sqlite3.Connection], Any]) -> Op | None:
        """Commit ``fn`` alone, here and now, if it is the first inline write of this turn of the event
        loop: the transaction ``submit(fn, inline=True)`` would make, without the event, the callback
        and the turns of the loop its caller would wait through (a keystroke's append). The inline
        writes that follow in the same turn are collected and committed together, as before, so group
        commit still works under load. None (nothing done) when it cannot: the caller submits it."""
        if not self.inline_allowed or self._loop is None or self._inline_scheduled:
            return None
        op = Op(fn)
        if not self._commit_here([op]):
            return None
        op.done.set()
        self._inline_scheduled = True  # the rest of this turn's inline writes: collected, then committed
        self._loop.call_soon(self.commit_inline)
        return op

    def commit_inline(self) -> None:
        """Commit what was collected this turn, here, unless the writer thread is in a transaction
        (then it goes to the thread, behind what is queued there)."""
        self._inline_scheduled = False
        ops, self._inline = self._inline, []
        if not ops:
            return
        if not self._commit_here(ops):
            return self._hand_over(ops)
        _wake(ops)

    def _commit_here(self, ops: list[Op]) -> bool:
        """Commit ``ops`` in one transaction on the calling (event loop) thread; False, with nothing
        done, if the writer thread is in a transaction or another process holds the write lock."""
        if not self._busy.acquire(blocking=False):
            return False
        try:
            if not self._begin_now():
                return False
            self._commit(ops, begun=True)
        finally:
            self._busy.release()
        return True

    def _hand_over(self, ops: list[Op]) -> None:
        for op in ops:
            self._queue.put(op)

    def _begin_now(self) -> bool:
        """``BEGIN IMMEDIATE`` without waiting for a lock (the event loop never waits on one: the
        connection's busy timeout is 0 but while the thread begins); False if the write lock is held
        elsewhere (a backup, an administrator's shell), or on any error."""
        conn = self.conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error:
            return False
        return True

    def _begin_waiting(self) -> None:
        """``BEGIN IMMEDIATE`` in the thread, waiting up to the connection's busy timeout for the lock."""
        conn = self.conn
        assert conn is not None
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        try:
            conn.execute("BEGIN IMMEDIATE")
        finally:
            conn.execute("PRAGMA busy_timeout = 0")

    def stop(self) -> None:
        """Commit everything queued, then end the thread (blocking: call it in a worker thread)."""
        if self._thread is not None:
            self._queue.put(None)  # after everything already queued
            self._thread.join()

    def _run_thread(self) -> None:
        """Take everything queued, commit it in one transaction, wake the waiters; repeat."""
        assert self._loop is not None
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                break
            ops = [first]
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                ops.append(nxt)
            with self._busy:
                self._commit(ops)
            try:
                self._loop.call_soon_threadsafe(_wake, ops)
            except RuntimeError:  # the event loop is gone (interpreter shutdown): nobody waits
                return

    def _commit(self, ops: list[Op], *, begun: bool = False) -> None:
        try:
            committed = self._run_batch(ops, begun)
            failed = [op.error for op in ops if isinstance(op.error, (sqlite3.Error, OSError))]
            if failed:
                self.write_error = repr(failed[-1])
            elif committed:  # only a commit shows the storage works again (a refused operation does not)
                self.write_error = None
        except BaseException as exc:  # noqa: BLE001 - the whole transaction failed; logged with its cause
            log.error("storage commit of %d operations failed: %r", len(ops), exc)
            self.write_error = repr(exc)
            for op in ops:
                op.error = op.error or exc

    def _run_batch(self, ops: list[Op], begun: bool = False) -> bool:
        """Run the operations in one transaction; True if it committed (not when a lone one failed)."""
        conn = self.conn
        assert conn is not None
        started = time.perf_counter()
        if not begun:
            self._begin_waiting()
        try:
            if len(ops) == 1:  # alone in its transaction, which stands for its savepoint (2 statements less)
                _run_alone(conn, ops[0])
            else:
                for op in ops:
                    conn.execute("SAVEPOINT op")
                    try:
                        op.result = op.fn(conn)
                        conn.execute("RELEASE op")
                    except Exception as exc:  # noqa: BLE001 - one failing operation must not fail its batch
                        if not conn.in_transaction:  # SQLite rolled everything back (disk full, I/O error)
                            raise
                        conn.execute("ROLLBACK TO op")
                        conn.execute("RELEASE op")
                        op.error = exc
            if not conn.in_transaction:  # the only operation failed and was rolled back
                return False
            conn.execute("COMMIT")
            self.commits += 1
            self.observe_commit(time.perf_counter() - started)
            return True
        except BaseException as exc:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error as rollback_error:  # never hide the real cause behind this one
                    log.warning("rollback after %r failed: %r", exc, rollback_error)
            raise


def _run_alone(conn: sqlite3.Connection, op: Op) -> None:
    """One operation in the open transaction: on its failure the transaction is rolled back (what
    its savepoint would do in a batch) and the error is the operation's, not the batch's."""
    try:
        op.result = op.fn(conn)
    except Exception as exc:  # noqa: BLE001 - the operation's error, reported to its caller
        if not conn.in_transaction:  # SQLite rolled back already (disk full, I/O error): a failed commit
            raise
        conn.execute("ROLLBACK")
        op.error = exc
        return
    if not conn.in_transaction:  # it returned, but SQLite had rolled its writes back (an error it caught):
        # what ``RELEASE`` of its savepoint would report in a batch, never a silent success
        raise sqlite3.OperationalError("the transaction was rolled back during the operation")
