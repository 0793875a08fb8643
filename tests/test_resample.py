"""Resampling, point sampling and cropping with analytic answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.resample import crop_to_mask, resample, sample_at

COEFFICIENTS = np.array([0.5, -1.25, 2.0])


def linear_volume(grid: Grid) -> Volume:
    """f(p) = 3 + c . p, exact under linear interpolation."""
    return Volume((3.0 + grid.world_coordinates(np.float64) @ COEFFICIENTS).astype(np.float32), grid)


def sphere_labels(grid: Grid, centre_mm, radius_mm: float) -> LabelVolume:
    distance = np.linalg.norm(grid.world_coordinates(np.float64) - np.asarray(centre_mm), axis=-1)
    return LabelVolume.from_mask(distance <= radius_mm, grid, name="sphere")


def test_linear_image_onto_oblique_grid_is_exact_inside():
    source = Grid((60, 60, 40), (1.0, 1.0, 1.5), (-30.0, -30.0, -30.0))
    rotation = Rotation.from_euler("xyz", [10, -5, 20], degrees=True).as_matrix()
    target = Grid((20, 20, 15), (1.7, 1.3, 2.1), (-12.0, -10.0, -12.0), tuple(rotation.ravel()))
    out = resample(linear_volume(source), target)
    expected = 3.0 + target.world_coordinates(np.float64) @ COEFFICIENTS
    assert out.grid == target
    np.testing.assert_allclose(out.array, expected, atol=1e-3)


def test_outside_the_field_of_view_gets_the_fill_value():
    source = Grid((10, 10, 10))
    target = Grid((10, 10, 10), origin_mm=(5.0, 0.0, 0.0))
    out = resample(Volume(np.ones(source.shape), source), target, fill_value=-1000.0)
    assert np.all(out.array[:, :, 6:] == -1000.0) and np.all(out.array[:, :, :4] == 1.0)


def test_labels_stay_labels_and_keep_their_volume():
    source = Grid((50, 50, 50), (1.0, 1.0, 1.0), (-25.0, -25.0, -25.0))
    sphere = sphere_labels(source, (0, 0, 0), 15.0)
    fine = Grid((100, 100, 100), (0.5, 0.5, 0.5), (-24.75, -24.75, -24.75))
    for mode in ("nearest", "one-hot"):
        out = resample(sphere, fine, label_mode=mode)
        assert isinstance(out, LabelVolume) and out.labels == {1: "sphere"}
        assert set(np.unique(out.array)) == {0, 1}
        assert out.volume_ml(1) == pytest.approx(4 / 3 * np.pi * 15.0**3 / 1000, rel=0.02)


def test_one_hot_picks_the_majority_label_at_boundaries():
    labels = LabelVolume(np.array([0, 2, 2, 5], dtype=np.uint8).reshape(1, 1, 4), Grid((4, 1, 1)))
    # x = 0.4: 60 % background, 40 % label 2; x = 1.4: label 2; x = 2.4: 60 % label 2, 40 % label 5
    target = Grid((3, 1, 1), (1.0, 1.0, 1.0), (0.4, 0.0, 0.0))
    out = resample(labels, target, label_mode="one-hot")
    assert out.array.ravel().tolist() == [0, 2, 2]
    target = Grid((1, 1, 1), (1.0, 1.0, 1.0), (2.75, 0.0, 0.0))  # 25 % label 2, 75 % label 5
    assert resample(labels, target, label_mode="one-hot").array.ravel().tolist() == [5]


def test_resample_refuses_disjoint_grids_and_unknown_modes():
    grid = Grid((10, 10, 10))
    with pytest.raises(GeometryMismatchError, match="do not overlap"):
        resample(Volume(np.zeros(grid.shape), grid), Grid((10, 10, 10), origin_mm=(0, 0, 500)))
    with pytest.raises(InputError, match="label_mode"):
        resample(LabelVolume(np.ones(grid.shape, dtype=np.uint8), grid), grid, label_mode="linear")


def test_sample_at_world_points():
    rng = np.random.default_rng(1)
    rotation = Rotation.random(random_state=1).as_matrix()
    grid = Grid((40, 40, 40), (1.0, 1.5, 2.0), (-20.0, -30.0, -40.0), tuple(rotation.ravel()))
    volume = linear_volume(grid)
    index = rng.uniform(2, 37, (200, 3))
    points = grid.index_to_world(index)
    np.testing.assert_allclose(sample_at(volume, points), 3.0 + points @ COEFFICIENTS, atol=1e-3)
    with pytest.raises(InputError, match="3 coordinates"):
        sample_at(volume, np.zeros((5, 2)))


def test_crop_to_mask_uses_a_margin_in_mm():
    grid = Grid((40, 40, 20), (1.0, 2.0, 5.0))
    mask = np.zeros(grid.shape, dtype=bool)
    mask[10, 20, 20] = True
    cropped = crop_to_mask(Volume(np.zeros(grid.shape), grid), mask, margin_mm=10.0)
    # 10 mm is 10 voxels in x, 5 in y, 2 in z
    assert cropped.grid.size == (21, 11, 5)
    np.testing.assert_allclose(cropped.grid.origin_mm, grid.index_to_world([10, 15, 8]))
    with pytest.raises(InputError, match="empty"):
        crop_to_mask(Volume(np.zeros(grid.shape), grid), np.zeros(grid.shape, dtype=bool))
    with pytest.raises(InputError, match=">= 0 mm"):
        crop_to_mask(Volume(np.zeros(grid.shape), grid), mask, margin_mm=-1)
