"""What a reviewer scores: the landmarks each floating image carried onto the MAA CT, and the Likert scale.

The paper graded every registered landmark (lesions, vessels, clips, ...) of a floating image
against the same landmark drawn on the MAA CT with a five-point Likert score (its Table 2,
:data:`LIKERT`). Here the landmarks of a floating image are the labels of its landmark map, as
listed in the ``results.json`` of ``sirtreg run`` (``registrations[i]["landmarks"]``); a floating
image without a landmark map has its lesions scored instead (the lesion rows of ``doses``:
``source`` = the floating id, ``role`` = ``"lesion"``, ``structure`` = ``"<id>/<lesion name>"``).
Both are not listed together, since a landmark map usually holds the lesions too (as in the paper
and the digital patient), which would then be scored twice under two names.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sirtreg.errors import InputError

log = logging.getLogger(__name__)

# the files of a `sirtreg run` output folder (tests check they match sirtreg.pipeline.run and run_outputs)
RESULTS_NAME = "results.json"
REPORT_NAME = "report.html"
RESULTS_FORMAT = "sirtreg-run"
STORE_NAME = "review.sqlite"

KINDS = ("landmark", "lesion")

#: The paper's Table 2: Likert score -> criteria for scoring landmark registration.
LIKERT: Mapping[int, str] = {
    1: "Major misalignment exists for the registration. Major impact on dosimetry is expected. "
       "Dosimetry results are deemed unreliable.",
    2: "Pronounced misalignment exists for the registration. Substantial impact on dosimetry is expected.",
    3: "Moderate misalignment exists for the registration. Moderate impact on dosimetry is expected.",
    4: "Little misalignment exists for the registration. No significant impact on dosimetry is expected.",
    5: "Near perfect alignment for the registration. No intervention is warranted and dosimetry is deemed "
       "reliable.",
}
#: A few words per score, for column headings.
LIKERT_SHORT: Mapping[int, str] = {1: "major", 2: "pronounced", 3: "moderate", 4: "little", 5: "near perfect"}


@dataclass(frozen=True)
class ReviewItem:
    """One landmark to score: ``kind`` is "landmark" (landmark map label) or "lesion"; ``landmark`` its name."""

    floating: str
    kind: str
    landmark: str


@dataclass(frozen=True)
class FloatingReview:
    """A floating image of the run and its landmarks to score, in the order of the run."""

    id: str
    modality: str
    guidance: str
    items: tuple[ReviewItem, ...]


@dataclass(frozen=True, eq=False)
class ReviewFolder:
    """An output folder of ``sirtreg run``, read for review.

    Attributes
    ----------
    out_dir : the folder (absolute).
    report_html : the text of its report.html.
    floating : the floating images with something to score.
    """

    out_dir: Path
    report_html: str
    floating: tuple[FloatingReview, ...]

    @property
    def store_path(self) -> Path:
        """Where the scores are kept: ``review.sqlite`` beside the report."""
        return self.out_dir / STORE_NAME

    @property
    def items(self) -> frozenset[ReviewItem]:
        """Every landmark that may be scored."""
        return frozenset(item for entry in self.floating for item in entry.items)

    def describe(self) -> str:
        """One line: how many landmarks of how many floating images."""
        count = sum(len(entry.items) for entry in self.floating)
        return f"{count} landmark(s) of {len(self.floating)} floating image(s)"


def review_items(results: Mapping[str, Any]) -> tuple[FloatingReview, ...]:
    """The floating images of a ``results.json`` document, each with its landmarks (else its lesions).

    Floating images with nothing to score are left out. A document written before runs listed
    the carried landmarks gives lesions only (logged as a warning).
    """
    lesions: dict[str, list[str]] = {}
    for row in results.get("doses", []):
        if row.get("role") == "lesion" and isinstance(row.get("structure"), str):
            source = str(row.get("source", ""))
            lesions.setdefault(source, []).append(row["structure"].removeprefix(f"{source}/"))
    floating = []
    for entry in results.get("registrations", []):
        key = str(entry["floating"])
        if "landmarks" not in entry:
            log.warning("results.json lists no carried landmarks (written by an older sirtreg); lesions only")
        items = [ReviewItem(key, "landmark", str(name)) for name in entry.get("landmarks", [])]
        items = items or [ReviewItem(key, "lesion", name) for name in lesions.get(key, [])]
        if items:
            floating.append(FloatingReview(key, str(entry.get("modality", "")), str(entry.get("guidance", "")),
                                           tuple(dict.fromkeys(items))))
    return tuple(floating)


def read_review_folder(out_dir: str | os.PathLike[str]) -> ReviewFolder:
    """Read an output folder of ``sirtreg run`` for review.

    Refuses (:class:`~sirtreg.errors.InputError`) a path that is not a folder, a folder without
    results.json or report.html, a results.json that is not a run's result, a report without a
    body, and a run with no landmark or lesion to score.
    """
    out_dir = Path(os.path.abspath(out_dir))
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a folder; give the output folder of `sirtreg run`")
    for name in (RESULTS_NAME, REPORT_NAME):
        if not (out_dir / name).is_file():
            raise InputError(f"{out_dir} holds no {name}; give the output folder of `sirtreg run`")
    try:
        results = json.loads((out_dir / RESULTS_NAME).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{RESULTS_NAME} in {out_dir} is not valid JSON ({exc})") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise InputError(f"{RESULTS_NAME} in {out_dir} is not the result of `sirtreg run`")
    report_html = (out_dir / REPORT_NAME).read_text(encoding="utf-8", errors="replace")
    if "</body>" not in report_html or "</head>" not in report_html:
        raise InputError(f"{REPORT_NAME} in {out_dir} is not an HTML report of `sirtreg run` (no head or body)")
    floating = review_items(results)
    if not floating:
        raise InputError(f"nothing to score in {out_dir}: no floating image carried landmarks or lesions")
    return ReviewFolder(out_dir, report_html, floating)

