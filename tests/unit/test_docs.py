"""Documentation that mirrors code: a fact changed on one side must change on the other."""

from __future__ import annotations

import re
from pathlib import Path

from crdt_server.sync.protocol import CloseCode

ROOT = Path(__file__).resolve().parents[2]


def test_the_protocol_doc_lists_exactly_the_close_codes_the_server_sends() -> None:
    doc = (ROOT / "docs" / "websocket-protocol.md").read_text()
    section = doc.split("## Close codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d{4}) \|", section, flags=re.MULTILINE)}
    assert documented == {int(c) for c in CloseCode}
