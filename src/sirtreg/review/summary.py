"""The Likert scores of several reviewed runs, summed up per modality and guidance (the paper's Fig. 8).

Each score of each reviewer of each run (``review.sqlite`` beside its report) becomes one
:class:`RatedLandmark`, with the modality and the guidance of the registration that carried the
landmark (from the run's ``results.json``). :func:`likert_counts` counts them per modality,
guidance and score; :func:`plot_likert` draws the counts as stacked bars, one bar per guidance.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from sirtreg.errors import InputError
from sirtreg.register.config import GUIDANCES
from sirtreg.review.landmarks import LIKERT, LIKERT_SHORT, RESULTS_NAME, read_review_folder
from sirtreg.review.store import ScoreStore, write_safe_csv

# the paper's colours run from red (major misalignment) to green (near perfect)
_SCORE_COLOURS = {1: "#b2182b", 2: "#ef8a62", 3: "#f7d56e", 4: "#91cf60", 5: "#1a9850"}


@dataclass(frozen=True)
class RatedLandmark:
    """One reviewer's score (1-5) of one landmark carried by one registration of one run."""

    run: str
    floating: str
    modality: str
    guidance: str
    kind: str
    landmark: str
    reviewer: str
    score: int


RATED_COLUMNS = tuple(f.name for f in fields(RatedLandmark))
COUNT_COLUMNS = ("modality", "guidance", "score", "meaning", "count", "percent", "total")


def read_rated_landmarks(run_dirs: Sequence[str | os.PathLike[str]]) -> list[RatedLandmark]:
    """Every current score of every reviewer in the output folders of ``sirtreg run`` ``run_dirs``.

    Refuses (:class:`~sirtreg.errors.InputError`) a folder that is no reviewed run (see
    :func:`~sirtreg.review.read_review_folder`), a folder given twice, and a run without a score
    (one left out would silently change the counts).
    """
    if not run_dirs:
        raise InputError("give the output folders of the reviewed runs")
    rated: list[RatedLandmark] = []
    seen: dict[Path, str] = {}
    for run_dir in run_dirs:
        folder = read_review_folder(run_dir)
        if folder.out_dir in seen:
            raise InputError(f"{run_dir} is given twice (as {seen[folder.out_dir]}): its scores would count twice")
        seen[folder.out_dir] = str(run_dir)
        results = json.loads((folder.out_dir / RESULTS_NAME).read_text(encoding="utf-8"))
        carried_by = {entry["floating"]: entry for entry in results.get("registrations", [])}
        scores = ScoreStore(folder.store_path).scores()
        if not scores:
            raise InputError(f"no review scores in {run_dir}: score it with `sirtreg review {run_dir}` first")
        for score in scores:
            registration = carried_by.get(score.floating, {})
            rated.append(RatedLandmark(str(run_dir), score.floating, str(registration.get("modality", "?")),
                                       str(registration.get("guidance", "?")), score.kind, score.landmark,
                                       score.reviewer, score.score))
    return rated


def _groups(rated: Sequence[RatedLandmark]) -> list[tuple[str, str]]:
    """(modality, guidance) pairs present, modalities in alphabetical order, guidances in the presets' order."""
    order = {guidance: index for index, guidance in enumerate(GUIDANCES)}
    return sorted({(item.modality, item.guidance) for item in rated},
                  key=lambda group: (group[0], order.get(group[1], len(order)), group[1]))


def likert_counts(rated: Sequence[RatedLandmark]) -> list[dict[str, Any]]:
    """Per modality and guidance, one row per score 1-5: its count, its percentage of the group's scores (0-100)
    and the group's total (every reviewer's score counts once)."""
    rows = []
    for modality, guidance in _groups(rated):
        scores = [item.score for item in rated if (item.modality, item.guidance) == (modality, guidance)]
        for value in LIKERT:
            count = scores.count(value)
            rows.append({"modality": modality, "guidance": guidance, "score": value, "meaning": LIKERT_SHORT[value],
                         "count": count, "percent": 100.0 * count / len(scores), "total": len(scores)})
    return rows


def write_rated_csv(rated: Sequence[RatedLandmark], path: Path) -> Path:
    """Every score as a CSV row (:data:`RATED_COLUMNS`)."""
    return write_safe_csv(path, RATED_COLUMNS, [astuple(item) for item in rated])


def write_counts_csv(counts: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """The counts of :func:`likert_counts` as CSV (:data:`COUNT_COLUMNS`), percentages to 0.1."""
    return write_safe_csv(path, COUNT_COLUMNS, [[f"{row[c]:.1f}" if c == "percent" else row[c] for c in COUNT_COLUMNS]
                                            for row in counts])


def plot_likert(counts: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Stacked horizontal bars, one per modality and guidance: the share (%) of each score, 1 (red) to 5 (green),
    with the number of scores beside each bar."""
    from matplotlib.figure import Figure

    from sirtreg.io.images import write_png

    groups = list(dict.fromkeys((row["modality"], row["guidance"]) for row in counts))
    figure = Figure(figsize=(7.5, 1.4 + 0.45 * len(groups)), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    positions = range(len(groups))[::-1]  # the first group on top
    left = [0.0] * len(groups)
    for value in LIKERT:
        shares = [next(row["percent"] for row in counts if (row["modality"], row["guidance"]) == group
                       and row["score"] == value) for group in groups]
        axes.barh(positions, shares, left=left, color=_SCORE_COLOURS[value], edgecolor="white",
                  label=f"{value} {LIKERT_SHORT[value]}")
        for position, start, share in zip(positions, left, shares):
            if share >= 8:
                axes.text(start + share / 2, position, f"{share:.0f}", ha="center", va="center", fontsize=8)
        left = [start + share for start, share in zip(left, shares)]
    totals = {(row["modality"], row["guidance"]): row["total"] for row in counts}
    axes.set_yticks(list(positions), [f"{modality} {guidance} (n={totals[(modality, guidance)]})"
                                      for modality, guidance in groups])
    axes.set_xlim(0, 100)
    axes.set_xlabel("scores (%)")
    axes.set_title("Likert scores of the carried landmarks", fontsize=10)
    axes.legend(ncols=5, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(groups) < 4 else -0.12),
                frameon=False)
    return write_png(figure, path)
