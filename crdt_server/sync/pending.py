"""What the CRDT library holds back: structs and deletes that wait for IDs nobody has sent yet.

An update can arrive before one it depends on (offline edits, reconnect races). Yjs and Yrs keep its
waiting part aside until the dependency arrives; Yjs's ``encodeStateAsUpdate`` includes that part, but
pycrdt's ``Doc.get_update()`` omits it (and pycrdt binds no API that says anything is waiting). Without
this module a newcomer would never receive it, and a snapshot (hence a restart) would lose it: the
author would keep "first second" and everyone else "first " once the dependency arrives.

``HeldBack`` keeps the waiting part as one update (the structs beyond the document's state vector
and the deletes of IDs beyond it), computed with pycrdt's own ``get_update(update, state_vector)``.
It is checked only after applying an update that may wait (the guard's index says so) or while
something is held; otherwise the hot path pays one attribute test. See docs/design/sync.md,
"Pending structs".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycrdt import Doc, get_update, merge_updates

from .protocol import ProtocolError, Reader, is_crdt_failure
from .updates import decode, encode_delete_set


def decode_state_vector(sv: bytes) -> dict[int, int]:
    """A v1 state vector as ``{client: next clock}`` (``ProtocolError`` if it does not decode)."""
    r = Reader(sv)
    count = r.var_uint()
    if count > len(sv):
        raise ProtocolError("bad state vector")
    out: dict[int, int] = {}
    for _ in range(count):
        client = r.var_uint()
        out[client] = r.var_uint()
    return out


def waiting_part(update: bytes, sv_bytes: bytes, sv: dict[int, int]) -> bytes | None:
    """The part of ``update`` a document with state vector ``sv`` does not hold integrated: its structs
    beyond ``sv`` and its deletes of IDs beyond it; None if there is none."""
    rest = get_update(update, sv_bytes)  # the structs beyond sv, and the update's whole delete set
    r = Reader(rest)
    has_structs = r.var_uint() != 0
    if not has_structs and len(rest) <= 2:  # b"\x00\x00": nothing at all (the common case)
        return None
    offset = 1
    if has_structs:  # where the delete set starts
        offset = decode(rest).delete_set_offset
        r = Reader(rest, offset)
    kept: list[tuple[int, int, int]] = []
    for _ in range(r.var_uint()):
        client = r.var_uint()
        known = sv.get(client, 0)
        for _ in range(r.var_uint()):
            clock, length = r.var_uint(), r.var_uint()
            if clock + length > known:
                start = max(clock, known)
                kept.append((client, start, clock + length - start))
    if not has_structs and not kept:
        return None
    return rest[:offset] + encode_delete_set(kept)


class HeldBack:
    """The waiting part of a live document (``update``), kept in step as updates are applied."""

    __slots__ = ("update", "structs")

    def __init__(self, update: bytes | None = None) -> None:
        self.update = update  # None: nothing waits
        self.structs = update is not None and update[0] != 0  # some structs wait (not only deletes)

    def settle(self, doc: Doc[Any], update: bytes | None, may_wait: bool) -> bool:
        """After ``update`` was applied to ``doc``: keep what still waits. True if part of ``update``
        itself waits. A no-op unless ``may_wait`` or something is already held."""
        if self.update is None and not may_wait:
            return False
        sv_bytes = doc.get_state()
        sv = decode_state_vector(sv_bytes)
        parts = []
        own = None
        if self.update is not None:
            held = waiting_part(self.update, sv_bytes, sv)
            if held is not None:
                parts.append(held)
        if update is not None:
            own = waiting_part(update, sv_bytes, sv)
            if own is not None:
                parts.append(own)
        self._set(parts)
        return own is not None

    def _set(self, parts: list[bytes]) -> None:
        self.update = None if not parts else parts[0] if len(parts) == 1 else merge_updates(*parts)
        self.structs = self.update is not None and self.update[0] != 0

    def full_state(self, doc: Doc[Any]) -> bytes:
        """The document as a Yjs peer would encode it: its integrated state and what waits."""
        state = doc.get_update()
        return state if self.update is None else merge_updates(state, self.update)

    @classmethod
    def of_stored(cls, doc: Doc[Any], pieces: Iterable[bytes]) -> HeldBack:
        """What of the stored ``pieces`` (a snapshot, then the log rows after it) a document rebuilt
        from them holds back."""
        sv_bytes = doc.get_state()
        sv = decode_state_vector(sv_bytes)
        parts = []
        for piece in pieces:
            try:
                part = waiting_part(piece, sv_bytes, sv)
            except BaseException as exc:  # a row the rebuild could apply but not re-encode: skip it
                if not is_crdt_failure(exc):
                    raise
                continue
            if part is not None:
                parts.append(part)
        held = cls()
        held._set(parts)
        return held
