"""Contours carried onto the SPECT grid as fractional occupancy."""

from __future__ import annotations

import numpy as np
import pytest
from dose_phantoms import box_labels
from scipy.spatial.transform import Rotation

from sirtreg.dosimetry import occupancy_on_grid
from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import Grid, LabelVolume


def test_same_grid_is_the_mask(liver_on_spect, spect_grid):
    np.testing.assert_array_equal(occupancy_on_grid(liver_on_spect, spect_grid), liver_on_spect.array > 0)


def test_fine_contour_with_faces_on_voxel_edges_is_exact(liver_on_ct, liver_on_spect, spect_grid):
    np.testing.assert_array_equal(occupancy_on_grid(liver_on_ct, spect_grid), liver_on_spect.array > 0)


def test_a_face_through_the_middle_of_voxels_gives_half_fractions(spect_grid):
    fine = Grid((116, 116, 116), (1.0, 1.0, 1.0), (-57.5, -57.5, -57.5))
    slab = box_labels(fine, [-50.0, -50.0, -50.0], [50.0, 50.0, 0.0], "slab")  # top face at z = 0, a voxel centre
    fraction = occupancy_on_grid(slab, spect_grid)
    centre_k = spect_grid.world_to_index([0.0, 0.0, 0.0])[2].round().astype(int)
    np.testing.assert_allclose(fraction[centre_k, 14, 14], 0.5)
    assert fraction[centre_k - 1, 14, 14] == 1.0 and fraction[centre_k + 1, 14, 14] == 0.0


def test_volume_is_kept_on_an_oblique_shifted_grid(spect_grid):
    rotation = Rotation.from_euler("xyz", [12, -7, 20], degrees=True).as_matrix()
    fine = Grid((60, 60, 40), (1.0, 1.0, 1.5), (-30.0, -30.0, -30.0), tuple(rotation.ravel()))
    points = fine.world_coordinates(np.float64)
    sphere = LabelVolume.from_mask(np.linalg.norm(points - [3.3, -2.1, 1.7], axis=-1) <= 20.0, fine, name="lesion")
    fraction = occupancy_on_grid(sphere, spect_grid)
    assert fraction.min() >= 0 and fraction.max() <= 1
    assert fraction.sum() * spect_grid.voxel_volume_ml == pytest.approx(sphere.volume_ml("lesion"), rel=0.01)


def test_a_contour_that_does_not_overlap_is_refused(spect_grid):
    far = Grid((10, 10, 10), (1.0, 1.0, 1.0), (500.0, 0.0, 0.0))
    with pytest.raises(GeometryMismatchError, match="the contour 'liver' and the image grid do not overlap"):
        occupancy_on_grid(LabelVolume.from_mask(np.ones(far.shape, bool), far, name="liver"), spect_grid)


def test_an_empty_contour_is_refused(spect_grid):
    with pytest.raises(InputError, match="the contour 'liver' is empty"):
        occupancy_on_grid(LabelVolume(np.zeros(spect_grid.shape, np.uint8), spect_grid, labels={1: "liver"}), spect_grid)
