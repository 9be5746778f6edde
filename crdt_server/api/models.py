"""Request and response bodies (pydantic v2); the OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from ..config import Settings
from ..domain import LANGUAGE_PATTERN, MAX_TITLE, EventType, Role, Status
from ..languages import accepted_names, canonical, unknown_message

_LANGUAGE = ("Language id of the registry (`GET /api/languages`) or an alias of one, lower case (e.g. `python`, "
             "`javascript`, `c++`); stored as the id (`c++` becomes `cpp`); editors read it from the `meta` map.")


def _registry_id(name: str) -> str:
    lang = canonical(name)
    if lang is None:
        raise ValueError(unknown_message(name))
    return lang


# A session language: the pattern bounds it, the registry decides it (crdt_server/languages.py).
SessionLanguage = Annotated[
    str,
    Field(pattern=LANGUAGE_PATTERN, description=_LANGUAGE, json_schema_extra={"enum": list(accepted_names())}),
    AfterValidator(_registry_id),
]
# The schema shows the default --run-timeout-max; the server checks its configured one (422 above it).
_TIMEOUT_MAX = Settings.run_timeout_max
_CODE = "Source text. At most `--max-code-size` bytes as UTF-8 (default 1 MiB)."
_TIME = "Unix time in seconds."


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class CreateSession(Model):
    """Every field is optional; an empty body (or no body) creates an untitled Python session."""

    title: str = Field("", max_length=MAX_TITLE, description="Shown to every participant.")
    language: SessionLanguage = "python"
    code: str = Field("", description="Starter code. " + _CODE)
    expires_at: float | None = Field(
        None, allow_inf_nan=False,
        description=_TIME + " Keep the session at least until then (e.g. the end of a scheduled interview), "
                    "even without activity. In the future, at most `--session-max-lifetime` (30 days) ahead.",
    )


class UpdateSession(Model):
    """Fields left out (or null) stay as they are."""

    title: str | None = Field(None, max_length=MAX_TITLE)
    language: SessionLanguage | None = None
    status: Status | None = Field(
        None, description="`ended` makes the session read-only for everyone; `active` reopens it."
    )
    locked: bool | None = Field(
        None, description="`true`: the candidate's edits are reverted everywhere (and REST saves answer 409) until "
                          "`false`; the interviewer keeps editing."
    )
    run_enabled: bool | None = Field(None, description="`false`: the candidate's session runs answer 403.")


class SaveCode(Model):
    code: str = Field(description="The complete new text; applied to the live document as a minimal edit. " + _CODE)
    language: SessionLanguage | None = Field(None, description="Also switch the language. " + _LANGUAGE)


class Session(Model):
    id: str
    title: str
    language: str
    status: Status = Field(description="`ended`: read-only for everyone.")
    created_at: float = Field(description=_TIME)
    updated_at: float = Field(description=_TIME + " Last edit or change.")
    expires_at: float = Field(
        description=_TIME + " When the session will be deleted if nothing changes: while active, the later of the "
                    "requested `expiresAt` and the last activity + `--session-ttl` (every edit postpones it); once "
                    "ended, the later of the requested `expiresAt` and the end + `--ended-retention`."
    )
    locked: bool = Field(False, description="The candidate may not edit the code (set by the interviewer).")
    run_enabled: bool = Field(True, description="The candidate may run the session's code.")


class SessionSummary(Session):
    participants: int = Field(description="Live connections to this server process now.")


class SessionList(Model):
    sessions: list[SessionSummary] = Field(description="In creation order.")
    next_after: int | None = Field(None, description="Pass as `?after=` to read the next page; null at the end.")


class Tokens(Model):
    """Signed bearer tokens, one per role; each is valid for this session only, until the session is
    deleted or its tokens are re-issued."""

    interviewer: str
    candidate: str
    observer: str


class Links(Model):
    """The interview page for each role: ``{base}/sessions/{id}#token=…`` (the token in the fragment)."""

    interviewer: str
    candidate: str
    observer: str


class TokenSet(Model):
    tokens: Tokens = Field(description="The new tokens; every earlier token of the session is revoked.")
    links: Links = Field(description="The interview page for each role, with the new tokens.")


class CreatedSession(Session):
    tokens: Tokens
    links: Links = Field(description="Absolute URLs of the built-in interview page, one per role; send each "
                                     "person theirs. The token is in the fragment, so it never reaches server logs.")
    ws_url: str = Field(description="Path of the WebSocket endpoint; connect with `?token=…`.")


class Code(Model):
    code: str = Field(description="The live document's text (Y.Text `code`).")
    language: str
    updated_at: float = Field(description=_TIME)


class Notes(Model):
    notes: str = Field(description="The interviewer's private notes (Y.Text `notes` of the notes document).")


class Playback(Model):
    at: float = Field(description="The moment asked for (`?at=`), or the commit time of row `seq` (`?seq=`). " + _TIME)
    seq: int = Field(description="The last update-log row applied (row 1 is the starter document).")
    code: str = Field(description="The text of Y.Text `code` at that moment.")
    language: str = Field(description="The document's language at that moment.")


