"""Wire protocol and rooms: y-websocket framing, per-connection queues, live session documents."""

from .connection import SERVER, Connection, Origin
from .protocol import CloseCode
from .room import RoomOptions, SessionRoom
from .server import SessionServer, load_document

__all__ = [
    "SERVER", "CloseCode", "Connection", "Origin", "RoomOptions", "SessionRoom", "SessionServer", "load_document",
]
