"""The HTML sections of a patient run's report (:func:`sirtreg.pipeline.run.run_plan`): the dose table, the
registration quality, the parameters and timings, one section per floating image."""

from __future__ import annotations

import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sirtreg import __version__
from sirtreg.report.html import Picture, Section, Table, Text

if TYPE_CHECKING:  # annotations only: the pipeline imports this module
    from sirtreg.dosimetry import DoseReport
    from sirtreg.pipeline.carried import Carried, ScanImage
    from sirtreg.pipeline.plan import Plan


_DOSE_FORMATS = {"volume (mL)": ".2f", "mean (Gy)": ".1f", "mean inside (Gy)": ".1f", "counts inside (%)": ".1f",
                 "V70 (%)": ".1f", "V100 (%)": ".1f", "DSC to MAA CT lesion": ".2f", "MCD (mm)": ".1f"}


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


def _dose_table(rows: Sequence[Mapping[str, Any]], source: str | None = None) -> Table:
    chosen = [r for r in rows if source is None or r["source"] == source or r["role"] == "liver"]
    return Table(
        ["image", "structure", "volume (mL)", "mean (Gy)", "mean inside (Gy)", "counts inside (%)", "V70 (%)",
         "V100 (%)", "DSC to MAA CT lesion", "MCD (mm)", "flagged", "note"],
        [[r["source"], r["structure"], r["volume_ml"], r["mean_gy"], r.get("inside_mean_gy"),
          _percent(r.get("counts_inside_fraction")), r.get("V70_percent"), r.get("V100_percent"),
          r["dsc_to_maa_ct_lesion"], r["mcd_mm_to_maa_ct_lesion"], "yes" if r.get("flag") else "", r["error"]]
         for r in chosen],
        formats=_DOSE_FORMATS,
        note="mean, Vx (% of the structure's volume receiving at least x Gy) and the DVHs follow the dose map, "
             "where counts outside the liver are shown with the liver's calibration (so that a lesion drawn over "
             "its edge is not pulled toward zero); mean inside counts only the activity delivered inside the "
             "liver, over the structure's whole mass, and counts inside is the share of the structure's SPECT "
             "counts that lie inside the liver: where it is below 100 %, the mean inside is the one whose "
             "energy was delivered. DSC and MCD (mass-centre distance) compare "
             "a registered lesion with the lesion of the same name drawn on the MAA CT, where there is one. Why a "
             "lesion is flagged: see the first section.")


def _quality_table(item: Carried) -> Table:
    rows = []
    for key, label in (("liver_dsc", "liver DSC"), ("liver_msd_mm", "liver MSD (mm)"),
                       ("mean_mcd_mm", "mean landmark MCD (mm)"), ("rmsd_mm", "RMSD (mm)")):
        rows.append([label, item.quality["before"].get(key), item.quality["after"].get(key)])
    guided = "the liver" + (" and landmarks" if item.guidance == "liver+landmarks" else "")
    return Table(["metric", "before registration", "after registration"], rows, title="registration quality",
                 formats={"before registration": ".3g", "after registration": ".3g"},
                 note=f"Against the contours given in the plan. With {item.guidance} guidance these contours "
                      f"({guided}) also guided the registration, so they are not an independent test."
                      if item.guidance != "image" else "Against the contours given in the plan.")


def _parameter_rows(plan: Plan, carried: Sequence[Carried], reference: ScanImage, device: str,
                    lung_shunt: tuple[float, str]) -> list[list[Any]]:
    spect = plan.spect
    rows: list[list[Any]] = [
        ["isotope", spect.isotope], ["activity (GBq)", spect.activity_gbq],
        ["lung shunt fraction", f"{lung_shunt[0]:.4g} ({lung_shunt[1]})"],
        ["MAA CT liver", reference.liver_source], ["device", device],
    ]
    for item in carried:
        folding = item.result.settings.get("nonrigid", {}).get("folding_weight")
        chosen = "chosen" if item.entry.guidance is not None else "default"
        rows.append([f"{item.entry.id}: guidance", f"{item.guidance} ({chosen}); liver {item.liver_source}"])
        rows.append([f"{item.entry.id}: non-rigid weights", f"{item.weights.describe()}; folding weight {folding}"])
    return rows


