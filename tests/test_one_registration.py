"""`sirtreg register`, `sirtreg run` and a study's task register through one entry point
(sirtreg.register.register_guided): for the same pair, guidance and weights they give the same transform, so
the weights a study tunes are what a patient run executes."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.io import read_labels
from sirtreg.register import read_transform
from sirtreg.study import Method, read_manifest
from sirtreg.study.task import Task, register_task
from sirtreg.yaml_input import write_yaml

AFFINE_ONLY = {"wI": 0.0, "wS": 0.0, "rigidity": 1.0}  # the affine stage alone: each registration about a second


def _plan(patient, floating, guidance: str) -> dict:
    reference, spect = patient.reference, patient.spect
    return {"format": "sirtreg-plan", "version": 1,
            "reference": {"image": str(reference.image), "liver": str(reference.liver),
                          "landmarks": str(reference.landmark_map)},
            "spect": {"image": str(spect.image), "activity_gbq": spect.activity_gbq, "isotope": spect.isotope,
                      "lung_shunt_fraction": 0.05},
            "floating": [{"id": "floating", "modality": floating.modality, "image": str(floating.image),
                          "liver": str(floating.liver), "landmarks": str(floating.landmark_map),
                          "guidance": guidance}],
            "weights": {floating.modality: {guidance: AFFINE_ONLY}}}


@pytest.mark.slow(seconds=25)
@pytest.mark.parametrize("guidance", ["image", "liver", "liver+landmarks"])
def test_register_run_and_study_give_the_same_transform(phantom_cohort, tmp_path, guidance):
    cohort = read_manifest(phantom_cohort[0])
    patient = cohort.patients[0]
    reference, floating = patient.reference, patient.floating[-1]  # the MR
    registered = tmp_path / "register"
    result = CliRunner().invoke(app, [
        "register", "--reference", str(reference.image), "--floating", str(floating.image), "-o", str(registered),
        "--guidance", guidance, "--reference-liver", str(reference.liver), "--floating-liver", str(floating.liver),
        "--reference-landmarks", str(reference.landmark_map), "--floating-landmarks", str(floating.landmark_map),
        "--affine-only"])
    assert result.exit_code == 0, result.output

    plan = write_yaml(_plan(patient, floating, guidance), tmp_path / "plan.yaml")
    ran = CliRunner().invoke(app, ["run", str(plan), "-o", str(tmp_path / "run")])
    assert ran.exit_code == 0, ran.output

    method = Method(name="m", guidance=guidance, image_weight=0.0, label_weight=0.0)
    study = register_task(cohort, Task(patient=patient.id, floating=floating.id, method=method), None).result

    transforms = {"register": read_transform(registered), "run": read_transform(tmp_path / "run" / "floating" /
                                                                                "floating" / "transform"),
                  "study": study.affine}
    centre = read_labels(reference.liver).mass_centre_mm()
    points = centre + np.array([[0.0, 0.0, 0.0], [80.0, -60.0, 40.0], [-70.0, 50.0, -30.0]])  # mm, liver and around
    mapped = {name: transform.transform_points(points) for name, transform in transforms.items()}
    assert np.abs(mapped["register"] - points).max() > 1.0  # registered, not left alone
    for name in ("run", "study"):
        assert np.abs(mapped[name] - mapped["register"]).max() < 1e-4, (name, mapped)
