"""Run output made safe to show on other people's screens (the document's ``runs``).

A run's output goes to every editor of the session. Raw, it can carry terminal escapes (an editor
that renders into a terminal emulator such as xterm.js would obey colour, cursor, title or
hyperlink sequences), NUL (truncates strings in C-based renderers and some databases) and bidi
overrides (text that reads differently from what it is, "Trojan Source", CVE-2021-42574). So:
ANSI escape sequences (CSI, OSC, DCS..., and two-byte ESC sequences) are removed, being pure
presentation; every other control character except tab and newline, the C1 controls, and the bidi
embedding/override/isolate characters are written as a visible ``\\xNN`` / ``\\uNNNN`` escape, so a
reviewer still sees that the program printed one. The API answer keeps the exact output: JSON
carries it losslessly to the one caller that asked.
"""

from __future__ import annotations

import re

# ESC (or the 8-bit CSI/OSC/DCS introducers, already decoded as U+009B, U+009D, U+0090...)
_ANSI = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]"  # CSI ... final byte
    r"|(?:\x1b[]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"  # OSC/DCS/SOS/PM/APC ... ST
    r"|\x1b[ -/]*[0-~]"  # other ESC sequences (charset selection, keypad mode, RIS...)
)
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def display_text(text: str) -> str:
    """`text` without terminal escapes, with other controls and bidi controls made visible."""
    return _UNSAFE.sub(_escape, _ANSI.sub("", text.replace("\r\n", "\n")))