def run_report_sections(plan: Plan, reference: ScanImage, report: DoseReport, rows: Sequence[Mapping[str, Any]],
                        first: Section, carried: Sequence[Carried], files: Mapping[str, Path],
                        timings: Mapping[str, float], device: str) -> list[Section]:
    """The run report's sections: ``first`` (what to trust), the dose of the liver and of the lesions (``rows``,
    grouped per lesion), one section per floating image (``carried``; its pictures from ``files``), the
    parameters, the software and the timings."""
    summary = report.summary()
    liver = report.structures[0]
    mean = f"{liver.mean_gy:.1f} Gy" if liver.mean_gy is not None else "not evaluated"
    facts = (f"{summary['isotope']}, {plan.spect.activity_gbq:.4g} GBq administered, "
             f"{summary['liver_activity_gbq']:.4g} GBq to the liver; liver {liver.volume_ml:.0f} mL "
             f"({reference.liver_source}), mean liver dose {mean}, lung dose {summary['lung_dose_gy']:.1f} Gy; "
             f"{100 * summary['counts_inside_fraction']:.1f} % of the SPECT counts inside the liver.")
    items: list[Any] = [Text(facts), _dose_table(rows)]
    items += [Text(f"warning: {w}") for w in summary["warnings"]]
    if "MAA CT dvh" in files:
        items.append(Picture.from_file(files["MAA CT dvh"], title="DVH: lesions drawn on the MAA CT"))
    sections = [first, Section("Absorbed dose (local deposition)", items)]
    for item in carried:
        key = item.entry.id
        described = f"{item.entry.modality}" + (f", {item.entry.role}" if item.entry.role else "")
        parts: list[Any] = [Text(f"{item.guidance} guidance, liver {item.liver_source}, registered in "
                                 f"{item.result.seconds:.1f} s; {item.weights.describe()}.")]
        if item.liver_check is not None and item.liver_check.flagged:
            instead = (f" Registered with {item.guidance} guidance instead of the planned {item.liver_check.planned}."
                       if item.guidance != item.liver_check.planned else "")
            parts.append(Text(f"warning: flagged CNN liver: {'; '.join(item.liver_check.reasons)}.{instead}"))
        if item.quality:
            parts.append(_quality_table(item))
        parts.append(Picture.from_file(
            files[f"{key} overlays"], title="contours",
            caption="Red: drawn on the MAA CT; green: carried over by the registration; yellow dashed: the "
                    "floating liver where it lies without registration. Slices through the largest registered "
                    "lesion (lesion rows) and the MAA CT liver (liver rows); the SPECT is shown on the MAA CT grid."))
        if item.lesions is not None:
            parts.append(_dose_table(rows, key))
        if f"{key} dvh" in files:
            parts.append(Picture.from_file(files[f"{key} dvh"], title="DVH"))
        parts.append(Picture.from_file(files[f"{key} checkerboard"], title="checkerboard",
                                       caption="Top: MAA CT and registered image in alternate tiles; bottom: the "
                                               "registered image with the MAA CT liver (red) and its own (green)."))
        sections.append(Section(f"Floating image {key} ({described})", parts))
    lung_shunt = (summary["lung_shunt_fraction"], summary["lung_shunt_source"])
    sections.append(Section("Parameters", [Table(["parameter", "value"],
                                                 _parameter_rows(plan, carried, reference, device, lung_shunt))]))
    timing_rows = [[name, seconds] for name, seconds in timings.items()]
    sections.append(Section("Software and timings", [
        Table(["software", "version"], [["sirtreg", __version__], ["Python", platform.python_version()],
                                        ["PyTorch", torch.__version__], ["NumPy", np.__version__]]),
        Table(["step", "seconds"], timing_rows, formats={"seconds": ".1f"}),
    ]))
    return sections
