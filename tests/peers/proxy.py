"""A loopback TCP proxy that makes a connection die the way a lost network does.

``freeze(link)`` stops forwarding both ways (what the client sends from then on goes nowhere);
``drop(link)`` closes the client's side: the client sees its socket drop and reconnects (through the
proxy again), while the server's side stays open and silent, as a server sees a peer whose network
vanished until its ping timeout. ``release(link)`` closes the server's side: the moment it notices.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import anyio.abc


@dataclass
class Link:
    client: anyio.abc.SocketStream
    upstream: anyio.abc.SocketStream
    pumps: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    frozen: bool = False
    dropped: anyio.Event = field(default_factory=anyio.Event)
    released: anyio.Event = field(default_factory=anyio.Event)


class Proxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.links: list[Link] = []

    async def _handle(self, client: anyio.abc.SocketStream) -> None:
        upstream = await anyio.connect_tcp("127.0.0.1", self.upstream_port)
        link = Link(client, upstream)
        self.links.append(link)
        with link.pumps:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, client, upstream, tg.cancel_scope)
                tg.start_soon(self._pump, upstream, client, tg.cancel_scope)
        if link.frozen:
            await link.dropped.wait()
            await link.client.aclose()
            await link.released.wait()
        await upstream.aclose()
        await client.aclose()

    @staticmethod
    async def _pump(src: anyio.abc.SocketStream, dst: anyio.abc.SocketStream, scope: anyio.CancelScope) -> None:
        try:
            async for chunk in src:
                await dst.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        scope.cancel()  # one side ended: end both

    def freeze(self, link: Link) -> None:
        link.frozen = True
        link.pumps.cancel()

    def drop(self, link: Link) -> None:
        """Close the client's side of a frozen link; the server's side stays open (see module)."""
        link.dropped.set()

    def release(self, link: Link) -> None:
        """Close the server's side of a frozen link."""
        link.released.set()


@asynccontextmanager
async def proxy_to(port: int) -> AsyncIterator[Proxy]:
    proxy = Proxy(port)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    proxy.port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, proxy._handle)
        try:
            yield proxy
        finally:
            for link in proxy.links:
                link.dropped.set()
                link.released.set()
            tg.cancel_scope.cancel()
