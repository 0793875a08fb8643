"""`sirtreg demo`: the pipeline on the built-in digital patient.

So far it writes the digital patient, a picture of every scan with its true
lesion contours, and the absorbed dose of the MAA-CT lesions for 2 GBq of Y-90;
the CNN, the three registrations and the report join as the pipeline lands.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from sirtreg.dosimetry import dose_report, write_dose_outputs
from sirtreg.io import prepare_output_folder, read_image, read_labels
from sirtreg.progress import Progress, no_progress
from sirtreg.report.views import Panel, save_orthogonal_views

log = logging.getLogger(__name__)

DEMO_ACTIVITY_GBQ = 2.0


def run_demo(
    outdir: str | os.PathLike[str], *, seed: int = 0, overwrite: bool = False, progress: Progress | None = None
) -> dict[str, Path]:
    """Write the digital patient (seed) into ``outdir`` and an overview PNG; return the outputs by name."""
    from sirtreg.phantom import write_patient

    progress = progress or no_progress
    outdir = prepare_output_folder(outdir, overwrite=overwrite)
    patient_dir = outdir / "patient"
    manifest = write_patient(
        patient_dir, seed=seed, overwrite=overwrite,
        progress=lambda step, fraction: progress(f"phantom: {step}", 0.8 * fraction),
    )
    progress("overview picture", 0.8)
    panels = [
        Panel("MAA CT (reference)", read_image(patient_dir / manifest["reference"]["image"], modality="CT"),
              read_labels(patient_dir / manifest["reference"]["lesions"])),
    ]
    for scan in manifest["floating"]:
        panels.append(Panel(f"{scan['name']} (floating)",
                            read_image(patient_dir / scan["image"], modality=scan["modality"]),
                            read_labels(patient_dir / scan["lesions"])))
    overview = save_orthogonal_views(panels, outdir / "overview.png")
    progress("dose", 0.9)
    reference = manifest["reference"]
    lesion_names = {int(k): v for k, v in manifest["labels"]["lesions"].items()}
    report = dose_report(
        read_image(patient_dir / manifest["spect"]["image"], modality="NM"),
        read_labels(patient_dir / reference["liver"], labels={1: "liver"}), DEMO_ACTIVITY_GBQ, isotope="y90",
        lesions=[read_labels(patient_dir / reference["lesions"], labels=lesion_names)],
        lung_shunt_fraction=manifest["spect"]["lung_shunt_fraction"],
    )
    dose_files = write_dose_outputs(report, outdir / "dose", overwrite=overwrite)
    progress("done", 1.0)
    log.info("demo outputs in %s", outdir)
    return {"patient": patient_dir / "patient.json", "overview": overview, "dose table": dose_files["structures.csv"],
            "DVH": dose_files["dvh.png"]}
