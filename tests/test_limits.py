"""TokenBuckets: the limiter behind session creation (429), WebSocket connects (HTTP 429 on the handshake) and runs; Retry-After rounding."""

from __future__ import annotations

import pytest

from crdt_server.limits import TokenBuckets, retry_after_header


def test_zero_rate_is_unlimited():
    b = TokenBuckets(0, 1)
    assert all(b.take("ip", now=0) == 0 for _ in range(1000))


def test_burst_then_refill():
    b = TokenBuckets(rate=2.0, burst=3)
    assert [b.take("a", now=10.0) for _ in range(3)] == [0, 0, 0]
    wait = b.take("a", now=10.0)
    assert wait == pytest.approx(0.5)  # one token per 0.5 s
    assert b.take("a", now=10.25) == pytest.approx(0.25)
    assert b.take("a", now=10.5) == 0
    assert b.take("a", now=10.5) > 0
    # never more than the burst, however long the pause
    assert [b.take("a", now=1000.0) for _ in range(4)][:3] == [0, 0, 0]
    assert b.take("a", now=1000.0) > 0


def test_keys_are_independent():
    b = TokenBuckets(rate=0.001, burst=1)
    assert b.take("a", now=0) == 0
    assert b.take("a", now=0) > 0
    assert b.take("b", now=0) == 0


def test_burst_below_one_counts_as_one():
    b = TokenBuckets(rate=1.0, burst=0)
    assert b.take("a", now=0) == 0
    assert b.take("a", now=0) > 0


def test_memory_is_bounded():
    b = TokenBuckets(rate=1.0, burst=1, max_keys=100)
    for i in range(10_000):
        b.take(f"10.0.{i // 256}.{i % 256}", now=float(i) / 1000)
        assert len(b._buckets) <= 100
    # a limited client stays limited while others come and go, as long as room remains
    c = TokenBuckets(rate=0.001, burst=1, max_keys=100)
    c.take("x", now=0)
    assert c.take("x", now=0) > 0


def test_wait_takes_nothing():
    b = TokenBuckets(rate=0.5, burst=1)
    assert b.wait("a", now=0) == 0
    assert b.wait("a", now=0) == 0  # still there: wait() only looks
    assert b.take("a", now=0) == 0
    assert b.wait("a", now=0) == pytest.approx(2.0)
    assert b.wait("a", now=1.0) == pytest.approx(1.0)
    assert TokenBuckets(0, 1).wait("a", now=0) == 0


def test_retry_after_header_rounds_up_to_whole_seconds():
    assert [retry_after_header(s) for s in (0, 0.01, 0.5, 1.0, 1.01, 2.5, 59.99)] == ["1", "1", "1", "1", "2", "3", "60"]
    assert retry_after_header(-3) == "1"
    assert retry_after_header(float("inf")) == "1"
