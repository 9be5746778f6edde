"""Bus messages (crdt_server/cluster/messages.py): what a process accepts from Redis, and the settings
that turn the bus on."""

from __future__ import annotations

import pytest

from crdt_server.cluster.messages import MAX_MESSAGE, Action, BadMessage, Kind, Message, bus_key, decode, encode
from crdt_server.config import ConfigError, load_settings, settings_from

KEY = bus_key("s" * 40, "crdt-server")
SID = "bmOEK1UxqSpATY89dQKYAA"
ME = b"\x07" * 8

EXAMPLES = [
    Message(Kind.UPDATE, ME, SID, "main", rows=((5, b"\x01\x02"), (6, b""), (7, b"x" * 1000))),
    Message(Kind.UPDATE, ME, SID, "notes", rows=((1, b"n"),)),
    Message(Kind.HEAD, ME, SID, "main", seq=2**40),
    Message(Kind.CONTROL, ME, SID, "main", action=Action.DROP, value=4410),
    Message(Kind.CONTROL, ME, SID, "main", action=Action.TOKENS, value=3),
    Message(Kind.PRESENCE, ME, SID, "main", conn_id="ab12", role="observer", since=1.5, left=True, frame=b""),
    Message(Kind.PRESENCE, ME, SID, "main", conn_id="ab12", role="candidate", since=2.0, frame=b"\x01\x05abcde"),
    Message(Kind.PRESENCE_QUERY, ME, SID, "main", seq=99),
    Message(Kind.PRESENCE_DONE, ME, SID, "notes", seq=99),
]


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: m.kind.name)
def test_every_kind_round_trips(message):
    assert decode(KEY, encode(KEY, message)) == message


def test_another_key_or_a_changed_byte_is_refused():
    data = encode(KEY, EXAMPLES[0])
    with pytest.raises(BadMessage, match="tag"):
        decode(bus_key("t" * 40, "crdt-server"), data)
    with pytest.raises(BadMessage, match="tag"):
        decode(bus_key("s" * 40, "other-prefix"), data)  # another deployment on the same Redis
    for i in (1, 12, len(data) - 20):
        changed = bytearray(data)
        changed[i] ^= 1
        with pytest.raises(BadMessage):
            decode(KEY, bytes(changed))


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x02" + b"\x00" * 40, b"\x01\x01" + b"\x00" * 8 + b"\x03ab!"])
def test_garbage_is_refused(data):
    with pytest.raises(BadMessage):
        decode(KEY, data)


def test_lengths_past_their_bounds_are_refused_even_when_tagged():
    import hashlib
    import hmac

    def tagged(body: bytes) -> bytes:
        return body + hmac.new(KEY, body, hashlib.sha256).digest()[:16]

    good = encode(KEY, EXAMPLES[2])[:-16]
    with pytest.raises(BadMessage, match="trailing"):
        decode(KEY, tagged(good + b"\x00"))
    with pytest.raises(BadMessage, match="truncated"):
        decode(KEY, tagged(good[:-1]))
    row = encode(KEY, Message(Kind.UPDATE, ME, SID, "main", rows=((1, b"abc"),)))[:-16]
    with pytest.raises(BadMessage):  # a row length past the end
        decode(KEY, tagged(row[:-7] + (2**31).to_bytes(4, "big") + b"abc"))
    with pytest.raises(BadMessage, match="too large"):
        decode(KEY, b"\x01" * (MAX_MESSAGE + 1))


def test_the_bus_needs_postgresql_and_write_ahead_and_valid_values():
    pg = {"CRDT_SERVER_DATABASE_URL": "postgresql://u@h/db"}
    ok = settings_from({}, {**pg, "CRDT_SERVER_REDIS_URL": "redis://127.0.0.1:6379/0"})
    assert ok.redis_url and ok.redis_prefix == "crdt-server" and ok.presence_timeout == 10
    cases = [
        ({"CRDT_SERVER_REDIS_URL": "redis://h:6379/0"}, "--redis-url"),  # SQLite: one process
        ({**pg, "CRDT_SERVER_REDIS_URL": "redis://h/0", "CRDT_SERVER_PERSISTENCE": "off"}, "--persistence"),
        ({**pg, "CRDT_SERVER_REDIS_URL": "http://h:6379"}, "--redis-url"),
        ({**pg, "CRDT_SERVER_REDIS_URL": "redis://h:port/0"}, "--redis-url"),
        ({**pg, "CRDT_SERVER_REDIS_PREFIX": "a b"}, "--redis-prefix"),
        ({**pg, "CRDT_SERVER_PRESENCE_TIMEOUT": "2"}, "--presence-timeout"),
        ({**pg, "CRDT_SERVER_REDIS_TIMEOUT": "0"}, "--redis-timeout"),
    ]
    for env, flag in cases:
        with pytest.raises(ConfigError) as exc:
            settings_from({}, env)
        assert flag in str(exc.value), (env, str(exc.value))


def test_a_redis_password_on_the_command_line_is_refused_and_never_echoed():
    with pytest.raises(ConfigError) as exc:
        load_settings(["--database-url", "postgresql://u@h/db", "--redis-url", "redis://:hunter2@h:6379/0"], {})
    assert "--redis-url" in str(exc.value) and "hunter2" not in str(exc.value)
    with pytest.raises(ConfigError) as exc:
        settings_from({}, {"CRDT_SERVER_REDIS_URL": "ftp://:hunter2@h/0", "CRDT_SERVER_DATABASE_URL": "postgresql://u@h/d"})
    assert "hunter2" not in str(exc.value)


def test_a_change_held_for_a_room_whose_load_fails_still_reaches_the_session():
    """A deletion (or re-issue) from another process arrives while this process loads the session's
    main room, and the load then fails (the session is gone): the change is the session's, and its notes
    may be loaded here, so it is applied all the same, not dropped with the failed load."""
    from types import SimpleNamespace

    from crdt_server.cluster.cluster import Cluster
    from crdt_server.storage import SessionNotFound

    settings = settings_from({}, {"CRDT_SERVER_DATABASE_URL": "postgresql://u@h/db",
                                  "CRDT_SERVER_REDIS_URL": "redis://127.0.0.1:6379/0"})
    service = SimpleNamespace(rooms=SimpleNamespace(rooms={}))
    cluster = Cluster(settings, "s" * 48, service)  # type: ignore[arg-type]  # never started: no Redis
    spawned: list[tuple[object, tuple[object, ...]]] = []
    cluster._spawn = lambda fn, *args: spawned.append((fn, args))  # type: ignore[method-assign]
    drop = Message(Kind.CONTROL, ME, SID, "main", action=Action.DROP, value=4404)
    with pytest.raises(SessionNotFound), cluster.buffering(SID):
        cluster.on_message(encode(cluster.key, drop))
        assert not spawned  # held while the room loads
        raise SessionNotFound(SID)
    assert [(fn, args) for fn, args in spawned] == [(cluster._control, (drop,))]
