"""What the room's ingest loop commits together: the queued updates of one batch.

An update waits in the current ``Batch`` while the previous one commits (group commit); the ingest
loop then commits, applies and broadcasts the batch's updates and confirms them to their authors.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..primitives import Event
from ..storage import SessionChange
from .connection import Connection, Origin
from .guard import Verdict
from .updates import Update


@dataclass
class Pending:
    update: bytes
    conn: Connection | None  # the sender: gets a confirmation of it (sync/confirm.py), not the update
    origin: Origin
    change: SessionChange | None  # row fields and events that commit with this update
    decoded: Update
    verdict: Verdict | None = None  # a client's update, as the guard classified it
    applied: bool = False  # the CRDT library took it (set once applied)
    held: bool = False  # part of it waits in the CRDT for IDs nobody has sent yet


class Batch:
    def __init__(self) -> None:
        self.items: list[Pending] = []
        self.noops: list[tuple[Connection, Update, bytes]] = []  # updates that add nothing: confirmed, never stored
        self.done = Event()  # made once per batch: without a deque (crdt_server/primitives.py)
        self.error: BaseException | None = None
