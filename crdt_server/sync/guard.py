"""What an editor may change in the shared document, decided before an update is committed.

The server owns ``runs`` and every key of ``meta`` except ``language`` (which editors may switch to a
valid id); editors own ``code``. A client update that touches what the server owns is not dropped —
a dropped update leaves every later update of that client waiting on a missing clock — but applied
and at once compensated (``room.py``), so every client, its author included, converges and the
author's later edits integrate. A delete of *another* client's IDs that the server has not seen yet
is removed from the update before anything else: pending in the CRDT, it would delete that client's
text as they type it.

``check`` runs on every update (the fast path is a decode and an index lookup per struct);
updates it cannot clear take the room's guarded path, which watches what they really change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pycrdt import Array, Doc, Map, UndoManager, merge_updates

from .updates import IdIndex, Update, decode, encode_delete_set

CODE, META, RUNS = "code", "meta", "runs"
EDITOR_META_KEYS = frozenset({"language"})


@dataclass
class Verdict:
    update: bytes  # the update to commit: the input, less deletes aimed at others' unseen IDs
    decoded: Update
    guarded: bool  # may touch what the server owns, or depends on IDs not seen yet: take the guarded path
    pending: bool = False  # some structs wait for IDs nobody has sent yet
    dropped_deletes: int = 0  # clocks of others' unseen IDs removed from the delete set
    touches: set[str] = field(default_factory=set)


def owned_by_server(root: str, key: str | None) -> bool:
    return root == RUNS or (root == META and key not in EDITOR_META_KEYS)


class DocumentGuard:
    """The ID index of one live document, and the checks made against it."""

    def __init__(self, doc: Doc[Any]) -> None:
        self.index = IdIndex()
        self.index.record(decode(doc.get_update()))
        self._held: list[Update] = []  # applied updates with structs still pending in the CRDT

    def check(self, update: bytes, own_clients: Iterable[int] = ()) -> Verdict:
        """Classify a client's update (``ProtocolError`` if it does not decode)."""
        decoded = decode(update)
        index = self.index
        starts: dict[int, int] = {}  # per client: where its structs in this update start, and end
        ends: dict[int, int] = {}
        for s in decoded.structs:
            starts[s.client] = min(starts.get(s.client, s.clock), s.clock)
            ends[s.client] = max(ends.get(s.client, 0), s.end)
        verdict = Verdict(update, decoded, guarded=bool(self._held))
        if any(start > index.state(client) for client, start in starts.items()):
            verdict.pending = verdict.guarded = True  # a gap before them: they wait in the CRDT
        for _, place in index.places(decoded):
            if place is None:
                verdict.pending = verdict.guarded = True  # attached to IDs nobody has sent yet
            elif owned_by_server(*place) or place == (META, "language"):
                verdict.touches.add(_name(place))
                verdict.guarded = True  # the language is checked when it is applied
        own = set(own_clients) | set(ends)
        kept: list[tuple[int, int, int]] = []
        for client, clock, length in decoded.deletes:
            seen = max(index.state(client), ends.get(client, 0))
            end = clock + length
            if end > seen and client not in own:  # aimed at another client's future text
                verdict.dropped_deletes += end - max(clock, seen)
                if clock < seen:
                    kept.append((client, clock, seen - clock))
                end = min(end, seen)
            else:
                kept.append((client, clock, length))
                if end > seen:
                    verdict.pending = verdict.guarded = True
            for place in self._deleted_places(client, clock, min(end, seen)):
                if owned_by_server(*place):
                    verdict.touches.add(_name(place))
                    verdict.guarded = True
        if verdict.dropped_deletes:
            verdict.update = update[: decoded.delete_set_offset] + encode_delete_set(kept)
            verdict.decoded = decode(verdict.update)
        return verdict

    def _deleted_places(self, client: int, start: int, end: int) -> Iterable[tuple[str, str | None]]:
        clock = start
        while clock < end:
            place, next_clock = self.index.span(client, clock)
            if place is not None:
                yield place
            clock = max(next_clock, clock + 1)

    def applied(self, decoded: Update, pending: bool) -> None:
        """Record an applied update's IDs; one that was pending is retried after every later update."""
        self.index.record(decoded)
        if pending:
            self._held.append(decoded)
        if self._held and not pending:
            still = []
            for held in self._held:
                if any(place is None for _, place in self.index.places(held)):
                    still.append(held)
                else:
                    self.index.record(held)
            self._held = still

    @property
    def holding(self) -> bool:
        return bool(self._held)



def _name(place: tuple[str, str | None]) -> str:
    return f"{place[0]}.{place[1]}" if place[1] else place[0]


def apply_guarded(doc: Doc[Any], update: bytes, valid_language: Callable[[Any], bool]) -> tuple[bytes | None, set[str]]:
    """Apply a client's update while watching ``meta`` and ``runs``; if it changed what the server owns
    (or set an invalid language), undo those changes at once.

    Returns (the compensating update, or None; the names of what was reverted). The compensation is
    authored by the server's document, causally after the update, so it wins on every peer.
    """
    meta, runs = doc.get(META, type=Map), doc.get(RUNS, type=Array)
    hits: set[str] = set()

    def on_meta(events: list[Any]) -> None:
        for e in events:
            for key in ([e.path[0]] if e.path else list(getattr(e, "keys", ()))):
                hits.add(f"{META}.{key}")

    subs = (meta.observe_deep(on_meta), runs.observe_deep(lambda events: hits.add(RUNS)))
    undo = UndoManager(scopes=[meta, runs], capture_timeout_millis=0)
    origin = object()
    undo.include_origin(origin)
    try:
        with doc.transaction(origin=origin):
            doc.apply_update(update)
    finally:
        meta.unobserve(subs[0])
        runs.unobserve(subs[1])
    reverted = {h for h in hits if h != f"{META}.language"}
    if f"{META}.language" in hits and not valid_language(meta.get("language")):
        reverted.add(f"{META}.language")
    if not reverted:
        return None, set()
    captured: list[bytes] = []
    sub = doc.observe(lambda event: captured.append(event.update))
    try:
        undo.undo()
    finally:
        doc.unobserve(sub)
    if not captured:
        return None, reverted
    return (captured[0] if len(captured) == 1 else merge_updates(*captured)), reverted
