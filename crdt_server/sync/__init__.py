"""Wire protocol and rooms: y-websocket framing, per-connection queues, live session documents."""

from .connection import SERVER, Connection, Origin
from .loader import load_document
from .options import RoomOptions
from .protocol import CloseCode
from .room import SessionRoom
from .server import SessionServer

__all__ = [
    "SERVER", "CloseCode", "Connection", "Origin", "RoomOptions", "SessionRoom", "SessionServer", "load_document",
]
