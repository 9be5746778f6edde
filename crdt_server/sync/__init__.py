"""Wire protocol and rooms: y-websocket framing, per-connection queues, live session documents."""

from .connection import Connection
from .room import RoomOptions, SessionRoom
from .server import SessionNotFound, SessionServer, load_document

__all__ = ["Connection", "RoomOptions", "SessionNotFound", "SessionRoom", "SessionServer", "load_document"]
