"""What the PostgreSQL writer runs inside one transaction (docs/design/storage.md, "PostgreSQL").

Appends (updates without session changes, events) are grouped: however many rooms queued one
while the previous transaction was in flight, their sequence numbers are taken with one
``UPDATE sessions … FROM unnest(…) RETURNING`` per document and their rows written with one
multi-row ``INSERT … SELECT FROM unnest(…)`` per table. Those statements cannot fail for one
operation alone (a gone session or a full quota just returns no row), so the group needs no
savepoint per operation. Every other operation runs on its own under a SAVEPOINT, as in the SQLite
store: one that fails is rolled back alone. Grouped appends are written before any such operation
runs, so the batch has the effect of running its operations one after another in queue order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from ..lifetimes import Lifetimes
from .base import (
    MAIN_DOC,
    SESSION_FIELDS,
    EventRecord,
    SessionChange,
    SessionGone,
    StorageQuotaExceeded,
    UpdateRecord,
)
from .pg_schema import Conn, text
from .rows import DOCS

EXPIRY_COLUMNS = "id, status, keep_until, updated_at, ended_at, expires_at"  # what Lifetimes.stale reads


@dataclass
class Op:
    """One queued write: either grouped (``updates`` of one session, or ``events``) or ``run`` alone."""

    run: Callable[[Conn], Awaitable[Any]] | None = None
    updates: Sequence[UpdateRecord] = ()
    events: Sequence[EventRecord] = ()
    doc: str = MAIN_DOC
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Any = None
    error: BaseException | None = None

    @property
    def grouped(self) -> bool:
        return self.run is None


@dataclass(frozen=True)
class Rules:
    lifetimes: Lifetimes
    quota: int  # bytes of log + snapshots per session (0 = unlimited)


async def run_batch(c: Conn, ops: Sequence[Op], rules: Rules) -> None:
    """Every operation of the batch, in queue order, inside the caller's transaction."""
    group: list[Op] = []
    for op in ops:
        if op.grouped:
            group.append(op)
            continue
        if group:
            await write_group(c, group, rules)
            group = []
        assert op.run is not None
        try:
            async with c.transaction():  # a SAVEPOINT: this operation alone is rolled back if it fails
                op.result = await op.run(c)
        except Exception as exc:  # noqa: BLE001 - one failing operation must not fail its batch
            op.error = exc  # (had the connection failed, the next statement fails the batch)
    if group:
        await write_group(c, group, rules)


async def write_group(c: Conn, ops: Sequence[Op], rules: Rules) -> None:
    """Grouped appends: sequence numbers per document, then one insert per table."""
    now = time.time()
    for doc in DOCS:
        appends = [op for op in ops if op.updates and op.doc == doc]
        if appends:
            await claim(c, appends, doc, now, rules)
    for doc, (table, _, _) in DOCS.items():
        rows = [(u, seq) for op in ops if op.updates and op.doc == doc and op.error is None
                for u, seq in zip(op.updates, op.result, strict=True)]
        if rows:
            await c.execute(
                f"INSERT INTO {table} (session_id, seq, ts, conn_id, role, name, data) SELECT * FROM "
                "unnest($1::text[], $2::bigint[], $3::float8[], $4::text[], $5::text[], $6::text[], $7::bytea[])",
                [u.session_id for u, _ in rows], [s for _, s in rows], [now] * len(rows),
                [text(u.conn_id) for u, _ in rows], [text(u.role) for u, _ in rows],
                [text(u.name) for u, _ in rows], [u.data for u, _ in rows],
            )
    events = [e for op in ops for e in op.events]
    if events:
        await insert_events(c, events)


async def claim(c: Conn, ops: Sequence[Op], doc: str, now: float, rules: Rules) -> None:
    """Take the sequence numbers of ``ops`` (each one session's updates to ``doc``): ``op.result``
    is the list of numbers, or ``op.error`` says why not (``SessionGone``, ``StorageQuotaExceeded``).

    All sessions at once; only a session whose ops together would pass the quota is retried op by
    op, so that the ones that fit still commit."""
    totals: dict[str, list[int]] = {}
    for op in ops:
        t = totals.setdefault(op.updates[0].session_id, [0, 0])
        t[0] += len(op.updates)
        t[1] += sum(len(u.data) for u in op.updates)
    last = await take(c, doc, {sid: (n, size) for sid, (n, size) in totals.items()}, now, rules)
    for sid in [s for s in totals if s not in last]:  # gone, or over the quota together
        for op in (op for op in ops if op.updates[0].session_id == sid):
            size = sum(len(u.data) for u in op.updates)
            one = await take(c, doc, {sid: (len(op.updates), size)}, now, rules)
            if sid in one:
                op.result = list(range(one[sid] - len(op.updates) + 1, one[sid] + 1))
                continue
            stored = await c.fetchval("SELECT stored_bytes FROM sessions WHERE id = $1", sid)
            op.error = SessionGone(sid) if stored is None else StorageQuotaExceeded(
                f"session {sid} would store {stored + size} bytes, over {rules.quota}")
    following = {sid: seq - totals[sid][0] + 1 for sid, seq in last.items()}  # the first number of each
    for op in ops:
        sid = op.updates[0].session_id
        if sid in following:
            first = following[sid]
            following[sid] = first + len(op.updates)
            op.result = list(range(first, first + len(op.updates)))


