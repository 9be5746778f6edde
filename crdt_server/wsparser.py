"""websockets' parser without the handshake it parsed: about 2.7 KB less per open socket.

``ServerProtocol.parse`` (websockets' sans-I/O server) is one generator for the socket's whole life:
it parses the HTTP request, then runs the frame loop (``Protocol.parse``) with ``yield from``, so
its frame keeps the parsed ``Request`` (path, 18-odd header strings, the ``Headers`` index) as a
local variable until the socket closes. uvicorn and Starlette drop their own references once the
socket is accepted (``sync/connection.py``, ``api/websocket.py``), but this one is out of reach: a generator's locals
cannot be cleared from outside.

``shed_handshake`` therefore swaps that generator for a new frame loop, and only when the swap is
exact: the old generator is in its frame loop, waiting at a frame boundary (``StreamReader.at_eof``)
with nothing buffered, which is where it is once the request was parsed and before a well-behaved
client sends anything (it waits for the 101 answer). Both loops then hold the same state: none of
their own; everything lives on the protocol object and its reader. In any other state (a request
still arriving, a client that pipelined frames behind it, a handshake failure, another websockets
version whose generators differ) nothing is changed and the socket keeps the old parser.
"""

from __future__ import annotations

from websockets.protocol import Protocol
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

_HANDSHAKE = ServerProtocol.parse.__code__
_FRAME_LOOP = Protocol.parse.__code__
_AT_BOUNDARY = StreamReader.at_eof.__code__


def shed_handshake(conn: ServerProtocol) -> bool:
    """Replace ``conn``'s parser by a bare frame loop if that changes nothing but memory (see above)."""
    outer = conn.parser
    if getattr(outer, "gi_code", None) is not _HANDSHAKE:
        return False
    loop = getattr(outer, "gi_yieldfrom", None)
    if getattr(loop, "gi_code", None) is not _FRAME_LOOP:
        return False
    waiting = getattr(loop, "gi_yieldfrom", None)
    if getattr(waiting, "gi_code", None) is not _AT_BOUNDARY or conn.reader.buffer or conn.reader.eof:
        return False
    parser = Protocol.parse(conn)
    next(parser)  # to its first wait for data, where the old one is
    conn.parser = parser
    outer.close()  # GeneratorExit passes through both loops (they catch Exception, not BaseException)
    return True
