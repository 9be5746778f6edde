"""Neutralising content the server cannot keep exactly (``sync/neutral.py``), on updates pycrdt makes.

What a user relies on: the author keeps a working connection and its later edits (even to the same map
key) integrate; the server, a peer and a newcomer read the same document; nothing inexact is stored.
The end-to-end checks with real Yjs clients are tests/test_content_exact.py (thousands of random values)
and tests/peers/test_content.py (every y-websocket generation).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from pycrdt import Array, Doc, Map, Text

from crdt_server.domain import EventType
from crdt_server.sync import protocol as p
from crdt_server.sync.guard import DocumentGuard
from crdt_server.sync.neutral import neutralise, notice
from crdt_server.sync.room import NotesRoom, SessionRoom
from crdt_server.sync.updates import DELETED, STRING, decode

from ..test_content_exact import embed_update
from .test_room_ingest import OPTIONS, MemoryStore, RecordingConnection, _doc, _started, _updates

AUTHOR = 4_000_000_001


def _updates_list(doc: Doc[Any]) -> list[bytes]:
    out: list[bytes] = []
    doc.observe(lambda event: out.append(event.update))
    return out


def _server_and_author() -> tuple[Doc[Any], Doc[Any], list[bytes]]:
    server: Doc[Any] = Doc(client_id=1)
    server.get("m", type=Map)["base"] = 1
    author: Doc[Any] = Doc(client_id=AUTHOR)
    author.apply_update(server.get_update())
    return server, author, _updates_list(author)


def test_only_the_inexact_struct_becomes_deleted_content_and_its_ids_are_deleted() -> None:
    server, author, sent = _server_and_author()
    with author.transaction():
        author.get("t", type=Text).insert(0, "kept")
        author.get("m", type=Map)["v"] = {"b": 1, "a": 2}  # two keys: Yrs would not keep their order
    update = sent[-1]
    decoded = decode(update, exact=True)
    assert [bad.reason.split(" (")[0] for bad in decoded.inexact] == ["an object with more than one key"]
    bad = decoded.structs[decoded.inexact[0].index]

    neutral = decode(neutralise(update, decoded), exact=True)
    assert not neutral.inexact
    assert [(s.client, s.clock, s.length, s.ref) for s in neutral.structs] == [
        (s.client, s.clock, s.length, DELETED if s == bad else s.ref) for s in decoded.structs]
    assert [(s.origin, s.right_origin, s.parent_root, s.parent_sub) for s in neutral.structs] == [
        (s.origin, s.right_origin, s.parent_root, s.parent_sub) for s in decoded.structs]
    assert (AUTHOR, bad.clock, bad.length) in neutral.deletes
    assert any(s.ref == STRING and s.text == "kept" for s in neutral.structs)

    server.apply_update(neutralise(update, decoded))
    assert str(server.get("t", type=Text)) == "kept" and "v" not in server.get("m", type=Map)


def test_the_author_drops_it_and_its_later_edit_of_the_same_key_reaches_everyone() -> None:
    server, author, sent = _server_and_author()
    author.get("m", type=Map)["v"] = {"b": 1, "a": [0.5, -0.0]}
    neutral = neutralise(sent[-1], decode(sent[-1], exact=True))
    server.apply_update(neutral)
    author.apply_update(neutral)  # its confirmation carries the same delete set
    assert "v" not in author.get("m", type=Map)
    author.get("m", type=Map)["v"] = "later"  # its origin is the deleted item
    assert not decode(sent[-1], exact=True).inexact
    server.apply_update(sent[-1])
    newcomer: Doc[Any] = Doc()
    newcomer.apply_update(server.get_update())
    for doc in (server, author, newcomer):
        assert doc.get("m", type=Map).to_py() == {"base": 1, "v": "later"}
    assert server.get_state() == author.get_state()  # nothing waits for a missing clock


def test_a_value_in_an_array_drops_the_whole_item_it_came_in() -> None:
    server, author, sent = _server_and_author()
    author.get("a", type=Array).extend([1, -0.0, 3])  # one item of three values
    neutral = neutralise(sent[-1], decode(sent[-1], exact=True))
    server.apply_update(neutral)
    author.apply_update(neutral)
    author.get("a", type=Array).append(9)
    server.apply_update(sent[-1])
    assert server.get("a", type=Array).to_py() == author.get("a", type=Array).to_py() == [9]


def test_the_guard_stores_the_neutralised_update_and_a_resend_adds_nothing() -> None:
    server, author, sent = _server_and_author()
    author.get("m", type=Map)["v"] = {"b": 1, "a": 2}
    guard = DocumentGuard(server)
    verdict = guard.check(sent[-1])
    assert verdict.neutralised is not None and len(verdict.neutralised) == 1
    assert verdict.update == neutralise(sent[-1], decode(sent[-1], exact=True)) and not verdict.noop
    guard.admit(verdict)
    server.apply_update(verdict.update)
    guard.applied(verdict.decoded, verdict.pending, verdict.update, admitted=True)
    again = guard.check(sent[-1])  # e.g. sent again before its author got the delete set
    assert again.noop and again.neutralised is not None


def test_content_kept_exactly_passes_unchanged() -> None:
    server, author, sent = _server_and_author()
    author.get("m", type=Map)["v"] = {"only": [1, 2.5, "s", None, True]}
    verdict = DocumentGuard(server).check(sent[-1])
    assert verdict.neutralised is None and verdict.update == sent[-1]


def test_the_author_is_told_why_in_a_permission_denied_message() -> None:
    _, author, sent = _server_and_author()
    author.get("m", type=Map)["v"] = -0.0
    text = notice(decode(sent[-1], exact=True).inexact)
    assert text.startswith("1 item(s) deleted: the server cannot keep exactly -0")
    frame = p.permission_denied_frame(text)
    r = p.Reader(frame)
    assert (r.var_uint(), r.var_uint(), r.var_bytes().decode()) == (p.MSG_AUTH, 0, text)
    assert r.pos == len(frame)


@pytest.mark.anyio
@pytest.mark.parametrize("room_type", [SessionRoom, NotesRoom])
async def test_the_room_stores_and_relays_it_deleted_tells_the_author_and_keeps_its_socket(room_type: Any) -> None:
    store = MemoryStore()
    doc = _doc()
    base = doc.get_update()
    async with anyio.create_task_group() as tg:
        room = await _started(room_type("s", doc, store, OPTIONS, last_seq=0, snapshot_seq=0), tg)
        author, other = RecordingConnection(), RecordingConnection("interviewer")
        room.clients.update({author, other})
        client: Doc[Any] = Doc(client_id=AUTHOR)
        client.apply_update(base)
        sent = _updates_list(client)
        with client.transaction():
            client.get("code", type=Text).insert(0, "typed ")
            client.get("meta", type=Map)["title"] = {"b": 1, "a": 2}  # the server's key, and inexact
            client.get("extra", type=Map)["v"] = -0.0
        batch = room.queue_update(sent[-1], author)
        with anyio.fail_after(2):
            await batch.done.wait()
        tg.cancel_scope.cancel()
    assert author.closed_with is None
    assert not any(decode(row.data, exact=True).inexact for row in store.rows)
    relayed = _updates(other)
    assert relayed and not any(decode(u, exact=True).inexact for u in relayed)
    denied = [f for f in author.sent if f[0] == p.MSG_AUTH]
    assert len(denied) == 1 and b"2 item(s) deleted" in denied[0]
    for update in _updates(author):  # the compensation of the title, and the confirmation's delete set
        client.apply_update(update)
    peer: Doc[Any] = Doc()
    peer.apply_update(base)
    for update in relayed:
        peer.apply_update(update)
    for reader in (doc, client, peer):
        assert str(reader.get("code", type=Text)).startswith("typed ")
        assert reader.get("meta", type=Map)["title"] == "t" and "v" not in reader.get("extra", type=Map)
    events = [e for c in store.changes for e in c.events if e.type == EventType.CONTENT_DELETED]
    if room_type is NotesRoom:
        assert events == []  # the notes stay private
    else:
        assert len(events) == 1 and events[0].data["items"] == 2 and events[0].data["role"] == "candidate"


def test_embed_json_deeper_than_the_crdt_library_reads_is_neutralised_not_closed() -> None:
    """``JSON.stringify`` writes any depth; serde_json (Yrs) refuses beyond 128 levels, which closed the
    socket with 1007 (a reconnect loop) before."""
    update = embed_update("[" * 200 + "]" * 200)
    decoded = decode(update, exact=True)
    assert [bad.reason.split(" (")[0] for bad in decoded.inexact] == ["JSON nested deeper than 100 levels"]
    doc: Doc[Any] = Doc()
    doc.apply_update(neutralise(update, decoded))
    assert str(doc.get("t", type=Text)) == ""


def test_a_value_nested_deeper_than_the_decoder_checks_is_neutralised_not_closed() -> None:
    """Yjs writes a value of any depth (``map.set(k, [[[…]]])``); the decoder checks 64 levels, and closed
    the socket with 1007 beyond (a reconnect loop) before. Far deeper still is malformed for the server."""
    server, author, sent = _server_and_author()
    value: Any = 1
    for _ in range(100):
        value = [value]
    author.get("m", type=Map)["v"] = value
    decoded = decode(sent[-1], exact=True)
    assert [bad.reason for bad in decoded.inexact] == ["a value nested deeper than 64 levels"]
    server.apply_update(neutralise(sent[-1], decoded))
    assert server.get("m", type=Map).to_py() == {"base": 1}
    for _ in range(500):
        value = [value]
    author.get("m", type=Map)["w"] = value
    with pytest.raises(p.ProtocolError, match="nested too deeply"):
        decode(sent[-1], exact=True)
