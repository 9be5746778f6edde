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

import bisect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pycrdt import Array, Doc, Map, Text, UndoManager, merge_updates

from ..document import META, RUNS, TEXT
from .neutral import neutralise
from .pending import HeldBack, IdRanges
from .protocol import is_crdt_failure
from .surrogates import AstralChars, Split
from .updates import SKIP, IdIndex, Inexact, Struct, Update, decode, encode_delete_set

CODE = TEXT  # the editors' text
EDITOR_META_KEYS = frozenset({"language"})


@dataclass
class Verdict:
    update: bytes  # the update to commit: the input, less deletes aimed at others' unseen IDs
    decoded: Update
    guarded: bool  # may touch what the server owns, or depends on IDs not seen yet: take the guarded path
    pending: bool = False  # some structs wait for IDs nobody has sent yet
    dropped_deletes: int = 0  # clocks of others' unseen IDs removed from the delete set
    code_frozen: bool = False  # its author may not change ``code`` now (locked candidate, ended session)
    noop: bool = False  # adds nothing: every struct already known, every delete of IDs already deleted
    splits: list[Split] | None = None  # astral characters it splits: repaired before it is applied
    neutralised: Sequence[Inexact] | None = None  # content not kept exactly, stored as deleted (sync/neutral.py)


def _in_order(deletes: Sequence[tuple[int, int, int]]) -> bool:
    """Each client's ranges together and ascending, as Yjs and Yrs write a delete set."""
    clients: set[int] = set()
    client_of, end = None, 0
    for client, clock, length in deletes:
        if client != client_of:
            if client in clients:
                return False
            clients.add(client)
            client_of, end = client, 0
        elif clock < end:
            return False
        end = clock + length
    return True


def owned_by_server(root: str, key: str | None) -> bool:
    return root == RUNS or (root == META and key not in EDITOR_META_KEYS)


