"""Request and response bodies (pydantic v2); the OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

LANGUAGE_PATTERN = r"^[a-z][a-z0-9+#._-]{0,31}$"
Status = Literal["active", "ended"]


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CreateSession(Model):
    title: str = Field("", max_length=200)
    language: str = Field("python", pattern=LANGUAGE_PATTERN)
    code: str = ""


class UpdateSession(Model):
    title: str | None = Field(None, max_length=200)
    language: str | None = Field(None, pattern=LANGUAGE_PATTERN)
    status: Status | None = None


class SaveCode(Model):
    code: str
    language: str | None = Field(None, pattern=LANGUAGE_PATTERN)


class Session(Model):
    id: str
    title: str
    language: str
    status: Status
    created_at: float = Field(description="Unix time, seconds")
    updated_at: float
    expires_at: float


class Tokens(Model):
    interviewer: str
    candidate: str
    observer: str


class CreatedSession(Session):
    tokens: Tokens
    ws_url: str = Field(description="Path of the WebSocket endpoint; connect with ?token=…")


class Code(Model):
    code: str
    language: str
    updated_at: float


class Participant(Model):
    connection_id: str
    role: Literal["interviewer", "candidate", "observer"]
    connected_at: float
    name: str | None = None
    color: str | None = None
    cursor: Any | None = None


class Participants(Model):
    participants: list[Participant]


class HistoryEvent(Model):
    seq: int
    ts: float
    type: str
    data: dict[str, Any]


class History(Model):
    events: list[HistoryEvent]
    next_after: int | None = Field(None, description="Pass as ?after= to read the next page; null at the end")


class Health(Model):
    status: Literal["ok", "degraded"]
    version: str
    database: Literal["ok", "error"]
    sandbox: str


class ErrorBody(Model):
    code: str
    message: str


class Error(Model):
    error: ErrorBody
