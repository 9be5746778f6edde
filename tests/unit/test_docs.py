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


def test_the_close_code_table_says_what_each_y_websocket_version_does() -> None:
    """y-websocket 3.1 and later stop for 4400-4499 and retry everything else; 1.x, 2.x and 3.0 have no
    final code (src/y-websocket.js of each: only 3.1 added ``shouldReconnect``)."""
    doc = (ROOT / "docs" / "websocket-protocol.md").read_text()
    section = doc.split("## Close codes", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header == ["code", "when", "y-websocket 3.1 and later", "y-websocket 1.x, 2.x, 3.0"]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines if re.match(r"\| \d{4} \|", line)]
    assert {int(row[0]) for row in rows} == {int(c) for c in CloseCode}
    for code, _, newer, older in rows:
        assert ("**final**" in newer) == (4400 <= int(code) < 4500), code
        assert older and "final" not in older, code