class Participant(Model):
    connection_id: str
    role: Role
    connected_at: float = Field(description=_TIME)
    name: str | None = Field(None, description="`user.name` from the connection's awareness state.")
    color: str | None = Field(None, description="`user.color` from the connection's awareness state.")
    cursor: Any | None = Field(
        None, description="`cursor` from the awareness state as the editor set it (Yjs relative positions)."
    )


class Participants(Model):
    participants: list[Participant] = Field(description="One entry per live WebSocket connection, oldest first.")


class HistoryEvent(Model):
    seq: int = Field(description="Increasing; pass the last one seen as `?after=`.")
    ts: float = Field(description=_TIME)
    type: EventType = Field(description="What happened; `data` depends on it.")
    data: dict[str, Any] = Field(description="Depends on `type`: e.g. `{role, name, connectionId}`, `{from, to, by}`.")


class History(Model):
    events: list[HistoryEvent] = Field(description="Oldest first.")
    next_after: int | None = Field(None, description="Pass as `?after=` to read the next page; null at the end.")


class TimelineParticipant(Model):
    id: str = Field(description="`p1`, `p2`, … in order of arrival; events name participants by it.")
    role: Role
    name: str | None = Field(None, description="The display name from presence (one participant per role and name).")
    inserted: int = Field(description="Code points this participant inserted into the code (duplicates never count).")
    deleted: int = Field(description="Code points this participant deleted from the code.")
    connections: int = Field(description="Connections (e.g. reconnects) merged into this participant.")
    points: list[tuple[float, int, int]] = Field(
        description="`[bucketStart, inserted, deleted]` per non-empty bucket of `?bucket=` seconds, oldest first "
                    "(bucketStart is Unix time in seconds).")


class TimelineEvent(Model):
    ts: float = Field(description=_TIME)
    type: str = Field(description="`participant_joined`, `participant_left`, `language_changed`, `run_finished`, "
                                  "`code_saved`, `lock_changed` (history events), or `paste`: one update inserting "
                                  "more than `--paste-threshold` code points (`data`: `{length, seq}`).")
    participant: str | None = Field(description="The participant's `id` for joins, leaves and pastes; else null "
                                                "(`data.by` names the role where known).")
    data: dict[str, Any]


class Timeline(Model):
    start: float = Field(description=_TIME + " The session's first stored update.")
    end: float = Field(description=_TIME + " The last update or event.")
    bucket: int = Field(description="Seconds per point.")
    participants: list[TimelineParticipant] = Field(description="Everyone who joined or edited, in order of arrival.")
    events: list[TimelineEvent] = Field(description="Oldest first.")


class ExecuteRequest(Model):
    code: str
    language: str = Field(pattern=LANGUAGE_PATTERN)
    timeout: float | None = Field(None, gt=0, le=3600, json_schema_extra={"maximum": _TIMEOUT_MAX}, description="Seconds; default `--run-timeout` (5), at "
                                  "most `--run-timeout-max` (default 10, the bound given here): above it 422 `invalid_field`")
    stdin: str = ""


class SessionExecuteRequest(Model):
    timeout: float | None = Field(None, gt=0, le=3600, json_schema_extra={"maximum": _TIMEOUT_MAX}, description="As for `POST /api/execute`.")
    stdin: str = ""


class ExecutionResult(Model):
    stdout: str
    stderr: str
    exit_code: int
    timed_out: bool
    truncated: bool
    duration_ms: int
    language: str
    sandbox: str = Field(description="'full' or 'degraded': how isolated this run was")
    compile_error: bool = False
    compile_output: str = Field("", description="Compiler messages, for compiled languages")
    oom_killed: bool = False
    killed_by_signal: int | None = Field(
        None, description="The program died of this signal, which no limit of the sandbox sent (e.g. 9 from "
        "outside the sandbox); stderr then ends with a note saying so")
    run_id: str | None = None


class Language(Model):
    name: str = Field(description="The registry id sessions store (`cpp`, not `c++`).")
    aliases: list[str] = Field(description="Also accepted wherever a language is given; stored as `name`.")
    runnable: bool = Field(description="Whether Run works for it on this server (a toolchain passed the start-up probe).")
    version: str | None = Field(None, description="The toolchain's version, when runnable.")
    compiled: bool | None = Field(None, description="Whether Run compiles first, when runnable.")


class Languages(Model):
    languages: list[Language] = Field(description="Every language a session may have, in registry order.")
    sandbox: str = Field(description="'full', 'degraded' or 'unavailable' (also when Run is off).")


class Health(Model):
    status: Literal["ok", "degraded"]
    version: str
    database: Literal["ok", "error"]
    bus: Literal["ok", "down", "off"] = Field(
        description="The Redis bus between processes (`--redis-url`): `off` without one; `down` while this process "
                    "is not subscribed (it still serves its sockets and commits every write; the others catch up "
                    "once it is back), which answers 503 so a load balancer sends new connections elsewhere."
    )
    sandbox: str
    editor: Literal["building", "ready", "absent"] = Field(
        description="The built-in interview page: `ready`, `building` (first start), or `absent` (no Node to build it)."
    )


class ErrorBody(Model):
    code: str = Field(description="Machine-readable, snake_case (e.g. `session_not_found`).")
    message: str = Field(description="A human sentence.")


class Error(Model):
    error: ErrorBody
