"""The words every layer shares: roles, session status, history event types, field limits.

Defined once here; the API models, the token signer, the service and the docs use these names, and
the OpenAPI document renders ``EventType`` and ``Role`` as enums.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

Role = Literal["interviewer", "candidate", "observer"]
ROLES: tuple[Role, ...] = get_args(Role)
ANY_ROLE: tuple[Role, ...] = ROLES
WRITERS: tuple[Role, ...] = ("interviewer", "candidate")  # may edit the document and run it
INTERVIEWER: tuple[Role, ...] = ("interviewer",)

Status = Literal["active", "ended"]

LANGUAGE_PATTERN = r"^[a-z][a-z0-9+#._-]{0,31}$"
MAX_TITLE = 200  # characters
MAX_NAME = 100  # characters of a display name or colour taken from presence


class EventType(StrEnum):
    """Every history event the server records (``GET /api/sessions/{id}/history``)."""

    CREATED = "created"
    PARTICIPANT_JOINED = "participant_joined"
    PARTICIPANT_LEFT = "participant_left"
    TITLE_CHANGED = "title_changed"
    LANGUAGE_CHANGED = "language_changed"
    STATUS_CHANGED = "status_changed"
    CODE_SAVED = "code_saved"
    RUN_STARTED = "run_started"
    RUN_FINISHED = "run_finished"
    RUN_REFUSED = "run_refused"
    UPDATE_REVERTED = "update_reverted"  # an editor's change to what the server owns, undone
    CONTENT_DELETED = "content_deleted"  # an editor's content the server cannot keep exactly, stored deleted
    LOCK_CHANGED = "lock_changed"
    RUN_ENABLED_CHANGED = "run_enabled_changed"
    TOKENS_REISSUED = "tokens_reissued"


def changed_event(field: str) -> EventType:
    """The event recorded when a session field changes (``title`` -> ``title_changed``)."""
    return EventType("lock_changed" if field == "locked" else f"{field}_changed")
