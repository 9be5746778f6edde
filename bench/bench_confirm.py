"""What confirming an author's updates costs: a GC confirmation (what the server sends) against a full
echo (what the reference server sends), in bytes on the wire and in server CPU per update; and what
the other checks the ingest path gained cost (no-op updates, held-back structs, surrogate pairs).

    uv run python bench/bench_confirm.py [--updates 5000] [--rounds 3]
    valgrind --tool=callgrind .venv/bin/python bench/bench_confirm.py --only confirm --updates N

Bytes are exact. CPU: µs per update, the median of ``--rounds`` interleaved rounds; "echo" and
"confirm" each include framing and a write to a real local socket, as the server's direct write
does. Wall-clock figures move with the machine's load; for a stable comparison run ``--only X``
under callgrind with two ``--updates`` values and divide the difference in instructions.
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import time
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, Text

from bench.bench_guard import big_document, keystrokes
from crdt_server.document import initial_document
from crdt_server.sync import protocol as p
from crdt_server.sync.confirm import confirmation_frame, known_ids_frame
from crdt_server.sync.connection import wire_frame
from crdt_server.sync.guard import DocumentGuard
from crdt_server.sync.pending import HeldBack, decode_state_vector
from crdt_server.sync.surrogates import repair
from crdt_server.sync.updates import decode

EDITOR = 4_242_424_242  # a Yjs-sized clientID (random 32-bit: 5-byte varints)


def _edits(base: Doc[Any]) -> dict[str, list[bytes]]:
    """Editor updates as a client sends them: one per transaction, with that transaction's deletes
    only (``get_update(state)`` would add the document's whole delete set)."""
    editor: Doc[Any] = Doc(client_id=EDITOR)
    editor.apply_update(base.get_update())
    text = editor.get("code", type=Text)
    sent: list[bytes] = []
    editor.observe(lambda event: sent.append(event.update))
    out = {}
    edits: list[tuple[str, int, Callable[[], object]]] = [
        ("keystroke", 1, lambda: text.insert(100, "a")),
        ("5 keystrokes in one batch", 5, lambda: text.insert(101, "b")),
        ("paste of 100 kB", 1, lambda: text.insert(100, "x" * 100_000)),
        ("delete of a 10-char selection", 1, lambda: text.__delitem__(slice(100, 110))),
        ("delete of the 100 kB paste", 1, lambda: text.__delitem__(slice(100, 100_100))),
    ]
    for label, times, change in edits:
        sent.clear()
        for _ in range(times):
            change()
        out[label] = list(sent)
    return out


def _wire(update: bytes) -> int:
    return len(wire_frame(p.sync_frame(p.SYNC_UPDATE, update)))


def with_deletes(doc: Doc[Any], n: int = 1000, seed: int = 3) -> Doc[Any]:
    """``doc`` after ``n`` deletes of 1-10 characters at random places (a delete set of ~``n`` ranges)."""
    rnd = random.Random(seed)
    writer: Doc[Any] = Doc(client_id=98)
    writer.apply_update(doc.get_update())
    text = writer.get("code", type=Text)
    for _ in range(n):
        start = rnd.randint(0, max(0, len(text) - 10))
        del text[start:start + rnd.randint(1, 10)]  # ASCII text: bytes are characters
    out: Doc[Any] = Doc()
    out.apply_update(writer.get_update())
    return out


def bytes_table(doc: Doc[Any]) -> None:
    print("\nBytes the author receives back per update, WebSocket frame included:\n")
    print("| update | update bytes | full echo | GC confirmation | confirmation / echo |")
    print("|---|---|---|---|---|")
    for label, updates in _edits(doc).items():
        frame = confirmation_frame([(decode(u), u) for u in updates])
        assert frame is not None
        size, echo, confirm = sum(map(len, updates)), sum(map(_wire, updates)), len(wire_frame(frame))
        print(f"| {label} | {size:,} | {echo:,} | {confirm:,} | {confirm / echo:.2f} |")
    state = doc.get_update()
    noop = b"\x00" + state[decode(state).delete_set_offset:]  # a reconnecting writer's step 2
    sv = decode_state_vector(doc.get_state())
    known = known_ids_frame(sv, sv)
    print(f"\nDocument: {len(state):,} bytes of state, {len(sv)} clients, a delete set of {len(noop) - 1:,} bytes.")
    print(f"A reconnecting up-to-date writer sends that delete set again ({_wire(noop):,} bytes framed): a full "
          f"echo would return it; the server returns nothing for it and adds {len(wire_frame(known)) if known else 0} "
          "bytes to its sync step 1 answer (the IDs both hold).")


def _timed(fn: Callable[[], None], n: int) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) / n * 1e6


