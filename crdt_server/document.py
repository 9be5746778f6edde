"""The shared document's schema and the edits the server makes to it.

Every editor binding uses these names: the Y.Text ``code``, the Y.Map ``meta`` (language, title,
status) and the Y.Array ``runs`` (newest last, at most ``MAX_RUNS``).

Why edits are *built* here and submitted elsewhere: every change to a live document goes through
the room's write-ahead pipeline (commit, then apply, then broadcast), REST included, so this module
only computes the CRDT update. Text is never re-seeded: saved code becomes a minimal edit (common
prefix/suffix) of the existing Y.Text, so editors keep their cursors and nothing is duplicated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pycrdt import Array, Doc, Map, Text

from .execution import RunResult
from .execution.display import display_text

TEXT = "code"
META = "meta"
RUNS = "runs"
MAX_RUNS = 20
NOTES = "notes"  # the Y.Text of a session's second document, the interviewer's private notes

# Session fields the server mirrors into ``meta`` for editors, under the names they read there
# (``locked`` and ``runEnabled`` appear once the interviewer first sets them: absent means false / true).
META_KEYS = {"title": "title", "language": "language", "status": "status", "locked": "locked",
             "run_enabled": "runEnabled"}


def initial_document(title: str, language: str, code: str, status: str = "active") -> bytes:
    """The first update of a new session: meta, an empty runs array and the starter code."""
    doc: Doc[Any] = Doc()
    with doc.transaction():
        meta = doc.get(META, type=Map)
        meta["language"] = language
        meta["title"] = title
        meta["status"] = status
        doc.get(RUNS, type=Array)
        text = doc.get(TEXT, type=Text)
        if code:
            text.insert(0, code)
    return doc.get_update()


def read_text(doc: Doc[Any]) -> str:
    return str(doc.get(TEXT, type=Text))


def text_edit(old: str, new: str) -> tuple[int, int, str]:
    """Minimal single-span edit turning ``old`` into ``new``: (start, delete_count, insert), in code points."""
    limit = min(len(old), len(new))
    start = 0
    while start < limit and old[start] == new[start]:
        start += 1
    end_old, end_new = len(old), len(new)
    while end_old > start and end_new > start and old[end_old - 1] == new[end_new - 1]:
        end_old -= 1
        end_new -= 1
    return start, end_old - start, new[start:end_new]


def _utf8_len(s: str) -> int:
    return len(s.encode("utf-8"))


def edit_update(
    doc: Doc[Any],
    *,
    code: str | None = None,
    meta: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> bytes | None:
    """The CRDT update that applies the requested changes to ``doc`` (left unmodified); None if nothing changes.

    Built on a scratch copy so the live document only ever changes through the room's pipeline.
    """
    scratch: Doc[Any] = Doc()
    scratch.apply_update(doc.get_update())
    before = scratch.get_state()
    changed = False
    with scratch.transaction():
        if code is not None:
            text = scratch.get(TEXT, type=Text)
            old = str(text)
            start, delete, insert = text_edit(old, code)
            # pycrdt indexes Y.Text by UTF-8 bytes: convert from code points here, once.
            b_start = _utf8_len(old[:start])
            if delete:
                del text[b_start : b_start + _utf8_len(old[start : start + delete])]
            if insert:
                text.insert(b_start, insert)
            changed = bool(delete or insert)
        m = scratch.get(META, type=Map)
        for key, value in (meta or {}).items():
            if m.get(key) != value:
                m[key] = value
                changed = True
        if run is not None:
            runs = scratch.get(RUNS, type=Array)
            runs.append(Map(dict(run)))
            excess = len(runs) - MAX_RUNS
            if excess > 0:
                del runs[0:excess]
            changed = True
    return scratch.get_update(before) if changed else None


def run_entry(run_id: str, by: str, started_at: float, result: RunResult) -> dict[str, Any]:
    """A session run as the document's ``runs`` array holds it (what every editor shows): output
    without terminal escapes, NUL or bidi overrides (``execution/display.py``)."""
    return {
        "id": run_id, "by": by, "language": result.language, "startedAt": started_at,
        "durationMs": result.duration_ms, "exitCode": result.exit_code, "stdout": display_text(result.stdout),
        "stderr": display_text(result.stderr), "timedOut": result.timed_out, "truncated": result.truncated,
        "sandbox": result.sandbox,
    }
