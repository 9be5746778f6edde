"""An edit that splits an astral character (an emoji's UTF-16 surrogate pair), repaired for everyone.

Yjs counts text in UTF-16 units, so an astral character (``😀``, U+10000 and up) takes two clocks, and
an insert between them, or a delete range starting or ending between them, splits the pair. Yjs then
replaces both halves with U+FFFD, the same way on every Yjs peer; Yrs keeps the character whole and its
item lengths stop matching the clocks. Applied as they come, such updates leave the author, the REST
text (the server's Yrs document) and a newcomer (loading the server's encoding) with three different
texts.

Repair, before the splitting update is applied: the server commits an update of its own that deletes
the character and inserts the same character again next to it. A deleted item's content is
garbage-collected into a deleted range, which both libraries split cleanly, so the splitting update then
integrates between the deleted halves identically everywhere, and every reader (the author too: the
repair deletes its U+FFFD halves) ends with the same text, e.g. ``x中😀y``. Refusing the update instead
would leave the author's own document different (and its later updates waiting on the refused one).

Only root-level texts (``code``, ``notes``) are tracked. The decoder sees every inserted string, so the
IDs of astral characters are recorded as they arrive (rare: a dictionary entry each) and every update is
tested with set lookups, only while the document holds any. See docs/design/sync-integrity.md,
"Surrogate pairs".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Text, merge_updates

from ..document import NOTES, TEXT
from .updates import Place, Struct, Update, encode_delete_set

REPAIRABLE = frozenset({TEXT, NOTES})  # the root texts whose astral characters are tracked


@dataclass(frozen=True)
class Split:
    """An astral character an update splits: IDs (client, clock) and (client, clock + 1)."""

    client: int
    clock: int
    char: str
    root: str


class AstralChars:
    """The astral characters of a document's root texts, by the ID of their low half."""

    def __init__(self) -> None:
        self._by_low: dict[tuple[int, int], tuple[str, str]] = {}  # (client, clock + 1) -> (char, root)
        self._clients: set[int] = set()  # the clients that inserted any

    def __bool__(self) -> bool:
        return bool(self._by_low)

    def record(self, placed: Iterable[tuple[Struct, Place | None]]) -> None:
        for s, place in placed:
            text = s.text
            # the decoder counts UTF-16 units: a string longer in clocks than in characters has astral ones
            if text is None or s.length == len(text) or place is None or place[1] is not None or place[0] not in REPAIRABLE:
                continue
            clock = s.clock
            for ch in text:
                if ord(ch) > 0xFFFF:
                    self._by_low[(s.client, clock + 1)] = (ch, place[0])
                    self._clients.add(s.client)
                    clock += 2
                else:
                    clock += 1

    def splits(self, update: Update, deleted: Any) -> list[Split]:
        """The live astral characters ``update`` splits (``deleted.covers`` says which are deleted):
        an insert after a high half or before a low half, a delete range starting or ending between."""
        by_low, clients = self._by_low, self._clients
        lows: set[tuple[int, int]] = set()
        for s in update.structs:
            if s.origin is not None and s.origin[0] in clients and (low := (s.origin[0], s.origin[1] + 1)) in by_low:
                lows.add(low)
            if s.right_origin is not None and s.right_origin in by_low:
                lows.add(s.right_origin)
        for client, start, length in update.deletes:
            if client in clients:
                for edge in ((client, start), (client, start + length)):
                    if edge in by_low:
                        lows.add(edge)
        found = []
        for client, clock in sorted(lows):
            if not deleted.covers(client, clock - 1, clock + 1):
                char, root = by_low[(client, clock)]
                found.append(Split(client, clock - 1, char, root))
        return found


def repair(doc: Doc[Any], splits: list[Split]) -> bytes | None:
    """Delete each split character and insert it again where it was, in the server's name; the
    update doing so (None if there was nothing to do). Applied to ``doc`` already."""
    captured: list[bytes] = []
    deltas: list[Any] = []
    sub = doc.observe(lambda event: captured.append(event.update))
    try:
        for split in splits:
            text = doc.get(split.root, type=Text)
            deltas.clear()
            text_sub = text.observe(lambda event: deltas.append(event.delta))
            try:
                doc.apply_update(b"\x00" + encode_delete_set([(split.client, split.clock, 2)]))
            finally:
                text.unobserve(text_sub)
            if not deltas:  # nothing was deleted after all
                continue
            first = deltas[-1][0] if deltas[-1] else {}
            index = first.get("retain", 0) if isinstance(first, dict) else 0  # pycrdt counts UTF-8 bytes
            text.insert(index, split.char)
    finally:
        doc.unobserve(sub)
    if not captured:
        return None
    return captured[0] if len(captured) == 1 else merge_updates(*captured)
