"""The registration engine: known affine recovery and refusals of unusable input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.register import AffineTransform, guidance_labels, register, warp
from sirtreg.register.config import AffineSettings, NonRigidSettings, preset


def affine_only(guidance: str):
    return preset(guidance, image_weight=0.0, label_weight=0.0)


@pytest.fixture(scope="module")
def known_affine_pair(fast_patient):
    """The MAA CT moved by a known random 12-parameter affine: (reference, floating, labels, truth)."""
    reference = fast_patient.reference
    rng = np.random.default_rng(7)
    matrix = Rotation.from_euler("xyz", rng.uniform(-5, 5, 3), degrees=True).as_matrix()
    matrix = matrix @ (np.eye(3) + rng.uniform(-0.04, 0.04, (3, 3)))
    truth = AffineTransform(matrix, rng.uniform(-10, 10, 3), reference.image.grid.center_mm)
    # the floating scan shows at T(x) what the reference shows at x: sample the reference at T^-1(y)
    inverse = truth.inverse()
    floating = warp(reference.image, inverse, reference.image.grid, fill_value=-1000.0)
    floating_liver = warp(reference.liver, inverse, reference.liver.grid)
    return reference.image, floating, reference.liver, floating_liver, truth


@pytest.mark.parametrize("guidance", ["image", "liver"])
def test_affine_recovers_a_known_transform(known_affine_pair, guidance):
    reference, floating, reference_liver, floating_liver, truth = known_affine_pair
    result = register(reference, floating, settings=affine_only(guidance), reference_labels=reference_liver,
                      floating_labels=floating_liver if guidance != "image" else None)
    assert result.displacement is None
    k, j, i = np.nonzero(reference_liver.array)
    points = reference_liver.grid.index_to_world(np.stack([i, j, k], axis=1))
    error_mm = np.linalg.norm(result.affine.transform_points(points) - truth.transform_points(points), axis=1)
    before_mm = np.linalg.norm(points - truth.transform_points(points), axis=1)
    assert before_mm.mean() > 5.0
    assert error_mm.mean() < 0.5, f"mean error {error_mm.mean():.2f} mm in the liver"


def test_registration_is_deterministic(known_affine_pair):
    reference, floating, reference_liver, floating_liver, _ = known_affine_pair
    settings = affine_only("liver")
    first = register(reference, floating, settings=settings, reference_labels=reference_liver,
                     floating_labels=floating_liver)
    second = register(reference, floating, settings=settings, reference_labels=reference_liver,
                      floating_labels=floating_liver)
    # exact on purpose: the same computation twice in one process must repeat bit for bit
    assert np.array_equal(first.affine.parameters, second.affine.parameters)


def _box(grid: Grid, value: float = 100.0) -> Volume:
    array = np.zeros(grid.shape, dtype=np.float32)
    array[2:-2, 3:-3, 4:-4] = value
    return Volume(array, grid)


def _mask(grid: Grid, values=(1,)) -> LabelVolume:
    array = np.zeros(grid.shape, dtype=np.uint8)
    array[3:-3, 4:-4, 5:-5] = values[0]
    for n, value in enumerate(values[1:]):
        array[4 + n, 6, 7] = value
    return LabelVolume(array, grid)


GRID = Grid((24, 20, 16), (2.0, 2.0, 2.0), (-24.0, -20.0, -16.0))


@pytest.mark.slow
@pytest.mark.parametrize("guidance", ["image", "liver"])
def test_images_300_mm_apart_are_aligned_before_registration(fast_patient, guidance):
    """Scanners put the origin anywhere: a floating scan 300 mm away in world space registers as well as
    the same scan where it is (foreground mass centres for image guidance, liver mass centres else)."""
    reference, scan = fast_patient.reference, fast_patient.floating[0]
    away = Grid(scan.image.grid.size, scan.image.grid.spacing_mm,
                tuple(np.asarray(scan.image.grid.origin_mm) + (0.0, 0.0, 300.0)), scan.image.grid.direction)
    assert not reference.image.grid.overlaps(away)
    moved_image, moved_liver = scan.image.on_grid(scan.image.array, away), scan.liver.on_grid(scan.liver.array, away)
    settings = affine_only(guidance)
    labels = {"reference_labels": reference.liver} | ({} if guidance == "image" else {"floating_labels": moved_liver})
    result = register(reference.image, moved_image, settings=settings, **labels)
    assert result.settings["initial_alignment"].startswith("foreground" if guidance == "image" else "label")
    # the same registration where the scan is: the transforms differ by the 300 mm shift only
    near = register(reference.image, scan.image, settings=settings, reference_labels=reference.liver,
                    **({} if guidance == "image" else {"floating_labels": scan.liver}))
    k, j, i = np.nonzero(reference.liver.array)
    points = reference.liver.grid.index_to_world(np.stack([i, j, k], axis=1))
    shift = np.array([0.0, 0.0, 300.0])
    error_mm = np.linalg.norm(result.affine.transform_points(points) - shift - near.affine.transform_points(points),
                              axis=1)
    assert error_mm.mean() < 1.5, f"{error_mm.mean():.2f} mm apart in the liver"


def test_refuses_nan_voxels():
    image = _box(GRID)
    image.array[5, 5, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        register(_box(GRID), image, settings=preset("image"))


def test_refuses_a_slab_thinner_than_four_coarse_voxels():
    """A 3-slice CT cannot be smoothed to the 8 mm level: refused with its size, not a filter's error."""
    slab = Grid((GRID.size[0], GRID.size[1], 3), GRID.spacing_mm, GRID.origin_mm)
    three_slices = Volume(np.random.default_rng(0).normal(size=slab.shape).astype(np.float32), slab)
    with pytest.raises(InputError, match=r"floating image spans only 6.0 mm .* at least 32 mm along every axis"):
        register(_box(GRID), three_slices, settings=preset("image"))
    coarse = dataclasses.replace(preset("image"), affine=AffineSettings(levels_mm=(20.0, 8.0), iterations=(5, 5)))
    with pytest.raises(InputError, match="reference image spans only .* at least 80 mm"):
        register(_box(GRID), _box(GRID), settings=coarse)


