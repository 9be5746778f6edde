"""The document schema and the server's edits to it (crdt_server/document.py), in process.

pycrdt indexes a Y.Text by UTF-8 bytes, Python strings by code points and Yjs by UTF-16 units.
``text_edit`` works in code points and ``edit_update`` converts once; the bugs caught here are an
offset in the wrong unit (text garbled after any emoji, CJK or accented character), an edit that
rewrites the whole text (editors lose their cursors, concurrent edits duplicate), and updates
produced when nothing changed (a history entry and a broadcast for nothing).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text

from crdt_server.document import MAX_RUNS, META, RUNS, TEXT, edit_update, initial_document, read_text, text_edit


def doc_with(code: str = "", **meta: str) -> Doc[Any]:
    doc: Doc[Any] = Doc()
    doc.apply_update(initial_document(meta.get("title", "t"), meta.get("language", "python"), code))
    return doc


def copy_of(doc: Doc[Any]) -> Doc[Any]:
    other: Doc[Any] = Doc()
    other.apply_update(doc.get_update())
    return other


def apply(doc: Doc[Any], update: bytes | None) -> Doc[Any]:
    """A copy of ``doc`` with ``update`` applied (what every editor ends up with)."""
    assert update is not None
    other = copy_of(doc)
    other.apply_update(update)
    return other


# -- text_edit: code points ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("", "", (0, 0, "")),
        ("abc", "abc", (3, 0, "")),
        ("", "abc", (0, 0, "abc")),
        ("abc", "", (0, 3, "")),
        ("hello world", "hello there world", (6, 0, "there ")),
        ("abcdef", "abXYef", (2, 2, "XY")),
        ("aaa", "aaaa", (3, 0, "a")),  # repeated characters: prefix wins, never a negative span
        ("aaaa", "aa", (2, 2, "")),
        # emoji: one code point, 4 UTF-8 bytes, 2 UTF-16 units
        ("a😀b", "a😀c", (2, 1, "c")),
        ("😀😀", "😀x😀", (1, 0, "x")),
        ("😀", "😁", (0, 1, "😁")),  # same UTF-8 prefix and same high surrogate: never split
        # CJK: 3 UTF-8 bytes, 1 UTF-16 unit
        ("日本", "日本語", (2, 0, "語")),
        ("日本語", "日語", (1, 1, "")),
        # combining marks are code points of their own
        ("e\u0301", "e\u0300", (1, 1, "\u0300")),
        ("cafe", "cafe\u0301", (4, 0, "\u0301")),
    ],
)
def test_text_edit_is_minimal_in_code_points(old: str, new: str, expected: tuple[int, int, str]) -> None:
    start, delete, insert = text_edit(old, new)
    assert (start, delete, insert) == expected
    assert old[:start] + insert + old[start + delete :] == new


# -- edit_update: the CRDT update ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("print(1)\n", "print(2)\n"),
        ("a😀b", "a😀c"),
        ("😀😀😀", "😀😀"),
        ("x = '日本'\n", "x = '日本語'\n"),
        ("naïve café", "naïve cafe\u0301s"),
        ("👩‍💻 ZWJ", "👩‍🔬 ZWJ"),
        ("", "新しい 😀"),
        ("全部消す 😀", ""),
    ],
)
def test_edit_update_yields_exactly_the_new_text(old: str, new: str) -> None:
    doc = doc_with(old)
    update = edit_update(doc, code=new)
    assert read_text(apply(doc, update)) == new
    assert read_text(doc) == old  # the live document only changes through the room's pipeline


def test_edit_update_touches_only_the_changed_span() -> None:
    """retain/delete/insert in pycrdt's unit (UTF-8 bytes): 'a' + '😀' = 5 bytes kept."""
    doc = doc_with("a😀b日本")
    update = edit_update(doc, code="a😀c日本")
    target = copy_of(doc)
    deltas: list[Any] = []
    text = target.get(TEXT, type=Text)
    subscription = text.observe(lambda event: deltas.append(event.delta))
    target.apply_update(update)  # type: ignore[arg-type]
    text.unobserve(subscription)
    assert deltas == [[{"retain": 5}, {"delete": 1}, {"insert": "c"}]]


def test_concurrent_edit_elsewhere_survives() -> None:
    """A whole-text rewrite would drop or duplicate what another editor typed meanwhile."""
    doc = doc_with("def f():\n    return 1\n")
    editor = copy_of(doc)
    text = editor.get(TEXT, type=Text)
    before = editor.get_state()
    text.insert(0, "# 日本 😀\n")
    concurrent = editor.get_update(before)
    server = edit_update(doc, code="def f():\n    return 2\n")
    assert server is not None
    editor.apply_update(server)
    assert read_text(editor) == "# 日本 😀\ndef f():\n    return 2\n"
    doc.apply_update(server)  # the other order converges to the same text
    doc.apply_update(concurrent)
    assert read_text(doc) == read_text(editor)


ALPHABET = st.sampled_from(list("ab \n") + ["é", "😀", "日", "\u0301", "👩‍💻", "\t", "ß"])
TEXTS = st.lists(ALPHABET, max_size=30).map("".join)


@settings(max_examples=300, deadline=None)
@given(TEXTS, TEXTS)
def test_edit_update_random_pairs(old: str, new: str) -> None:
    doc = doc_with(old)
    update = edit_update(doc, code=new)
    if old == new:
        assert update is None
    else:
        assert read_text(apply(doc, update)) == new


def test_no_change_is_none() -> None:
    doc = doc_with("same 😀", title="T", language="python")
    assert edit_update(doc) is None
    assert edit_update(doc, code="same 😀") is None
    assert edit_update(doc, meta={"language": "python", "title": "T"}) is None
    assert edit_update(doc, code="same 😀", meta={"language": "python"}) is None


def test_meta_change_only_when_the_value_changes() -> None:
    doc = doc_with("x", language="python")
    update = edit_update(doc, meta={"language": "javascript", "title": "t"})  # title unchanged
    changed = apply(doc, update)
    assert changed.get(META, type=Map)["language"] == "javascript"
    assert read_text(changed) == "x"
    assert edit_update(changed, meta={"language": "javascript"}) is None
    # a key that was never set counts as a change
    assert edit_update(doc, meta={"status": "ended"}) is not None


def test_run_appends_and_keeps_at_most_max_runs() -> None:
    doc = doc_with("print(1)\n")
    for i in range(MAX_RUNS + 5):
        update = edit_update(doc, run={"runId": f"r{i}", "stdout": f"{i}\n"})
        doc.apply_update(update)  # type: ignore[arg-type]
        runs = doc.get(RUNS, type=Array)
        assert len(runs) == min(i + 1, MAX_RUNS)
        assert runs[len(runs) - 1]["runId"] == f"r{i}"  # newest last
    ids = [run["runId"] for run in doc.get(RUNS, type=Array)]
    assert ids == [f"r{i}" for i in range(5, MAX_RUNS + 5)]  # the oldest dropped first
    assert read_text(doc) == "print(1)\n"


def test_initial_document_schema() -> None:
    doc = doc_with("starter 😀", title="Warm-up", language="go")
    meta = doc.get(META, type=Map)
    assert dict(meta) == {"language": "go", "title": "Warm-up", "status": "active"}
    assert read_text(doc) == "starter 😀"
    assert len(doc.get(RUNS, type=Array)) == 0
