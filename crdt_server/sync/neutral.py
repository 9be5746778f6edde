"""Content the server would not keep exactly, neutralised instead of refused with a close.

Why: the server serves newcomers, snapshots and reloads from its CRDT library's encoding, which does not
give back some content a Yjs client can send (``sync/exact.py``). Closing the author's socket (4415, as
before) is final only for y-websocket 3.1 and later; 1.x, 2.x, 3.0 and the next major reconnect, re-send
the same content in their sync step 2 and are closed again, forever, losing everything typed meanwhile.
So such a struct is kept, but as *deleted* content: the same ID, origin, right origin, parent and map
key, its content replaced by a ``ContentDeleted`` of the same length, and its IDs added to the delete
set. Every reader then agrees: the log, the other clients and newcomers only ever get the deleted item
(it never held the content there); the author, whose copy holds the content, applies the delete set
(in its confirmation, ``sync/confirm.py``) and drops it too. Nothing waits on a missing clock, so the
author's later edits integrate. Yjs and Yrs both encode a deleted, garbage-collected item this way,
and both read it back the same. See docs/design/sync-integrity.md, "Content the server does not keep".
"""

from __future__ import annotations

from collections.abc import Sequence

from .pending import IdRanges
from .protocol import write_var_uint
from .updates import DELETED, Inexact, Update, encode_delete_set

MAX_REASON = 200  # characters of the notice sent to the author


def neutralise(update: bytes, decoded: Update) -> bytes:
    """``update`` with each of ``decoded.inexact`` rewritten as deleted content and deleted.

    A struct's header (info flags, origin, right origin, parent, map key) is copied as it came, so the
    item integrates where the author's did; its content becomes ``varUint(length)`` under ref 1."""
    out = bytearray()
    pos = 0
    deleted = IdRanges()
    deleted.add_all(decoded.deletes)
    for bad in decoded.inexact:
        s = decoded.structs[bad.index]
        out += update[pos:bad.info_at]
        out.append((update[bad.info_at] & 0xE0) | DELETED)
        out += update[bad.info_at + 1:bad.content_at]
        out += write_var_uint(s.length)
        pos = bad.end
        deleted.add(s.client, s.clock, s.end)
    out += update[pos:decoded.delete_set_offset]
    out += encode_delete_set(deleted.ranges())
    return bytes(out)


def notice(neutralised: Sequence[Inexact]) -> str:
    """Why the author's content was deleted, for the y-protocols permission-denied message."""
    reasons = sorted({bad.reason for bad in neutralised})
    text = (f"{len(neutralised)} item(s) deleted: the server cannot keep exactly {'; '.join(reasons)} "
            "(docs/websocket-protocol.md, \"Content the server does not keep\")")
    return text[:MAX_REASON]
