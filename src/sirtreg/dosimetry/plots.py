"""Figures of dose results, saved as PNG (no display): box plots of differences
(paper Figs. 9 and 11), Passing-Bablok plots (Figs. 10 and 12) and DVHs (Fig. 13)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from sirtreg.dosimetry.compare import CohortComparison, MetricComparison
from sirtreg.dosimetry.structures import StructureDose
from sirtreg.errors import InputError
from sirtreg.io.images import write_png

#: the colours of the dose figures, one per group or structure in turn
COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def _metric_title(comparison: MetricComparison) -> str:
    if comparison.metric == "mean dose":
        return "mean dose (Gy)"
    return f"{comparison.metric} (% volume)"


def _metrics_of(groups: Mapping[str, CohortComparison]) -> list[str]:
    if not groups:
        raise InputError("nothing to plot: no comparison given")
    return list(next(iter(groups.values())).metrics)


def plot_difference_boxes(
    groups: Mapping[str, CohortComparison], path: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """One panel per metric, one box per group (e.g. registration method) of its differences, points overlaid."""
    metrics = _metrics_of(groups)
    figure = Figure(figsize=(4.0 * len(metrics), 4.2), layout="constrained")
    rng = np.random.default_rng(0)
    for index, metric in enumerate(metrics):
        axes = figure.add_subplot(1, len(metrics), index + 1)
        comparisons = [g.metrics[metric] for g in groups.values()]
        axes.boxplot([c.difference for c in comparisons], showfliers=False, widths=0.5)
        axes.set_xticks(range(1, len(groups) + 1), list(groups), rotation=30, ha="right")
        for position, comparison in enumerate(comparisons, start=1):
            jitter = rng.uniform(-0.12, 0.12, comparison.difference.size)
            axes.plot(position + jitter, comparison.difference, "o", ms=4, alpha=0.6,
                      color=COLOURS[(position - 1) % len(COLOURS)])
        axes.axhline(0.0, color="grey", lw=0.8, ls="--")
        unit = "relative difference (%)" if comparisons[0].relative else "difference (percentage points)"
        axes.set_title(f"{chr(ord('a') + index)}  {metric}")
        axes.set_ylabel(unit)
    return write_png(figure, path, overwrite=overwrite)


def plot_passing_bablok(
    groups: Mapping[str, CohortComparison],
    path: str | os.PathLike[str],
    *,
    reference_name: str = "reference",
    overwrite: bool = False,
) -> Path:
    """Scatter of registered vs reference per group (rows) and metric (columns), with the
    Passing-Bablok line, the identity line, the fitted equation and Pearson's r."""
    metrics = _metrics_of(groups)
    figure = Figure(figsize=(4.0 * len(metrics), 3.8 * len(groups)), layout="constrained")
    for row, (group, cohort) in enumerate(groups.items()):
        for column, metric in enumerate(metrics):
            comparison = cohort.metrics[metric]
            axes = figure.add_subplot(len(groups), len(metrics), row * len(metrics) + column + 1)
            axes.plot(comparison.reference, comparison.registered, "o", ms=4, color=COLOURS[row % len(COLOURS)])
            low = float(min(comparison.reference.min(), comparison.registered.min(), 0.0))
            high = float(max(comparison.reference.max(), comparison.registered.max()))
            span = np.array([low, high + 0.05 * (high - low or 1.0)])
            axes.plot(span, span, color="grey", ls="--", lw=0.9, label="identity")
            lines = []
            fit = comparison.passing_bablok
            if fit is not None:
                axes.plot(span, fit.predict(span), color="black", lw=1.2, label="Passing-Bablok")
                lines.append(f"y = {fit.intercept:.2f} + {fit.slope:.3f} x")
                lines.append(f"slope {100 * fit.confidence:g} % CI {fit.slope_ci[0]:.3f}..{fit.slope_ci[1]:.3f}")
            if comparison.pearson is not None:
                lines.append(f"r = {comparison.pearson.r:.3f}, n = {comparison.pearson.n}")
            axes.text(0.03, 0.97, "\n".join(lines), transform=axes.transAxes, va="top", fontsize=8,
                      bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
            axes.set_xlim(span)
            axes.set_ylim(span)
            axes.set_aspect("equal")
            axes.set_xlabel(f"{_metric_title(comparison)}, {reference_name}")
            axes.set_ylabel(f"{_metric_title(comparison)}, {group}")
            axes.legend(loc="lower right", fontsize=7)
    return write_png(figure, path, overwrite=overwrite)


def dvh_axes(axes: Any, thresholds_gy: Sequence[float] = (70.0, 100.0)) -> None:
    """Label cumulative-DVH axes (dose in Gy against % volume) and mark the dose thresholds (Gy)."""
    for threshold in thresholds_gy:
        axes.axvline(threshold, color="grey", lw=0.8, ls=":")
    axes.set_xlabel("absorbed dose (Gy)")
    axes.set_ylabel("volume receiving at least this dose (%)")
    axes.set_ylim(0, 102)
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)


def plot_dvh(
    structures: Sequence[StructureDose],
    path: str | os.PathLike[str],
    *,
    title: str = "",
    thresholds_gy: Sequence[float] = (70.0, 100.0),
    overwrite: bool = False,
    dashed: Sequence[StructureDose] = (),
    dashed_name: str = "",
) -> Path:
    """Cumulative DVHs (% volume receiving at least each dose) of the structures that have one; ``dashed``: the
    same structures by another method (``dashed_name``), drawn dashed in the same colours."""
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.add_subplot(1, 1, 1)
    drawn = [s for s in structures if s.dvh is not None]
    others = {s.name: s for s in dashed if s.dvh is not None}
    for index, structure in enumerate(drawn):
        colour = COLOURS[index % len(COLOURS)]
        axes.plot(structure.dvh.dose_gy, structure.dvh.cumulative_percent, color=colour,
                  lw=1.5, label=f"{structure.name} (mean {structure.mean_gy:.0f} Gy)")
        other = others.get(structure.name)
        if other is not None:
            axes.plot(other.dvh.dose_gy, other.dvh.cumulative_percent, color=colour, lw=1.2, ls="--",
                      label=f"{dashed_name} (mean {other.mean_gy:.0f} Gy)")
    dvh_axes(axes, thresholds_gy)
    if title:
        axes.set_title(title)
    if drawn:
        axes.legend(fontsize=8)
    else:
        axes.text(0.5, 0.5, "no structure could be evaluated", ha="center", transform=axes.transAxes)
    return write_png(figure, path, overwrite=overwrite)
