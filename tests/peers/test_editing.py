"""Editing together, every client generation against both servers: concurrent edits, newcomers, offline."""

from __future__ import annotations

import anyio
import pytest

from .conftest import YJS_LINES, Generation, Room, matrix, peer, peers

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("side", "gen"), matrix())
async def test_two_clients_converge_on_concurrent_edits(room: Room, gen: Generation) -> None:
    async with peers(room, gen, ("Ada", "interviewer"), ("Bob", "candidate")) as (a, b):
        await a.insert(0, "hello\n")
        await b.wait_text(equals="hello\n")
        async with anyio.create_task_group() as tg:  # both type at once, at the same place
            tg.start_soon(a.type_chars, "from a;")
            tg.start_soon(b.type_chars, "from b;")
        text = await a.wait_until(lambda: _same_text(a, b), what="both texts equal")
        rest = text.removeprefix("hello\n")
        assert sorted(rest) == sorted("from a;from b;")  # interleaved, each in its own order
        assert _subsequence("from a;", rest) and _subsequence("from b;", rest)
        if (rest := await room.rest_code()) is not None:
            assert rest == text


def _subsequence(part: str, text: str) -> bool:
    it = iter(text)
    return all(ch in it for ch in part)


async def _same_text(*clients) -> str | None:  # type: ignore[no-untyped-def]
    texts = {await c.get_text() for c in clients}
    return texts.pop() if len(texts) == 1 else None


@pytest.mark.parametrize(("side", "gen"), matrix())
async def test_a_newcomer_gets_the_text_and_presence_at_once(room: Room, gen: Generation) -> None:
    async with peer(room, gen, "Ada") as a:
        await a.type_chars("typed before you came\n")
        async with peer(room, gen, "Bob", "candidate") as b:
            assert await b.get_text() == "typed before you came\n"  # in its first sync
            await b.wait_awareness(lambda st: sorted(st.names) == ["Ada", "Bob"], timeout=2)


@pytest.mark.parametrize(("side", "gen"), matrix())
async def test_offline_edits_merge_on_reconnect(room: Room, gen: Generation) -> None:
    async with peers(room, gen, ("Ada", "interviewer"), ("Bob", "candidate")) as (a, b):
        await a.insert(0, "line\n")
        await b.wait_text(equals="line\n")
        await a.disconnect()
        await a.insert(0, "offline a\n")
        await b.insert(-1, "online b\n")
        await a.wait_until(lambda: _has(b, "online b\n"), what="b's edit applied")
        await a.reconnect()
        await a.wait_synced()
        for c in (a, b):
            await c.wait_text(equals="offline a\nline\nonline b\n")
        if (rest := await room.rest_code()) is not None:
            assert rest == "offline a\nline\nonline b\n"


async def _has(client, part: str) -> bool:  # type: ignore[no-untyped-def]
    return part in await client.get_text()


@pytest.mark.parametrize(("side", "gen"), matrix(YJS_LINES))
async def test_an_insert_inside_a_surrogate_pair_reads_the_same_everywhere(room: Room, gen: Generation) -> None:
    """Yjs replaces both halves of a pair it splits with U+FFFD, the same on every peer; whatever the
    server does, the author, the other client, a newcomer (and our REST API) must read one text."""
    async with peers(room, gen, ("Ada", "interviewer"), ("Bob", "candidate")) as (a, b):
        await a.insert(0, "x\U0001F600y")
        await b.wait_text(equals="x\U0001F600y")
        await b.insert(2, "\u4e2d")  # UTF-16 index 2: between the emoji's halves
        text = await a.wait_until(lambda: _same_text(a, b), what="both texts equal")
        assert "\u4e2d" in text
        async with peer(room, gen, "Cy") as newcomer:
            assert await newcomer.get_text() == text
        if (rest := await room.rest_code()) is not None:
            assert rest == text


@pytest.mark.slow
@pytest.mark.parametrize(("side", "gen"), matrix(YJS_LINES))
async def test_a_large_document_reaches_a_newcomer(room: Room, gen: Generation) -> None:
    """2 MB of text in one edit, just under our default --max-document-size (2 MiB): what a server
    accepted, a newcomer receives, in one sync step 2 (issue 10 item 7's rule, at the defaults)."""
    big = "0123456789abcdef" * (2_000_000 // 16)
    async with peer(room, gen, "Ada") as a:
        await a.insert(0, big)
        async with peer(room, gen, "Late", "candidate") as late:
            assert len(await late.get_text()) == len(big)
            await late.wait_text(equals=big, timeout=20)
