"""Figures of registration studies, saved as PNG (no display).

:func:`plot_grid_rrmsd` draws the RRMSD of a weight grid search as a heat map over
(wI, wS), one panel per modality; :func:`plot_rmsd_boxes` draws the RMSDs of each
method as a box plot with its RRMSD, one panel per modality (the paper's Figs. 6
and 7). Both take the rows of :mod:`sirtreg.study` (results or summary rows).
:func:`plot_cnn_dsc` draws the DSC of the CNN liver masks per modality (Fig. 5).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sirtreg.errors import InputError
from sirtreg.io.images import write_png
from sirtreg.metrics import rrmsd_mm

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _weight(value: float) -> str:
    return f"{value:g}"


def _rrmsd(cell: Mapping[str, Any] | None) -> float:
    """The RRMSD of a summary row; NaN where there is no row or no finished registration."""
    return math.nan if cell is None or cell["rrmsd_mm"] is None else float(cell["rrmsd_mm"])


def plot_grid_rrmsd(
    summary: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    best: Mapping[str, str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Heat maps of RRMSD over the grid of wI (columns) and wS (rows), one panel per modality.

    Parameters
    ----------
    summary : the summary rows of one grid search (:func:`sirtreg.study.summarise`, or
        :attr:`sirtreg.study.GridSearch.summary`): ``method``, ``modality``, ``image_weight``,
        ``label_weight``, ``rigidity``, ``rrmsd_mm`` (None: no registration finished) and ``failed``.
        Where the grid has several rigidities, each has its own panels.
    path : the PNG file.
    best : modality -> the ``method`` key of the chosen grid point, outlined in red.
    overwrite : replace an existing file.

    Returns
    -------
    The path written. Cells whose grid point had failed registrations are marked with '*'.
    Refuses an empty summary and a path that is not a PNG (InputError).
    """
    if not summary:
        raise InputError("nothing to plot: the grid search has no results")
    best = best or {}
    panels = sorted({(row["modality"], row["rigidity"]) for row in summary})
    several_rigidities = len({rigidity for _, rigidity in panels}) > 1
    image_weights = sorted({row["image_weight"] for row in summary})
    label_weights = sorted({row["label_weight"] for row in summary})
    width = max(3.6, 1.6 + 0.75 * len(image_weights))
    height = max(3.0, 1.4 + 0.55 * len(label_weights))
    figure = Figure(figsize=(width * len(panels), height), layout="constrained")
    for index, (modality, rigidity) in enumerate(panels):
        axes = figure.add_subplot(1, len(panels), index + 1)
        cells = {(row["label_weight"], row["image_weight"]): row for row in summary
                 if row["modality"] == modality and row["rigidity"] == rigidity}
        values = np.array([[_rrmsd(cells.get((ws, wi))) for wi in image_weights] for ws in label_weights])
        shown = np.ma.masked_invalid(values)
        image = axes.imshow(shown, origin="lower", cmap="viridis", aspect="auto")
        for (ws, wi), cell in cells.items():
            column, row = image_weights.index(wi), label_weights.index(ws)
            value = values[row, column]
            text = "-" if math.isnan(value) else f"{value:.2f}" + ("*" if cell["failed"] else "")
            dark = not math.isnan(value) and image.norm(value) <= 0.6
            axes.text(column, row, text, ha="center", va="center", fontsize=8, color="white" if dark else "black")
            if best.get(modality) == cell["method"]:
                axes.add_patch(Rectangle((column - 0.5, row - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
        axes.set_xticks(range(len(image_weights)), [_weight(w) for w in image_weights])
        axes.set_yticks(range(len(label_weights)), [_weight(w) for w in label_weights])
        axes.set_xlabel("wI (mutual information)")
        axes.set_ylabel("wS (label SSD)")
        axes.set_title(f"{modality}, rigidity {_weight(rigidity)}" if several_rigidities else modality)
        axes.set_facecolor("#dddddd")
        if shown.count():
            figure.colorbar(image, ax=axes, label="RRMSD (mm)")
    if best:
        figure.suptitle("RRMSD per grid point; outlined in red: the chosen weights", fontsize=10)
    return write_png(figure, path, overwrite=overwrite)


def plot_rmsd_boxes(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    *,
    methods: Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Box plots of the RMSD of each method with its RRMSD, one panel per modality (the paper's Figs. 6-7).

    Parameters
    ----------
    rows : results rows (:func:`sirtreg.study.run_study`, :func:`sirtreg.study.read_results`):
        ``patient``, ``floating``, ``method_name``, ``modality``, ``status`` and ``rmsd_mm``; only rows with status "ok"
        are drawn. Rows are grouped by method name, so give one method per name and modality
        (an evaluation, not a grid search).
    path : the PNG file.
    methods : the method names in the order of the boxes (default: order of first appearance).
    overwrite : replace an existing file.

    Returns
    -------
    The path written. Each box shows the RMSDs of the floating images with the points
    overlaid; a red diamond and its label give the RRMSD.
    Refuses rows with no finished registration and a path that is not a PNG (InputError).
    """
    ok = [row for row in rows if row["status"] == "ok" and row["rmsd_mm"] is not None
          and (methods is None or row["method_name"] in methods)]
    if not ok:
        raise InputError("nothing to plot: no registration of these methods finished")
    names = list(methods) if methods is not None else list(dict.fromkeys(row["method_name"] for row in ok))
    modalities = sorted({row["modality"] for row in ok})
    figure = Figure(figsize=(max(4.0, 1.5 + 0.95 * len(names)) * len(modalities), 4.6), layout="constrained")
    rng = np.random.default_rng(0)
    for index, modality in enumerate(modalities):
        axes = figure.add_subplot(1, len(modalities), index + 1)
        groups = [[row["rmsd_mm"] for row in ok if row["modality"] == modality and row["method_name"] == name]
                  for name in names]
        images = {(row["patient"], row["floating"]) for row in ok if row["modality"] == modality}
        drawn = [(position, values) for position, values in enumerate(groups, start=1) if values]
        axes.boxplot([values for _, values in drawn], positions=[position for position, _ in drawn],
                     showfliers=False, widths=0.5)
        for position, values in drawn:
            jitter = rng.uniform(-0.12, 0.12, len(values))
            axes.plot(position + jitter, values, "o", ms=4, alpha=0.6, color=_COLOURS[(position - 1) % len(_COLOURS)])
            rrmsd = rrmsd_mm(values)
            axes.plot(position, rrmsd, "D", ms=6, color="red", label="RRMSD" if position == drawn[0][0] else None)
            axes.text(position + 0.3, rrmsd, f"{rrmsd:.2f}", va="center", fontsize=8, color="red")
        axes.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
        axes.set_xlim(0.4, len(names) + 0.6)
        axes.set_ylim(bottom=0)
        axes.set_ylabel("RMSD (mm)")
        axes.set_title(f"{modality} ({len(images)} floating image{'s' if len(images) != 1 else ''})")
        axes.grid(axis="y", alpha=0.3)
        axes.legend(loc="best", fontsize=8)
    return write_png(figure, path, overwrite=overwrite)


def plot_cnn_dsc(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Box plots of the DSC of the CNN liver masks against the manual contours, one box per modality and
    split (the paper's Fig. 5). ``rows``: :func:`sirtreg.study.cnn_masks.cnn_mask_dsc` rows (``modality``,
    ``split``, ``dsc``). Refuses an empty list (InputError)."""
    if not rows:
        raise InputError("nothing to plot: no CNN liver mask")
    groups = sorted({(row["modality"], row["split"]) for row in rows})
    figure = Figure(figsize=(1.6 + 1.3 * len(groups), 4.2), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    values = [[row["dsc"] for row in rows if (row["modality"], row["split"]) == group] for group in groups]
    axes.boxplot(values, positions=range(1, len(groups) + 1), showfliers=False, widths=0.5)
    rng = np.random.default_rng(0)
    for position, group_values in enumerate(values, start=1):
        jitter = rng.uniform(-0.12, 0.12, len(group_values))
        axes.plot(position + jitter, group_values, "o", ms=4, alpha=0.6, color=_COLOURS[(position - 1) % len(_COLOURS)])
        median = float(np.median(group_values))
        axes.text(position + 0.3, median, f"{median:.3f}", va="center", fontsize=8)
    axes.set_xticks(range(1, len(groups) + 1), [f"{m} {s}\n(n={len(v)})" for (m, s), v in zip(groups, values)])
    axes.set_ylabel("DSC (CNN vs manual liver)")
    axes.set_title("CNN liver masks", fontsize=10)
    axes.grid(axis="y", alpha=0.3)
    return write_png(figure, path, overwrite=overwrite)
