"""Phantom cohort: folders, manifest read back with the reader, split, progress and refusals."""

from __future__ import annotations

import json

import pytest

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.study import COHORT_MANIFEST_NAME, COMPUTE, read_manifest, write_phantom_cohort


@pytest.fixture(scope="module")
def two_patients(phantom_cohort):
    """A two-patient cohort at fast resolution (seed 0), its manifest path and the progress calls."""
    return phantom_cohort


def test_manifest_reads_back_with_the_expected_counts(two_patients):
    path, _ = two_patients
    assert path.name == COHORT_MANIFEST_NAME
    cohort = read_manifest(path)
    assert [p.id for p in cohort.patients] == ["P01", "P02"]
    assert sorted(p.split for p in cohort.patients) == ["test", "train"]
    assert cohort.registration_counts() == {"CT": 2, "MR": 2}
    assert cohort.registration_counts(split="train") == {"CT": 1, "MR": 1}
    assert [f.id for _, f in cohort.registrations()] == ["contrast_ct", "mr_t1", "contrast_ct", "mr_t1"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["P01", "P02", COHORT_MANIFEST_NAME]


def test_entries_point_at_the_phantom_files(two_patients):
    path, _ = two_patients
    for patient in read_manifest(path).patients:
        folder = path.parent / patient.id
        truth = json.loads((folder / "patient.json").read_text())
        assert patient.reference.image == folder / "maa_ct.nii.gz"
        assert patient.reference.liver == folder / truth["reference"]["liver"]
        assert patient.reference.cnn_liver is None
        assert [(f.modality, f.landmark_map.name) for f in patient.floating] == [
            ("CT", "contrast_ct_landmarks.nii.gz"), ("MR", "mr_t1_landmarks.nii.gz")]
        assert all(f.cnn_liver is None and f.role for f in patient.floating)
        assert patient.spect.image == folder / truth["spect"]["image"]
        assert patient.spect.isotope == "Y-90" and 1.0 <= patient.spect.activity_gbq <= 3.0
        assert patient.spect.lung_shunt_fraction == truth["spect"]["lung_shunt_fraction"]
    seeds = {json.loads((path.parent / p / "patient.json").read_text())["seed"] for p in ("P01", "P02")}
    assert len(seeds) == 2


def test_progress_rises_to_one_and_names_each_patient(two_patients):
    _, steps = two_patients
    fractions = [fraction for _, fraction in steps]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and steps[-1] == ("done", 1.0)
    assert {step.split(":")[0] for step, _ in steps[:-2]} == {"P01", "P02"}


@pytest.mark.slow
def test_compute_cnn_masks_all_test_split_and_overwrite(tmp_path):
    (tmp_path / "stale.txt").write_text("left from before")
    path = write_phantom_cohort(tmp_path, patients=1, resolution="fast", seed=1, train_fraction=0.0,
                                cnn_masks="compute", overwrite=True)
    cohort = read_manifest(path)
    [patient] = cohort.patients
    assert patient.split == "test" and cohort.registration_counts(split="train") == {"CT": 0, "MR": 0}
    assert patient.reference.cnn_liver == COMPUTE
    assert [f.cnn_liver for f in patient.floating] == [COMPUTE, COMPUTE]


def test_a_non_empty_folder_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not empty"):
        write_phantom_cohort(tmp_path, patients=1, resolution="fast")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(("arguments", "message"), [
    ({"patients": 0}, r"patients must be a whole number >= 1, got 0"),
    ({"patients": 2.5}, r"patients must be a whole number >= 1, got 2.5"),
    ({"resolution": "medium"}, r"resolution must be one of full, fast, got 'medium'"),
    ({"train_fraction": 1.5}, r"train_fraction must be in \[0, 1\], got 1.5"),
    ({"cnn_masks": "yes"}, r"cnn_masks must be 'compute' or None, got 'yes'"),
])
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, arguments, message):
    with pytest.raises(InputError, match=message):
        write_phantom_cohort(tmp_path / "out", **{"resolution": "fast", **arguments})
    assert not (tmp_path / "out").exists()
