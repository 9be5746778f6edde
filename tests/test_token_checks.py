"""Token checks on connect: a verified token is remembered, and nothing revoked slips through the
windows between the first check and the socket being served.

A socket's token is checked (signature, session, generation) before its room is loaded; the socket is
tracked (so a re-issue or a deletion closes it) only after the handshake, and served only after its
join event is committed. Whatever revokes access in between must still refuse it before any document
data: the check is repeated once the socket is tracked, and a deletion closes every tracked socket of
the session, also one that is not served yet (``SessionService.forget``)."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from crdt_server.api import websocket as websocket_api
from crdt_server.sync.protocol import CloseCode
from crdt_server.tokens import InvalidToken, TokenSigner

from .conftest import create_session
from .test_fanout import in_process
from .test_rest_limits import ws_close_code

SECRET = "s" * 48


class CountingSigner(TokenSigner):
    """A real signer that counts the tokens it verifies with PyJWT (a cache miss)."""

    decoded = 0

    def _decode(self, token: str) -> Any:
        self.decoded += 1
        return super()._decode(token)


def test_a_token_presented_again_is_accepted_without_verifying_it_again() -> None:
    signer = CountingSigner(SECRET, 3600, cache_entries=8)
    token = signer.issue("sid-1", "observer")
    first, again = signer.verify(token), signer.verify(token)
    assert first == again and first.session_id == "sid-1" and first.role == "observer"
    assert signer.decoded == 1


def test_only_verified_tokens_are_remembered_and_the_memory_is_bounded() -> None:
    signer = CountingSigner(SECRET, 3600, cache_entries=2)
    forged = TokenSigner("f" * 48, 3600).issue("sid-1", "interviewer")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            signer.verify(forged)
    assert signer.decoded == 2  # a refused token is verified every time
    tokens = [signer.issue(f"sid-{i}", "candidate") for i in range(3)]
    for token in tokens:
        signer.verify(token)
    signer.verify(tokens[2])
    signer.verify(tokens[0])  # the oldest was dropped for the third
    assert signer.decoded == 2 + 3 + 1
    padded = tokens[1] + "="  # another spelling PyJWT accepts: verified, never remembered
    signer.verify(padded)
    signer.verify(padded)
    assert signer.decoded == 2 + 3 + 1 + 2
    off = CountingSigner(SECRET, 3600, cache_entries=0)
    off.verify(tokens[1])
    off.verify(tokens[1])
    assert off.decoded == 2


def test_a_remembered_token_is_refused_once_its_exp_passes() -> None:
    signer = CountingSigner(SECRET, 1, cache_entries=8)
    token = signer.issue("sid-1", "candidate", now=time.time())
    claims = signer.verify(token)
    assert signer.verify(token) == claims and signer.decoded == 1
    time.sleep(max(0.0, claims.expires_at - time.time()) + 0.05)
    with pytest.raises(InvalidToken, match="expired"):
        signer.verify(token)
    with pytest.raises(InvalidToken, match="expired"):  # and stays refused (PyJWT says so too)
        signer.verify(token)


@pytest.mark.anyio
@pytest.mark.parametrize("window", ["hold", "joined"])
@pytest.mark.parametrize("revoke", ["reissue", "delete"])
async def test_a_revocation_between_the_check_and_the_serving_refuses_the_socket(tmp_path, monkeypatch, revoke, window):
    """The tokens are re-issued (or the session deleted) after the socket's token passed its check:
    while its room is loaded (``hold``), or once it is tracked, while its join event is committed
    (``joined``). The socket is closed as revoked (or not found) before any document data."""
    async with in_process(tmp_path) as (srv, service):
        s = await create_session(srv, code="secret text")
        sid = s["id"]
        owner = service.rooms if window == "hold" else service
        step = getattr(owner, window)
        revoked: list[str] = []

        async def step_then_revoke(arg: Any) -> Any:
            result = await step(arg)
            if not revoked:
                revoked.append(sid)
                if revoke == "reissue":
                    await service.reissue_tokens(sid, "interviewer")
                else:
                    await service.delete(sid)
            return result

        monkeypatch.setattr(owner, window, step_then_revoke)
        with anyio.fail_after(10):
            code = await ws_close_code(f"{srv.ws_url}/{sid}?token={s['tokens']['candidate']}")
        assert revoked == [sid]
        assert code == (CloseCode.UNAUTHORIZED if revoke == "reissue" else CloseCode.SESSION_NOT_FOUND)


@pytest.mark.anyio
@pytest.mark.parametrize("revoke", ["reissue", "delete"])
async def test_a_revocation_during_the_second_check_closes_the_socket_once(tmp_path, monkeypatch, revoke):
    """The revocation lands while the tracked socket's second check reads the session (a read that
    yields, as PostgreSQL's does): the revocation closes the socket, the check then fails, and the
    handler must not close it again (Starlette raises, uvicorn logs an error)."""
    async with in_process(tmp_path) as (srv, service):
        s = await create_session(srv, code="secret text")
        sid = s["id"]
        checks: list[str] = []
        real_check = websocket_api.check_current

        async def check_then_revoke(svc: Any, claims: Any) -> Any:
            checks.append(claims.session_id)
            if len(checks) == 2:  # the second check, the socket tracked
                if revoke == "reissue":
                    await service.reissue_tokens(sid, "interviewer")
                else:
                    await service.delete(sid)
                await anyio.sleep(0.05)
            return await real_check(svc, claims)

        raised: list[BaseException] = []
        real_socket = websocket_api._socket

        async def handler(*args: Any, **kwargs: Any) -> None:
            try:
                await real_socket(*args, **kwargs)
            except BaseException as exc:  # what uvicorn would log as "Exception in ASGI application"
                raised.append(exc)
                raise

        monkeypatch.setattr(websocket_api, "check_current", check_then_revoke)
        monkeypatch.setattr(websocket_api, "_socket", handler)
        with anyio.fail_after(10):
            code = await ws_close_code(f"{srv.ws_url}/{sid}?token={s['tokens']['candidate']}")
            await anyio.sleep(0.3)  # the handler finishes
        assert len(checks) == 2
        assert code == (CloseCode.UNAUTHORIZED if revoke == "reissue" else CloseCode.SESSION_NOT_FOUND)
        assert not raised, raised


@pytest.mark.anyio
async def test_without_a_revocation_the_socket_syncs_and_a_shared_token_serves_many(tmp_path):
    async with in_process(tmp_path) as (srv, service):
        s = await create_session(srv, code="x")
        url = f"{srv.ws_url}/{s['id']}?token={s['tokens']['observer']}"
        for _ in range(3):
            assert await ws_close_code(url) is None  # it syncs
        await service.reissue_tokens(s["id"], "interviewer")
        assert await ws_close_code(url) == CloseCode.UNAUTHORIZED  # remembered, yet revoked