def test_refuses_an_empty_label_map():
    empty = LabelVolume(np.zeros(GRID.shape, dtype=np.uint8), GRID)
    with pytest.raises(InputError, match="floating label map is empty"):
        register(_box(GRID), _box(GRID), settings=preset("liver"), reference_labels=_mask(GRID),
                 floating_labels=empty)


def test_refuses_missing_label_maps():
    with pytest.raises(InputError, match="needs label maps on both"):
        register(_box(GRID), _box(GRID), settings=preset("liver"), reference_labels=_mask(GRID))


def test_refuses_labels_missing_from_one_side():
    with pytest.raises(InputError, match="labels missing from one side: 3"):
        register(_box(GRID), _box(GRID), settings=preset("liver+landmarks"),
                 reference_labels=_mask(GRID, (1, 2, 3)), floating_labels=_mask(GRID, (1, 2)))


def test_refuses_labels_on_another_grid():
    other = Grid(GRID.size, GRID.spacing_mm, (-20.0, -20.0, -16.0))
    with pytest.raises(GeometryMismatchError, match="floating label map and the floating image"):
        register(_box(GRID), _box(GRID), settings=preset("liver"), reference_labels=_mask(GRID),
                 floating_labels=_mask(other))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"guidance": "bones"}, "guidance must be one of"),
        ({"margin_mm": -1.0}, "margin"),
        ({"affine": AffineSettings(samples=10)}, "at least 1000 samples"),
        ({"affine": AffineSettings(levels_mm=(8.0,), iterations=(10, 10))}, "one iteration count per pyramid level"),
        ({"nonrigid": NonRigidSettings(levels_mm=(0.0,), iterations=(10,))}, "spacings must be > 0 mm"),
        ({"nonrigid": NonRigidSettings(image_weight=float("nan"))}, "wI must be a finite number, got nan"),
        ({"nonrigid": NonRigidSettings(rigidity=float("nan"))}, "rigidity must be a finite number"),
        ({"nonrigid": NonRigidSettings(label_weight=float("inf"))}, "wS must be a finite number, got inf"),
        ({"nonrigid": NonRigidSettings(levels_mm=(float("nan"),), iterations=(10,))}, "pyramid spacing"),
        ({"margin_mm": float("nan")}, "margin must be a finite number"),
        ({"working_region": "abdomen"}, "working_region must be one of liver, whole"),
        ({"nonrigid": NonRigidSettings(connectivity=18)}, "connectivity must be 6 or 26, got 18"),
    ],
)
def test_settings_refuse_bad_values(change, message):
    with pytest.raises(InputError, match=message):
        dataclasses.replace(preset("liver"), **change)


def test_preset_refusals():
    with pytest.raises(InputError, match="no label term"):
        preset("image", label_weight=1.0)
    with pytest.raises(InputError, match=">= 0"):
        preset("liver", rigidity=-1.0)
    with pytest.raises(InputError, match="folding weight must be >= 0"):
        preset("liver", folding_weight=-1.0)
    with pytest.raises(InputError, match="unknown weight"):
        preset("liver", alpha=1.0)


def test_landmark_guidance_needs_landmarks():
    with pytest.raises(InputError, match="at least one landmark"):
        register(_box(GRID), _box(GRID), settings=preset("liver+landmarks"), reference_labels=_mask(GRID),
                 floating_labels=_mask(GRID))


def test_guidance_labels_keep_every_landmark_above_the_liver(fast_patient):
    reference = fast_patient.reference
    combined = guidance_labels(reference.liver, reference.landmark_map)
    marks = reference.landmark_map
    assert combined.present_labels() == [1, *(1 + v for v in marks.present_labels())]
    assert np.array_equal(combined.array >= 2, marks.array > 0)  # the paper's landmark class
    assert np.array_equal(combined.array[marks.array > 0], 1 + marks.array[marks.array > 0])
    assert np.array_equal(combined.array > 0, (reference.liver.array > 0) | (marks.array > 0))


@pytest.mark.slow
def test_register_command_writes_transforms_that_carry_the_liver(fast_patient, tmp_path):
    from typer.testing import CliRunner

    from sirtreg.cli import app
    from sirtreg.io import read_labels, write_image
    from sirtreg.metrics import dice
    from sirtreg.register import read_transform

    reference, scan = fast_patient.reference, fast_patient.floating[0]
    files = {name: write_image(volume, tmp_path / f"{name}.nii.gz") for name, volume in (
        ("reference", reference.image), ("reference_liver", reference.liver),
        ("floating", scan.image), ("floating_liver", scan.liver))}
    result = CliRunner().invoke(app, [
        "register", "--reference", str(files["reference"]), "--floating", str(files["floating"]),
        "--reference-liver", str(files["reference_liver"]), "--floating-liver", str(files["floating_liver"]),
        "--affine-only", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} >= {"affine.tfm", "registration.json", "warped_floating.nii.gz",
                                                "warped_liver.nii.gz", "overlay.png"}
    carried = read_labels(out / "warped_liver.nii.gz")
    before = warp(scan.liver, AffineTransform.identity(), reference.liver.grid)
    assert dice(carried.array > 0, reference.liver.array > 0) > dice(before.array > 0, reference.liver.array > 0)
    assert dice(carried.array > 0, reference.liver.array > 0) > 0.93
    assert isinstance(read_transform(out), AffineTransform)
