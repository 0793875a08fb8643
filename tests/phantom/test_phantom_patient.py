"""Acceptance tests of the digital SIRT patient: determinism, known deformation, truth, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.io import read_displacement, read_image
from sirtreg.named_points import Landmarks
from sirtreg.phantom import ORGAN_LABELS, make_patient, write_patient
from sirtreg.resample import sample_at

LUNG = next(k for k, v in ORGAN_LABELS.items() if v == "lung")
SPINAL_CANAL = next(k for k, v in ORGAN_LABELS.items() if v == "spinal canal")


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def fast(fast_patient):
    return fast_patient


@pytest.fixture(scope="module")
def full():
    return make_patient(0, resolution="full")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    first = tmp_path_factory.mktemp("first")
    second = tmp_path_factory.mktemp("second")
    steps = []
    manifest = write_patient(first, seed=3, resolution="fast", progress=lambda s, f: steps.append((s, f)))
    write_patient(second, seed=3, resolution="fast")
    return first, second, manifest, steps


# --- 1. determinism ------------------------------------------------------------------------
@pytest.mark.slow
def test_same_seed_gives_identical_files(written):
    first, second, manifest, _ = written
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert "patient.json" in names and len(names) >= 18
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.slow
def test_different_seeds_give_different_patients(fast):
    other = make_patient(1, resolution="fast")
    assert other.reference.image.array.shape == fast.reference.image.array.shape
    assert not np.array_equal(other.reference.liver.array, fast.reference.liver.array)
    assert other.lesion_volume_ml != fast.lesion_volume_ml
    assert other.deformations["mr_t1"].amplitude_mm != fast.deformations["mr_t1"].amplitude_mm


@pytest.mark.slow
def test_manifest_lists_every_file_with_relative_paths(written):
    folder, _, manifest, steps = written
    on_disk = json.loads((folder / "patient.json").read_text())
    assert on_disk == manifest
    scans = [manifest["reference"], *manifest["floating"]]
    assert [s["name"] for s in scans] == ["maa_ct", "contrast_ct", "mr_t1"]
    assert [s["modality"] for s in scans] == ["CT", "CT", "MR"]
    for scan in scans:
        for key in ("image", "liver", "lesions", "landmark_map", "organs"):
            assert (folder / scan[key]).is_file() and "/" not in scan[key]
        assert set(scan["landmarks_mm"]) == set(manifest["labels"]["landmarks"].values())
    for scan in manifest["floating"]:
        assert (folder / scan["displacement"]).is_file()
        assert "reference" in scan["displacement_convention"]
    spect = manifest["spect"]
    assert (folder / spect["image"]).is_file() and (folder / spect["activity_truth"]).is_file()
    assert set(spect["tumour_to_normal_ratio"]) == set(manifest["labels"]["lesions"].values())
    counts = read_image(folder / spect["image"])
    assert counts.array.sum() == pytest.approx(spect["total_counts"])
    assert steps[-1] == ("done", 1.0) and all(0 <= f <= 1 for _, f in steps)


@pytest.mark.slow
def test_written_displacement_round_trips(written, fast):
    folder, _, manifest, _ = written
    field = read_displacement(folder / manifest["floating"][0]["displacement"])
    assert field.array.shape[-1] == 3 and np.all(np.isfinite(field.array))


# --- 2. the known deformation carries the reference truth onto each floating scan -----------
def _warped_masks(scan, reference):
    """Floating liver and lesion maps sampled at T(x) for the reference voxels near the liver."""
    liver = reference.liver.array.astype(bool)
    k, j, i = np.nonzero(liver)
    grid = reference.image.grid
    start = np.maximum(np.array([i.min(), j.min(), k.min()]) - 4, 0)
    stop = np.minimum(np.array([i.max(), j.max(), k.max()]) + 5, grid.size)
    sl = tuple(slice(a, b) for a, b in zip(start[::-1], stop[::-1]))
    points = grid.crop(start, stop).world_coordinates(np.float64)
    mapped = scan.displacement.transform_points(points)
    return sl, sample_at(scan.liver, mapped), sample_at(scan.lesions, mapped)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["contrast_ct", "mr_t1"])
def test_known_deformation_maps_reference_truth_to_floating_truth(full, name):
    scan = next(s for s in full.floating if s.name == name)
    reference = full.reference
    sl, liver, lesions = _warped_masks(scan, reference)
    assert dice(liver, reference.liver.array[sl]) >= 0.97
    for value, lesion in reference.lesions.labels.items():
        assert dice(lesions == value, reference.lesions.array[sl] == value) >= 0.90, lesion


# --- 3. landmarks agree with the mask centroids in every space -------------------------------
def test_landmarks_agree_with_mask_centroids(fast):
    for scan in fast.scans:
        centroids = Landmarks.from_label_centroids(scan.landmark_map)
        assert set(centroids.names) == set(scan.landmarks.names)
        tolerance = max(scan.image.grid.spacing_mm)
        for name in scan.landmarks.names:
            distance = np.linalg.norm(centroids.point(name) - scan.landmarks.point(name))
            assert distance <= tolerance, (scan.name, name, distance)


def test_floating_landmarks_are_the_mapped_reference_landmarks(fast):
    for scan in fast.floating:
        mapped = scan.displacement.transform_points(fast.reference.landmarks.points_mm)
        assert np.max(np.abs(mapped - scan.landmarks.points_mm)) < 0.1


# --- 4. plausible organs, lesions and SPECT truth -------------------------------------------
def test_lesion_and_liver_volumes_are_plausible(fast):
    reference = fast.reference
    assert len(reference.lesions.labels) >= 3
    for name in reference.lesions.labels.values():
        assert 5.0 <= reference.lesions.volume_ml(name) <= 150.0
        assert 5.0 <= fast.lesion_volume_ml[name] <= 150.0
    assert 1200.0 <= reference.liver.volume_ml(1) <= 2200.0
    assert len(np.unique(reference.organs.array)) >= 20


def test_spect_lung_shunt_and_tumour_to_normal_ratios(fast):
    spect = fast.spect
    assert 0.02 <= spect.lung_shunt_fraction <= 0.08
    activity = spect.activity.array
    assert activity[activity > 0].size and np.all(activity >= 0)
    for ratio in spect.tumour_to_normal.values():
        assert 3.0 <= ratio <= 8.0
    counts = spect.image.array
    assert 2e6 <= counts.sum() <= 5e6 and np.array_equal(counts, np.round(counts))
    # counts in the lungs (shunt plus spill-over from the liver dome) stay a few percent
    lungs = sample_at(fast.reference.organs, spect.image.grid.world_coordinates(np.float64)) == LUNG
    assert 0.01 <= counts[lungs].sum() / counts.sum() <= 0.12


@pytest.mark.slow
def test_spect_activity_truth_matches_stated_ratios(full):
    spect = full.spect
    organs = sample_at(full.reference.organs, spect.activity.grid.world_coordinates(np.float64))
    activity = spect.activity.array
    normal = np.median(activity[organs == next(k for k, v in ORGAN_LABELS.items() if v == "liver")])
    assert normal == pytest.approx(1.0)
    lungs = activity[organs == LUNG].sum()
    assert lungs / activity.sum() == pytest.approx(spect.lung_shunt_fraction, abs=0.01)


# --- 5. the deformation is breathing-like and invertible --------------------------------------
@pytest.mark.parametrize("name", ["contrast_ct", "mr_t1"])
def test_deformation_is_breathing_like_and_invertible(fast, name):
    scan = next(s for s in fast.floating if s.name == name)
    field = scan.displacement
    reference = fast.reference
    liver_points = reference.image.grid.world_coordinates(np.float64)[reference.liver.array.astype(bool)]
    u = field.displacement_at(liver_points)
    assert 10.0 <= np.median(np.abs(u[:, 2])) <= 30.0
    assert np.percentile(np.abs(u[:, 2]), 95) <= 32.0
    # the liver slides against the spine: the spinal canal moves by the patient's small rigid motion only
    canal = reference.image.grid.world_coordinates(np.float64)[reference.organs.array == SPINAL_CANAL]
    assert np.median(np.abs(field.displacement_at(canal)[:, 2])) < np.median(np.abs(u[:, 2])) - 8.0
    gradient = np.stack([np.stack(np.gradient(field.array[..., c], *field.grid.spacing_mm[::-1]), -1)[..., ::-1]
                         for c in range(3)], axis=-2)  # d u_c / d x_a, shape (z, y, x, 3, 3)
    assert np.min(np.linalg.det(np.eye(3) + gradient)) > 0.2
    # fixed-point inversion: x = T(x) + v(T(x)) holds to well under 0.1 mm
    breathing = fast.deformations[name]
    x = field.grid.world_coordinates(np.float64)
    back = breathing.floating_to_reference(x + field.array)
    assert np.max(np.linalg.norm(back - x, axis=-1)) < 0.1


# --- 6. bad input is refused -----------------------------------------------------------------
def test_refuses_non_empty_folder(tmp_path):
    (tmp_path / "something.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match="not empty"):
        write_patient(tmp_path, seed=0, resolution="fast")
    assert [p.name for p in tmp_path.iterdir()] == ["something.txt"]


def test_refuses_unknown_resolution(tmp_path):
    with pytest.raises(InputError, match="resolution"):
        write_patient(tmp_path / "out", resolution="ultra")
    with pytest.raises(InputError, match="resolution"):
        make_patient(0, resolution="ultra")
    assert not (tmp_path / "out").exists()


def test_liver_sliding_weight_of_a_sphere():
    """For a 50 mm sphere 'liver': 1 inside, 0.5 at 5 mm outside the surface, 0 far away."""
    from sirtreg.phantom.deformation import liver_sliding_weight

    def sdf(x, y, z):
        return np.sqrt(x * x + y * y + z * z) - 50

    weight = liver_sliding_weight(sdf, bounds_mm=(np.full(3, -50.0), np.full(3, 50.0)))
    r = np.array([0.0, 30.0, 55.0, 70.0, 400.0], np.float32)
    for axis in range(3):
        points = [np.zeros(5, np.float32)] * 3
        points[axis] = r
        expected = 0.5 * (1 - np.tanh((r - 55) / 15))
        expected[-1] = 0.0  # beyond the table
        assert np.allclose(weight(*points), expected, atol=2e-3)
