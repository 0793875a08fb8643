"""The figures and HTML report of a cohort dose study (the paper's Figs. 9-13; see :mod:`sirtreg.study.dose`).

Per floating modality: the differences registered - reference of mean dose (relative, %),
V70 and V100 (percentage points) per method as box plots (Figs. 9 and 11), registered
against reference with Passing-Bablok lines and Pearson's r (Figs. 10 and 12), and the
DVHs of the lesion whose mean dose the registrations moved most, drawn on the MAA CT and
as each method carried it (Fig. 13), with a table of the statistics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sirtreg.dosimetry.compare import CohortComparison
from sirtreg.dosimetry.dvh import DoseVolumeHistogram
from sirtreg.dosimetry.plots import plot_difference_boxes, plot_dvh, plot_passing_bablok
from sirtreg.dosimetry.structures import StructureDose
from sirtreg.report.html import Picture, Section, Table, Text, write_html

_SUMMARY_COLUMNS = ("method", "lesions", "not dosed", "median |mean dose diff| (%)", "median |V70 diff| (points)",
                    "median |V100 diff| (points)", "mean dose: r", "mean dose: PB slope", "V70: r")
_FORMATS = {"median |mean dose diff| (%)": ".1f", "median |V70 diff| (points)": ".1f",
            "median |V100 diff| (points)": ".1f", "mean dose: r": ".3f", "mean dose: PB slope": ".3f",
            "V70: r": ".3f"}


def _histogram(dose_gy: Sequence[float], percent: Sequence[float]) -> DoseVolumeHistogram:
    """A cumulative DVH on the bins ``dose_gy`` (the values beyond ``percent``'s end are 0)."""
    edges = np.asarray(dose_gy, dtype=float)
    cumulative = np.pad(np.asarray(percent, dtype=float), (0, edges.size - len(percent)))
    return DoseVolumeHistogram(edges, cumulative, -np.diff(cumulative))


def _largest_change(rows: Sequence[Mapping[str, Any]], modality: str) -> tuple[str, str, str] | None:
    """(patient, floating, lesion) of the modality whose mean dose a registration moved most, or None."""
    dosed = [row for row in rows if row["modality"] == modality and row["error"] is None]
    if not dosed:
        return None
    worst = max(dosed, key=lambda row: abs(row["mean_dose_difference_percent"]))
    return worst["patient"], worst["floating"], worst["lesion"]


def plot_lesion_dvhs(rows: Sequence[Mapping[str, Any]], dvh: Mapping[tuple[str, str, str], Mapping[str, Any]],
                     lesion: tuple[str, str, str], path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """The DVH of one lesion drawn on the MAA CT and as each method carried it (Fig. 13).

    ``dvh`` maps a task key (patient, floating, method key) to its lesions' DVHs (:mod:`sirtreg.study.dose`).
    """
    patient, floating, name = lesion
    chosen = [row for row in rows if (row["patient"], row["floating"], row["lesion"]) == lesion
              and row["error"] is None]
    structures = []
    for row in chosen:
        curves = dvh[(patient, floating, row["method"])][name]
        if not structures:
            structures.append(StructureDose(name="MAA CT (reference)", volume_ml=row["reference_volume_ml"],
                                            mean_gy=row["reference_mean_gy"],
                                            dvh=_histogram(curves["dose_gy"], curves["reference_percent"])))
        structures.append(StructureDose(name=row["method_name"], volume_ml=row["volume_ml"], mean_gy=row["mean_gy"],
                                        dvh=_histogram(curves["dose_gy"], curves["registered_percent"])))
    return plot_dvh(structures, path, title=f"{patient}/{floating} {name}", overwrite=overwrite)


def _summary_rows(summary: Sequence[Mapping[str, Any]], modality: str) -> list[list[Any]]:
    return [[row["method_name"], row["lesions"], row["skipped"], row["median_abs_mean_dose_difference"],
             row["median_abs_v70_difference"], row["median_abs_v100_difference"], row["mean_dose_pearson_r"],
             row["mean_dose_pb_slope"], row["v70_pearson_r"]] for row in summary if row["modality"] == modality]


def write_dose_study_report(out_dir: Path, rows: Sequence[Mapping[str, Any]],
                            dvh: Mapping[tuple[str, str, str], Mapping[str, Any]],
                            comparisons: Mapping[str, Mapping[str, CohortComparison]],
                            summary: Sequence[Mapping[str, Any]], *, facts: Sequence[str] = (),
                            overwrite: bool = False) -> dict[str, Path]:
    """The figures of each modality of ``comparisons`` (modality -> method name -> comparison) and ``report.html``
    in ``out_dir``; returns name -> path of every file written."""
    files: dict[str, Path] = {}
    sections = [Section("Dose study", [Text(line) for line in facts])] if facts else []
    for modality, groups in comparisons.items():
        if not groups:
            continue
        stem = modality.lower()
        files[f"{modality} differences"] = plot_difference_boxes(
            groups, out_dir / f"dose_differences_{stem}.png", overwrite=overwrite)
        files[f"{modality} Passing-Bablok"] = plot_passing_bablok(
            groups, out_dir / f"passing_bablok_{stem}.png", reference_name="MAA CT lesion", overwrite=overwrite)
        items: list[Any] = [
            Table(_SUMMARY_COLUMNS, _summary_rows(summary, modality), title=f"{modality} lesions", formats=_FORMATS,
                  note="Differences registered - reference: mean dose relative (%), V70 and V100 in percentage "
                       "points; r: Pearson's r, PB: Passing-Bablok, of registered on reference."),
            Picture.from_file(files[f"{modality} differences"], title="differences per method (Figs. 9, 11)",
                              caption="Boxes: quartiles; points: lesions; dashed: no difference."),
            Picture.from_file(files[f"{modality} Passing-Bablok"], title="registered vs reference (Figs. 10, 12)")]
        lesion = _largest_change(rows, modality)
        if lesion is not None:
            files[f"{modality} DVH"] = plot_lesion_dvhs(rows, dvh, lesion, out_dir / f"dvh_{stem}.png",
                                                        overwrite=overwrite)
            items.append(Picture.from_file(
                files[f"{modality} DVH"], title="the lesion whose mean dose moved most (Fig. 13)",
                caption="Its DVH on the MAA CT (the reference) and as each method carried it."))
        sections.append(Section(f"{modality} to MAA CT", items))
    files["report"] = write_html(out_dir / "report.html", "sirtreg dose study", sections, overwrite=overwrite)
    return files
