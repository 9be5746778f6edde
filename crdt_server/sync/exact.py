"""Which content the server's CRDT library keeps exactly; what it does not is deleted (``neutral.py``).

Why: the server keeps documents in Yrs (pycrdt) and serves newcomers, snapshots and reloads from Yrs's
encoding, not from the bytes clients sent. Some content a Yjs client can send does not come back the
same (measured with yjs 13.6.33 against pycrdt 0.14.13, the newest on PyPI; docs/websocket-protocol.md,
"Content the server does not keep"): object key order (Yrs keeps objects in a hash map), ``-0`` (read as an
integer), BigInt (becomes a number), a subdocument's ``meta`` (dropped), ``Y.XmlHook`` (Yrs writes it
without its name, which Yjs then fails to read: a newcomer gets nothing of the document), JSON text of
text embeds and formatting attributes (serde_json: key order, lone surrogate escapes refused, floats
outside its exact fast path rounded). Legacy JSON content and ``Y.XmlHook`` are also read differently by
Yrs than by Yjs (one string more; no name), so the guard and the CRDT library would not agree on where the
next struct starts. Such a struct is stored as deleted content instead, for everyone, its author included
(``sync/neutral.py``); the editors of the interview product (CodeMirror, Monaco: plain ``Y.Text``;
``meta`` strings; ``runs`` written by the server) never send any of it.

``updates.decode(update, exact=True)`` applies these rules while it walks a client's update and lists the
structs they flag (``Update.inexact``); the lib0 ``any`` checks are inline there, the JSON text ones are
``check_json``. They raise ``UnsupportedContent`` for ``decode`` to catch, never beyond it.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .protocol import ProtocolError, UnsupportedContent

MAX_JSON_DEPTH = 100  # serde_json (Yrs) refuses deeper JSON text (its limit is 128)
_SAFE_INTEGER = 2**53
_I64 = 2**63
_NUMBER = re.compile(r"-?(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?")
_SURROGATE = re.compile("[\ud800-\udfff]")

SEVERAL_KEYS = "an object with more than one key (their order is not kept)"
NEGATIVE_ZERO = "-0 (read back as 0)"
DEEP_JSON = f"JSON nested deeper than {MAX_JSON_DEPTH} levels (refused by the CRDT library beyond 128)"


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > 1:
        raise UnsupportedContent(SEVERAL_KEYS)
    return dict(pairs)


def _integer(text: str) -> int:
    value = int(text)
    if value == 0 and text.startswith("-"):
        raise UnsupportedContent(NEGATIVE_ZERO)
    if not -_I64 <= value < _I64:
        raise UnsupportedContent("an integer beyond 64 bits (refused by the CRDT library)")
    return value


def _float(text: str) -> float:
    """A JSON number with a fraction or exponent: exact when serde_json parses it on its fast path
    (the significand an exact double, one multiplication or division by an exact power of ten)."""
    m = _NUMBER.fullmatch(text)
    if m is None:
        raise ProtocolError("not a JSON number")
    whole, fraction, exponent = m.group(1), m.group(2) or "", int(m.group(3) or 0)
    significand = int(whole + fraction)
    if significand == 0:
        if text.startswith("-"):
            raise UnsupportedContent(NEGATIVE_ZERO)
        return 0.0
    if significand > _SAFE_INTEGER or abs(exponent - len(fraction)) > 22:
        raise UnsupportedContent("a number with more digits or a larger exponent than is kept exactly")
    return float(text)


def _constant(name: str) -> None:
    raise ProtocolError(f"{name} is not JSON")


def _strings_exact(value: Any, depth: int = 0) -> None:
    if depth > MAX_JSON_DEPTH:
        raise UnsupportedContent(DEEP_JSON)
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise UnsupportedContent("a lone UTF-16 surrogate escape (refused by the CRDT library)")
    elif isinstance(value, list):
        for item in value:
            _strings_exact(item, depth + 1)
    elif isinstance(value, dict):
        for key, item in value.items():
            _strings_exact(key, depth + 1)
            _strings_exact(item, depth + 1)


def check_json(raw: bytes) -> None:
    """The JSON text of a text embed or formatting attribute (v1 updates carry them as strings, which
    Yrs parses and writes back): ``UnsupportedContent`` unless it comes back the same."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_object, parse_int=_integer,
                           parse_float=_float, parse_constant=_constant)
    except ProtocolError:  # UnsupportedContent too
        raise
    except RecursionError:  # JSON.stringify writes it; the CRDT library would refuse it
        raise UnsupportedContent(DEEP_JSON) from None
    except ValueError:  # not UTF-8, not JSON, an integer of thousands of digits
        raise ProtocolError("embed or format value is not JSON") from None
    _strings_exact(value)
