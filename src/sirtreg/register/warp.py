"""Warping floating images, label maps and points with a reference->floating transform."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume
from sirtreg.register.transforms import AffineTransform
from sirtreg.resample import sample_at, sample_one_hot

Transform = AffineTransform | DisplacementField


def map_reference_points(transform: Transform, points_mm: Any) -> np.ndarray:
    """T(x): reference LPS points (..., 3) to floating points."""
    return transform.transform_points(points_mm)


def map_floating_points(transform: Transform, points_mm: Any) -> np.ndarray:
    """T^-1(y): floating LPS points (..., 3) to reference points (exact for affine, fixed-point for fields)."""
    if isinstance(transform, AffineTransform):
        return transform.inverse().transform_points(points_mm)
    return transform.inverse_transform_points(points_mm)


def mapped_points(transform: Transform, onto: Grid) -> np.ndarray:
    """T(x) in LPS mm for every voxel centre x of ``onto``, shape (z, y, x, 3)."""
    if isinstance(transform, DisplacementField) and transform.grid.same_as(onto):
        return transform.mapped_grid_points()
    return map_reference_points(transform, onto.world_coordinates(np.float64))


def warp(
    floating: Volume, transform: Transform, onto: Grid, *,
    fill_value: float = 0.0, label_mode: Literal["nearest", "one-hot"] = "one-hot",
    points: np.ndarray | None = None,
) -> Volume:
    """The floating image resampled on the reference grid ``onto``: out(x) = floating(T(x)).

    Images are interpolated linearly; label maps one-hot (each label's indicator
    interpolated, largest fraction wins, background included) or nearest.
    ``points``: T(x) from :func:`mapped_points`, when several volumes are warped alike.
    """
    if points is None:
        points = mapped_points(transform, onto)
    elif points.shape != (*onto.shape, 3):
        raise InputError(f"points must have shape {(*onto.shape, 3)} (the grid's voxels), got {points.shape}")
    if not isinstance(floating, LabelVolume):
        values = sample_at(floating, points, fill_value=fill_value)
        return floating.on_grid(values.astype(np.float32), onto)
    if label_mode == "nearest":
        return floating.on_grid(sample_at(floating, points).astype(floating.array.dtype), onto)
    if label_mode != "one-hot":
        raise InputError(f"label_mode must be 'nearest' or 'one-hot', got {label_mode!r}")
    return floating.on_grid(sample_one_hot(floating, points), onto)
