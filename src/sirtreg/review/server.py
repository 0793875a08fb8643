"""A small local web server for the review of one run: the review page and the scores, nothing else.

It listens on 127.0.0.1 only. Every request must carry the server's token, a random secret made when
the server is created (:attr:`ReviewServer.token`): as ``?token=...`` in the address (:attr:`ReviewServer.url`
holds it) or in the header :data:`TOKEN_HEADER` (the page's script sends it so). Other users of the same
computer can reach 127.0.0.1 too; without the token they get 403 and nothing else. It answers:

- ``GET /``: the report with the review panel (:mod:`sirtreg.review.page`);
- ``GET /api/scores[?reviewer=NAME]``: ``{"scores": [...]}``, the current scores (of one reviewer);
- ``POST /api/scores`` with ``{"reviewer": ..., "scores": [...]}`` (see
  :func:`~sirtreg.review.store.parse_scores`): stores them and answers ``{"changed", "received",
  "scores"}`` (the reviewer's scores now).

Refusals are JSON ``{"error": message}``: 400 for a bad request (body missing, not UTF-8 or not JSON,
nested deeper than :data:`MAX_JSON_DEPTH`, a score outside 1-5, an unknown landmark, ...), 403 for a
request without the right token or whose ``Host`` or ``Origin`` is not this server (another web site, or
a DNS rebinding), 404 for any other path, 408 for a body that does not arrive within
:attr:`_Handler.timeout` seconds, 413 for a body over :data:`MAX_BODY_BYTES`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import secrets
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sirtreg.errors import InputError
from sirtreg.review.landmarks import ReviewFolder, read_review_folder
from sirtreg.review.page import SCORES_PATH, TOKEN_HEADER, review_page
from sirtreg.review.store import ScoreStore, as_json, check_reviewer, parse_scores, scores_by_item

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY_BYTES = 1024 * 1024
MAX_JSON_DEPTH = 32
REQUEST_TIMEOUT_S = 10.0

# the characters that matter to the nesting depth of a JSON text: an escape pair, a quote, a bracket
_JSON_SYNTAX = re.compile(r'\\.|["\[\]{}]', re.DOTALL)


class ReviewServer(ThreadingHTTPServer):
    """The review server of one run's output folder; :attr:`url` is its page."""

    daemon_threads = True

    def __init__(self, folder: ReviewFolder, store: ScoreStore, *, port: int = 0, reviewer: str = "") -> None:
        self.folder, self.store, self.reviewer = folder, store, reviewer
        self.token = secrets.token_urlsafe(32)
        try:
            super().__init__((HOST, port), _Handler)
        except OSError as exc:
            raise InputError(f"cannot listen on {HOST}:{port} ({exc.strerror or exc}); choose another port, "
                             "or 0 for any free one") from None
        self.port = int(self.server_address[1])
        self.hosts = {f"{HOST}:{self.port}", f"localhost:{self.port}"}

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Log a request that failed (instead of printing its traceback)."""
        log.exception("review server: a request failed")

    @property
    def url(self) -> str:
        """The address of the review page, with the token: give it to the reviewer only."""
        return f"http://{HOST}:{self.port}/?token={self.token}"

    def knows(self, tokens: list[str]) -> bool:
        """Whether ``tokens`` (all those a request sent) are one or more copies of this server's token."""
        mine = self.token.encode("ascii")
        return bool(tokens) and all(hmac.compare_digest(given.encode("utf-8", "replace"), mine) for given in tokens)


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in the JSON ``text`` (brackets in strings not counted).

    Counts without recursion, so a text nested too deeply for the parser is measured, not parsed.
    Of a text that is not JSON, it measures the part up to where it stops being JSON (or more).
    """
    depth = deepest = 0
    in_string = False
    for match in _JSON_SYNTAX.finditer(text):
        char = match.group()
        if char == '"':
            in_string = not in_string
        elif in_string or len(char) > 1:
            continue
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth = max(depth - 1, 0)
    return deepest


def make_server(out_dir: str | os.PathLike[str], *, port: int = 0, reviewer: str = "") -> ReviewServer:
    """A review server for the output folder of ``sirtreg run`` (not yet serving: call ``serve_forever``).

    Parameters
    ----------
    out_dir : the output folder (results.json and report.html; scores go to review.sqlite there).
    port : TCP port on 127.0.0.1, 0 for any free one.
    reviewer : the reviewer's name shown in the page at first (may be empty).

    Refuses (:class:`~sirtreg.errors.InputError`) a folder that :func:`read_review_folder` refuses,
    a review.sqlite that is not a readable store, a port outside 0-65535 or one that cannot be used,
    and a bad reviewer name.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise InputError(f"the port must be a whole number from 0 to 65535, got {port!r}")
    reviewer = check_reviewer(reviewer) if reviewer else ""
    folder = read_review_folder(out_dir)
    store = ScoreStore(folder.store_path)
    store.scores()  # refuses a store that cannot be read now, not at the first request
    return ReviewServer(folder, store, port=port, reviewer=reviewer)