class DocumentGuard:
    """The ID index of one live document, and the checks made against it."""

    def __init__(self, doc: Doc[Any], held: HeldBack | None = None) -> None:
        self.doc = doc
        self.index = IdIndex()
        state = decode(doc.get_update())
        self.index.record(state)
        self.deleted = IdRanges()  # the IDs the document holds as deleted
        self.deleted.add_all(state.deletes)
        # applied updates with structs still pending in the CRDT, each with the IDs that may wake it
        self._held: list[tuple[Update, dict[int, list[int]]]] = []
        self.held_back = held or HeldBack()  # what the CRDT holds back, as bytes (newcomers, snapshots)
        self.astral = AstralChars()  # emoji and other surrogate pairs of the texts (sync/surrogates.py)
        self.astral.record(self.index.places(state))

    def check(self, update: bytes, own_clients: Iterable[int] = (), *, code_frozen: bool = False) -> Verdict:
        """Classify a client's update (``ProtocolError`` if it does not decode); with ``code_frozen``
        its changes to ``code`` are what may not change too. Content the server would not keep exactly
        is neutralised here, before anything is stored: the update goes on as if its author had
        deleted that content at once (``sync/neutral.py``)."""
        decoded = decode(update, exact=True)
        neutralised = None
        if decoded.inexact:
            neutralised = decoded.inexact
            update = neutralise(update, decoded)
            decoded = decode(update)
        index = self.index
        starts: dict[int, int] = {}  # per client: where its structs in this update start, and end
        ends: dict[int, int] = {}
        for s in decoded.structs:
            starts[s.client] = min(starts.get(s.client, s.clock), s.clock)
            ends[s.client] = max(ends.get(s.client, 0), s.end)
        # While structs wait in the CRDT, any update may integrate them: watch every one.
        verdict = Verdict(update, decoded, guarded=bool(self._held) or self.held_back.structs, code_frozen=code_frozen,
                          neutralised=neutralised)
        if any(start > index.state(client) for client, start in starts.items()):
            verdict.pending = verdict.guarded = True  # a gap before them: they wait in the CRDT
        for _, place in index.places(decoded):
            if place is None:
                verdict.pending = verdict.guarded = True  # attached to IDs nobody has sent yet
            elif owned_by_server(*place) or place == (META, "language") or (code_frozen and place[0] == CODE):
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
                if owned_by_server(*place) or (code_frozen and place[0] == CODE):
                    verdict.guarded = True
        if verdict.dropped_deletes or not _in_order(kept):
            if not _in_order(kept):  # crafted: Yrs applies a delete set in descending order in quadratic time
                ordered = IdRanges()
                ordered.add_all(kept)
                kept = ordered.ranges()
            verdict.update = update[: decoded.delete_set_offset] + encode_delete_set(kept)
            verdict.decoded = decode(verdict.update)
        verdict.noop = not verdict.pending and self._adds_nothing(verdict.decoded)
        if self.astral and not verdict.noop:
            verdict.splits = self.astral.splits(verdict.decoded, self.deleted)
            verdict.guarded = verdict.guarded or bool(verdict.splits)
        return verdict

    def waits(self, decoded: Update) -> bool:
        """Whether a committed update (another process's, trusted) has structs or deletes the CRDT
        holds back: after a gap of their client's clock, attached to unknown IDs, or deleting them."""
        index = self.index
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        for s in decoded.structs:
            starts[s.client] = min(starts.get(s.client, s.clock), s.clock)
            ends[s.client] = max(ends.get(s.client, 0), s.end)
        if any(start > index.state(client) for client, start in starts.items()):
            return True
        if any(place is None for _, place in index.places(decoded)):
            return True
        return any(clock + length > max(index.state(client), ends.get(client, 0))
                   for client, clock, length in decoded.deletes)

    def _adds_nothing(self, update: Update) -> bool:
        """Every struct is known (to the index) and every delete is of IDs already deleted: a
        reconnecting client's sync step 2, a resent update. A delete of live IDs is not nothing."""
        index = self.index
        for s in update.structs:
            if s.ref == SKIP:
                continue
            if s.end > index.state(s.client):  # beyond what is known: the common case, decided at once
                return False
            clock = s.clock
            while clock < s.end:
                place, clock = index.span(s.client, clock)
                if place is None:
                    return False
        covers = self.deleted.covers
        for client, clock, length in update.deletes:
            if not covers(client, clock, clock + length):
                return False
        return True

    def admit(self, verdict: Verdict) -> None:
        """The update is queued for commit: its IDs are known from now on, not from when it is
        applied, so a delete of them queued behind it (another client's, in the same batch) does
        not count as aimed at unseen IDs, and the same update sent again adds nothing."""
        if not verdict.pending:
            self.index.record(verdict.decoded)
        self._record_content(verdict.decoded)

    def _record_content(self, update: Update) -> None:
        """What the index does not hold: deleted IDs, astral characters."""
        if update.deletes:
            self.deleted.add_all(update.deletes)
        if update.placed is not None:
            self.astral.record(update.placed)

    def _deleted_places(self, client: int, start: int, end: int) -> Iterable[tuple[str, str | None]]:
        clock = start
        while clock < end:
            place, next_clock = self.index.span(client, clock)
            if place is not None:
                yield place
            clock = max(next_clock, clock + 1)

    def applied(self, decoded: Update, pending: bool, update: bytes | None = None, *, admitted: bool = False) -> bool:
        """Record an applied update's IDs (its content too, unless ``admit`` did); one that was pending
        is retried after every later update. With its bytes, keep what the CRDT holds back of it
        (``held_back``); True if it holds any."""
        self.index.record(decoded)
        if not admitted:
            self._record_content(decoded)
        if pending:
            self._held.append((decoded, self._wakes(decoded)))
        if self._held and not pending:
            self._release(decoded.structs)
        held_back = self.held_back
        if update is None or (not pending and held_back.empty):  # the common case: nothing waits
            return False
        return held_back.settle(self.doc, update, decoded, may_wait=pending)


    def _wakes(self, held: Update) -> dict[int, list[int]]:
        """Per client, the clocks the structs of ``held`` that have no place yet refer to: only an
        update with one of these IDs can give them one."""
        refs: dict[int, set[int]] = {}
        for s, place in self.index.places(held):
            if place is None:
                for ref in (s.parent_id, s.origin, s.right_origin):
                    if ref is not None:
                        refs.setdefault(ref[0], set()).add(ref[1])
        return {client: sorted(clocks) for client, clocks in refs.items()}

    def _release(self, learned: Sequence[Struct]) -> None:
        """Record the held updates whose structs all have a place now that the index ``learned``
        these structs' IDs (and, in turn, the IDs of those released). Only those referring to a
        learned ID are resolved again: resolving every held update after every update cost a
        crafted 800 kB one that never integrates 0.2 s per keystroke of everyone in the session."""
        held = self._held
        while learned and held:
            still, released = [], []
            for update, wakes in held:
                if wakes and not _refers_to(wakes, learned):
                    still.append((update, wakes))
                elif any(place is None for _, place in self.index.places(update)):
                    still.append((update, self._wakes(update)))
                else:
                    self.index.record(update)
                    released.extend(update.structs)
            held, learned = still, released
        self._held = held


