"""Likert scores of landmarks in an SQLite file beside the report, and their checks and CSV export.

One row per (floating image, kind, landmark, reviewer) holds the current score (1-5), a comment
and when it was given (UTC, ISO 8601). Scoring again replaces the row; every change is also
appended to a history table, so earlier scores are kept. Each call opens its own connection,
so one store may be used from several threads (the review server's requests).
"""

from __future__ import annotations

import csv
import logging
import os
import sqlite3
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import astuple, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.io import prepare_output
from sirtreg.output_folder import replacing
from sirtreg.review.landmarks import LIKERT, ReviewItem

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MAX_REVIEWER_CHARS = 80
MAX_COMMENT_CHARS = 2000
MAX_SCORES_PER_SUBMISSION = 1000
_SUBMISSION_KEYS = {"reviewer", "scores"}
_SCORE_KEYS = {"floating", "kind", "landmark", "score", "comment"}
# a text cell starting with one of these is a formula (or may become one) in a spreadsheet (OWASP, CSV injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scores (
    floating TEXT NOT NULL, kind TEXT NOT NULL, landmark TEXT NOT NULL, reviewer TEXT NOT NULL,
    score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5), comment TEXT NOT NULL DEFAULT '',
    scored_utc TEXT NOT NULL,
    PRIMARY KEY (floating, kind, landmark, reviewer));
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    floating TEXT NOT NULL, kind TEXT NOT NULL, landmark TEXT NOT NULL, reviewer TEXT NOT NULL,
    score INTEGER NOT NULL, comment TEXT NOT NULL, scored_utc TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Score:
    """A reviewer's Likert score (1-5) of one landmark; ``scored_utc`` is set when stored."""

    floating: str
    kind: str
    landmark: str
    reviewer: str
    score: int
    comment: str = ""
    scored_utc: str = ""

    @property
    def item(self) -> ReviewItem:
        """The landmark scored."""
        return ReviewItem(self.floating, self.kind, self.landmark)


COLUMNS = tuple(f.name for f in fields(Score))
_INSERT = f"({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


# --- checks -------------------------------------------------------------------------------
def check_reviewer(name: object) -> str:
    """The reviewer's name, stripped; refuses a non-text, empty or over-long name, or control characters."""
    if not isinstance(name, str) or not name.strip():
        raise InputError("a reviewer name is needed")
    name = name.strip()
    if len(name) > MAX_REVIEWER_CHARS:
        raise InputError(f"the reviewer name is longer than {MAX_REVIEWER_CHARS} characters")
    if not name.isprintable():
        raise InputError("the reviewer name holds control characters")
    return name


def _check_score(entry: object, index: int, reviewer: str, items: Collection[ReviewItem]) -> Score:
    where = f"score {index + 1}"
    if not isinstance(entry, dict):
        raise InputError(f"{where}: must be an object with floating, kind, landmark, score and comment")
    unknown = sorted(set(entry) - _SCORE_KEYS)
    if unknown:
        raise InputError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    names = [entry.get(key) for key in ("floating", "kind", "landmark")]
    if not all(isinstance(name, str) for name in names):
        raise InputError(f"{where}: floating, kind and landmark must be texts")
    item = ReviewItem(*names)
    if item not in items:
        raise InputError(f"{where}: no {item.kind} {item.landmark!r} of floating image {item.floating!r} in this run")
    value = entry.get("score")
    if isinstance(value, bool) or not isinstance(value, int) or value not in LIKERT:
        raise InputError(f"{where}: the score must be a whole number from 1 to 5, got {value!r}")
    comment = entry.get("comment", "")
    if not isinstance(comment, str):
        raise InputError(f"{where}: the comment must be a text")
    if len(comment) > MAX_COMMENT_CHARS:
        raise InputError(f"{where}: the comment is longer than {MAX_COMMENT_CHARS} characters")
    return Score(item.floating, item.kind, item.landmark, reviewer, value, comment.strip())


def parse_scores(payload: object, items: Collection[ReviewItem]) -> list[Score]:
    """The scores of a submission ``{"reviewer": str, "scores": [{floating, kind, landmark, score, comment}]}``.

    Every score must name a landmark in ``items``, at most once; refuses
    (:class:`~sirtreg.errors.InputError`) anything else, naming the first problem.
    """
    if not isinstance(payload, dict):
        raise InputError("the submission must be a JSON object with reviewer and scores")
    unknown = sorted(set(payload) - _SUBMISSION_KEYS)
    if unknown:
        raise InputError(f"unknown field(s) {', '.join(map(repr, unknown))}; expected reviewer and scores")
    reviewer = check_reviewer(payload.get("reviewer"))
    entries = payload.get("scores")
    if not isinstance(entries, list) or not entries:
        raise InputError("scores must be a non-empty list")
    if len(entries) > MAX_SCORES_PER_SUBMISSION:
        raise InputError(f"at most {MAX_SCORES_PER_SUBMISSION} scores per submission, got {len(entries)}")
    scores = [_check_score(entry, index, reviewer, items) for index, entry in enumerate(entries)]
    seen: set[ReviewItem] = set()
    for score in scores:
        if score.item in seen:
            raise InputError(f"{score.kind} {score.landmark!r} of floating image {score.floating!r} is scored twice")
        seen.add(score.item)
    return scores