class _Body(InputError):
    """A request body refused with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(BaseHTTPRequestHandler):
    server: ReviewServer
    server_version = "sirtreg-review"
    sys_version = ""
    timeout = REQUEST_TIMEOUT_S  # seconds for each read and write of a request, so a slow client cannot hold it

    # --- answers ---
    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, document: Any) -> None:
        self._send(status, json.dumps(document).encode("utf-8"), "application/json; charset=utf-8")

    def _refuse(self, status: int, message: str) -> None:
        log.debug("review server: refused (%d): %s", status, message)
        self.close_connection = True
        self._json(status, {"error": message})

    def _page(self) -> None:
        nonce = secrets.token_urlsafe(16)
        reviewer = self.server.reviewer
        saved = scores_by_item(self.server.store.scores(reviewer)) if reviewer else {}
        page = review_page(self.server.folder, nonce=nonce, token=self.server.token, reviewer=reviewer,
                           saved=saved)
        policy = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'nonce-{nonce}'; "
                  "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
        self._send(HTTPStatus.OK, page.encode("utf-8"), "text/html; charset=utf-8",
                   {"Content-Security-Policy": policy})

    def _scores(self, reviewer: str | None) -> list[Any]:
        return [as_json(score) for score in self.server.store.scores(reviewer)]

    # --- checks ---
    def _from_here(self, *, post: bool) -> bool:
        """Whether Host (and, for a POST, Origin when sent) name this server and the token is right; 403 if not."""
        if self.headers.get("Host", "") not in self.server.hosts:
            self._refuse(HTTPStatus.FORBIDDEN, "unexpected Host header; open the address printed by sirtreg review")
            return False
        tokens = (self.headers.get_all(TOKEN_HEADER) or []) + parse_qs(urlsplit(self.path).query).get("token", [])
        if not self.server.knows(tokens):
            self._refuse(HTTPStatus.FORBIDDEN, "no or wrong token; open the address printed by sirtreg review")
            return False
        origin = self.headers.get("Origin")
        if post and origin is not None and urlsplit(origin).netloc not in self.server.hosts:
            self._refuse(HTTPStatus.FORBIDDEN, "scores are accepted from the review page only")
            return False
        return True

    def _body(self) -> Any:
        """The request's JSON document; raises :class:`_Body` with the status to answer if it is refused.

        Refused: another type, no or a wrong Content-Length (400), a body over :data:`MAX_BODY_BYTES` (413),
        one that does not arrive in time (408), not UTF-8 or not JSON or nested deeper than
        :data:`MAX_JSON_DEPTH` (400).
        """
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise _Body(HTTPStatus.BAD_REQUEST, "send the scores as application/json")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise _Body(HTTPStatus.BAD_REQUEST, "a Content-Length header is needed") from None
        if length > MAX_BODY_BYTES:
            raise _Body(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        f"the body must hold 1 to {MAX_BODY_BYTES} bytes, got {length}")
        if length <= 0:
            raise _Body(HTTPStatus.BAD_REQUEST, f"the body must hold 1 to {MAX_BODY_BYTES} bytes, got {length}")
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise _Body(HTTPStatus.REQUEST_TIMEOUT, f"the body did not arrive within {self.timeout:g} s") from None
        if len(data) != length:
            raise _Body(HTTPStatus.BAD_REQUEST, f"the body ended after {len(data)} of {length} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _Body(HTTPStatus.BAD_REQUEST, "the body is not valid JSON (not UTF-8)") from None
        if json_depth(text) > MAX_JSON_DEPTH:
            raise _Body(HTTPStatus.BAD_REQUEST, f"the body is not valid JSON here: nested deeper than "
                        f"{MAX_JSON_DEPTH} levels")
        try:
            return json.loads(text)
        except (ValueError, RecursionError):
            raise _Body(HTTPStatus.BAD_REQUEST, "the body is not valid JSON") from None

    # --- methods ---
    def do_GET(self) -> None:
        if not self._from_here(post=False):
            return
        url = urlsplit(self.path)
        if url.path in ("/", "/index.html"):
            self._page()
        elif url.path == SCORES_PATH:
            names = parse_qs(url.query).get("reviewer")
            try:
                reviewer = check_reviewer(names[0]) if names else None
            except InputError as exc:
                self._refuse(HTTPStatus.BAD_REQUEST, str(exc))
                return
            self._json(HTTPStatus.OK, {"scores": self._scores(reviewer)})
        else:
            self._refuse(HTTPStatus.NOT_FOUND, f"no such page: {url.path}")

    def do_POST(self) -> None:
        if not self._from_here(post=True):
            return
        if urlsplit(self.path).path != SCORES_PATH:
            self._refuse(HTTPStatus.NOT_FOUND, f"scores are sent to {SCORES_PATH}")
            return
        try:
            scores = parse_scores(self._body(), self.server.folder.items)
        except _Body as exc:
            self._refuse(exc.status, str(exc))
            return
        except InputError as exc:
            self._refuse(HTTPStatus.BAD_REQUEST, str(exc))
            return
        try:
            changed = self.server.store.save(scores)
        except InputError as exc:  # the store became unreadable while serving
            self._refuse(HTTPStatus.INTERNAL_SERVER_ERROR, f"the scores were not stored: {exc}")
            return
        self._json(HTTPStatus.OK, {"changed": changed, "received": len(scores),
                                   "scores": self._scores(scores[0].reviewer)})

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("review server: " + format, *args)