def _refers_to(wakes: dict[int, list[int]], structs: Sequence[Struct]) -> bool:
    """Whether one of the IDs in ``wakes`` is among those of ``structs``."""
    for s in structs:
        clocks = wakes.get(s.client)
        if clocks:
            i = bisect.bisect_left(clocks, s.clock)
            if i < len(clocks) and clocks[i] < s.end:
                return True
    return False


@dataclass(frozen=True)
class Guarded:
    """What applying a guarded update came to."""

    compensation: bytes | None  # the server's undo of what was reverted (for the update's author)
    settled: bytes | None  # update + compensation as the document now holds them, undone content dropped
    reverted: set[str]  # what was undone (``runs``, ``meta.title``, ``code``, …)


def apply_guarded(
    doc: Doc[Any], update: bytes, valid_language: Callable[[Any], bool], *, code_frozen: bool = False,
) -> Guarded:
    """Apply a client's update while watching ``meta`` and ``runs`` (and ``code`` when it is frozen for
    this client: a locked session's candidate, an ended session's editors); if it changed what it may
    not (or set an invalid language), undo those changes at once.

    The compensation is authored by the server's document, causally after the update, so it wins on
    every peer. ``settled`` is what the log stores and the other clients get: the same IDs, without
    the undone content (a locked candidate's text is never stored nor sent to anyone).
    """
    before = doc.get_state()
    # The undo manager keeps what it deletes (for a redo), so the live document still encodes an undone
    # text's content; a scratch copy replaying update + compensation drops it (only when code is frozen).
    state = doc.get_update() if code_frozen else b""
    meta, runs, code = doc.get(META, type=Map), doc.get(RUNS, type=Array), doc.get(CODE, type=Text)
    hits: set[str] = set()

    def on_meta(events: list[Any]) -> None:
        for e in events:
            try:
                keys = [e.path[0]] if e.path else list(getattr(e, "keys", ()))
            except BaseException as exc:  # Yrs panics reading some crafted updates' events
                if not is_crdt_failure(exc):
                    raise
                keys = ["?"]  # which key is unknown: treated as one the server owns (reverted)
            hits.update(f"{META}.{key}" for key in keys)

    # Yrs's own events, not pycrdt's: pycrdt converts every event before calling back, and that
    # conversion panics on some crafted updates inside the callback, where the panic cannot be caught
    # before it crosses back into Rust (which prints it as an uncaught exception).
    watched = [meta.integrated.observe_deep(on_meta), runs.integrated.observe_deep(lambda events: hits.add(RUNS))]
    scopes: list[Any] = [meta, runs]
    if code_frozen:
        watched.append(code.integrated.observe(lambda event: hits.add(CODE)))
        scopes.append(code)
    undo = UndoManager(scopes=scopes, capture_timeout_millis=0)
    origin = object()
    undo.include_origin(origin)
    try:
        with doc.transaction(origin=origin):
            doc.apply_update(update)
    finally:
        for subscription in watched:
            subscription.drop()
    reverted = {h for h in hits if h != f"{META}.language"}
    if f"{META}.language" in hits and not valid_language(meta.get("language")):
        reverted.add(f"{META}.language")
    if not reverted:
        return Guarded(None, None, set())
    captured: list[bytes] = []
    sub = doc.observe(lambda event: captured.append(event.update))
    try:
        undo.undo()
    finally:
        doc.unobserve(sub)
    if not captured:
        return Guarded(None, None, reverted)
    compensation = captured[0] if len(captured) == 1 else merge_updates(*captured)
    settled = doc.get_update(before)
    if CODE in reverted:
        scratch: Doc[Any] = Doc()
        scratch.apply_update(state)
        scratch.apply_update(update)
        scratch.apply_update(compensation)
        settled = scratch.get_update(before)
    return Guarded(compensation, _settled(settled, decode(update), decode(compensation)), reverted)


def _settled(diff: bytes, update: Update, compensation: Update) -> bytes:
    """``diff`` (the document's structs since before the update, and its *whole* delete set) with
    the delete set cut down to the IDs the update and its compensation touch."""
    wanted = IdRanges()  # merged, so each delete range costs a bisect (against each wanted range, it was
    wanted.add_all([(s.client, s.clock, s.length) for s in (*update.structs, *compensation.structs)])
    wanted.add_all((*update.deletes, *compensation.deletes))  # quadratic: most of a fuzzed server's CPU)
    full = decode(diff)
    kept: list[tuple[int, int, int]] = []
    for client, clock, length in full.deletes:
        kept += wanted.within(client, clock, clock + length)
    return diff[: full.delete_set_offset] + encode_delete_set(kept)
