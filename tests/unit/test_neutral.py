"""Neutralising content the server cannot keep exactly (``sync/neutral.py``), on updates pycrdt makes.

What a user relies on: the author keeps a working connection and its later edits (even to the same map
key) integrate; the server, a peer and a newcomer read the same document; nothing inexact is stored.
The end-to-end checks with real Yjs clients are tests/test_content_exact.py (thousands of random values)
and tests/peers/test_content.py (every y-websocket generation).
"""

from __future__ import annotations

from typing import Any

from pycrdt import Array, Doc, Map, Text

from crdt_server.sync import protocol as p
from crdt_server.sync.guard import DocumentGuard
from crdt_server.sync.neutral import neutralise, notice
from crdt_server.sync.updates import DELETED, STRING, decode

AUTHOR = 4_000_000_001


def _updates(doc: Doc[Any]) -> list[bytes]:
    out: list[bytes] = []
    doc.observe(lambda event: out.append(event.update))
    return out


def _server_and_author() -> tuple[Doc[Any], Doc[Any], list[bytes]]:
    server: Doc[Any] = Doc(client_id=1)
    server.get("m", type=Map)["base"] = 1
    author: Doc[Any] = Doc(client_id=AUTHOR)
    author.apply_update(server.get_update())
    return server, author, _updates(author)


def test_only_the_inexact_struct_becomes_deleted_content_and_its_ids_are_deleted() -> None:
    server, author, sent = _server_and_author()
    with author.transaction():
        author.get("t", type=Text).insert(0, "kept")
        author.get("m", type=Map)["v"] = {"b": 1, "a": 2}  # two keys: Yrs would not keep their order
    update = sent[-1]
    decoded = decode(update, exact=True)
    assert [bad.reason.split(" (")[0] for bad in decoded.inexact] == ["an object with more than one key"]
    bad = decoded.inexact[0].struct

    neutral = decode(neutralise(update, decoded), exact=True)
    assert neutral.inexact == []
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
    assert decode(sent[-1], exact=True).inexact == []
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
