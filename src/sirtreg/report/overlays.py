"""Several sets of contours, one colour each, on one image in three planes (PNG).

Used to compare contours: lesions drawn on the reference against lesions
carried over by registration, the reference liver against the floating liver
before and after registration. Each row of the figure is one image with its
contour sets (all on the image's grid) cut in three planes through one point;
planes follow the radiological convention of :mod:`sirtreg.report.views`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.output_folder import save_figure
from sirtreg.report.views import _aspects, _planes, _to_lps, _window

PLANES = ("axial", "coronal", "sagittal")


@dataclass(frozen=True, eq=False)
class Contours:
    """One set of contours: every non-zero voxel of ``labels`` (on the row's image grid) in one colour.

    ``labels`` None draws nothing but keeps the legend entry (marked "none").
    """

    name: str
    labels: LabelVolume | None
    colour: str
    linestyle: str = "solid"


@dataclass(frozen=True, eq=False)
class OverlayRow:
    """One image with its contour sets, cut through ``centre_mm`` (LPS mm).

    ``centre_mm`` None: the mass centre of the first non-empty contour set, else the image centre.
    """

    title: str
    image: Volume
    contours: Sequence[Contours]
    centre_mm: Sequence[float] | None = None
    colour_map: str = "gray"


def _centre(row: OverlayRow) -> np.ndarray:
    if row.centre_mm is not None:
        return np.asarray(row.centre_mm, dtype=float)
    for contours in row.contours:
        point = contours.labels.mass_centre_mm() if contours.labels is not None else None
        if point is not None:
            return point
    return row.image.grid.center_mm


def save_contour_overlays(rows: Sequence[OverlayRow], path: str | os.PathLike[str], *, dpi: int = 80) -> Path:
    """Write a PNG with one row per :class:`OverlayRow` and three columns (axial, coronal, sagittal).

    Parameters
    ----------
    rows : the images and their contour sets; contours must lie on their image's grid
        (the same voxels in another axis order are accepted).
    path : the PNG file to write (parent folders are created).
    dpi : resolution of the PNG, dots per inch (the figure is 12 inches wide).

    Returns
    -------
    The path written.
    """
    if not rows:
        raise InputError("nothing to draw: no rows")
    path = Path(path)
    figure = Figure(figsize=(12, 4 * len(rows)), facecolor="black")
    axes = figure.subplots(len(rows), 3, squeeze=False)
    for row_axes, row in zip(axes, rows):
        image = _to_lps(row.image)
        grid = image.grid
        index = np.clip(np.round(grid.world_to_index(_centre(row))), 0, np.asarray(grid.size) - 1).astype(int)
        centre = (index[2], index[1], index[0])
        low, high = _window(image)
        masks = []
        for contours in row.contours:
            if contours.labels is None:
                masks.append(None)
                continue
            labels = _to_lps(contours.labels)
            grid.require_same(labels.grid, what=f"{row.title}: the image and the contours {contours.name!r}")
            masks.append([plane > 0 for plane in _planes(labels.array, centre)])
        for column, (ax, plane, aspect) in enumerate(zip(row_axes, _planes(image.array, centre),
                                                          _aspects(grid.spacing_mm))):
            ax.imshow(plane, cmap=row.colour_map, vmin=low, vmax=high, aspect=aspect, interpolation="nearest")
            for contours, planes in zip(row.contours, masks):
                if planes is not None and planes[column].any() and not planes[column].all():
                    ax.contour(planes[column], levels=[0.5], colors=contours.colour, linewidths=1.2,
                               linestyles=contours.linestyle)
            ax.set_title(f"{row.title} - {PLANES[column]}", color="white", fontsize=10)
            ax.axis("off")
        handles = [Line2D([], [], color=c.colour, linestyle=c.linestyle,
                          label=c.name if c.labels is not None and c.labels.array.any() else f"{c.name} (none)")
                   for c in row.contours]
        if handles:
            row_axes[0].legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.7)
    figure.tight_layout()
    return save_figure(figure, path, overwrite=True, dpi=dpi, facecolor="black")
