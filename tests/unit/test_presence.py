"""Presence sanitising (crdt_server/presence.py), in process.

Everything in an awareness state is client-controlled. The bugs caught here: a lone surrogate
(valid in JSON, not in UTF-8) that makes the participants answer or the history write raise; NaN or
Infinity that json.dumps writes as invalid JSON; a nesting depth that exhausts the stack; an
unbounded name stored in every update row.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from crdt_server.domain import MAX_NAME
from crdt_server.presence import MAX_JSON_DEPTH, clean_json, clean_str, parse_state, summary, user_field


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


# -- clean_str ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("s", ["", "Ada", "José", "😀", "日本語", "e\u0301"])
def test_clean_str_keeps_valid_text(s: str) -> None:
    assert clean_str(s) == s


@pytest.mark.parametrize(
    ("s", "expected"),
    [("a\ud800b", "a\ufffdb"), ("\udfff", "\ufffd"), ("\ud83d", "\ufffd"), ("x\ud83d\ude00", "x\ufffd\ufffd")],
)
def test_clean_str_replaces_lone_surrogates(s: str, expected: str) -> None:
    # json.loads('"\\ud83d\\ude00"') pairs them; only separately decoded halves stay surrogates
    out = clean_str(s)
    assert out == expected
    out.encode("utf-8")  # would raise UnicodeEncodeError for a surrogate left in


def test_clean_str_from_client_json() -> None:
    raw = json.loads('"name \\ud800 end"')  # what a client can send
    assert clean_str(raw) == "name \ufffd end"


def test_clean_str_limit_counts_characters() -> None:
    assert clean_str("😀" * 150, 100) == "😀" * 100
    assert clean_str("abc", 2) == "ab"
    assert clean_str("a\ud800bc", 3) == "a\ufffdb"


# -- clean_json ---------------------------------------------------------------------------------------


def test_clean_json_passes_plain_values() -> None:
    value = {"anchor": {"type": {"client": 1, "clock": 2}, "assoc": 0}, "head": None, "x": [1.5, True, "日本"]}
    assert clean_json(value) == value


def test_clean_json_depth_limit() -> None:
    assert clean_json(nested(MAX_JSON_DEPTH)) == nested(MAX_JSON_DEPTH)
    with pytest.raises(ValueError, match="too deep"):
        clean_json(nested(MAX_JSON_DEPTH + 1))
    deep_dict: Any = 1
    for _ in range(MAX_JSON_DEPTH + 1):
        deep_dict = {"k": deep_dict}
    with pytest.raises(ValueError):
        clean_json(deep_dict)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_clean_json_refuses_non_finite_numbers(bad: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        clean_json(bad)
    with pytest.raises(ValueError):
        clean_json({"cursor": [0, bad]})


def test_clean_json_cleans_keys_and_strings() -> None:
    assert clean_json({"a\ud800": ["b\udc00"]}) == {"a\ufffd": ["b\ufffd"]}
    json.dumps(clean_json({"a\ud800": ["b\udc00"]}), ensure_ascii=False).encode("utf-8")


@pytest.mark.parametrize("bad", [(1, 2), {1, 2}, b"bytes", object()])
def test_clean_json_refuses_non_json(bad: object) -> None:
    with pytest.raises(ValueError):
        clean_json(bad)


# -- parse_state --------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [None, b"null", b"", b"{", b"\xff\xfe", b"[" * 100_000])
def test_parse_state_absent_removed_or_malformed(raw: bytes | None) -> None:
    assert parse_state(raw) is None


def test_parse_state_valid() -> None:
    state = {"user": {"name": "José 😀", "color": "#f0a"}, "cursor": None}
    assert parse_state(json.dumps(state).encode()) == state
    assert parse_state(json.dumps(state, ensure_ascii=False).encode("utf-8")) == state
    assert parse_state(b"{}") == {}


# -- user_field and summary ---------------------------------------------------------------------------


def test_user_field() -> None:
    assert user_field({"user": {"name": "Ada", "color": "#0af"}}, "name") == "Ada"
    assert user_field({"user": {"name": "Ada", "color": "#0af"}}, "color") == "#0af"
    assert user_field({"user": {"name": "é" * (MAX_NAME + 50)}}, "name") == "é" * MAX_NAME
    assert user_field({"user": {"name": "x\ud800"}}, "name") == "x\ufffd"


@pytest.mark.parametrize(
    "state",
    [None, [], "user", {}, {"user": None}, {"user": "Ada"}, {"user": ["Ada"]}, {"user": {}},
     {"user": {"name": ""}}, {"user": {"name": 7}}, {"user": {"name": ["Ada"]}}, {"user": {"name": None}}],
)
def test_user_field_ill_typed_is_none(state: Any) -> None:
    assert user_field(state, "name") is None


def test_summary_of_no_states() -> None:
    assert summary([]) == {"name": None, "color": None, "cursor": None}


def test_summary_first_well_typed_value_wins() -> None:
    states = [
        None,
        "garbage",
        {"user": {"name": 5, "color": "#111"}},
        {"user": {"name": "Ada", "color": "#222"}, "cursor": {"anchor": 1, "head": 2}},
        {"user": {"name": "Bob"}, "cursor": {"anchor": 9}},
    ]
    assert summary(states) == {"name": "Ada", "color": "#111", "cursor": {"anchor": 1, "head": 2}}


def test_summary_skips_an_unsafe_cursor() -> None:
    unsafe = parse_state(b'{"cursor": {"anchor": NaN}}')  # Python's json accepts NaN
    deep = {"cursor": nested(MAX_JSON_DEPTH + 5)}
    fine = {"cursor": {"anchor": "\ud800x"}}
    result = summary([unsafe, deep, fine])
    assert result["cursor"] == {"anchor": "\ufffdx"}
    json.dumps(result, allow_nan=False, ensure_ascii=False).encode("utf-8")  # safe to answer over REST


def test_summary_bounds_names() -> None:
    result = summary([{"user": {"name": "N" * 10_000, "color": "c" * 10_000}}])
    assert len(result["name"]) == MAX_NAME and len(result["color"]) == MAX_NAME
