"""The Redis side of the cluster: one supervised subscriber loop, one publisher, the heartbeat key.

Why our own loop: redis-py's asyncio pub/sub does not reconnect reliably on its own (redis-py
#2089, #2417), and a subscription that silently stops would leave rooms stale. So the loop is
supervised here: any error, or no message for longer than ``check_interval + timeout`` (this
process publishes a ping to the channel every ``check_interval`` and expects it back, which proves
both directions), drops the connection and subscribes again with backoff. Every (re)subscribe calls
``on_subscribed``: messages published while we were away are lost (pub/sub is at most once), so
every loaded room then re-reads its log from the database. ``ready`` is what /health reports.

Publishing never blocks a room: messages go into a bounded queue that one task drains in
pipelines. When Redis is down they are dropped and counted; peers catch up from the database.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import suppress

import anyio
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ..config_checks import redact_url

log = logging.getLogger(__name__)

MAX_QUEUE = 10_000  # messages waiting to be published; beyond, dropped (the database has them)
PIPELINE = 200  # messages per round trip
BACKOFF = (0.05, 5.0)  # first and longest wait between reconnection attempts
ERRORS = (RedisError, OSError, TimeoutError)


class BusRefused(RuntimeError):
    """Redis does not answer at start: one line, and the server does not start."""


class RedisBus:
    def __init__(self, url: str, prefix: str, instance: bytes, *, timeout: float, check_interval: float,
                 instance_ttl: float) -> None:
        self.url, self.prefix, self.timeout, self.check_interval = url, prefix, timeout, check_interval
        self.instance_ttl = instance_ttl
        self.channel = f"{prefix}:bus"
        self.instance = instance
        self.ready = False  # subscribed and hearing our own pings: /health
        self.subscribes = 0  # successful (re)subscriptions since start
        self.dropped = 0  # messages not published (queue full, Redis down)
        self.on_message: Callable[[bytes], None] = lambda data: None
        self.on_subscribed: Callable[[], Awaitable[None]] = _nothing
        self.member: Callable[[], bytes] = lambda: b"1"  # the heartbeat key's value: who this process is
        self._ping = b"ping:" + instance.hex().encode()
        self._out: deque[bytes] = deque()
        self._wake = anyio.Event()
        self._heard = 0.0
        self._publisher: Redis | None = None
        self._failing = False

    def _client(self, *, reads: bool) -> Redis:
        return Redis.from_url(self.url, socket_connect_timeout=self.timeout,
                              socket_timeout=None if reads else self.timeout, decode_responses=False)

    def instance_key(self, instance: bytes) -> str:
        return f"{self.prefix}:instance:{instance.hex()}"

    async def run(self) -> None:
        """Subscriber, publisher and heartbeat, until cancelled."""
        self._publisher = self._client(reads=False)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._subscriber)
                tg.start_soon(self._publish_loop)
                tg.start_soon(self._pinger)
        finally:
            self.ready = False
            with anyio.CancelScope(shield=True), suppress(*ERRORS):
                with anyio.fail_after(self.timeout):
                    await self._publisher.delete(self.instance_key(self.instance))  # a clean stop: gone at once
                await self._publisher.aclose()

    # -- publishing ----------------------------------------------------------------------------
    def publish(self, data: bytes) -> None:
        """Queue a message (never blocks, never raises)."""
        if len(self._out) >= MAX_QUEUE:
            self.dropped += 1
            return
        self._out.append(data)
        self._wake.set()

    async def _publish_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            while self._out:
                batch = [self._out.popleft() for _ in range(min(PIPELINE, len(self._out)))]
                try:
                    await self._send(batch)
                except ERRORS as exc:
                    self.dropped += len(batch)
                    if not self._failing:
                        log.warning("bus: publishing failed (%r); peers catch up from the database", exc)
                    self._failing = True
                    await anyio.sleep(BACKOFF[0])
                else:
                    self._failing = False

    async def _send(self, batch: list[bytes]) -> None:
        assert self._publisher is not None
        with anyio.fail_after(self.timeout):
            if len(batch) == 1:
                await self._publisher.publish(self.channel, batch[0])
                return
            async with self._publisher.pipeline(transaction=False) as pipe:
                for data in batch:
                    pipe.publish(self.channel, data)
                await pipe.execute()

    async def _heartbeat(self, client: Redis) -> None:
        await client.set(self.instance_key(self.instance), self.member(), px=int(self.instance_ttl * 1000))

    async def _pinger(self) -> None:
        """Every ``check_interval``: the heartbeat key, and a ping to ourselves through the channel."""
        assert self._publisher is not None
        while True:
            try:
                with anyio.fail_after(self.timeout):
                    await self._heartbeat(self._publisher)
                    await self._publisher.publish(self.channel, self._ping)
            except ERRORS:
                pass  # the subscriber notices the silence and reports it
            await anyio.sleep(min(self.check_interval, self.instance_ttl / 3))

    async def instances(self) -> set[bytes]:
        """The processes whose heartbeat key exists (empty if Redis does not answer)."""
        return set(await self.members() or {})

    async def members(self) -> dict[bytes, bytes] | None:
        """Each process with a heartbeat key, with the key's value (None if Redis does not answer)."""
        if self._publisher is None:
            return None
        keys: list[bytes] = []
        stem = self.instance_key(b"")
        try:
            with anyio.fail_after(self.timeout):
                async for key in self._publisher.scan_iter(match=stem + "*", count=1000):
                    keys.append(key)
                values = await self._publisher.mget(keys) if keys else []
        except ERRORS:
            return None
        found = {}
        for key, value in zip(keys, values, strict=True):
            try:
                if value is not None:
                    found[bytes.fromhex(key.decode()[len(stem):])] = value if isinstance(value, bytes) else str(value).encode()
            except (UnicodeDecodeError, ValueError):
                continue
        return found

    async def alive(self, instances: list[bytes]) -> list[bool] | None:
        """Whether each instance's heartbeat key exists (None if Redis does not answer)."""
        if not instances or self._publisher is None:
            return []
        try:
            with anyio.fail_after(self.timeout):
                async with self._publisher.pipeline(transaction=False) as pipe:
                    for instance in instances:
                        pipe.exists(self.instance_key(instance))
                    return [bool(n) for n in await pipe.execute()]
        except ERRORS:
            return None

    # -- subscribing ---------------------------------------------------------------------------
    async def _subscriber(self) -> None:
        wait = BACKOFF[0]
        while True:
            client = self._client(reads=True)
            pubsub = client.pubsub()
            try:
                with anyio.fail_after(self.timeout):
                    await pubsub.subscribe(self.channel)
                    while (await pubsub.get_message(timeout=self.timeout)) is None:
                        pass  # the subscribe confirmation
                self._heard = time.monotonic()
                self.ready = True
                self.subscribes += 1
                if self.subscribes > 1:
                    log.warning("bus: subscribed again; loaded documents catch up from the database")
                wait = BACKOFF[0]
                await self.on_subscribed()
                await self._listen(pubsub)
            except ERRORS as exc:
                if self.ready or wait == BACKOFF[0]:
                    log.warning("bus: subscription lost (%r); reconnecting", exc)
            finally:
                self.ready = False
                with anyio.CancelScope(shield=True), suppress(*ERRORS):
                    with anyio.move_on_after(1):
                        await pubsub.aclose()
                    with anyio.move_on_after(1):
                        await client.aclose()
            await anyio.sleep(wait)
            wait = min(wait * 2, BACKOFF[1])

    async def _listen(self, pubsub: PubSub) -> None:
        silence = self.check_interval + self.timeout
        while True:
            message = await pubsub.get_message(timeout=self.check_interval)
            now = time.monotonic()
            if message is not None and message.get("type") == "message":
                self._heard = now
                data = message["data"]
                if data != self._ping and not data.startswith(b"ping:"):
                    self.on_message(data)
            if now - self._heard > silence:
                raise TimeoutError(f"no message (not even our own ping) for {silence:g} s")


async def ping(url: str, timeout: float) -> None:
    """Before serving: Redis answers (``BusRefused`` with the reason if not)."""
    client = Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        with anyio.fail_after(timeout):
            await client.ping()
    except ERRORS as exc:
        raise BusRefused(f"Redis at {redact_url(url)} does not answer: {exc!r}"[:300]) from None
    finally:
        await client.aclose()


async def _nothing() -> None:
    return None
