"""Confirming a client's updates back to it, at a few bytes whatever their size.

The next y-websocket (4.x, Yjs 14) shows its sync status green only once every local update came
back from the server as content IDs (``Y.createContentIdsFromUpdate`` of a received sync step 2 or
update: the ID ranges of all structs except Skip, GC structs included, and the delete set). The
reference server echoes each update in full to its author. Here the author gets an update of GC
structs covering exactly the IDs of its update(s) plus their delete set: the same content IDs, about
a dozen bytes for a keystroke or a 100 kB paste alike. Yjs 13 and Yrs ignore struct IDs they already
have and deletes of deleted IDs, so current clients see no change.

A GC struct must never reach a client that holds the same IDs *pending* (waiting for a dependency):
Yjs merges its pending structs with the GC one and may keep the GC, losing the content. An author
holds pending only what it lacks a dependency for; if the server integrated the update, the author
was sent that dependency first (in the answer to its sync step 1, or broadcast since). An update the
server itself holds back is therefore echoed byte for byte instead. See docs/design/sync-integrity.md,
"Confirming updates".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pycrdt import Doc

from .batch import Batch
from .connection import Connection, wire_frame
from .pending import HeldBack, decode_state_vector
from .protocol import SYNC_UPDATE, ProtocolError, sync_frame, write_var_uint
from .updates import GC, SKIP, Update, encode_delete_set


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    ranges.sort()
    out = [ranges[0]]
    for start, end in ranges[1:]:
        last_start, last_end = out[-1]
        if start <= last_end:
            out[-1] = (last_start, max(last_end, end))
        else:
            out.append((start, end))
    return out


def confirmation(updates: Iterable[Update]) -> bytes | None:
    """One v1 update with the content IDs of ``updates``: a GC struct per run of struct IDs (Skip
    over the gaps between runs of one client) and their delete sets; None if they have none."""
    inserts: dict[int, list[tuple[int, int]]] = {}
    deletes: dict[int, list[tuple[int, int]]] = {}
    for u in updates:
        for s in u.structs:
            if s.ref != SKIP:
                inserts.setdefault(s.client, []).append((s.clock, s.end))
        for client, clock, length in u.deletes:
            deletes.setdefault(client, []).append((clock, clock + length))
    if not inserts and not deletes:
        return None
    out = bytearray(write_var_uint(len(inserts)))
    for client, ranges in inserts.items():
        runs = _merged(ranges)
        structs = bytearray()
        count, pos = 0, runs[0][0]
        for start, end in runs:
            if start > pos:
                structs += bytes((SKIP,)) + write_var_uint(start - pos)
                count += 1
            structs += bytes((GC,)) + write_var_uint(end - start)
            count += 1
            pos = end
        out += write_var_uint(count) + write_var_uint(client) + write_var_uint(runs[0][0]) + structs
    out += encode_delete_set([(c, s, e - s) for c, ranges in deletes.items() for s, e in _merged(ranges)])
    return bytes(out)


def confirmation_frame(updates: Iterable[Update]) -> bytes | None:
    """``confirmation`` as a sync update message."""
    update = confirmation(updates)
    return None if update is None else sync_frame(SYNC_UPDATE, update)


def known_ids_frame(client_sv: dict[int, int], server_sv: dict[int, int]) -> bytes | None:
    """A sync update confirming every struct ID both sides hold (``[0, min(client, server))`` per
    client), sent with the answer to a client's sync step 1: an update the server had committed but
    whose confirmation was lost with the old socket is confirmed on the next connection (the client's
    sync step 2 does not carry it again). Safe: the client has these IDs integrated (its state vector
    says so), so it ignores them."""
    ranges = [(client, n) for client, clock in client_sv.items() if (n := min(clock, server_sv.get(client, 0))) > 0]
    if not ranges:
        return None
    out = bytearray(write_var_uint(len(ranges)))
    for client, n in ranges:
        out += write_var_uint(1) + write_var_uint(client) + write_var_uint(0) + bytes((GC,)) + write_var_uint(n)
    return sync_frame(SYNC_UPDATE, bytes(out) + b"\x00")


def send_confirmations(batch: Batch) -> None:
    """Send each author the content IDs of its committed (or no-op) updates of ``batch``: one GC
    confirmation per connection; an update the CRDT holds back is echoed as it is."""
    authors: dict[Connection, list[Update]] = {}
    for item in batch.items:
        if item.conn is not None and item.applied:
            if item.held:
                item.conn.enqueue(sync_frame(SYNC_UPDATE, item.update))
            else:
                authors.setdefault(item.conn, []).append(item.decoded)
    for conn, decoded in batch.noops:
        authors.setdefault(conn, []).append(decoded)
    for conn, updates in authors.items():
        frame = confirmation_frame(updates)
        if frame is not None:
            conn.enqueue(frame, wire_frame(frame))


def complete_step2(conn: Connection, client_state: bytes, doc: Doc[Any], held: HeldBack) -> None:
    """What follows pycrdt's answer to a sync step 1: what the CRDT holds back (pycrdt's diff omits
    it, Yjs's includes it), and a confirmation of the struct IDs both sides hold."""
    if held.update is not None:
        conn.enqueue(sync_frame(SYNC_UPDATE, held.update))
    try:
        client = decode_state_vector(client_state)
    except ProtocolError:
        return
    frame = known_ids_frame(client, decode_state_vector(doc.get_state())) if client else None
    if frame is not None:
        conn.enqueue(frame)
