"""Review of a run: landmarks to score, the score store, its checks, the local server, CSV export and the CLI."""

from __future__ import annotations

import csv
import http.client
import json
import logging
import socket
import sqlite3
import threading
import urllib.error
import urllib.request
from dataclasses import replace
from datetime import UTC, datetime

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
from sirtreg.review.store import MAX_COMMENT_CHARS, MAX_REVIEWER_CHARS, MAX_SCORES_PER_SUBMISSION

ITEMS = frozenset({ReviewItem("ct", "landmark", "landmark 1"), ReviewItem("ct", "lesion", "lesion 1")})
CHECKED = " checked title="  # a radio button shown chosen
T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def _score(score: int = 4, **changes) -> dict:
    return {"floating": "ct", "kind": "landmark", "landmark": "landmark 1", "score": score, **changes}


# --- what to score ------------------------------------------------------------------------------
def test_file_names_are_those_of_sirtreg_run():
    from sirtreg.pipeline import run

    assert (landmarks_module.RESULTS_NAME, landmarks_module.REPORT_NAME, landmarks_module.RESULTS_FORMAT) == (
        run.RESULTS_NAME, run.REPORT_NAME, run.RESULTS_FORMAT)


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


# --- the page -----------------------------------------------------------------------------------
def test_page_is_the_report_with_the_panel(run_folder):
    folder = read_review_folder(run_folder)
    saved = {ReviewItem("mr", "lesion", "lesion 2"): Score("mr", "lesion", "lesion 2", "A", 3, "<edge>", "2024-05-01")}
    page = review_page(folder, nonce="n0nce", reviewer='A "x"', saved=saved)
    report = (run_folder / "report.html").read_text()
    head, body = report.index("</head>"), report.rindex("</body>")
    assert report[head:body] in page  # the report's content unchanged
    assert page.count('<tr class="item"') == 4 and page.count('type="radio"') == 20
    assert 'data-landmark="clip &lt;2&gt;"' in page and "clip <2>" not in page  # names escaped
    assert 'value="A &quot;x&quot;"' in page and 'value="&lt;edge&gt;"' in page
    assert page.count(CHECKED) == 1 and f'value="3"{CHECKED}' in page
    assert '<script nonce="n0nce">' in page and page.count("<script") == 1
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


def _get(server, path: str) -> tuple[int, dict, bytes]:
    with urllib.request.urlopen(server.url.rstrip("/") + path, timeout=10) as response:
        return response.status, dict(response.headers), response.read()


def _post(server, document, *, path: str = "/api/scores", headers: dict | None = None,
          body: bytes | None = None) -> tuple[int, dict]:
    data = body if body is not None else json.dumps(document).encode()
    request = urllib.request.Request(server.url.rstrip("/") + path, data=data, method="POST",
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_server_serves_the_page_and_stores_posted_scores(served, run_folder):
    report = (run_folder / "report.html").read_bytes()
    assert served.url.startswith("http://127.0.0.1:") and served.server_address[0] == "127.0.0.1"
    status, headers, page = _get(served, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
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


def test_server_refuses_bodies_without_or_over_the_size_limit(served):
    for length in (None, "0", str(server_module.MAX_BODY_BYTES + 1), "many"):
        connection = http.client.HTTPConnection("127.0.0.1", served.port, timeout=10)
        connection.putrequest("POST", "/api/scores")
        connection.putheader("Content-Type", "application/json")
        if length is not None:
            connection.putheader("Content-Length", length)
        connection.endheaders()
        response = connection.getresponse()
        error = json.loads(response.read())["error"]
        connection.close()
        assert response.status == 400 and ("Content-Length" in error or "the body must hold" in error), length
    assert served.store.scores() == []


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
    monkeypatch.setattr("webbrowser.open", opened.append)

    def interrupted(self, poll_interval=0.5):
        raise KeyboardInterrupt

    monkeypatch.setattr(server_module.ReviewServer, "serve_forever", interrupted)
    result = CliRunner().invoke(app, ["review", str(run_folder), "--reviewer", "Dr A"])
    assert result.exit_code == 0, result.output
    assert "http://127.0.0.1:" in result.output and "stopped; 0 score(s)" in result.output
    assert len(opened) == 1 and opened[0].startswith("http://127.0.0.1:")
    result = CliRunner().invoke(app, ["review", str(run_folder), "--no-browser", "--port", "70000"])
    assert result.exit_code == 2 and "port must be" in result.output and len(opened) == 1
