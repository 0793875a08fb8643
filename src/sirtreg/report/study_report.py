"""The HTML report of a study evaluation: the paper's table of methods per modality and its figures.

One self-contained page (:mod:`sirtreg.report.html`): per modality, the summary
of every method on the test split (n, RRMSD, median RMSD, DSC, MSD, mean
landmark MCD, time) with the weights it ran with, then the RMSD box plots
(the paper's Figs. 6-7), the DSC of the CNN liver masks (Fig. 5), the registrations
whose guiding CNN liver was flagged (:mod:`sirtreg.segment.liver_check`) and, for
each tuned method, the grid-search heat map of RRMSD on the train split.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sirtreg.report.html import Picture, Section, Table, Text, write_html
from sirtreg.segment.liver_check import describe_checks

_COLUMNS = ("method", "wI", "wS", "rigidity", "n", "failed", "flagged CNN liver", "RRMSD (mm)", "median RMSD (mm)",
            "median DSC", "median MSD (mm)", "mean MCD (mm)", "median time (s)")
_FORMATS = {"wI": "g", "wS": "g", "rigidity": "g", "RRMSD (mm)": ".2f", "median RMSD (mm)": ".2f",
            "median DSC": ".3f", "median MSD (mm)": ".2f", "mean MCD (mm)": ".2f", "median time (s)": ".1f"}


def _summary_rows(summary: Sequence[Mapping[str, Any]], modality: str) -> list[list[Any]]:
    return [[row["method_name"], row["image_weight"], row["label_weight"], row["rigidity"], row["n"], row["failed"],
             row["flagged_livers"], row["rrmsd_mm"], row["median_rmsd_mm"], row["median_dsc"], row["median_msd_mm"],
             row["mean_mcd_mm"], row["median_seconds"]]
            for row in summary if row["modality"] == modality]


def write_study_report(
    path: str | os.PathLike[str],
    summary: Sequence[Mapping[str, Any]],
    *,
    boxplot: Path,
    heat_maps: Mapping[str, Path] | None = None,
    cnn_dsc: Path | None = None,
    flagged: Sequence[Mapping[str, Any]] = (),
    facts: Sequence[str] = (),
    overwrite: bool = False,
) -> Path:
    """Write the evaluation report (see the module docstring); returns its path.

    Parameters
    ----------
    summary : rows of :func:`sirtreg.study.summarise` of the evaluation (test split).
    boxplot : the PNG of :func:`~sirtreg.report.study_figures.plot_rmsd_boxes`.
    heat_maps : tuned method name -> PNG of :func:`~sirtreg.report.study_figures.plot_grid_rrmsd`.
    cnn_dsc : the PNG of :func:`~sirtreg.report.study_figures.plot_cnn_dsc`, if the study used CNN masks.
    flagged : the result rows (:func:`sirtreg.study.read_results`) whose ``liver_flag`` is set.
    facts : lines about the study (cohort, settings), shown first.
    overwrite : replace an existing file.
    """
    modalities = list(dict.fromkeys(row["modality"] for row in summary))
    sections = [Section("Study", [Text(line) for line in facts])] if facts else []
    sections.append(Section("Methods on the test split", [
        Table(_COLUMNS, _summary_rows(summary, modality), title=modality, formats=_FORMATS,
              note="RRMSD: root mean square of the RMSDs, sqrt((MSD^2 + sum of MCD^2) / (1 + landmarks)), of "
                   "the registrations; DSC and MSD of the liver, MCD of the landmark mass centres, against the "
                   "manual contours. Flagged CNN liver: registrations guided by a CNN liver that its checks "
                   "flagged (see the section on CNN liver masks).")
        for modality in modalities]))
    sections.append(Section("RMSD per method", [Picture.from_file(
        boxplot, title="RMSD per registration", caption="Boxes: quartiles; points: registrations; red: RRMSD.")]))
    masks: list[Picture | Table] = []
    if cnn_dsc is not None:
        masks.append(Picture.from_file(
            cnn_dsc, title="DSC of the CNN liver masks against the manual contours",
            caption="Every image with a CNN mask of this study and of its grid searches; boxes: quartiles."))
    if flagged:
        masks.append(Table(["patient", "floating", "method", "why"],
                           [[row["patient"], row["floating"], row["method_name"], row["liver_flag"]]
                            for row in flagged],
                           title="registrations guided by a flagged CNN liver",
                           note=describe_checks()))
    if masks:
        sections.append(Section("CNN liver masks", masks))
    if heat_maps:
        sections.append(Section("Weight tuning (train split)", [
            Picture.from_file(png, title=f"grid search of {name}") for name, png in heat_maps.items()]))
    return write_html(path, "sirtreg study evaluation", sections, overwrite=overwrite)
