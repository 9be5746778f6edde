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
from .pending import HeldBack, IdRanges, decode_state_vector
from .protocol import SYNC_STEP2, SYNC_UPDATE, ProtocolError, is_crdt_failure, sync_frame, write_var_uint
from .updates import GC, SKIP, Struct, Update, encode_delete_set


def _runs(structs: Iterable[Struct]) -> dict[int, list[list[int]]]:
    """Per client, [clock, length] runs of struct IDs (Skips left out), merged where they touch."""
    by_client: dict[int, list[list[int]]] = {}
    for s in structs:
        if s.ref == SKIP:
            continue
        runs = by_client.get(s.client)
        if runs is None:
            by_client[s.client] = [[s.clock, s.length]]
        elif runs[-1][0] + runs[-1][1] == s.clock:  # the next struct of a group: the common case
            runs[-1][1] += s.length
        else:
            runs.append([s.clock, s.length])
    return by_client


def _merged(runs: list[list[int]]) -> list[list[int]]:
    runs.sort()
    out = [runs[0]]
    for clock, length in runs[1:]:
        last = out[-1]
        if clock <= last[0] + last[1]:
            last[1] = max(last[1], clock + length - last[0])
        else:
            out.append([clock, length])
    return out


def _one_struct(update: Update, raw: bytes) -> bytes | None:
    """The confirmation of an update of exactly one struct (a keystroke, a paste) from its own bytes:
    its header (one client, one struct, client, clock), a GC struct of its length, its delete set."""
    s = update.structs[0]
    if s.ref == SKIP or raw[:2] != b"\x01\x01":
        return None
    pos = 2
    for _ in range(2):  # skip the client and clock varints
        while raw[pos] & 0x80:
            pos += 1
        pos += 1
    return raw[:pos] + bytes((GC,)) + write_var_uint(s.length) + raw[update.delete_set_offset:]


def confirmation(updates: list[tuple[Update, bytes]]) -> bytes | None:
    """One v1 update with the content IDs of ``updates`` (decoded, and their bytes): a GC struct per
    run of struct IDs (Skip over the gaps between runs of one client) and their delete sets; None if
    they have none."""
    if len(updates) == 1 and len(updates[0][0].structs) == 1:
        if (fast := _one_struct(*updates[0])) is not None:
            return fast
    structs = [s for u, _ in updates for s in u.structs]
    deletes = [d for u, _ in updates for d in u.deletes]
    by_client = _runs(structs)
    if not by_client and not deletes:
        return None
    out = bytearray(write_var_uint(len(by_client)))
    for client, runs in by_client.items():
        if len(runs) > 1:
            runs = _merged(runs)
        body = bytearray()
        count, pos = 0, runs[0][0]
        for clock, length in runs:
            if clock > pos:
                body.append(SKIP)
                body += write_var_uint(clock - pos)
                count += 1
            body.append(GC)
            body += write_var_uint(length)
            count += 1
            pos = clock + length
        out += write_var_uint(count)
        out += write_var_uint(client)
        out += write_var_uint(runs[0][0])
        out += body
    if not deletes:
        out.append(0)
    elif len(updates) == 1:
        decoded, raw = updates[0]
        out += raw[decoded.delete_set_offset:]  # its own delete set, as it came
    else:  # several updates: each range once
        merged = IdRanges()
        merged.add_all(deletes)
        out += encode_delete_set(merged.ranges())
    return bytes(out)


def confirmation_frame(updates: list[tuple[Update, bytes]]) -> bytes | None:
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
    authors: dict[Connection, list[tuple[Update, bytes]]] = {}
    for item in batch.items:
        if item.conn is not None and item.applied:
            if item.held:
                item.conn.enqueue(sync_frame(SYNC_UPDATE, item.update))
            else:
                authors.setdefault(item.conn, []).append((item.decoded, item.update))
    for conn, decoded, update in batch.noops:
        authors.setdefault(conn, []).append((decoded, update))
    for conn, updates in authors.items():
        frame = confirmation_frame(updates)
        if frame is not None:
            conn.enqueue(frame, wire_frame(frame))


def answer_step1(conn: Connection, client_state: bytes, doc: Doc[Any], held: HeldBack) -> None:
    """The answer to a sync step 1: pycrdt's diff against the client's state vector, then what the
    CRDT holds back (pycrdt's diff omits it, Yjs's includes it), and a confirmation of the struct IDs
    both sides hold."""
    try:
        reply = doc.get_update(client_state)
    except BaseException as exc:
        if not is_crdt_failure(exc):
            raise
        raise ProtocolError("malformed state vector") from None
    conn.enqueue(sync_frame(SYNC_STEP2, reply))
    if held.update is not None:
        conn.enqueue(sync_frame(SYNC_UPDATE, held.update))
    server_state = doc.get_state()
    if len(client_state) > 2 * len(server_state) + 1024:
        return  # far more clients than the document has: nothing worth a Python pass over all of them
    try:
        client = decode_state_vector(client_state)
    except ProtocolError:
        return
    frame = known_ids_frame(client, decode_state_vector(server_state)) if client else None
    if frame is not None:
        conn.enqueue(frame)
