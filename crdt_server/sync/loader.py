"""Rebuilding a session's document from storage: the newest snapshot, then the log after it.

Shared by the registry (loading a room), the service (reading a session nobody has loaded) and the
room itself (recovering after an update the CRDT library refused half-way). An update that makes the
library fail may leave the document half-integrated, and a half-integrated document can encode a
state that makes every client that loads it fail too; so a failed row is never replayed around: the
rebuild starts again without it.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import anyio
from pycrdt import Doc

from ..storage import Store, UpdateRecord
from ..storage.base import MAIN_DOC, small_load
from .pending import HeldBack
from .protocol import is_crdt_failure

log = logging.getLogger("crdt_server.sync.server")

MAX_RESTARTS = 32  # rebuilds from the start per load; past it a failing row is only skipped


class Loaded(NamedTuple):
    doc: Doc[Any]
    last_seq: int  # the last stored sequence number
    snapshot_seq: int  # the sequence number of the snapshot it started from
    held: HeldBack  # what of the stored updates the CRDT holds back (waiting for a dependency)
    small: bool = False  # small enough to handle on the event loop (``storage.base.small_load``)


async def load_document(
    store: Store, session_id: str, doc: str = MAIN_DOC, skip: set[int] | None = None,
) -> Loaded:
    """Rebuild a session's document: newest snapshot + the updates after it, never re-seeded from text.

    ``doc`` names which of the session's documents (the shared one, or the notes). Rows in ``skip``
    are left out, and rows found to fail are added to it. The replay runs in a worker thread (a big log takes most of
    a second, which would stall every other session on the event loop) unless the document is small.
    """
    snapshot, tail, base = await store.load(session_id, doc=doc)
    bad = skip if skip is not None else set()

    def load() -> tuple[Doc[Any], HeldBack]:
        ydoc = rebuild(session_id, snapshot, tail, bad)
        pieces = ([snapshot] if snapshot is not None else []) + [r.data for r in tail if r.seq not in bad]
        return ydoc, HeldBack.of_stored(ydoc, pieces)

    small = small_load(len(tail), sum(len(r.data) for r in tail) + len(snapshot or b""))
    ydoc, held = load() if small else await anyio.to_thread.run_sync(load)
    last = tail[-1].seq if tail else base
    return Loaded(ydoc, last, base, held, small)


def rebuild(session_id: str, snapshot: bytes | None, tail: list[UpdateRecord], bad: set[int] | None = None) -> Doc[Any]:
    """A document from a snapshot and rows, in the calling thread (playback uses it too), leaving out
    the rows in ``bad`` and adding the ones that fail to it.

    One transaction per update, not one for all: the same total time, but the GIL is free between
    updates (one big transaction's commit holds it for the whole replay, stalling the event loop)."""
    bad = set() if bad is None else bad
    for attempt in range(MAX_RESTARTS + 1):
        doc: Doc[Any] = Doc()
        if snapshot is not None:
            doc.apply_update(snapshot)
        failed = None
        for record in tail:
            if record.seq in bad:
                continue
            try:
                doc.apply_update(record.data)
            except BaseException as exc:
                if not is_crdt_failure(exc):
                    raise
                log.warning("session %s: skipping unreadable update %d: %r", session_id, record.seq, exc)
                bad.add(record.seq)
                if attempt < MAX_RESTARTS:
                    failed = record.seq
                    break
        if failed is None:
            return doc
    return doc