def cpu_table(doc: Doc[Any], n: int, rounds: int, only: str | None) -> None:
    updates = keystrokes(doc, n)
    decoded = [decode(u) for u in updates]
    server, client = socket.socketpair()
    server.setblocking(False)
    client.setblocking(False)

    def send(frame: bytes) -> None:
        try:
            server.send(frame)
        except BlockingIOError:
            try:
                while client.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
            server.send(frame)

    def none() -> None:
        for _ in updates:
            pass

    def echo() -> None:
        for u in updates:
            send(wire_frame(p.sync_frame(p.SYNC_UPDATE, u)))

    def confirm() -> None:
        for u, d in zip(updates, decoded, strict=True):
            frame = confirmation_frame([(d, u)])
            assert frame is not None
            send(wire_frame(frame))

    def ingest() -> Callable[[], None]:
        """The guard's per-update path as the room runs it: check, admit, apply, applied."""
        live: Doc[Any] = Doc()
        live.apply_update(doc.get_update())
        guard = DocumentGuard(live)

        def run() -> None:
            for u in updates:
                verdict = guard.check(u, (EDITOR,))
                guard.admit(verdict)
                live.apply_update(verdict.update)
                guard.applied(verdict.decoded, verdict.pending, verdict.update, admitted=True)
        return run

    fixed = {"none": none, "echo": echo, "confirm": confirm}
    if only is not None:
        (ingest() if only == "ingest" else fixed[only])()
        return
    results: dict[str, list[float]] = {k: [] for k in (*fixed, "ingest")}
    for _ in range(rounds):
        for name, fn in fixed.items():
            results[name].append(_timed(fn, n))
        results["ingest"].append(_timed(ingest(), n))  # it changes its document: a fresh one per round
    med = {k: statistics.median(v) for k, v in results.items()}
    print(f"\nServer CPU per update, µs (median of {rounds} rounds of {n} keystrokes):\n")
    print("| what | µs per update |")
    print("|---|---|")
    print(f"| full echo: frame + socket write | {med['echo'] - med['none']:.2f} |")
    print(f"| GC confirmation: build + frame + socket write | {med['confirm'] - med['none']:.2f} |")
    print(f"| for scale: the guard's check + admit + apply + applied | {med['ingest']:.2f} |")
    server.close()
    client.close()


def waiting_loop(doc: Doc[Any], n: int, settle: bool) -> tuple[Callable[[], None], Doc[Any], bytes]:
    """``n`` keystrokes applied while an update waits for a dependency; with ``settle``, each followed
    by the held-back check. Returns the loop, its document, and the missing dependency."""
    author: Doc[Any] = Doc(client_id=7)
    author.apply_update(doc.get_update())
    sent: list[bytes] = []
    author.observe(lambda event: sent.append(event.update))
    text = author.get("code", type=Text)
    text.insert(0, "first ")
    text.insert(6, "second")
    first, waiting = sent
    typed = keystrokes(doc, n, seed=11)
    decoded = [decode(u) for u in typed]
    live: Doc[Any] = Doc()
    live.apply_update(doc.get_update())
    live.apply_update(waiting)
    held = HeldBack()
    held.settle(live, waiting, decode(waiting), may_wait=True)
    assert held.update is not None

    def run() -> None:
        for u, d in zip(typed, decoded, strict=True):
            live.apply_update(u)
            if settle:
                held.settle(live, u, d, may_wait=False)
    return run, live, first


def rare_paths(doc: Doc[Any], n: int) -> None:
    """What runs only when something waits for a dependency, or an edit splits a surrogate pair."""
    plain, _, _ = waiting_loop(doc, n, settle=False)
    settled, live, first = waiting_loop(doc, n, settle=True)
    settle = _timed(settled, n) - _timed(plain, n)
    rows = [first] + keystrokes(doc, 2000, seed=11)
    state = live.get_update()
    t = time.perf_counter()
    HeldBack.of_stored(live, [state, *rows])
    load = (time.perf_counter() - t) * 1e3
    emoji: Doc[Any] = Doc()
    emoji.apply_update(doc.get_update())
    emoji.get("code", type=Text).insert(0, "x😀y")
    guard = DocumentGuard(emoji)
    client, low = next(iter(guard.astral._by_low))  # the emoji's low half ID
    v = p.write_var_uint
    # another client inserts "中" between the halves: origin the high half, right origin the low half
    inside = (b"\x01\x01" + v(5) + v(0) + bytes((0xC0 | 4,)) + v(client) + v(low - 1) + v(client) + v(low)
              + p.write_var_bytes("中".encode()) + b"\x00")
    split = guard.astral.splits(decode(inside), guard.deleted)
    assert split
    t = time.perf_counter()
    repair(emoji, split)
    repaired = (time.perf_counter() - t) * 1e6
    print("\nRare paths:\n")
    print("| what | cost |")
    print("|---|---|")
    print(f"| per update while an update waits for a dependency (held-back settle) | {settle:.1f} µs |")
    print(f"| loading: finding what waits in a snapshot + {len(rows):,} rows | {load:.1f} ms |")
    print(f"| repairing one split astral character (delete + re-insert, applied) | {repaired:.0f} µs |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["none", "echo", "confirm", "ingest", "waiting", "waiting-settled"],
                        default=None,
                        help="run one variant once and print nothing (for callgrind)")
    args = parser.parse_args()
    small: Doc[Any] = Doc()
    small.apply_update(initial_document("t", "python", "print(1)\n" * 20))
    if args.only in ("waiting", "waiting-settled"):
        waiting_loop(small, args.updates, settle=args.only == "waiting-settled")[0]()
        return
    if args.only is None:
        bytes_table(with_deletes(big_document()))
    cpu_table(small, args.updates, args.rounds, args.only)
    if args.only is None:
        rare_paths(small, min(args.updates, 2000))


if __name__ == "__main__":
    main()
