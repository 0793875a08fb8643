"""`sirtreg demo`: the whole pipeline on the built-in digital patient.

The demo writes a digital patient (MAA CT, MAA SPECT, a contrast CT and a T1 MR,
each with lesion and landmark contours), then a plan that leaves every liver to
the CNN and registers the CT and the MR with each of the three guidance presets
(image, liver, liver+landmarks) and the non-rigid weights it states, and runs it:
liver segmentation, six registrations, lesions carried onto the MAA CT,
local-deposition doses of 2 GBq of Y-90, tables and the HTML report. Output folder::

    patient/        the digital patient (NIfTI) and its manifest patient.json
    plan.yaml       the plan, an example to copy for a real patient
    run/            what ``sirtreg run plan.yaml -o run`` writes, report.html included
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from sirtreg.io import prepare_output_folder
from sirtreg.progress import Progress, no_progress
from sirtreg.register.config import GUIDANCES

if TYPE_CHECKING:
    from sirtreg.pipeline import Plan

log = logging.getLogger(__name__)

DEMO_ACTIVITY_GBQ = 2.0
DEMO_ISOTOPE = "Y-90"
_PHANTOM_SHARE = 0.1  # of the demo's progress: writing the digital patient
_SHORT = {"image": "image", "liver": "liver", "liver+landmarks": "landmarks"}  # guidance -> id suffix


def demo_plan(patient_dir: Path, manifest: dict) -> Plan:
    """The plan of the digital patient: CNN livers, every floating scan with each guidance preset, and the
    non-rigid weights of each modality and guidance written out (the engine's: on this patient the paper's MR
    optimum for CNN-guided registration, affine only, carries the MR lesions less well)."""
    from sirtreg.pipeline import ContourInput, FloatingInput, Plan, ReferenceInput, SpectInput
    from sirtreg.pipeline.weights import PLAN_SOURCE, default_weights

    def contour(scan: dict, key: str) -> ContourInput:
        return ContourInput(patient_dir / scan[key])

    reference = manifest["reference"]
    floating = tuple(
        FloatingInput(id=f"{scan['modality'].lower()}-{_SHORT[guidance]}", modality=scan["modality"],
                      image=patient_dir / scan["image"], role=scan["name"].replace("_", " "),
                      lesions=contour(scan, "lesions"), landmarks=contour(scan, "landmark_map"), guidance=guidance)
        for scan in manifest["floating"] for guidance in GUIDANCES)
    return Plan(
        reference=ReferenceInput(patient_dir / reference["image"], lesions=contour(reference, "lesions"),
                                 landmarks=contour(reference, "landmark_map")),
        spect=SpectInput(patient_dir / manifest["spect"]["image"], activity_gbq=DEMO_ACTIVITY_GBQ,
                         isotope=DEMO_ISOTOPE, lung_shunt_fraction=manifest["spect"]["lung_shunt_fraction"]),
        floating=floating,
        weights={(entry.modality, entry.guidance): replace(default_weights(entry.guidance), source=PLAN_SOURCE)
                 for entry in floating})


def run_demo(
    outdir: str | os.PathLike[str], *, seed: int = 0, resolution: str = "full", overwrite: bool = False,
    device: str = "cpu", progress: Progress | None = None,
) -> dict[str, Path]:
    """Write the digital patient (``seed``, ``resolution`` "full" or "fast"), its plan and the run into
    ``outdir``; return the main outputs by name (report, results, dose table, plan, patient)."""
    from sirtreg.phantom import write_patient
    from sirtreg.pipeline import run_plan, write_plan

    progress = progress or no_progress
    outdir = prepare_output_folder(outdir, overwrite=overwrite)
    patient_dir = outdir / "patient"
    manifest = write_patient(
        patient_dir, seed=seed, resolution=resolution, overwrite=overwrite,
        progress=lambda step, fraction: progress(f"phantom: {step}", _PHANTOM_SHARE * fraction),
    )
    plan = demo_plan(patient_dir, manifest)
    plan_path = write_plan(plan, outdir / "plan.yaml", overwrite=overwrite)
    result = run_plan(plan, outdir / "run", overwrite=overwrite, device=device,
                      progress=lambda step, fraction: progress(step, _PHANTOM_SHARE + (1 - _PHANTOM_SHARE) * fraction))
    log.info("demo outputs in %s (run of %.0f s)", outdir, result.seconds)
    return {"report": result.report, "results": result.out_dir / "results.json",
            "dose table": result.files["doses"], "plan": plan_path, "patient": patient_dir / "patient.json"}