# --- the store ----------------------------------------------------------------------------
class ScoreStore:
    """The scores of one run's review, in the SQLite file ``path`` (created on first save)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    @contextmanager
    def _connect(self, *, create: bool) -> Iterator[sqlite3.Connection]:
        if not create and not self.path.is_file():
            raise FileNotFoundError(self.path)
        try:
            with closing(sqlite3.connect(self.path, timeout=10.0, isolation_level=None)) as connection:
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version == 0 and create:
                    connection.executescript(_SCHEMA + f"PRAGMA user_version = {SCHEMA_VERSION};")
                elif version != SCHEMA_VERSION:
                    raise InputError(f"{self.path.name} is a review store of another version ({version}); "
                                     f"this sirtreg reads version {SCHEMA_VERSION}")
                yield connection
        except sqlite3.DatabaseError as exc:
            raise InputError(f"{self.path.name} is not a readable review store ({exc})") from None

    def save(self, scores: Sequence[Score], *, now: datetime | None = None) -> int:
        """Store ``scores`` (checked with :func:`parse_scores`) at once; returns how many were new or changed.

        A score equal to the stored one (score and comment) is left as it was, with its time.
        """
        stamp = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")
        changed = 0
        with self._connect(create=True) as connection:
            connection.execute("BEGIN IMMEDIATE")
            try:
                for score in scores:
                    key = (score.floating, score.kind, score.landmark, score.reviewer)
                    stored = connection.execute(
                        "SELECT score, comment FROM scores WHERE floating = ? AND kind = ? AND landmark = ? "
                        "AND reviewer = ?", key).fetchone()
                    if stored == (score.score, score.comment):
                        continue
                    row = astuple(replace(score, scored_utc=stamp))
                    connection.execute(f"INSERT OR REPLACE INTO scores {_INSERT}", row)
                    connection.execute(f"INSERT INTO history {_INSERT}", row)
                    changed += 1
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise
        log.info("stored %d new or changed score(s) of %d", changed, len(scores))
        return changed

    def _select(self, table: str, reviewer: str | None) -> list[Score]:
        order = "id" if table == "history" else "floating, kind, landmark, reviewer"
        where, arguments = ("WHERE reviewer = ?", (reviewer,)) if reviewer is not None else ("", ())
        try:
            with self._connect(create=False) as connection:
                rows = connection.execute(f"SELECT {', '.join(COLUMNS)} FROM {table} {where} ORDER BY {order}",
                                          arguments).fetchall()
        except FileNotFoundError:
            return []
        return [Score(*row) for row in rows]

    def scores(self, reviewer: str | None = None) -> list[Score]:
        """The current scores (of one reviewer, or all), ordered by floating image, kind, landmark, reviewer."""
        return self._select("scores", reviewer)

    def history(self, reviewer: str | None = None) -> list[Score]:
        """Every score as given, oldest first (changes included)."""
        return self._select("history", reviewer)


def as_json(score: Score) -> Mapping[str, Any]:
    """A score as a JSON object (the fields of :class:`Score`)."""
    return dict(zip(COLUMNS, astuple(score)))


def spreadsheet_cell(value: object) -> object:
    """``value`` safe for a spreadsheet: a text starting with :data:`FORMULA_STARTS` gets a leading ``'``.

    A spreadsheet shows such a cell as the text, instead of running it as a formula; numbers are kept.
    """
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def export_csv(store: ScoreStore, path: str | os.PathLike[str]) -> tuple[Path, int]:
    """Write the current scores as CSV (one row per score, columns :data:`COLUMNS`); returns (path, rows).

    Every text cell goes through :func:`spreadsheet_cell`: a comment or name starting with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return is written with a leading ``'``, so that opening the file in a
    spreadsheet runs no formula. Refuses an existing file (:class:`~sirtreg.errors.OutputExistsError`); the
    file is written under a temporary name and renamed when complete.
    """
    if Path(path).exists():
        raise OutputExistsError(f"{path} exists; choose another file name for the scores")
    path = prepare_output(path)
    scores = store.scores()
    write_safe_csv(path, COLUMNS, [astuple(score) for score in scores])
    log.debug("exported %d score(s)", len(scores))
    return path, len(scores)


def write_safe_csv(path: str | os.PathLike[str], header: Sequence[str], rows: Sequence[Sequence[Any]]) -> Path:
    """A CSV file (``header``, then ``rows``) written under a temporary name and renamed when complete, every
    cell through :func:`spreadsheet_cell`; refuses an existing file."""
    with replacing(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([spreadsheet_cell(value) for value in row] for row in rows)
    return Path(path)


def scores_by_item(scores: Sequence[Score]) -> Mapping[ReviewItem, Score]:
    """Scores keyed by the landmark (of one reviewer's scores)."""
    return {score.item: score for score in scores}
