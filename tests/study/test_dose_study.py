"""The dose study's lesion rows where the answer is known: a floating image that is the MAA CT itself."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sirtreg.errors import InputError
from sirtreg.register import quick_settings
from sirtreg.study import LIVER_AFFINE, LIVER_LANDMARKS, Cohort, FloatingImage, Task, read_manifest
from sirtreg.study.dose import dose_comparisons, dose_study_tasks, lesion_dose_rows

FAST = quick_settings()


@pytest.fixture(scope="module")
def cohort(phantom_cohort):
    return read_manifest(phantom_cohort[0])


def _the_maa_ct_as_floating(cohort: Cohort) -> Cohort:
    """The test patient alone, with one floating image: its own MAA CT with its liver, landmarks and lesions."""
    [patient] = [p for p in cohort.patients if p.split == "test"]
    reference = patient.reference
    itself = FloatingImage(id="maa_ct_again", modality="CT", image=reference.image, liver=reference.liver,
                           landmark_map=reference.landmark_map, lesions=reference.lesions)
    return Cohort(patients=(replace(patient, floating=(itself,)),))


def test_lesions_registered_onto_themselves_keep_their_dose(cohort):
    same = _the_maa_ct_as_floating(cohort)
    patient = same.patients[0]
    outcome = lesion_dose_rows(same, Task(patient=patient.id, floating="maa_ct_again", method=LIVER_AFFINE),
                               settings=FAST)
    rows = outcome["rows"]
    assert rows and all(row["error"] is None for row in rows)
    for row in rows:  # the registration of an image to itself is the identity, up to its optimiser's tolerance
        assert row["dsc"] > 0.95, row
        assert abs(row["mean_dose_difference_percent"]) < 1.0, row
        assert abs(row["v70_difference"]) < 1.0 and abs(row["v100_difference"]) < 1.0, row
        assert row["dvh_difference_points"] < 1.0, row
        curves = outcome["dvh"][row["lesion"]]
        assert len(curves["dose_gy"]) >= max(len(curves["reference_percent"]), len(curves["registered_percent"]))
    [comparison] = dose_comparisons(rows, "CT").values()
    assert comparison.metrics["mean dose"].pearson.r > 0.999


def test_only_test_split_images_with_lesions_are_dosed(cohort):
    tasks = dose_study_tasks(cohort, [LIVER_AFFINE, LIVER_LANDMARKS])
    test = [p.id for p in cohort.patients if p.split == "test"]
    assert {task.patient for task in tasks} == set(test) and len(tasks) == 2 * 2  # a CT and an MR, two methods
    without = Cohort(patients=tuple(replace(p, floating=tuple(replace(f, lesions=None) for f in p.floating))
                                    for p in cohort.patients))
    with pytest.raises(InputError, match="no floating image of the test split has lesions"):
        dose_study_tasks(without, [LIVER_AFFINE])
