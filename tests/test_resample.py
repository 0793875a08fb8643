"""Resampling, point sampling and cropping with analytic answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.resample import crop_to_mask, one_hot_vote, resample, sample_at, sample_one_hot

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
    assert np.all(out.array[:, :, 6:] == -1000.0)  # the fill value, copied
    # inside: interpolated ones, a weighted sum whose weights add up to 1 within float rounding
    np.testing.assert_allclose(out.array[:, :, :4], 1.0, rtol=1e-6)


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


def test_one_hot_sampling_at_points_equals_the_vote_over_every_label():
    """The boxed one-hot sampler gives exactly the label-by-label vote over all points, on an oblique grid,
    with points inside, at the edges and outside the field of view."""
    rng = np.random.default_rng(0)
    direction = tuple(Rotation.from_rotvec([0.3, -0.2, 0.5]).as_matrix().ravel())
    grid = Grid((60, 50, 40), (1.5, 1.2, 2.0), (3.0, -4.0, 5.0), direction)
    array = np.zeros(grid.shape, np.uint8)
    array[5:30, 10:40, 20:50] = 1
    array[10:20, 15:25, 25:35] = 2
    array[25:35, 30:45, 40:58] = 3
    array[0:3, 0:5, 0:4] = 7  # at the grid corner
    labels = LabelVolume(array, grid, labels={1: "a", 2: "b", 3: "c", 7: "d"})
    points = grid.world_coordinates(np.float64) + rng.normal(0.0, 2.0, (*grid.shape, 3))
    points = np.concatenate([points, points + 40.0])  # a third of these fall outside
    expected = one_hot_vote(labels, points.shape[:-1], lambda indicator: sample_at(indicator, points))
    found = sample_one_hot(labels, points)
    assert np.array_equal(found, expected)
    assert set(np.unique(found)) == {0, 1, 2, 3, 7}
    assert not np.any(sample_one_hot(labels.with_array(np.zeros_like(array)), points))
    with pytest.raises(InputError, match="3 coordinates"):
        sample_one_hot(labels, points[..., :2])


def test_a_displacement_field_resampled_onto_a_finer_grid_equals_its_interpolation():
    """resample_field (SimpleITK) gives displacement_at's trilinear values at every voxel of a finer oblique
    grid covering the same extent, edge voxels included."""
    from sirtreg.geometry import DisplacementField
    from sirtreg.resample import resample_field

    rng = np.random.default_rng(1)
    direction = tuple(Rotation.from_rotvec([0.0, 0.1, 0.2]).as_matrix().ravel())
    fine = Grid((60, 50, 20), (1.0, 1.2, 2.5), (-30.0, -20.0, -10.0), direction)
    coarse = fine.with_spacing((5.0, 5.0, 5.0))
    field = DisplacementField(rng.normal(0.0, 3.0, (*coarse.shape, 3)).astype(np.float32), coarse)
    expected = field.displacement_at(fine.world_coordinates(np.float64))
    found = resample_field(field, fine)
    assert found.grid.same_as(fine)
    np.testing.assert_allclose(found.array, expected, atol=1e-5)
