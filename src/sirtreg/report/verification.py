"""The files of a post-treatment verification (`sirtreg verify`): predicted (MAA) against delivered (Y-90) dose
per structure as a table, JSON and an HTML page with the DVHs and a Bland-Altman plot over the lesions."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sirtreg.dosimetry.plots import COLOURS, dvh_axes
from sirtreg.dosimetry.structures import StructureDose
from sirtreg.dosimetry.verification import BlandAltman
from sirtreg.geometry import Volume
from sirtreg.io import write_image
from sirtreg.io.images import write_png
from sirtreg.output_folder import OutputFolder
from sirtreg.report.html import Picture, Section, Table, Text, render_html

log = logging.getLogger(__name__)

_FORMATS = {column: ".1f" for column in ("predicted mean (Gy)", "delivered mean (Gy)", "difference (Gy)",
                                         "predicted V100 (%)", "delivered V100 (%)")}


def plot_dvh_pairs(predicted: Sequence[StructureDose], delivered: Sequence[StructureDose], path: Path) -> Path:
    """Each structure's cumulative DVH, predicted (dashed) and delivered (solid), in one colour."""
    figure = Figure(figsize=(6.8, 4.6), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    for index, (before, after) in enumerate(zip(predicted, delivered, strict=True)):
        colour = COLOURS[index % len(COLOURS)]
        for structure, style, what in ((before, "--", "predicted"), (after, "-", "delivered")):
            if structure.dvh is not None:
                axes.plot(structure.dvh.dose_gy, structure.dvh.cumulative_percent, color=colour, ls=style, lw=1.4,
                          label=f"{structure.name}, {what}")
    dvh_axes(axes)
    axes.legend(fontsize=7, ncol=2)
    return write_png(figure, path)


def plot_bland_altman(rows: Sequence[Mapping[str, Any]], statistics: BlandAltman, path: Path) -> Path:
    """Delivered - predicted mean dose against their average, one point per lesion, with the mean difference
    and the 95 % limits of agreement."""
    figure = Figure(figsize=(6.0, 4.4), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    pairs = [(row["predicted_mean_gy"], row["delivered_mean_gy"], row["structure"]) for row in rows
             if row["predicted_mean_gy"] is not None and row["delivered_mean_gy"] is not None]
    if pairs:
        predicted, delivered = (np.array([pair[i] for pair in pairs]) for i in (0, 1))
        axes.scatter((predicted + delivered) / 2, delivered - predicted, color=COLOURS[1], zorder=3)
        for (before, after, name) in pairs:
            axes.annotate(name, ((before + after) / 2, after - before), fontsize=7, xytext=(3, 3),
                          textcoords="offset points")
    if statistics.n >= 2:
        for value, style, label in ((statistics.mean_difference, "-", "mean difference"),
                                    (statistics.lower_limit, "--", "95 % limits of agreement"),
                                    (statistics.upper_limit, "--", None)):
            axes.axhline(value, color="grey", ls=style, lw=1.0, label=label)
        axes.legend(fontsize=8)
    axes.axhline(0.0, color="black", lw=0.6)
    axes.set_xlabel("average of predicted and delivered mean dose (Gy)")
    axes.set_ylabel("delivered - predicted mean dose (Gy)")
    axes.grid(alpha=0.3)
    return write_png(figure, path)


def write_verification(rows: Sequence[Mapping[str, Any]], predicted: Sequence[StructureDose],
                       delivered: Sequence[StructureDose], statistics: BlandAltman, doses: Mapping[str, Volume],
                       outdir: str | os.PathLike[str], *, facts: Sequence[str] = (), overwrite: bool = False,
                       inputs: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Path]:
    """Write ``verification.csv``, ``.json`` and ``.html``, ``dvh.png``, ``bland_altman.png`` and the dose maps
    (``doses``: file stem -> Gy volume) into ``outdir`` as a unit. ``rows`` from
    :func:`~sirtreg.dosimetry.verification.compared_rows`, the first the liver, the rest lesions."""
    with OutputFolder(outdir, overwrite=overwrite, inputs=inputs, command="verify") as out:
        paths = {name: out.staging / name for name in ("verification.csv", "verification.json", "verification.html",
                                                       "dvh.png", "bland_altman.png")}
        with open(paths["verification.csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        agreement = {key: None if isinstance(value, float) and not math.isfinite(value) else value
                     for key, value in asdict(statistics).items()}  # NaN is no JSON: fewer than 2 lesions
        paths["verification.json"].write_text(json.dumps(
            {"structures": list(rows), "bland_altman_lesions": agreement, "facts": list(facts)}, indent=2,
            allow_nan=False), encoding="utf-8")
        for stem, volume in doses.items():
            paths[f"{stem}.nii.gz"] = write_image(volume, out.staging / f"{stem}.nii.gz")
        plot_dvh_pairs(predicted, delivered, paths["dvh.png"])
        plot_bland_altman(rows[1:], statistics, paths["bland_altman.png"])
        table = Table(["structure", "volume (mL)", "predicted mean (Gy)", "delivered mean (Gy)", "difference (Gy)",
                       "predicted V100 (%)", "delivered V100 (%)", "note"],
                      [[row["structure"], row["volume_ml"], row["predicted_mean_gy"], row["delivered_mean_gy"],
                        row["difference_mean_gy"], row["predicted_V100_percent"], row["delivered_V100_percent"],
                        row["error"]] for row in rows], formats={"volume (mL)": ".1f", **_FORMATS},
                      note="Predicted: the MAA SPECT's local-deposition dose; delivered: the Y-90 image's, on the "
                           "same contours (the Y-90 image registered onto the MAA CT). Difference: delivered - "
                           "predicted.")
        agreement = (f"Over {statistics.n} lesions, delivered - predicted mean dose: {statistics.mean_difference:.1f} "
                     f"Gy on average, 95 % limits of agreement {statistics.lower_limit:.1f} to "
                     f"{statistics.upper_limit:.1f} Gy." if statistics.n >= 2 else
                     "Fewer than two lesions: no limits of agreement.")
        sections = [Section("Predicted and delivered dose", [table, Text(agreement),
                                                              *(Text(fact, note=True) for fact in facts)]),
                    Section("Dose-volume histograms", [Picture.from_file(
                        paths["dvh.png"], caption="Dashed: predicted (MAA); solid: delivered (Y-90).")]),
                    Section("Bland-Altman plot over the lesions", [Picture.from_file(paths["bland_altman.png"])])]
        paths["verification.html"].write_text(render_html("Post-treatment verification", sections),
                                              encoding="utf-8")
        paths = out.final_paths(paths)
    log.info("wrote the verification to %s", out.path)
    return paths
