"""Confirmations (``sync/confirm.py``): the author's content IDs as GC structs, nothing more, nothing less.

The end-to-end check against Yjs 14's own ``createContentIdsFromUpdate`` is tests/test_confirmations.py;
here the encoding itself, on updates pycrdt makes.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text, merge_updates

from crdt_server.sync import protocol as p
from crdt_server.sync.confirm import confirmation, known_ids_frame
from crdt_server.sync.pending import decode_state_vector
from crdt_server.sync.updates import GC, SKIP, Update, decode


def _ids(updates: list[Update]) -> tuple[set[tuple[int, int]], set[tuple[int, int]]]:
    """Every inserted ID (Skips excluded) and every deleted ID, one by one."""
    inserts = {(s.client, c) for u in updates for s in u.structs if s.ref != SKIP for c in range(s.clock, s.end)}
    deletes = {(cl, c) for u in updates for cl, clock, n in u.deletes for c in range(clock, clock + n)}
    return inserts, deletes


def _edits() -> tuple[Doc[Any], list[bytes]]:
    doc: Doc[Any] = Doc(client_id=4_242_424_242)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    text = doc.get("code", type=Text)
    text.insert(0, "hello world")  # one struct
    text.insert(5, ",")  # one struct, inside the first
    del text[0:2]  # a delete set only
    with doc.transaction():  # several structs and a delete set in one update
        text.insert(0, "a")
        text.insert(len(str(text)), "b")
        del text[3:5]
    text.insert(1, "x" * 300)  # a multi-byte length
    return doc, updates


def test_a_confirmation_carries_exactly_the_content_ids_of_its_updates() -> None:
    doc, updates = _edits()
    other: Doc[Any] = Doc(client_id=77)
    other.get("code", type=Text).insert(0, "zz")
    with_gap = merge_updates(updates[0], updates[3])  # one client's structs with a gap: a Skip between
    cases = [[u] for u in updates] + [updates, [with_gap], [with_gap, other.get_update()]]
    for case in cases:
        decoded = [decode(u) for u in case]
        confirmed = confirmation(list(zip(decoded, case, strict=True)))
        assert confirmed is not None
        got = decode(confirmed)
        assert {s.ref for s in got.structs} <= {GC, SKIP}
        assert _ids([got]) == _ids(decoded)
        if case == [with_gap]:
            assert SKIP in {s.ref for s in got.structs}  # the gap is not confirmed


def test_the_author_ignores_its_confirmation() -> None:
    doc, updates = _edits()
    before = doc.get_update()
    events: list[Any] = []
    doc.observe(events.append)
    decoded = [decode(u) for u in updates]
    confirmed = confirmation(list(zip(decoded, updates, strict=True)))
    assert confirmed is not None
    doc.apply_update(confirmed)
    assert events == [] and doc.get_update() == before


def test_an_update_with_no_content_ids_needs_no_confirmation() -> None:
    empty = b"\x00\x00"
    assert confirmation([(decode(empty), empty)]) is None


def test_the_answer_to_a_step_1_confirms_what_both_sides_hold() -> None:
    frame = known_ids_frame({5: 10, 6: 3, 7: 4}, {5: 4, 6: 8})
    assert frame is not None
    got = decode(p.parse_sync(frame).payload)
    assert sorted((s.client, s.clock, s.length, s.ref) for s in got.structs) == [(5, 0, 4, GC), (6, 0, 3, GC)]
    assert got.deletes == []
    assert known_ids_frame({9: 3}, {5: 4}) is None
    assert decode_state_vector(b"\x02\x05\x04\x06\x08") == {5: 4, 6: 8}
