"""What the document guard costs per keystroke: decode + ID-index check of an editor's update, beside
the CRDT library's own validation and apply of the same update (the reference in this invocation).

    uv run python bench/bench_guard.py [--updates 5000]
    PYTHONHASHSEED=0 valgrind --tool=callgrind .venv/bin/python bench/bench_guard.py --only decode-exact --updates N

Prints µs per update for: pycrdt get_state + apply (what ingest did before), the guard's check
alone, and the ratio; on a small document and one with 10,000 typed characters in 1,000 places.
Then what the content check (``decode(exact=True)``: what the server would not keep exactly) adds to
the guard's decode of a keystroke and of a ``meta.language`` write, and the guard's whole check of a map
write whose value is kept exactly against one it neutralises (stored as deleted, ``sync/neutral.py``),
interleaved rounds.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

from pycrdt import Doc, Map, Text, get_state

from crdt_server.document import initial_document
from crdt_server.sync.guard import DocumentGuard
from crdt_server.sync.updates import decode


def keystrokes(base: Doc[Any], n: int, seed: int = 7) -> list[bytes]:
    """``n`` one-character inserts by one editor (cursor jumps on 5 % of them), as separate updates."""
    rnd = random.Random(seed)
    editor: Doc[Any] = Doc(client_id=4_242_424_242)
    editor.apply_update(base.get_update())
    text = editor.get("code", type=Text)
    out, pos = [], len(str(text))
    for _ in range(n):
        if rnd.random() < 0.05:
            pos = rnd.randint(0, len(str(text)))
        before = editor.get_state()
        text.insert(len(str(text)[:pos].encode()), rnd.choice("abcdefgh "))
        pos += 1
        out.append(editor.get_update(before))
    return out


def big_document() -> Doc[Any]:
    doc: Doc[Any] = Doc()
    doc.apply_update(initial_document("t", "python", ""))
    rnd = random.Random(1)
    for u in keystrokes(doc, 0):
        doc.apply_update(u)
    writer: Doc[Any] = Doc(client_id=99)
    writer.apply_update(doc.get_update())
    text = writer.get("code", type=Text)
    for _ in range(1000):
        text.insert(len(str(text)[: rnd.randint(0, len(str(text)))].encode()), "0123456789")
    doc.apply_update(writer.get_update())
    return doc


def guarded_apply_us(base: Doc[Any], updates: list[bytes]) -> float:
    """µs per update for the guard's check and the apply of what it lets through, on a copy of ``base``."""
    doc: Doc[Any] = Doc()
    doc.apply_update(base.get_update())
    guard = DocumentGuard(doc)
    t = time.perf_counter()
    for u in updates:
        verdict = guard.check(u)
        doc.apply_update(verdict.update)
        guard.applied(verdict.decoded, verdict.pending)
    return (time.perf_counter() - t) / len(updates) * 1e6


def measure(label: str, doc: Doc[Any], n: int) -> None:
    updates = keystrokes(doc, n)
    live: Doc[Any] = Doc()
    live.apply_update(doc.get_update())
    t = time.perf_counter()
    for u in updates:
        get_state(u)
        live.apply_update(u)
    baseline = (time.perf_counter() - t) / n * 1e6
    checked = guarded_apply_us(doc, updates)
    print(f"| {label} | {baseline:.1f} | {checked:.1f} | +{checked - baseline:.1f} | {checked / baseline:.2f}x |")


def language_writes(base: Doc[Any], n: int) -> list[bytes]:
    """``n`` writes of ``meta.language`` by one editor (a lib0 ``any`` string each)."""
    return map_writes(base, n, lambda i: ("python", "go")[i % 2], root="meta", key="language")


def measure_exact(label: str, updates: list[bytes], rounds: int = 7) -> None:
    best = {False: float("inf"), True: float("inf")}
    for _ in range(rounds):
        for exact in (False, True):
            t = time.perf_counter()
            for u in updates:
                decode(u, exact=exact)
            best[exact] = min(best[exact], (time.perf_counter() - t) / len(updates) * 1e6)
    added = best[True] - best[False]
    print(f"| {label} | {best[False]:.2f} | {best[True]:.2f} | {added:+.2f} | {best[True] / best[False]:.3f}x |")


def map_writes(base: Doc[Any], n: int, value: Any, root: str = "extra", key: str = "v") -> list[bytes]:
    """``n`` writes to one key of a root map by one editor; ``value`` may be a function of the write's index."""
    editor: Doc[Any] = Doc(client_id=4_242_424_242)
    editor.apply_update(base.get_update())
    target = editor.get(root, type=Map)
    out = []
    for i in range(n):
        before = editor.get_state()
        target[key] = value(i) if callable(value) else value
        out.append(editor.get_update(before))
    return out


def measure_neutral(base: Doc[Any], n: int, rounds: int = 5) -> None:
    """The guard's check + apply of a map write kept exactly against one it neutralises (about the same
    size: one key of two letters, or two of one)."""
    cases = {"kept: {'ab': 1}": map_writes(base, n, {"ab": 1}),
             "neutralised: {'a': 1, 'b': 2}": map_writes(base, n, {"a": 1, "b": 2})}
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for label, updates in cases.items():
            best[label] = min(best[label], guarded_apply_us(base, updates))
    kept = best["kept: {'ab': 1}"]
    for label, us in best.items():
        print(f"| {label} | {us:.2f} | {us / kept:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=5000)
    parser.add_argument("--only", choices=["decode-exact"], default=None,
                        help="decode(exact=True) the keystrokes once and print nothing (for callgrind: two "
                             "--updates values, difference divided)")
    args = parser.parse_args()
    n = args.updates
    small: Doc[Any] = Doc()
    small.apply_update(initial_document("t", "python", "print(1)\n" * 20))
    if args.only == "decode-exact":
        for u in keystrokes(small, n):
            decode(u, exact=True)
        return
    print("| document | get_state + apply, µs | guard + apply, µs | added, µs | ratio |")
    print("|---|---|---|---|---|")
    measure("small (200 chars)", small, n)
    measure("big (10,000 chars in 1,000 places)", big_document(), n)
    print()
    print("| update | decode, µs | decode(exact=True), µs | added, µs | ratio |")
    print("|---|---|---|---|---|")
    measure_exact("keystroke", keystrokes(small, n))
    measure_exact("meta.language write", language_writes(small, n))
    print()
    print("| map write (guard check + apply) | µs | ratio |")
    print("|---|---|---|")
    measure_neutral(small, n)


if __name__ == "__main__":
    main()
