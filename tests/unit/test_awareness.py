"""RoomPresence in-process: ownership, takeover and what is (not) broadcast, in milliseconds."""

from __future__ import annotations

from crdt_server.sync import protocol as p
from crdt_server.sync.awareness import PresenceLimits, RoomPresence


class Conn:
    def __init__(self, role: str) -> None:
        self.role = role
        self.id = f"{role}-{id(self)}"
        self.name: str | None = None
        self.client_ids: set[int] = set()
        self.sent: list[p.AwarenessEntry] = []

    def enqueue(self, message: bytes, wire: bytes | None = None) -> None:
        self.sent.extend(p.parse_awareness(message))


def frame(*entries: tuple[int, int, bytes]) -> bytes:
    return p.awareness_frame([p.AwarenessEntry(*e) for e in entries])


def room(*conns: Conn, **limits: int) -> RoomPresence:
    return RoomPresence(set(conns), PresenceLimits(**limits), 0.0, lambda d, f: False)  # type: ignore[arg-type]


def test_a_takeover_by_the_same_role_survives_the_old_connections_close() -> None:
    old, new, watcher = Conn("candidate"), Conn("candidate"), Conn("interviewer")
    presence = room(old, new, watcher)
    presence.apply(old, frame((7, 1, b'{"v":1}')))  # type: ignore[arg-type]
    presence.apply(new, frame((7, 1, b'{"v":1}')))  # type: ignore[arg-type]  # same clock: no takeover
    assert old.client_ids == {7} and not new.client_ids
    presence.apply(new, frame((7, 2, b'{"v":2}')))  # type: ignore[arg-type]
    assert new.client_ids == {7} and not old.client_ids
    presence._clients.discard(old)  # type: ignore[arg-type]
    presence.remove(old)  # type: ignore[arg-type]
    assert [(e.client_id, e.clock, e.state) for e in watcher.sent] == [(7, 1, b'{"v":1}'), (7, 2, b'{"v":2}')]


def test_another_role_cannot_take_over_or_remove() -> None:
    owner, other = Conn("interviewer"), Conn("candidate")
    presence = room(owner, other)
    presence.apply(owner, frame((7, 1, b'{"v":1}')))  # type: ignore[arg-type]
    presence.apply(other, frame((7, 5, b'{"v":"mallory"}')))  # type: ignore[arg-type]
    presence.apply(other, frame((7, 6, b"null")))  # type: ignore[arg-type]
    assert owner.client_ids == {7} and [e.clock for e in other.sent] == [1]


def test_a_state_added_and_removed_before_anyone_saw_it_is_never_sent() -> None:
    a, b = Conn("candidate"), Conn("observer")
    presence = RoomPresence({a, b}, PresenceLimits(), 10.0, lambda d, f: True)  # type: ignore[arg-type]
    presence.apply(a, frame((7, 1, b"{}")))  # type: ignore[arg-type]  # coalesced: not sent yet
    presence.apply(a, frame((7, 2, b"null")))  # type: ignore[arg-type]
    assert not b.sent and not presence._out
    presence.apply(a, frame((7, 2, b"{}")))  # type: ignore[arg-type]  # an old clock: ignored
    assert not a.client_ids


def test_the_room_bound_forgets_removals_before_it_refuses_a_state() -> None:
    a = Conn("candidate")
    presence = room(a, max_clients=1, max_state_bytes=100, max_room_bytes=200)
    for cid in range(20):  # 20 remembered removals fill the room
        presence.apply(a, frame((cid, 1, b"{}")))  # type: ignore[arg-type]
        presence.apply(a, frame((cid, 2, b"null")))  # type: ignore[arg-type]
    presence.apply(a, frame((99, 1, b'"' + b"x" * 90 + b'"')))  # type: ignore[arg-type]
    assert a.client_ids == {99} and presence.bytes <= 200


def test_a_renewal_of_an_unchanged_state_is_relayed_and_changes_nothing_else() -> None:
    """y-protocols sends its unchanged state again every 15 s; it is relayed with its new clock (peers
    drop a state not renewed within 30 s), keeps the room's byte count and its owner's summary, and a
    changed state after it is checked again."""
    a, b = Conn("candidate"), Conn("observer")
    presence = room(a, b)
    state = b'{"user":{"name":"Ada","color":"#f00"}}'
    presence.apply(a, frame((7, 1, state)))  # type: ignore[arg-type]
    held, summary = presence.bytes, presence._live[7].summary
    presence.apply(a, frame((7, 2, state)))  # type: ignore[arg-type]
    presence.apply(a, frame((7, 2, state)))  # type: ignore[arg-type]  # the same clock again: ignored
    assert [(e.clock, e.state) for e in b.sent] == [(1, state), (2, state)]
    assert presence.bytes == held and presence._live[7].summary == summary and a.name == "Ada"
    presence.apply(a, frame((7, 3, b"{not json")))  # type: ignore[arg-type]
    presence.apply(a, frame((7, 4, b'{"user":{"name":"Bea"}}')))  # type: ignore[arg-type]
    assert [e.clock for e in b.sent] == [1, 2, 4] and a.name == "Bea"
    presence.apply(a, frame((8, 1, b'{"user":{"name":"Cy"}}')))  # type: ignore[arg-type]  # a second tab
    presence.apply(a, frame((7, 5, b'{"user":{"name":"Bea"}}')))  # type: ignore[arg-type]
    assert a.name == "Bea"  # the state renewed last names the connection, as any accepted state does
    other = Conn("candidate")  # a takeover with the same state is one, not a renewal
    presence._clients.add(other)  # type: ignore[arg-type]
    presence.apply(other, frame((7, 6, b'{"user":{"name":"Bea"}}')))  # type: ignore[arg-type]
    assert other.client_ids == {7} and a.client_ids == {8}
