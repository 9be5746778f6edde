"""The registry of session languages: ids and their aliases, independent of installed toolchains.

A session's language (creation, PATCH, save-code, an editor's ``meta.language``) must be one of
these ids or an alias of one, which is stored as the id (``c++`` becomes ``cpp``). Whether a
language can also *run* on this host is the execution package's business: it attaches toolchains
to these ids (``execution/languages.py``) and ``GET /api/languages`` lists every id with
``runnable``. Lives at the top of the package so the API, the room and the execution package all
read it without importing each other.
"""

from __future__ import annotations

# id -> aliases. Ids are lower case and match domain.LANGUAGE_PATTERN; keep the runnable ones first.
LANGUAGES: dict[str, tuple[str, ...]] = {
    "python": ("py", "python3"),
    "javascript": ("js", "node", "nodejs"),
    "typescript": ("ts",),
    "bash": ("sh", "shell"),
    "c": ("gcc",),
    "cpp": ("c++", "cxx", "g++"),
    "java": (),
    "go": ("golang",),
    "rust": ("rs",),
    "csharp": ("c#", "cs"),
    "kotlin": ("kt",),
    "ruby": ("rb",),
    "php": (),
    "swift": (),
    "scala": (),
    "sql": (),
    "plaintext": ("text", "txt"),
}

_CANONICAL = {name: lang for lang, aliases in LANGUAGES.items() for name in (lang, *aliases)}


def accepted_names() -> tuple[str, ...]:
    """Every name a request may give: the ids, then their aliases (the OpenAPI enum)."""
    return (*LANGUAGES, *(alias for aliases in LANGUAGES.values() for alias in aliases))


def canonical(name: str) -> str | None:
    """The registry id that `name` names (an id or an alias), or None."""
    return _CANONICAL.get(name)


def unknown_message(name: str) -> str:
    """The one explanation every refusal of an unknown session language gives."""
    return (f"unknown language {name[:40]!r}: use one of {', '.join(LANGUAGES)} (or an alias); "
            "see GET /api/languages")