async def take(c: Conn, doc: str, counts: dict[str, tuple[int, int]], now: float, rules: Rules) -> dict[str, int]:
    """Advance each session's counter by (rows, bytes) under its row lock (sequence order = commit
    order) unless that passes the quota; returns the new counter of each session advanced."""
    counter = DOCS[doc][2]
    stamp = now if doc == MAIN_DOC else None  # notes edits leave updatedAt be: others would see them happen
    rows = await c.fetch(
        f"UPDATE sessions s SET {counter} = s.{counter} + v.n, updated_at = coalesce($4, s.updated_at), "
        "stored_bytes = s.stored_bytes + v.size "
        "FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS v(id, n, size) "
        "WHERE s.id = v.id AND ($5::bigint = 0 OR s.stored_bytes + v.size <= $5) "
        f"RETURNING s.{counter}, s.id, s.status, s.keep_until, s.updated_at, s.ended_at, s.expires_at",
        list(counts), [n for n, _ in counts.values()], [size for _, size in counts.values()], stamp, rules.quota,
    )
    if stamp is not None:
        await write_expiry(c, rules.lifetimes.stale(tuple(r)[1:] for r in rows))
    return {r["id"]: r[counter] for r in rows}


async def write_expiry(c: Conn, stale: list[tuple[float, str]]) -> None:
    if stale:
        await c.execute("UPDATE sessions s SET expires_at = v.e FROM unnest($1::float8[], $2::text[]) AS v(e, id) "
                        "WHERE s.id = v.id", [e for e, _ in stale], [sid for _, sid in stale])


async def refresh_expiry(c: Conn, lifetimes: Lifetimes, session_id: str | None = None) -> None:
    """Recompute ``expires_at`` of one session (or of all) from its row, by the one rule."""
    where, args = ("WHERE id = $1", (session_id,)) if session_id else ("", ())
    rows = await c.fetch(f"SELECT {EXPIRY_COLUMNS} FROM sessions {where}", *args)
    await write_expiry(c, lifetimes.stale(tuple(r) for r in rows))


async def insert_events(c: Conn, events: Sequence[EventRecord]) -> None:
    """Only for sessions that still exist: a "left" event racing a DELETE leaves no orphan row. The
    session rows are locked first, so a session's event ids follow commit order across processes
    (the history is paged by id)."""
    await c.execute(
        "WITH live AS (SELECT id FROM sessions WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE) "
        "INSERT INTO events (session_id, ts, type, data) SELECT e.sid, e.ts, e.type, e.data "
        "FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[]) WITH ORDINALITY AS e(sid, ts, type, data, n) "
        "WHERE e.sid IN (SELECT id FROM live) ORDER BY e.n",
        [e.session_id for e in events], [e.ts or time.time() for e in events], [text(e.type) for e in events],
        [json.dumps(e.data, separators=(",", ":")) for e in events],
    )


async def apply_change(c: Conn, change: SessionChange, lifetimes: Lifetimes) -> bool:
    """Row fields + events of one change inside the current transaction; False if the session is gone."""
    unknown = set(change.fields) - SESSION_FIELDS
    if unknown:
        raise ValueError(f"cannot update {sorted(unknown)}")
    if change.fields:
        assignments = ", ".join(f"{k} = ${i}" for i, k in enumerate(change.fields, start=2))
        row = await c.fetchrow(f"UPDATE sessions SET {assignments} WHERE id = $1 RETURNING {EXPIRY_COLUMNS}",
                               change.session_id, *map(text, change.fields.values()))
        if row is None:
            return False
        await write_expiry(c, lifetimes.stale([tuple(row)]))
    elif await c.fetchval("SELECT 1 FROM sessions WHERE id = $1 FOR NO KEY UPDATE", change.session_id) is None:
        return False
    if change.events:
        await insert_events(c, change.events)
    return True


async def append_with_changes(c: Conn, updates: Sequence[UpdateRecord], doc: str,
                              changes: Sequence[SessionChange], rules: Rules) -> list[int]:
    """An append that is not grouped (session changes commit with it, or it spans several sessions),
    under the caller's SAVEPOINT: all or nothing."""
    per_session: dict[str, Op] = {}
    for u in updates:
        op = per_session.setdefault(u.session_id, Op(doc=doc, updates=[]))
        op.updates.append(u)  # type: ignore[attr-defined]  # built here as a list
    await write_group(c, list(per_session.values()), rules)
    for op in per_session.values():
        if op.error is not None:
            raise op.error
    for change in changes:
        if not await apply_change(c, change, rules.lifetimes):
            raise SessionGone(change.session_id)
    taken = {sid: iter(op.result) for sid, op in per_session.items()}
    return [next(taken[u.session_id]) for u in updates]
