"""Anatomy-space points of every voxel of a scan grid.

A scan is rendered by evaluating the anatomy at the anatomy-space (reference)
point of each of its voxels. For the reference scan these are the voxel centres
themselves; for a floating scan they are the centres pulled back through the
breathing deformation. :class:`ScanPoints` holds them as three float32 arrays
that broadcast to the grid shape (z, y, x) (for an axis-aligned grid without
deformation they stay 1D along their axis, which saves time and memory), and
finds the voxel box in which an anatomy-space bounding box can appear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sirtreg.geometry import Grid

Box = tuple[slice, slice, slice]


def axis_coordinates(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """World x, y, z (mm) of the voxel centres as broadcastable 1D arrays, or None for an oblique grid."""
    if grid.is_oblique() or not np.allclose(grid.direction_matrix, np.eye(3)):
        return None
    nz, ny, nx = grid.shape
    ox, oy, oz = grid.origin_mm
    sx, sy, sz = grid.spacing_mm
    return ((ox + sx * np.arange(nx, dtype=np.float64)).astype(np.float32).reshape(1, 1, nx),
            (oy + sy * np.arange(ny, dtype=np.float64)).astype(np.float32).reshape(1, ny, 1),
            (oz + sz * np.arange(nz, dtype=np.float64)).astype(np.float32).reshape(nz, 1, 1))


def world_coordinates(grid: Grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World x, y, z (mm) of the voxel centres, broadcastable to the grid shape (z, y, x)."""
    axes = axis_coordinates(grid)
    if axes is not None:
        return axes
    points = grid.world_coordinates(np.float32)
    return points[..., 0], points[..., 1], points[..., 2]


@dataclass(frozen=True, eq=False)
class ScanPoints:
    """Anatomy-space coordinates (mm) of the voxels of ``grid``.

    ``x, y, z`` broadcast to ``grid.shape``; ``margin_mm`` (3,) bounds how far an
    anatomy point may lie from its voxel centre (the largest displacement).
    """

    grid: Grid
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    margin_mm: np.ndarray

    @classmethod
    def identity(cls, grid: Grid) -> ScanPoints:
        """The voxel centres themselves (the reference scan)."""
        return cls(grid, *world_coordinates(grid), np.zeros(3))

    def box(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> Box | None:
        """Voxel slices (z, y, x) that hold every voxel whose anatomy point lies in [lo, hi]; None if none."""
        lo = np.asarray(lo_mm, float) - self.margin_mm - 1e-3
        hi = np.asarray(hi_mm, float) + self.margin_mm + 1e-3
        corners = np.array([[(lo, hi)[a][0], (lo, hi)[b][1], (lo, hi)[c][2]]
                            for a in (0, 1) for b in (0, 1) for c in (0, 1)])
        index = self.grid.world_to_index(corners)
        start = np.maximum(np.floor(index.min(axis=0)).astype(int), 0)
        stop = np.minimum(np.ceil(index.max(axis=0)).astype(int) + 1, np.asarray(self.grid.size))
        if np.any(stop <= start):
            return None
        return (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))

    def take(self, box: Box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The coordinates inside a voxel box, still broadcastable to the box shape."""
        return tuple(_take(a, box) for a in (self.x, self.y, self.z))  # type: ignore[return-value]


def box_shape(box: Box) -> tuple[int, int, int]:
    return tuple(s.stop - s.start for s in box)  # type: ignore[return-value]


def _take(array: np.ndarray, box: Box) -> np.ndarray:
    return array[tuple(s if n > 1 else slice(None) for s, n in zip(box, array.shape))]
