"""The built-in interview page, in Chromium: two people (two isolated browser contexts) interview.

What a user relies on: what one types the other sees exactly, with a named cursor; Run's output
reaches everyone; the language follows; observers and ended sessions are read-only; the start
page creates sessions, also when the server has an API key. The driver (``tests/web/drive.mjs``)
waits and records; the assertions are here.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import ServerProcess, auth
from .execution_fixtures import require_bwrap
from .webpage import ARTIFACTS, chromium_path, drive, driver, web_bundle, web_env  # noqa: F401

TYPED = "def add(a, b):\n    return a + b\nprint(add(2, 3))"
BOTH = TYPED + '\nprint("hi from Ivy")'


@pytest.fixture(scope="module")
def page_server(tmp_path_factory, web_bundle):  # noqa: F811
    require_bwrap()
    srv = ServerProcess(tmp_path_factory.mktemp("page") / "data", ["--run-rate", "100", "--run-burst", "100"],
                        env=web_env(web_bundle, CRDT_SERVER_EXECUTION="on"))
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def interview(page_server, driver, tmp_path_factory):  # noqa: F811
    """One whole interview in Chromium; the tests below read its observations."""
    chromium = chromium_path()
    created = httpx.post(page_server.base_url + "/api/sessions", json={"title": "Pairing", "code": ""}).json()
    ARTIFACTS.mkdir(exist_ok=True)
    report = drive(driver, "interview", chromium=chromium, links=created["links"], measure=True,
                   patchUrl=f"{page_server.base_url}/api/sessions/{created['id']}",
                   interviewerToken=created["tokens"]["interviewer"],
                   screenshot=str(ARTIFACTS / "interview-page.png"))
    (ARTIFACTS / "interview-page.json").write_text(json.dumps(report, indent=2))
    report["session"] = created
    return report


def test_the_candidates_typing_reaches_the_interviewer_exactly_with_a_named_cursor(interview):
    assert interview["askedName"], "a link without a name asks for one"
    assert interview["candidateTyped"] == TYPED  # Enter indents, Shift+Tab dedents, Tab indents by 4
    assert interview["interviewerSees"] == TYPED
    cara = [label for label in interview["interviewerLabels"] if label["name"] == "Cara"]
    assert cara and float(cara[0]["opacity"]) == 1 and cara[0]["width"] > 0, interview["interviewerLabels"]


def test_the_interviewers_typing_reaches_the_candidate(interview):
    assert interview["interviewerTyped"] == BOTH
    assert interview["candidateSees"] == BOTH
    assert any(label["name"] == "Ivy" and float(label["opacity"]) == 1 for label in interview["candidateLabels"])


def test_participants_are_listed_by_name_and_role(interview):
    seen = interview["participantsSeenByInterviewer"]
    assert any("Ivy" in p and "interviewer" in p for p in seen), seen
    assert any("Cara" in p and "candidate" in p for p in seen), seen


def test_run_shows_the_output_on_both_pages(interview):
    assert interview["runButtonName"] == 1 and interview["outputAreas"] == 1
    for role in ("interviewer", "candidate"):
        assert "5\nhi from Ivy" in interview["outputs"][role], interview["outputs"]
        assert "exit 0" in interview["outputs"][role]


def test_a_language_change_on_one_page_reaches_the_other(interview, page_server):
    assert interview["languageAfterChange"] == {"interviewer": "javascript", "candidate": "javascript"}
    assert {"python", "javascript"} <= set(interview["languageOptions"])
    assert interview["defHighlighted"] == {"python": True, "javascript": False}  # highlighting follows
    session = interview["session"]
    r = httpx.get(f"{page_server.base_url}/api/sessions/{session['id']}", headers=auth(session["tokens"]["observer"]))
    assert r.json()["language"] == "javascript"


def test_an_observer_cannot_change_the_text(interview):
    observer = interview["observer"]
    assert observer["editable"] == "false" and observer["runDisabled"]
    assert observer["after"] == observer["before"] == BOTH
    assert observer["interviewerAfter"] == BOTH


def test_an_ended_session_is_read_only_on_both_pages(interview, page_server):
    assert interview["patchStatus"] == 200
    for role in ("interviewer", "candidate"):
        state = interview["ended"][role]
        assert state["status"] == "ended" and state["editable"] == "false" and state["runDisabled"], state
    assert interview["ended"]["after"] == interview["ended"]["before"]
    session = interview["session"]
    code = httpx.get(f"{page_server.base_url}/api/sessions/{session['id']}/code",
                     headers=auth(session["tokens"]["observer"])).json()["code"]
    assert code == interview["finalText"]


def test_tokens_and_names_from_the_fragment_never_reach_the_server_log(interview, page_server):
    log = page_server.log()
    assert "interview page ready" in log
    for token in interview["session"]["tokens"].values():
        assert token not in log
    assert "#token=" not in log and "name=" not in log


def test_no_console_errors_and_a_screenshot(interview):
    assert interview["timeouts"] == []
    assert interview["consoleErrors"] == []
    shot = ARTIFACTS / "interview-page.png"
    assert shot.stat().st_size > 10_000
    print(f"\nscreenshot: {shot}; figures: load→connected {interview['loadToConnectedMs']} ms, "
          f"latency {interview.get('latency')}")


STARTER = "print('start')"
AFTER = STARTER + '\nprint("after")'


@pytest.fixture(scope="module")
def controls(page_server, driver):  # noqa: F811
    """The interviewer's lock, Run switch and playback scrubber, with a candidate watching."""
    created = httpx.post(page_server.base_url + "/api/sessions", json={"title": "Controls", "code": STARTER}).json()
    ARTIFACTS.mkdir(exist_ok=True)
    report = drive(driver, "controls", chromium=chromium_path(), links=created["links"], starter=STARTER,
                   screenshot=str(ARTIFACTS / "interview-controls.png"))
    (ARTIFACTS / "interview-controls.json").write_text(json.dumps(report, indent=2))
    report["session"] = created
    return report


