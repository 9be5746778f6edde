"""What the CRDT holds back (``sync/pending.py``): kept while it waits, dropped once it integrates.

End to end (newcomers, restarts, real clients): tests/test_pending_updates.py.
"""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text

from crdt_server.sync.pending import HeldBack, IdRanges
from crdt_server.sync.updates import decode


def out_of_order_edits() -> tuple[bytes, bytes, bytes]:
    """One author's edits (clientID 7): u1 types "first ", u2 "second" after it, u3 deletes "fi";
    u2 and u3 wait for u1 (tests/test_pending_updates.py sends them before it)."""
    doc: Doc[Any] = Doc(client_id=7)
    sent: list[bytes] = []
    doc.observe(lambda event: sent.append(event.update))
    code = doc.get("code", type=Text)
    code.insert(0, "first ")
    code.insert(6, "second")
    del code[0:2]
    u1, u2, u3 = sent
    return u1, u2, u3


def _text(doc: Doc[Any]) -> str:
    return str(doc.get("code", type=Text))


def test_what_waits_is_kept_served_and_dropped_once_its_dependency_arrives() -> None:
    u1, u2, u3 = out_of_order_edits()
    live: Doc[Any] = Doc()
    held = HeldBack()
    for u in (u2, u3):
        live.apply_update(u)
        assert held.settle(live, u, decode(u), may_wait=True)  # part of it waits
    assert held.structs and held.update is not None
    assert live.get_update() == b"\x00\x00"  # pycrdt's own encoding has none of it
    # a newcomer (or a reload) from the full state ends where the author does once u1 arrives
    newcomer: Doc[Any] = Doc()
    newcomer.apply_update(held.full_state(live))
    newcomer.apply_update(u1)
    assert _text(newcomer) == "rst second"
    live.apply_update(u1)
    assert not held.settle(live, u1, decode(u1), may_wait=False)
    assert held.update is None and not held.structs
    assert _text(live) == "rst second"


def test_loading_finds_what_waits_in_the_snapshot_and_the_rows() -> None:
    u1, u2, u3 = out_of_order_edits()
    live: Doc[Any] = Doc()
    held = HeldBack()
    live.apply_update(u2)
    held.settle(live, u2, decode(u2), may_wait=True)
    snapshot = held.full_state(live)  # u2 is in the snapshot, u3 in a row after it
    reloaded: Doc[Any] = Doc()
    reloaded.apply_update(snapshot)
    reloaded.apply_update(u3)
    found = HeldBack.of_stored(reloaded, [snapshot, u3])
    again: Doc[Any] = Doc()
    again.apply_update(found.full_state(reloaded))
    again.apply_update(u1)
    assert _text(again) == "rst second"
    assert HeldBack.of_stored(again, [again.get_update()]).update is None  # nothing waits any more


def test_id_ranges_merge_cover_and_forget() -> None:
    ranges = IdRanges()
    for start, end in ((10, 20), (30, 40), (20, 25), (50, 60), (5, 12), (33, 35)):
        ranges.add(7, start, end)
    assert ranges.ranges() == [(7, 5, 20), (7, 30, 10), (7, 50, 10)]  # touching and overlapping merge
    assert ranges.covers(7, 5, 25) and ranges.covers(7, 31, 40) and not ranges.covers(7, 24, 31)
    assert not ranges.covers(8, 0, 1)
    ranges.drop_below(7, 35)
    assert ranges.ranges() == [(7, 35, 5), (7, 50, 10)]
    ranges.drop_below(7, 60)
    assert not ranges


def test_a_delete_set_sent_again_and_again_is_held_once() -> None:
    """A client may resend its whole delete set with every update (pycrdt's ``get_update(state)``
    does); what waits must not grow with it, nor the work per update."""
    doc: Doc[Any] = Doc()
    held = HeldBack()
    pending_deletes = b"\x00\x01\x07" + b"\x40" + b"".join(bytes((2 * i + 1, 1)) for i in range(64))
    decoded = decode(pending_deletes)
    assert len(decoded.deletes) == 64  # 64 ranges of a client nobody has sent anything of
    sizes = set()
    for _ in range(200):
        doc.apply_update(pending_deletes)
        held.settle(doc, pending_deletes, decoded, may_wait=True)
        assert held.update is not None
        sizes.add(len(held.update))
    assert len(sizes) == 1


def test_id_ranges_take_many_ranges_in_any_order_at_once() -> None:
    """``add_all`` of many ranges (merged in at once) holds the same set as adding them one by one."""
    import random

    rng = random.Random(7)
    for _ in range(20):
        one, bulk = IdRanges(), IdRanges()
        for _ in range(3):
            batch = [(rng.choice((1, 2)), rng.randrange(0, 3000), rng.randrange(1, 6)) for _ in range(rng.randrange(1, 2000))]
            for client, clock, length in batch:
                one.add(client, clock, clock + length)
            bulk.add_all(batch)
            assert bulk.ranges() == one.ranges()
