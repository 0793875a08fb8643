"""Exact reordering of voxel axes, for images that hold the same voxels stored in another order.

A DICOM series and a NIfTI file made from it usually cover the same voxel
centres with axes flipped (e.g. rows stored bottom-up). Permuting and
flipping the array moves no voxel, so this is lossless and needs no
interpolation; anything else is refused.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from sirtreg.errors import GeometryMismatchError
from sirtreg.geometry import Grid, Volume

V = TypeVar("V", bound=Volume)


def orient_like(volume: V, grid: Grid, *, tolerance_mm: float = 1e-3) -> V:
    """``volume`` with its array axes permuted and flipped to lie on ``grid``.

    Refuses with GeometryMismatchError unless both grids place the same
    voxel centres (within ``tolerance_mm``) and differ only in axis order
    and sign; resample in that case.
    """
    source = volume.grid
    cosines = source.direction_matrix.T @ grid.direction_matrix  # [a, b]: source axis a . target axis b
    axes = np.argmax(np.abs(cosines), axis=0)  # source index axis of each target index axis
    signs = np.sign(cosines[axes, [0, 1, 2]])
    refusal = GeometryMismatchError(
        f"cannot reorder {source.describe()} onto {grid.describe()} without moving voxels; resample instead"
    )
    if sorted(axes) != [0, 1, 2] or not np.allclose(np.abs(cosines[axes, [0, 1, 2]]), 1.0, atol=1e-4):
        raise refusal
    if [source.size[a] for a in axes] != list(grid.size):
        raise refusal
    # array axis of index axis a is 2 - a
    array = np.transpose(volume.array, [2 - axes[2 - t] for t in range(3)])
    for b in range(3):
        if signs[b] < 0:
            array = np.flip(array, axis=2 - b)
    far = np.asarray(grid.size, dtype=float) - 1.0
    probes = np.array([[0.0, 0.0, 0.0], far, [far[0], 0.0, 0.0], [0.0, far[1], 0.0], [0.0, 0.0, far[2]]])
    source_index = np.empty_like(probes)
    for b, a in enumerate(axes):
        source_index[:, a] = probes[:, b] if signs[b] > 0 else far[b] - probes[:, b]
    if np.max(np.abs(source.index_to_world(source_index) - grid.index_to_world(probes))) > tolerance_mm:
        raise refusal
    return volume.on_grid(np.ascontiguousarray(array), grid)  # type: ignore[return-value]
