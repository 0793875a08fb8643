"""Warping floating images, label maps and points with a reference->floating transform."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Transform, Volume
from sirtreg.resample import GridPoints, resample_field, sample_at, sample_one_hot

_SLAB_VOXELS = 1 << 18  # voxels of the reference grid mapped per step: temporaries of a few MB, reused


def map_reference_points(transform: Transform, points_mm: Any) -> np.ndarray:
    """T(x): reference LPS points (..., 3) to floating points."""
    return transform.transform_points(points_mm)


def map_floating_points(transform: Transform, points_mm: Any) -> np.ndarray:
    """T^-1(y): floating LPS points (..., 3) to reference points (exact for affine, fixed-point for fields)."""
    return transform.inverse_transform_points(points_mm)


class MappedPoints:
    """T(x) for every voxel centre x of the reference grid ``onto``, located on each floating grid once.

    Warping an image and its label maps alike samples them all at the same points; this computes T(x)
    slab by slab (no array of the whole grid's world points) and keeps, per floating grid, only the
    voxel indices of the points (:class:`~sirtreg.resample.GridPoints`). Any :class:`Transform` maps the
    points; a displacement field is read where it lies on ``onto``, after interpolating one on another grid
    onto it (SimpleITK, threaded: faster than the protocol's generic interpolation).
    """

    def __init__(self, transform: Transform, onto: Grid) -> None:
        if isinstance(transform, DisplacementField) and not transform.grid.same_as(onto):
            transform = resample_field(transform, onto)
        self.transform = transform
        self.onto = onto
        self._located: list[GridPoints] = []

    def _slabs(self) -> list[tuple[int, int]]:
        """Consecutive ranges of z (z0, z1) of ``onto`` of about ``_SLAB_VOXELS`` voxels each."""
        nx, ny, nz = self.onto.size
        step = max(1, _SLAB_VOXELS // (nx * ny))
        return [(z0, min(z0 + step, nz)) for z0 in range(0, nz, step)]

    def _slab(self, z0: int, z1: int) -> np.ndarray:
        """T(x) in LPS mm, (m, 3) float64, for the voxels of slices z0:z1 of ``onto``."""
        nx, ny, _ = self.onto.size
        world = self.onto.crop((0, 0, z0), (nx, ny, z1)).world_coordinates(np.float64)
        if isinstance(self.transform, DisplacementField):
            mapped = world + self.transform.array[z0:z1]
        else:
            mapped = self.transform.transform_points(world)
        return mapped.reshape(-1, 3)

    def on(self, grid: Grid) -> GridPoints:
        """The points located on ``grid`` (a floating image's), computed at the first call for that grid."""
        for located in self._located:
            if located.grid.same_as(grid):
                return located
        plane = self.onto.size[0] * self.onto.size[1]
        blocks = [(z0 * plane, z1 * plane, lambda z0=z0, z1=z1: self._slab(z0, z1)) for z0, z1 in self._slabs()]
        located = GridPoints.from_blocks(grid, self.onto.shape, blocks)
        self._located.append(located)
        return located

    def array(self) -> np.ndarray:
        """T(x) of every voxel centre, (z, y, x, 3) LPS mm, float64."""
        return np.concatenate([self._slab(z0, z1) for z0, z1 in self._slabs()]).reshape(*self.onto.shape, 3)


def mapped_points(transform: Transform, onto: Grid) -> MappedPoints:
    """T(x) for every voxel centre x of ``onto``, to share between several warps onto that grid."""
    return MappedPoints(transform, onto)


def warp(
    floating: Volume, transform: Transform, onto: Grid, *,
    fill_value: float = 0.0, label_mode: Literal["nearest", "one-hot"] = "one-hot",
    points: MappedPoints | None = None,
) -> Volume:
    """The floating image resampled on the reference grid ``onto``: out(x) = floating(T(x)).

    Images are interpolated linearly; label maps one-hot (each label's indicator
    interpolated, largest fraction wins, background included) or nearest.
    ``points``: :func:`mapped_points` of this transform onto ``onto``, when several volumes are warped alike.
    """
    if label_mode not in ("nearest", "one-hot"):
        raise InputError(f"label_mode must be 'nearest' or 'one-hot', got {label_mode!r}")
    if points is None:
        points = mapped_points(transform, onto)
    elif not points.onto.same_as(onto):
        raise InputError(f"the mapped points are of {points.onto.describe()}, not of the grid warped onto "
                         f"({onto.describe()})")
    located = points.on(floating.grid)
    if not isinstance(floating, LabelVolume):
        values = sample_at(floating, located, fill_value=fill_value)
        return floating.on_grid(values.astype(np.float32, copy=False), onto)
    if label_mode == "nearest":
        return floating.on_grid(sample_at(floating, located).astype(floating.array.dtype, copy=False), onto)
    return floating.on_grid(sample_one_hot(floating, located), onto)
