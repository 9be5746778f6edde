"""The HTML pages (``/`` and ``/sessions/{id}``), the bundle's static files, and their headers.

The pages carry no inline script and no secrets: the role token and the name travel in the URL
fragment, which browsers never send, so they reach neither these handlers nor any log. The
HTML is ``no-cache`` (it names the current bundle's files); the files have content hashes in their
names and are cached for a year.
"""

from __future__ import annotations

import re
import secrets
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..api.auth import SESSION_ID
from ..api.context import ctx
from .bundle import Bundle
from .state import EditorPage, editor_page

_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
          ".txt": "text/plain; charset=utf-8"}
IMMUTABLE = "public, max-age=31536000, immutable"


def security_headers(request: Request, style_nonce: str | None = None) -> dict[str, str]:
    """A strict CSP: scripts from this server only, sockets to this host only.

    The editor injects its own ``<style>`` element: it carries the per-response ``style_nonce``
    (CodeMirror's ``cspNonce``), and ``style-src-attr 'unsafe-inline'`` lets it colour remote
    cursors; neither can run script.
    """
    host = request.headers.get("host", "")
    connect = "'self'" + (f" ws://{host} wss://{host}" if _HOST.match(host) else "")
    styles = "'self'" + (f" 'nonce-{style_nonce}'" if style_nonce else "")
    csp = (f"default-src 'none'; script-src 'self'; style-src {styles}; style-src-attr 'unsafe-inline'; "
           f"img-src 'self' data:; connect-src {connect}; base-uri 'none'; form-action 'none'; "
           "frame-ancestors 'none'")
    return {
        "Content-Security-Policy": csp,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cache-Control": "no-cache",
    }


