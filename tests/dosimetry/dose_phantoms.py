"""Synthetic SPECT grids and box contours for the dosimetry tests (helpers, not tests)."""

from __future__ import annotations

import numpy as np

from sirtreg.geometry import Grid, LabelVolume

# a 116 mm cube of 4 mm SPECT voxels; the liver is the central 100 mm cube (1000 mL), faces on voxel edges
SPECT_GRID = Grid((29, 29, 29), (4.0, 4.0, 4.0), (-56.0, -56.0, -56.0))
# a 1 x 1 x 2 mm CT grid whose voxel edges also meet the liver's faces
CT_GRID = Grid((110, 110, 56), (1.0, 1.0, 2.0), (-54.5, -54.5, -55.0))
LIVER_HALF_MM = 50.0


def box_mask(grid: Grid, low_mm, high_mm) -> np.ndarray:
    """(z, y, x) mask of the voxel centres inside the world box [low, high] (LPS mm)."""
    points = grid.world_coordinates(np.float64)
    return np.all((points >= np.asarray(low_mm, float)) & (points <= np.asarray(high_mm, float)), axis=-1)


def box_labels(grid: Grid, low_mm, high_mm, name: str) -> LabelVolume:
    return LabelVolume.from_mask(box_mask(grid, low_mm, high_mm), grid, name=name)


def liver_box(grid: Grid) -> LabelVolume:
    return box_labels(grid, [-LIVER_HALF_MM] * 3, [LIVER_HALF_MM] * 3, "liver")
