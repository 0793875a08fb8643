"""Affine and dense transforms, warping, and interoperability with SimpleITK."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume
from sirtreg.io import read_displacement, write_displacement
from sirtreg.itk_bridge import apply_grid, to_sitk
from sirtreg.register import (
    AffineTransform,
    compose_displacements,
    map_floating_points,
    mapped_points,
    read_affine,
    warp,
    write_affine,
)


def random_affine(seed: int, centre=(10.0, -20.0, 30.0)) -> AffineTransform:
    rng = np.random.default_rng(seed)
    rotation = Rotation.from_euler("xyz", rng.uniform(-8, 8, 3), degrees=True).as_matrix()
    scale_shear = np.eye(3) + rng.uniform(-0.05, 0.05, (3, 3))
    return AffineTransform(rotation @ scale_shear, rng.uniform(-10, 10, 3), np.asarray(centre))


def smooth_image(grid: Grid) -> Volume:
    world = grid.world_coordinates(np.float64)
    values = np.sin(world[..., 0] / 9.0) * np.cos(world[..., 1] / 13.0) + np.sin(world[..., 2] / 7.0)
    return Volume((100.0 * values).astype(np.float32), grid)


@pytest.fixture(scope="module")
def grids():
    floating = Grid((48, 44, 40), (1.2, 1.2, 1.5), (-28.0, -26.0, -30.0),
                    tuple(Rotation.from_euler("z", 12, degrees=True).as_matrix().ravel()))
    reference = Grid((40, 36, 30), (1.0, 1.1, 1.4), (-20.0, -19.0, -20.0))
    return floating, reference


def test_affine_matches_itk_and_inverts(tmp_path):
    transform = random_affine(0)
    points = np.random.default_rng(1).uniform(-50, 50, (20, 3))
    itk = transform.to_sitk()
    expected = np.array([itk.TransformPoint(tuple(p)) for p in points])
    np.testing.assert_allclose(transform.transform_points(points), expected, atol=1e-9)
    np.testing.assert_allclose(transform.inverse().transform_points(transform.transform_points(points)), points, atol=1e-9)
    second = random_affine(2)
    np.testing.assert_allclose(transform.then(second).transform_points(points),
                               second.transform_points(transform.transform_points(points)), atol=1e-9)
    loaded = read_affine(write_affine(transform, tmp_path / "affine.tfm"))
    np.testing.assert_allclose(loaded.transform_points(points), transform.transform_points(points), atol=1e-6)
    assert np.allclose(AffineTransform.from_parameters(transform.parameters, transform.centre_mm).homogeneous,
                       transform.homogeneous)


def test_affine_displacement_field_and_composition(grids):
    _, reference = grids
    first, second = random_affine(3), random_affine(4)
    field = first.displacement_on(reference)
    world = reference.world_coordinates(np.float64)
    np.testing.assert_allclose(field.mapped_grid_points(), first.transform_points(world), atol=1e-3)
    wide = Grid((50, 50, 50), (2.0, 2.0, 2.0), (-50.0, -50.0, -50.0))  # covers first(x) for every x
    composed = compose_displacements(field, second.displacement_on(wide))
    np.testing.assert_allclose(composed.mapped_grid_points(), first.then(second).transform_points(world), atol=2e-3)


def test_warp_with_saved_affine_agrees_with_simpleitk(grids, tmp_path):
    floating_grid, reference_grid = grids
    floating = smooth_image(floating_grid)
    transform = random_affine(5, centre=reference_grid.center_mm)
    ours = warp(floating, transform, reference_grid)
    itk_transform = sitk.ReadTransform(str(write_affine(transform, tmp_path / "affine.txt")))
    reference = apply_grid(sitk.Image(list(reference_grid.size), sitk.sitkFloat32), reference_grid)
    theirs = sitk.GetArrayFromImage(sitk.Resample(to_sitk(floating), reference, itk_transform, sitk.sitkLinear, 0.0))
    relative_rms = np.sqrt(np.mean((ours.array - theirs) ** 2)) / np.sqrt(np.mean(theirs**2))
    assert relative_rms < 1e-3


def test_warp_with_saved_displacement_field_agrees_with_simpleitk(grids, tmp_path):
    floating_grid, reference_grid = grids
    floating = smooth_image(floating_grid)
    world = reference_grid.world_coordinates(np.float64)
    u = np.stack([3.0 * np.sin(world[..., 2] / 10.0), 2.0 * np.cos(world[..., 0] / 12.0), 6.0 + 0 * world[..., 0]], -1)
    field = DisplacementField(u, reference_grid)
    ours = warp(floating, field, reference_grid)
    loaded = sitk.ReadImage(str(write_displacement(field, tmp_path / "field.nii.gz")), sitk.sitkVectorFloat64)
    itk_transform = sitk.DisplacementFieldTransform(loaded)
    reference = apply_grid(sitk.Image(list(reference_grid.size), sitk.sitkFloat32), reference_grid)
    theirs = sitk.GetArrayFromImage(sitk.Resample(to_sitk(floating), reference, itk_transform, sitk.sitkLinear, 0.0))
    relative_rms = np.sqrt(np.mean((ours.array - theirs) ** 2)) / np.sqrt(np.mean(theirs**2))
    assert relative_rms < 1e-3
    assert np.array_equal(read_displacement(tmp_path / "field.nii.gz").array, field.array)


def test_warped_labels_follow_a_known_shift():
    grid = Grid((40, 40, 40), (1.0, 1.0, 1.0), (-20.0, -20.0, -20.0))
    world = grid.world_coordinates(np.float64)
    sphere = np.linalg.norm(world - [2.0, -3.0, 4.0], axis=-1) <= 8.0
    floating = LabelVolume.from_mask(sphere, grid, name="lesion 1")
    shift = AffineTransform(np.eye(3), np.array([2.0, -3.0, 4.0]), np.zeros(3))  # reference x shows floating x + t
    expected = np.linalg.norm(world, axis=-1) <= 8.0
    for mode in ("nearest", "one-hot"):
        warped = warp(floating, shift, grid, label_mode=mode)
        assert isinstance(warped, LabelVolume) and warped.labels == {1: "lesion 1"}
        assert np.array_equal(warped.array.astype(bool), expected)
    np.testing.assert_allclose(map_floating_points(shift, [[2.0, -3.0, 4.0]]), [[0.0, 0.0, 0.0]])
    # T(x) computed once serves several warps alike; points of another grid are refused
    points = mapped_points(shift, grid)
    assert np.array_equal(warp(floating, shift, grid, points=points).array, warped.array)
    np.testing.assert_allclose(points.array(), shift.transform_points(world))
    with pytest.raises(InputError, match="mapped points are of 40x40x39 voxels"):
        warp(floating, shift, grid, points=mapped_points(shift, grid.crop((0, 0, 0), (40, 40, 39))))


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: AffineTransform(np.diag([1.0, 1.0, -1.0]), np.zeros(3), np.zeros(3)), "positive determinant"),
        (lambda: AffineTransform(np.eye(3), [np.nan, 0, 0], np.zeros(3)), "finite"),
        (lambda: AffineTransform.from_parameters(np.zeros(11), np.zeros(3)), "12 parameters"),
    ],
)
def test_bad_affines_are_refused(make, message):
    with pytest.raises(InputError, match=message):
        make()


def test_transform_files_are_checked(tmp_path):
    with pytest.raises(InputError, match=".tfm or .txt"):
        write_affine(AffineTransform.identity(), tmp_path / "affine.nii.gz")
    with pytest.raises(InputError, match="no such file"):
        read_affine(tmp_path / "missing.tfm")
    junk = tmp_path / "junk.tfm"
    junk.write_text("not a transform\n")
    with pytest.raises(InputError, match="not an ITK transform"):
        read_affine(junk)


def test_every_transform_answers_the_protocol_alike(grids):
    """The affine, a dense field and the phantom's known motion: each maps points, maps them back, and turns
    into a displacement field on a grid that maps the grid's voxel centres as the transform does."""
    from sirtreg.phantom.known_pair import KnownMotion

    _, reference = grids
    affine = random_affine(3)
    coarse = reference.with_spacing((3.0, 3.0, 3.0))
    world = coarse.world_coordinates(np.float64)
    wave = np.stack([2.0 * np.sin(world[..., 1] / 15.0), 1.5 * np.cos(world[..., 0] / 11.0),
                     0.5 * world[..., 2] / 20.0], axis=-1)
    field = DisplacementField(wave.astype(np.float32), coarse)
    motion = KnownMotion(np.eye(3), np.zeros(3), np.array([4.0, -2.0, 6.0]), DisplacementField.zeros(coarse))
    centres = reference.world_coordinates(np.float64)[::3, ::3, ::3].reshape(-1, 3)
    for transform in (affine, field, motion):
        on_reference = transform.displacement_on(reference)
        assert on_reference.grid.same_as(reference)
        np.testing.assert_allclose(centres + on_reference.displacement_at(centres),
                                   transform.transform_points(centres), atol=1e-3)
        np.testing.assert_allclose(transform.inverse_transform_points(transform.transform_points(centres)), centres,
                                   atol=1e-3)
        np.testing.assert_allclose(map_floating_points(transform, transform.transform_points(centres)), centres,
                                   atol=1e-3)
    assert field.displacement_on(coarse) is field  # on its own grid: itself, not a copy
