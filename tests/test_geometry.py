"""Grid, Volume, LabelVolume, Landmarks and DisplacementField: known answers and refusals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume, nonzero_values
from sirtreg.named_points import Landmarks


def random_grid(rng: np.random.Generator, size=(7, 9, 5)) -> Grid:
    """An oblique grid with random origin and anisotropic spacing (right- or left-handed)."""
    direction = Rotation.random(random_state=rng.integers(1 << 31)).as_matrix()
    if rng.random() < 0.5:
        direction[:, 2] *= -1  # left-handed, as some DICOM series are
    return Grid(
        size=size,
        spacing_mm=tuple(rng.uniform(0.3, 5.0, 3)),
        origin_mm=tuple(rng.uniform(-500, 500, 3)),
        direction=tuple(direction.ravel()),
    )


@pytest.mark.parametrize("seed", range(20))
def test_index_world_round_trip_under_random_oblique_geometry(seed):
    rng = np.random.default_rng(seed)
    grid = random_grid(rng)
    index = rng.uniform(-10, 20, (100, 3))
    world = grid.index_to_world(index)
    assert np.max(np.abs(grid.world_to_index(world) - index) * np.asarray(grid.spacing_mm)) < 1e-6
    points = rng.uniform(-600, 600, (100, 3))
    assert np.max(np.abs(grid.index_to_world(grid.world_to_index(points)) - points)) < 1e-6


def test_index_to_world_matches_the_dicom_formula():
    grid = Grid((4, 4, 4), (0.5, 0.7, 2.0), (10.0, -20.0, 30.0), (0, 1, 0, -1, 0, 0, 0, 0, 1))
    # row-major as in ITK: column 0 (the i axis) is (0, -1, 0), column 1 (the j axis) is (1, 0, 0)
    np.testing.assert_allclose(grid.index_to_world([1, 0, 0]), [10.0, -20.5, 30.0])
    np.testing.assert_allclose(grid.index_to_world([0, 1, 0]), [10.7, -20.0, 30.0])
    np.testing.assert_allclose(grid.index_to_world([0, 0, 1]), [10.0, -20.0, 32.0])
    assert grid.shape == (4, 4, 4) and grid.voxel_volume_ml == pytest.approx(0.0007)


def test_world_coordinates_are_indexed_z_y_x():
    grid = Grid((3, 4, 5), (1.0, 2.0, 3.0), (1.0, 1.0, 1.0))
    world = grid.world_coordinates()
    assert world.shape == (5, 4, 3, 3)
    np.testing.assert_allclose(world[4, 3, 2], [3.0, 7.0, 13.0])


def test_orientation_code_and_description():
    axial = Grid((512, 512, 20), (0.977, 0.977, 2.0))
    assert axial.orientation_code() == "LPS" and not axial.is_oblique()
    nifti_like = Grid((10, 10, 10), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert nifti_like.orientation_code() == "RAS"
    assert axial.describe() == "512x512x20 voxels, 0.977x0.977x2 mm, LPS"
    tilted = Grid((5, 5, 5), direction=tuple(Rotation.from_euler("x", 10, degrees=True).as_matrix().ravel()))
    assert "oblique" in tilted.describe()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": (4, 4)}, "3D size"),
        ({"size": (4, 0, 4)}, "positive"),
        ({"size": (4, 4, 4), "spacing_mm": (1, 0, 1)}, "spacing must be > 0"),
        ({"size": (4, 4, 4), "spacing_mm": (1, np.nan, 1)}, "finite"),
        ({"size": (4, 4, 4), "direction": (1, 0.2, 0, 0, 1, 0, 0, 0, 1)}, "not orthonormal"),
    ],
)
def test_grid_refuses_bad_geometry(kwargs, message):
    with pytest.raises(InputError, match=message):
        Grid(**kwargs)


def test_same_as_and_require_same():
    grid = Grid((10, 10, 10), (1, 1, 2), (0, 0, 0))
    assert grid.same_as(Grid((10, 10, 10), (1, 1, 2), (0, 0, 0.0001)))
    shifted = Grid((10, 10, 10), (1, 1, 2), (0, 0, 1))
    assert not grid.same_as(shifted)
    with pytest.raises(GeometryMismatchError, match="not on the same grid"):
        grid.require_same(shifted, what="label map and image")


def test_overlap():
    grid = Grid((10, 10, 10))
    assert grid.overlaps(Grid((10, 10, 10), origin_mm=(5, 5, 5)))
    far = Grid((10, 10, 10), origin_mm=(100, 0, 0))
    assert not grid.overlaps(far)
    with pytest.raises(GeometryMismatchError, match="do not overlap"):
        grid.require_overlap(far)


def test_crop_keeps_world_positions():
    rng = np.random.default_rng(3)
    grid = random_grid(rng, size=(20, 30, 10))
    volume = Volume(rng.normal(size=grid.shape), grid, "CT")
    cropped = volume.crop((2, 5, 1), (12, 25, 9))
    assert cropped.shape == (8, 20, 10)
    np.testing.assert_allclose(cropped.grid.index_to_world([0, 0, 0]), grid.index_to_world([2, 5, 1]), atol=1e-9)
    assert cropped.array[3, 4, 5] == volume.array[4, 9, 7]
    with pytest.raises(InputError, match="not inside"):
        volume.crop((0, 0, 0), (21, 5, 5))


def test_with_spacing_keeps_centre_and_extent():
    grid = Grid((100, 80, 40), (1.0, 1.0, 2.5), (-50, -40, 0), tuple(Rotation.from_euler("z", 30, degrees=True).as_matrix().ravel()))
    coarse = grid.with_spacing((3.0, 3.0, 3.0))
    np.testing.assert_allclose(coarse.center_mm, grid.center_mm, atol=1e-9)
    assert coarse.size == (34, 27, 34)
    assert all(c >= e for c, e in zip(coarse.extent_mm, grid.extent_mm))


def test_volume_refuses_bad_arrays():
    grid = Grid((4, 5, 6))
    with pytest.raises(InputError, match="3D image"):
        Volume(np.zeros((5, 4)), grid)
    with pytest.raises(GeometryMismatchError, match="does not match its grid"):
        Volume(np.zeros((4, 5, 6)), grid)  # (x, y, z) given where (z, y, x) is needed
    with pytest.raises(InputError, match="real numbers"):
        Volume(np.zeros((6, 5, 4), dtype=complex), grid)


def test_label_volume_names_masks_and_volumes():
    grid = Grid((10, 10, 10), (2.0, 2.0, 2.0))
    array = np.zeros(grid.shape, dtype=np.uint8)
    array[2:4, 2:4, 2:4] = 1
    array[5:8, 5:8, 5:8] = 2
    labels = LabelVolume(array, grid, labels={1: "liver", 2: "lesion 1"})
    assert labels.volume_ml("liver") == pytest.approx(8 * 0.008)
    assert labels.volume_ml(2) == pytest.approx(27 * 0.008)
    assert labels.present_labels() == [1, 2]
    with pytest.raises(InputError, match="no label named 'spleen'"):
        labels.mask("spleen")
    with pytest.raises(InputError, match="whole numbers"):
        LabelVolume(np.full(grid.shape, 0.5), grid)
    assert LabelVolume(np.zeros(grid.shape, dtype=bool), grid).array.dtype == np.uint8


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64])
def test_nonzero_values_of_label_arrays(dtype):
    array = np.zeros((4, 5, 6), dtype=dtype)
    array[0, 0, :3] = (7, 2, 300 if np.iinfo(dtype).max > 300 else 200)
    expected = sorted({7, 2, int(array[0, 0, 2])})
    assert nonzero_values(array) == expected
    if np.issubdtype(dtype, np.signedinteger):  # negative values: counted by sorting instead
        array[1, 1, 1] = -4
        assert nonzero_values(array) == [-4, *expected]
    assert nonzero_values(np.zeros((2, 2, 2), dtype=dtype)) == []


def test_landmarks_from_label_centroids_are_the_mass_centres():
    grid = Grid((20, 20, 20), (1.0, 2.0, 3.0), (10.0, 20.0, 30.0))
    array = np.zeros(grid.shape, dtype=np.int16)
    array[4:7, 2:5, 10:14] = 3  # k 4..6, j 2..4, i 10..13
    landmarks = Landmarks.from_label_centroids(LabelVolume(array, grid, labels={3: "clip"}))
    assert landmarks.names == ("clip",)
    np.testing.assert_allclose(landmarks.point("clip"), [10.0 + 11.5, 20.0 + 3 * 2.0, 30.0 + 5 * 3.0])
    assert Landmarks.from_dict(landmarks.to_dict()).to_dict() == landmarks.to_dict()


def test_landmarks_refuse_bad_input():
    with pytest.raises(InputError, match="2 landmark names but 1 points"):
        Landmarks(("a", "b"), np.zeros((1, 3)))
    with pytest.raises(InputError, match="unique"):
        Landmarks(("a", "a"), np.zeros((2, 3)))
    with pytest.raises(InputError, match="finite"):
        Landmarks(("a",), np.array([[np.nan, 0, 0]]))


def test_displacement_field_inverse_round_trip():
    grid = Grid((30, 30, 30), (2.0, 2.0, 2.0), (-30.0, -30.0, -30.0))
    world = grid.world_coordinates(np.float64)
    u = np.stack([0 * world[..., 0], 2.0 * np.sin(world[..., 0] / 15.0), 8.0 * np.cos(world[..., 1] / 25.0)], axis=-1)
    field = DisplacementField(u, grid)
    points = np.random.default_rng(0).uniform(-15, 15, (50, 3))
    there = field.transform_points(points)
    assert np.max(np.abs(there - points)) > 5.0
    assert np.max(np.abs(field.inverse_transform_points(there) - points)) < 1e-3


def test_displacement_field_refuses_bad_arrays():
    grid = Grid((4, 4, 4))
    with pytest.raises(GeometryMismatchError, match="does not match grid shape"):
        DisplacementField(np.zeros((4, 4, 4, 2)), grid)
    bad = np.zeros((4, 4, 4, 3))
    bad[1, 1, 1, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        DisplacementField(bad, grid)
