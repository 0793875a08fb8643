"""The authors' preprocessing: known answers against a literal port of pymirc zoom3d, geometry, refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, Volume
from sirtreg.resample import sample_at
from sirtreg.segment.inference import segment_liver
from sirtreg.segment.preprocess import body_box, median3, to_ras, zoom3d, zoomed_grid


def _pymirc_zoom_axis0(array, zoom):
    """pymirc.image_operations.zoom3d along axis 0, transcribed loop by loop (cval = 0)."""
    delta = 1.0 / zoom
    n = array.shape[0]
    if zoom > 1:
        ns = math.ceil(n / delta)
        out = np.zeros((ns, *array.shape[1:]))
        for i in range(ns):
            ib_c = delta * (i - 0.5 * ns + 0.5) + 0.5 * n - 0.5
            fl_l = math.floor(ib_c)
            fl_r = fl_l + 1
            a = array[fl_l] * (fl_r - ib_c) if fl_l >= 0 else 0
            b = array[fl_r] * (ib_c - fl_l) if fl_r < n else 0
            out[i] = a + b
        return out
    nb = math.ceil(n / delta)
    out = np.zeros((nb, *array.shape[1:]))
    for i in range(n):
        ib_l = (1.0 / delta) * (i - 0.5 * n) + 0.5 * nb
        ib_r = (1.0 / delta) * (i + 1 - 0.5 * n) + 0.5 * nb
        left, right = math.floor(ib_l), math.ceil(ib_r) - 1
        if left == right:
            out[left] += array[i] / delta
        else:
            c = math.ceil(ib_l)
            out[left] += array[i] * (c - ib_l)
            out[right] += array[i] * (ib_r - c)
    return out


@pytest.mark.parametrize("zoom_xyz", [(2.0, 0.5, 1.0), (0.977 / 1.5, 5.0 / 1.5, 0.5), (0.5, 0.5, 2.0)])
def test_zoom3d_matches_pymirc(zoom_xyz):
    rng = np.random.default_rng(1)
    array = rng.normal(size=(7, 9, 11)).astype(np.float32)  # (z, y, x)
    expected = array.astype(np.float64)
    for axis_xyz, zoom in enumerate(zoom_xyz):
        if zoom != 1:
            axis = 2 - axis_xyz
            expected = np.moveaxis(_pymirc_zoom_axis0(np.moveaxis(expected, axis, 0), zoom), 0, axis)
    np.testing.assert_allclose(zoom3d(array, zoom_xyz), expected, atol=1e-5)


def test_zoomed_grid_keeps_the_centre():
    grid = Grid((11, 9, 7), (0.8, 0.8, 5.0), (10.0, -20.0, 30.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1))
    fine = zoomed_grid(grid, (1.5, 1.5, 1.5))
    assert fine.size == (6, 5, 24) and fine.spacing_mm == (1.5, 1.5, 1.5)
    np.testing.assert_allclose(fine.center_mm, grid.center_mm, atol=1e-9)


def test_to_ras_moves_no_voxel():
    rng = np.random.default_rng(2)
    grid = Grid((6, 5, 4), (1.0, 2.0, 3.0), (5.0, 6.0, 7.0), (0, 1, 0, 1, 0, 0, 0, 0, -1))  # axes swapped, z flipped
    volume = Volume(rng.normal(size=grid.shape), grid)
    ras = to_ras(volume)
    assert ras.grid.orientation_code() == "RAS"
    points = ras.grid.world_coordinates().reshape(-1, 3)
    # every voxel centre maps onto a voxel centre: values equal up to rounding of the index arithmetic
    np.testing.assert_allclose(sample_at(volume, points), ras.array.reshape(-1), rtol=0, atol=1e-12)


def test_median3_is_scipy_median_filter():
    array = np.random.default_rng(3).normal(size=(6, 7, 8)).astype(np.float32)
    np.testing.assert_array_equal(median3(array), ndimage.median_filter(array, size=3))


def test_body_box_finds_the_body():
    array = np.full((20, 40, 50), -1000.0)
    array[2:18, 10:30, 5:45] = 40.0
    start, stop = body_box(Volume(array, Grid((50, 40, 20))), "ct")
    assert list(start[:2]) == [8, 13] and list(stop[:2]) == [42, 27]  # in-plane: 3 voxels of skin off, as theirs
    assert (start[2], stop[2]) == (2, 18)  # every slice of the body


def _ct(array):
    return Volume(np.asarray(array, dtype=np.int16), Grid(tuple(reversed(np.shape(array))), (3.0, 3.0, 3.0)))


def test_all_air_is_refused():
    with pytest.raises(InputError, match=r"no body found in the image \(no voxel above -150 HU\)"):
        segment_liver(_ct(np.full((30, 40, 40), -1000)), modality="ct")


def test_2d_image_is_refused():
    with pytest.raises(InputError, match="2D or too thin"):
        segment_liver(_ct(np.zeros((1, 64, 64))), modality="ct")
    with pytest.raises(InputError, match="expected a sirtreg Volume"):
        segment_liver(np.zeros((64, 64)), modality="ct")


def test_empty_mr_and_unknown_modality_are_refused():
    with pytest.raises(InputError, match="no body found"):
        segment_liver(_ct(np.zeros((30, 40, 40))), modality="MR")
    with pytest.raises(InputError, match="modality must be 'ct' or 'mr'"):
        segment_liver(_ct(np.zeros((30, 40, 40))), modality="pet")