def test_the_interviewers_lock_makes_the_candidates_editor_read_only(controls, page_server):
    assert controls["candidateControls"] == 0, "the controls are the interviewer's only"
    assert controls["initial"] == {"lockChecked": False, "runChecked": True, "candidateEditable": "true",
                                   "candidateBadge": None}
    locked = controls["locked"]
    assert locked["candidateEditable"] == "false" and locked["candidateBadge"] == "Locked", locked
    assert locked["candidateText"] == locked["interviewerText"] == STARTER  # the typing changed nothing
    assert locked["secondInterviewerChecked"] and locked["interviewerEditable"] == "true"
    unlocked = controls["unlocked"]
    assert unlocked["candidateBadge"] is None and not unlocked["secondInterviewerChecked"]
    assert unlocked["candidateText"] == unlocked["interviewerText"] == AFTER


def test_the_run_switch_disables_the_candidates_run(controls, page_server):
    assert controls["runDisabledBefore"] is False and controls["runDisabledAfter"] is True
    assert controls["interviewerRunDisabledAfter"] is False  # the switch is the candidate's
    assert controls["secondInterviewerRunChecked"] is False
    session = controls["session"]
    view = httpx.get(f"{page_server.base_url}/api/sessions/{session['id']}", headers=auth(session["tokens"]["observer"]))
    assert view.json()["runEnabled"] is False and view.json()["locked"] is False


def test_the_playback_scrubber_shows_the_start_and_the_end_without_touching_the_editor(controls):
    assert controls["playbackStart"] == STARTER
    assert controls["editorDuringPlayback"] == controls["candidateDuringPlayback"] == AFTER
    assert controls["playbackEnd"] == AFTER
    assert controls["playbackClosed"] and controls["finalText"] == AFTER
    assert controls["timeouts"] == [] and controls["consoleErrors"] == []


@pytest.fixture(scope="module")
def key_server(tmp_path_factory, web_bundle):  # noqa: F811
    srv = ServerProcess(tmp_path_factory.mktemp("keyed") / "data", env=web_env(web_bundle, CRDT_SERVER_API_KEY="k3y-for-tests"))
    srv.start()
    yield srv
    srv.stop()


def test_the_start_page_creates_a_session_with_the_api_key(key_server, driver):  # noqa: F811
    chromium = chromium_path()
    assert httpx.post(key_server.base_url + "/api/sessions").status_code == 401
    ARTIFACTS.mkdir(exist_ok=True)
    report = drive(driver, "home", chromium=chromium, home=key_server.base_url + "/", apiKey="k3y-for-tests",
                   screenshot=str(ARTIFACTS / "start-page.png"))
    assert report["keyFieldVisibleAtStart"]
    assert report["messageWithoutKey"] == "This server needs its API key to create sessions."
    links = report["links"]
    assert all(links[r].startswith(f"{key_server.base_url}/sessions/") and "#token=" in links[r]
               for r in ("interviewer", "candidate", "observer")), links
    assert report["candidateState"]["editable"] == "true" and report["candidateText"] == "print(1)"
    # The browser itself logs the deliberately refused request (401); nothing else may appear.
    refused = [e for e in report["consoleErrors"] if "status of 401" in e]
    assert len(refused) == 1 and len(report["consoleErrors"]) == 1, report["consoleErrors"]
    assert report["timeouts"] == []