def _document(request: Request, title: str, body: str, bundle: Bundle | None, script: str | None,
              status: int = 200, extra_head: str = "") -> HTMLResponse:
    nonce = secrets.token_urlsafe(16) if script else None
    head = [f"<title>{escape(title)}</title>", '<link rel="icon" href="data:,">']
    if nonce:
        head.append(f'<meta name="style-nonce" content="{nonce}">')
        head.append(f'<meta name="run" content="{"on" if _run_available(request) else "off"}">')
    if bundle is not None:
        head.append(f'<link rel="stylesheet" href="/static/{bundle.entries["page.css"]}">')
        if script:
            head.append(f'<script type="module" src="/static/{bundle.entries[script]}"></script>')
    head.append(extra_head)
    html = ("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            + "\n".join(h for h in head if h) + "\n</head>\n" + body + "\n</html>\n")
    headers = security_headers(request, nonce)
    if status == 503:
        headers["Retry-After"] = "5"
    return HTMLResponse(html, status_code=status, headers=headers)


def _run_available(request: Request) -> bool:
    """Whether Run works here (the page then asks ``/api/languages``; otherwise that would be a 503)."""
    execution = ctx(request).service.execution
    return execution is not None and execution.mode != "unavailable"


def _licences_link(bundle: Bundle) -> str:
    return (f'<footer>crdt-server · <a href="/static/{bundle.entries["licenses.txt"]}">'
            "Licences of the bundled packages</a></footer>")


SESSION_BODY = """<body>
<header>
  <h1 id="title">Interview</h1>
  <span class="badge" id="role" aria-label="Your role"></span>
  <span class="badge" id="status" aria-label="Session status">…</span>
  <span class="badge" id="connection" aria-label="Connection" data-state="connecting">connecting</span>
  <label>Language <select id="language" disabled></select></label>
  <button id="run" type="button" disabled>Run</button>
</header>
<div id="fatal" class="fatal" role="alert" hidden></div>
<main>
  <div id="editor"></div>
  <aside>
    <h2 id="participants-heading">Participants</h2>
    <ul id="participants" aria-labelledby="participants-heading"></ul>
    <h2>Output</h2>
    <section id="output" aria-label="Output" aria-live="polite"></section>
  </aside>
</main>
<form id="name-form" class="overlay" hidden>
  <div class="card">
    <label for="name-input">Your name (shown to the others)</label>
    <input id="name-input" maxlength="40" autocomplete="name" required>
    <button type="submit">Join</button>
  </div>
</form>
{footer}
</body>"""

HOME_BODY = """<body class="home">
<h1>New interview</h1>
<p>Create a session, then send each person their link. Whoever has a link can join with that role.</p>
<form id="create-form">
  <label for="create-title">Title</label><input id="create-title" maxlength="200" placeholder="Backend interview">
  <label for="create-language">Language</label><select id="create-language"></select>
  <div class="row" id="api-key-row"{key_hidden}><label for="api-key">API key</label>
    <input id="api-key" type="password" autocomplete="off"></div>
  <button type="submit">Create interview</button>
</form>
<p id="create-message" role="status"></p>
<section id="links-section" hidden>
  <h2>Links</h2>
  <p>Each link carries its role's token after the <code>#</code>; send it only to that person.</p>
  <div id="links"></div>
</section>
{footer}
</body>"""


def _unavailable(request: Request, page: EditorPage | None) -> HTMLResponse:
    """503: the page is being built, or cannot be (no Node, no sources, building off)."""
    if page is not None and page.status == "building":
        body = ("<body class=\"explain\"><h1>The interview page is being built</h1>"
                "<p>This takes a few seconds on the first start. This page reloads by itself.</p></body>")
        return _document(request, "Building · crdt-server", body, None, None, 503,
                         '<meta http-equiv="refresh" content="5">')
    reason = escape(page.reason) if page is not None and page.reason else "The interview page is not available."
    body = ("<body class=\"explain\"><h1>The interview page is not installed</h1>"
            f"<p>{reason}</p>"
            "<p>The server and its API work without it. To add the page, install Node (18 or newer) and npm, "
            "then run <code>crdt-server build-web</code> (or restart the server, which builds it when it can), "
            "or use the Docker image, which carries the page.</p></body>")
    return _document(request, "Interview page unavailable · crdt-server", body, None, None, 503)


async def session_page(request: Request) -> Response:
    if not SESSION_ID.match(request.path_params["session_id"]):
        body = "<body class=\"explain\"><h1>No such session</h1><p>Check the link you were given.</p></body>"
        return _document(request, "Not found · crdt-server", body, None, None, 404)
    page = editor_page(request)
    if page is None or page.bundle is None:
        return _unavailable(request, page)
    bundle = page.bundle
    return _document(request, "Interview · crdt-server", SESSION_BODY.replace("{footer}", _licences_link(bundle)),
                     bundle, "editor.js")


async def home_page(request: Request) -> Response:
    page = editor_page(request)
    if page is None or page.bundle is None:
        return _unavailable(request, page)
    bundle = page.bundle
    needs_key = bool(request.app.state.ctx.settings.api_key)
    body = HOME_BODY.replace("{key_hidden}", "" if needs_key else " hidden")
    return _document(request, "New interview · crdt-server", body.replace("{footer}", _licences_link(bundle)),
                     bundle, "home.js")


async def static_file(request: Request) -> Response:
    """A file of the current bundle; gzip-encoded from its precompressed twin when accepted."""
    page = editor_page(request)
    name = request.path_params["name"]
    path = page.bundle.file(name) if page is not None and page.bundle is not None else None
    if path is None:
        return PlainTextResponse("Not found.\n", 404, headers={"X-Content-Type-Options": "nosniff",
                                                                 "Cache-Control": "no-cache"})
    headers = {"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff", "Vary": "Accept-Encoding",
               "Cross-Origin-Resource-Policy": "same-origin"}
    media = _TYPES.get(path.suffix, "application/octet-stream")
    gz = path.with_name(path.name + ".gz")
    if "gzip" in request.headers.get("accept-encoding", "") and gz.is_file():
        headers["Content-Encoding"] = "gzip"
        return FileResponse(gz, media_type=media, headers=headers)
    return FileResponse(path, media_type=media, headers=headers)


def session_links(request: Request, session_id: str, tokens: dict[str, str]) -> dict[str, Any]:
    """Absolute page URLs, one per role, with the token in the fragment (from the request's base URL)."""
    base = str(request.base_url).rstrip("/")
    return {role: f"{base}/sessions/{session_id}#token={token}" for role, token in tokens.items()}


def web_routes() -> list[BaseRoute]:
    """Add these before the catch-all route."""
    return [
        Route("/", home_page, methods=["GET", "HEAD"]),
        Route("/sessions/{session_id}", session_page, methods=["GET", "HEAD"]),
        Route("/static/{name}", static_file, methods=["GET", "HEAD"]),
    ]
