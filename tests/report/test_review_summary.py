"""The Likert summary of several reviewed runs (the paper's Fig. 8): known scores give known counts."""

from __future__ import annotations

import csv
import shutil
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.errors import InputError
from sirtreg.review import Score, ScoreStore, read_review_folder
from sirtreg.review.summary import COUNT_COLUMNS, likert_counts, read_rated_landmarks

T0 = datetime(2024, 5, 1, 9, 30, tzinfo=UTC)


def _scored(folder, scores: list[tuple[str, str, str, str, int]]):
    """Store (floating, kind, landmark, reviewer, score) scores in the run folder's review store."""
    store = ScoreStore(read_review_folder(folder).store_path)
    store.save([Score(*entry) for entry in scores], now=T0)
    return folder


@pytest.fixture()
def two_runs(run_folder, tmp_path):
    """Two reviewed runs: the first scored by two reviewers, the second by one (its MR moved to liver guidance)."""
    second = tmp_path / "second"
    shutil.copytree(run_folder, second)
    results = (second / "results.json").read_text().replace('"floating": "mr", "modality": "MR", "role": "", '
                                                            '"guidance": "liver+landmarks"',
                                                            '"floating": "mr", "modality": "MR", "role": "", '
                                                            '"guidance": "liver"')
    assert '"guidance": "liver"' in results
    (second / "results.json").write_text(results)
    first = _scored(run_folder, [("ct", "landmark", "landmark 1", "ann", 5), ("ct", "landmark", "clip <2>", "ann", 4),
                                 ("ct", "landmark", "landmark 1", "bob", 4), ("mr", "lesion", "lesion 1", "ann", 2),
                                 ("mr", "lesion", "lesion 2", "ann", 3)])
    second = _scored(second, [("ct", "landmark", "landmark 1", "ann", 5), ("mr", "lesion", "lesion 1", "ann", 1),
                              ("mr", "lesion", "lesion 2", "=cmd", 1)])
    return first, second


def test_counts_per_modality_and_guidance_over_runs_and_reviewers(two_runs):
    rated = read_rated_landmarks(two_runs)
    assert len(rated) == 8
    counts = {(row["modality"], row["guidance"], row["score"]): (row["count"], row["percent"], row["total"])
              for row in likert_counts(rated)}
    assert counts[("CT", "liver+landmarks", 5)] == (2, 50.0, 4)  # ann twice (two runs), bob never
    assert counts[("CT", "liver+landmarks", 4)] == (2, 50.0, 4)  # ann's clip, bob's landmark
    assert counts[("MR", "liver+landmarks", 2)] == (1, 50.0, 2) and counts[("MR", "liver+landmarks", 3)][0] == 1
    assert counts[("MR", "liver", 1)] == (2, 100.0, 2)
    assert sum(count for count, _, _ in counts.values()) == 8
    groups = list(dict.fromkeys((modality, guidance) for modality, guidance, _ in counts))
    assert groups == [("CT", "liver+landmarks"), ("MR", "liver"), ("MR", "liver+landmarks")]  # presets' order


def test_the_command_writes_the_counts_the_scores_and_the_chart(two_runs, tmp_path):
    out = tmp_path / "summary"
    result = CliRunner().invoke(app, ["review-summary", *map(str, two_runs), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "2 run(s), 3 reviewer(s)" in result.output
    with open(out / "likert_counts.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COUNT_COLUMNS and len(rows) == 3 * 5
    assert {(r["modality"], r["guidance"], r["score"]): r["count"] for r in rows}[("MR", "liver", "1")] == "2"
    with open(out / "likert_scores.csv", newline="") as handle:
        scores = list(csv.DictReader(handle))
    assert len(scores) == 8 and "'=cmd" in {row["reviewer"] for row in scores}  # no formula for a spreadsheet
    assert (out / "likert.png").read_bytes().startswith(b"\x89PNG")


def test_a_run_given_twice_or_without_scores_is_refused(two_runs, run_folder, tmp_path):
    with pytest.raises(InputError, match="given twice"):
        read_rated_landmarks([two_runs[0], two_runs[1], two_runs[0]])
    unscored = tmp_path / "unscored"
    shutil.copytree(run_folder, unscored)
    (unscored / "review.sqlite").unlink()
    with pytest.raises(InputError, match="no review scores in .*unscored"):
        read_rated_landmarks([two_runs[1], unscored])
    with pytest.raises(InputError, match="give the output folders"):
        read_rated_landmarks([])
