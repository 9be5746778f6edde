"""The timeline's replay in-process: code points whatever the encoding, and nothing counted twice."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Text

from crdt_server.document import initial_document
from crdt_server.storage import UpdateRecord
from crdt_server.timeline import Replay, build


class Editor:
    """A pycrdt editor whose every transaction is one update, as a y-websocket client sends them."""

    def __init__(self, client_id: int, base: bytes) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.doc.apply_update(base)
        self.text = self.doc.get("code", type=Text)
        self.sent: list[bytes] = []
        self._sub = self.doc.observe(lambda e: self.sent.append(e.update))

    def insert(self, at: int, s: str) -> bytes:
        self.text.insert(len(str(self.text)[:at].encode()), s)
        return self.sent[-1]

    def delete(self, at: int, n: int) -> bytes:
        old = str(self.text)
        start = len(old[:at].encode())
        del self.text[start:start + len(old[at:at + n].encode())]
        return self.sent[-1]

    def receive(self, update: bytes) -> None:
        self.doc.apply_update(update)


def rows(*items: tuple[str, str, str, bytes]) -> list[UpdateRecord]:
    return [UpdateRecord("s", data, role, conn, name, seq=i + 2, ts=100.0 + i) for i, (role, conn, name, data) in
            enumerate(items)]


def totals(replay: Replay) -> dict[str, tuple[int, int]]:
    return {p["name"]: (p["inserted"], p["deleted"]) for p in build(replay, 10, {})["participants"]}


def test_code_points_and_resends_count_once() -> None:
    base = initial_document("t", "python", "x = 1\n")
    ada, bob = Editor(11, base), Editor(22, base)
    replay = Replay(threshold=5)
    replay.apply([UpdateRecord("s", base, "server", "server", "", seq=1, ts=99.0)])
    u1 = ada.insert(6, "é😀中")  # 3 code points, 9 UTF-8 bytes, 4 UTF-16 units
    bob.receive(u1)
    u2 = bob.delete(7, 1)  # Bob deletes Ada's emoji: 1 code point
    ada.receive(u2)
    u3 = bob.insert(0, "😀😀😀😀😀😀")  # 6 code points: a paste over the threshold of 5
    ada.receive(u3)
    u4 = ada.delete(0, 6)  # Ada deletes Bob's emojis: 6 code points, 12 UTF-16 units
    bob.receive(u4)
    replay.apply(rows(("interviewer", "a1", "Ada", u1), ("candidate", "b1", "Bob", u2),
                      ("candidate", "b1", "Bob", u3), ("interviewer", "a1", "Ada", u4)))
    assert totals(replay) == {"Ada": (3, 6), "Bob": (6, 1)}
    # Bob reconnects and resends his whole state (a SyncStep2), Ada's text and the delete set included,
    # and the same update arrives twice: nothing new, nothing counted
    replay.apply([UpdateRecord("s", bob.doc.get_update(), "candidate", "b2", "Bob", seq=10, ts=110.0),
                  UpdateRecord("s", u3, "candidate", "b2", "Bob", seq=11, ts=111.0)])
    result = build(replay, 10, {})
    assert totals(replay) == {"Ada": (3, 6), "Bob": (6, 1)}
    bob_entry = next(p for p in result["participants"] if p["name"] == "Bob")
    assert bob_entry["connections"] == 1  # the resend changed nothing, so it is not a track entry
    pastes = [e for e in result["events"] if e["type"] == "paste"]
    assert [(e["participant"], e["data"]["length"]) for e in pastes] == [(bob_entry["id"], 6)]
    # inserts minus deletes is the text the editors have, in code points
    text = str(ada.text)
    assert text == str(bob.text) == "x = 1\né中"
    assert sum(i - d for i, d in totals(replay).values()) == len(text) - len("x = 1\n")


def test_a_cached_answer_changes_with_the_log() -> None:
    base = initial_document("t", "python", "")
    ada = Editor(11, base)
    replay = Replay(threshold=40)
    replay.apply([UpdateRecord("s", base, "server", "server", "", seq=1, ts=99.0)])
    replay.apply(rows(("interviewer", "a1", "Ada", ada.insert(0, "ab"))))
    first = build(replay, 10, {})
    assert build(replay, 10, {}) is first  # cached
    replay.apply([UpdateRecord("s", ada.insert(2, "c"), "interviewer", "a1", "Ada", seq=5, ts=130.0)])
    later = build(replay, 10, {})
    assert later["participants"][0]["inserted"] == 3
    assert later["participants"][0]["points"] == [[99.0, 2, 0], [129.0, 1, 0]]  # buckets from the start (99)
