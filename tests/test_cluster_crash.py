"""kill -9 of one process while its client types: nothing any client on the other process saw is lost
(the write-ahead promise across processes, docs/design/cluster.md)."""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import anyio
import pytest

from .cluster import deployment
from .conftest import create_session, py_client, text_of
from .jsclient import js_client, js_deps  # noqa: F401  (js_deps is a fixture)
from .test_cluster import stored_text, wait_equal
from .test_cluster_presence import wait_names

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("js_deps")]
ROUNDS = 10


def markers(text: str) -> set[str]:
    return set(re.findall(r"<\d+\.\d+>", text))


@pytest.fixture
def pair(tmp_path: Path) -> Any:
    with deployment(tmp_path) as d:
        yield d, d.server("--presence-timeout", "3"), d.server("--presence-timeout", "3")


@pytest.mark.slow
async def test_kill_9_of_a_while_its_client_types_loses_nothing_b_saw(pair):
    d, a, b = pair
    s = await create_session(b)
    sid = s["id"]
    typed: list[str] = []
    rng = random.Random(12)
    async with js_client(a.ws_url, sid, s["tokens"]["candidate"], name="Typist", maxBackoffTime=200) as js, \
            py_client(b, s, "interviewer") as on_b:
        for round_ in range(ROUNDS):
            stop = anyio.Event()

            async def typist(round_: int = round_, stop: anyio.Event = stop) -> None:
                n = 0
                while not stop.is_set():
                    marker = f"<{round_}.{n}>"
                    await js.insert(-1, marker)
                    typed.append(marker)
                    n += 1
                    await anyio.sleep(0.005)

            async with anyio.create_task_group() as tg:
                tg.start_soon(typist)
                await anyio.sleep(rng.uniform(0.2, 0.45))
                a.kill9()  # mid-typing: some of the last updates are committed, some not, some half-sent
                stop.set()
            await anyio.sleep(0.3)
            observed = markers(text_of(on_b))
            assert any(m.startswith(f"<{round_}.") for m in observed), "B saw nothing of this round"
            # B only ever sees committed rows: all of them are in PostgreSQL
            assert observed <= markers(stored_text(d, sid))
            if round_ == ROUNDS - 1:  # the dead process's typist leaves B's participants within --presence-timeout
                await wait_names(b, s, {None}, timeout=3)
            await anyio.to_thread.run_sync(a.start)  # A restarted reloads them
            async with py_client(a, s, "observer") as fresh:
                assert observed <= markers(text_of(fresh))
        # the typist reconnected after the last restart and resent what never committed: nothing is lost
        final = await wait_equal(js.get_text, lambda: text_of(on_b), timeout=20)
        assert set(typed) <= markers(final)
        assert stored_text(d, sid) == final
