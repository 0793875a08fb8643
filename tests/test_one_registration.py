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

GUIDANCES = {"image": "image", "liver": "liver", "landmarks": "liver+landmarks"}  # the run's floating ids
AFFINE_ONLY = {"wI": 0.0, "wS": 0.0, "rigidity": 1.0}  # the affine stage alone: each registration about a second


def _plan(patient, floating) -> dict:
    """One run that registers the floating image once with each guidance, affine only."""
    reference, spect = patient.reference, patient.spect
    return {"format": "sirtreg-plan", "version": 1,
            "reference": {"image": str(reference.image), "liver": str(reference.liver),
                          "landmarks": str(reference.landmark_map)},
            "spect": {"image": str(spect.image), "activity_gbq": spect.activity_gbq, "isotope": spect.isotope,
                      "lung_shunt_fraction": 0.05},
            "floating": [{"id": name, "modality": floating.modality, "image": str(floating.image),
                          "liver": str(floating.liver), "landmarks": str(floating.landmark_map),
                          "guidance": guidance} for name, guidance in GUIDANCES.items()],
            "weights": {floating.modality: dict.fromkeys(GUIDANCES.values(), AFFINE_ONLY)}}


@pytest.mark.slow(seconds=20)
def test_register_run_and_study_give_the_same_transform(phantom_cohort, tmp_path):
    cohort = read_manifest(phantom_cohort[0])
    patient = cohort.patients[0]
    reference, floating = patient.reference, patient.floating[-1]  # the MR
    plan = write_yaml(_plan(patient, floating), tmp_path / "plan.yaml")
    ran = CliRunner().invoke(app, ["run", str(plan), "-o", str(tmp_path / "run")])
    assert ran.exit_code == 0, ran.output
    centre = read_labels(reference.liver).mass_centre_mm()
    points = centre + np.array([[0.0, 0.0, 0.0], [80.0, -60.0, 40.0], [-70.0, 50.0, -30.0]])  # mm, liver and around

    for name, guidance in GUIDANCES.items():
        registered = tmp_path / f"register-{name}"
        result = CliRunner().invoke(app, [
            "register", "--reference", str(reference.image), "--floating", str(floating.image), "-o",
            str(registered), "--guidance", guidance, "--reference-liver", str(reference.liver), "--floating-liver",
            str(floating.liver), "--reference-landmarks", str(reference.landmark_map), "--floating-landmarks",
            str(floating.landmark_map), "--affine-only"])
        assert result.exit_code == 0, result.output
        method = Method(name="m", guidance=guidance, image_weight=0.0, label_weight=0.0)
        study = register_task(cohort, Task(patient=patient.id, floating=floating.id, method=method), None).result
        transforms = {"register": read_transform(registered), "study": study.affine,
                      "run": read_transform(tmp_path / "run" / "floating" / name / "transform")}
        mapped = {where: transform.transform_points(points) for where, transform in transforms.items()}
        assert np.abs(mapped["register"] - points).max() > 1.0  # registered, not left alone
        for where in ("run", "study"):
            assert np.abs(mapped[where] - mapped["register"]).max() < 1e-4, (guidance, where, mapped)
