"""orient_like: lossless axis permutation and flips between grids holding the same voxels."""

from __future__ import annotations

import numpy as np
import pytest

from sirtreg.errors import GeometryMismatchError
from sirtreg.geometry import Grid, LabelVolume
from sirtreg.io import orient_like


def test_permuted_and_flipped_grid_holds_the_same_voxels(oblique_grid):
    grid = oblique_grid(50, size=(5, 4, 3))
    labels = LabelVolume(np.arange(60, dtype=np.int32).reshape(grid.shape), grid, labels={7: "liver"})
    direction = grid.direction_matrix
    other_direction = np.column_stack([direction[:, 2], -direction[:, 0], direction[:, 1]])
    spacing = grid.spacing_mm
    other = Grid((3, 5, 4), (spacing[2], spacing[0], spacing[1]), tuple(grid.index_to_world([4, 0, 0])),
                 tuple(other_direction.ravel()))
    moved = orient_like(labels, other)
    assert isinstance(moved, LabelVolume) and moved.labels == {7: "liver"}
    for index in ([0, 0, 0], [2, 4, 3], [1, 3, 2]):
        world = other.index_to_world(index)
        i, j, k = np.round(grid.world_to_index(world)).astype(int)
        assert moved.array[index[2], index[1], index[0]] == labels.array[k, j, i]
    np.testing.assert_array_equal(orient_like(moved, grid).array, labels.array)


def test_grids_with_other_voxels_are_refused(oblique_grid):
    grid = oblique_grid(51, size=(5, 4, 3))
    labels = LabelVolume(np.zeros(grid.shape, np.uint8), grid)
    shifted = Grid(grid.size, grid.spacing_mm, tuple(np.asarray(grid.origin_mm) + 0.5), grid.direction)
    with pytest.raises(GeometryMismatchError, match="without moving voxels; resample instead"):
        orient_like(labels, shifted)
    with pytest.raises(GeometryMismatchError, match="without moving voxels; resample instead"):
        orient_like(labels, oblique_grid(52, size=(5, 4, 3)))
