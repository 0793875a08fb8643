"""The files of a patient run (:func:`sirtreg.pipeline.run.run_plan`): the tables, the dose map, the NIfTI
files, transforms and pictures of each floating image, the DICOM outputs and the results document."""

from __future__ import annotations

import csv
import logging
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sirtreg import __version__
from sirtreg.dosimetry import DoseReport
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.io import (
    Deidentification,
    write_dicom_seg,
    write_dicom_series,
    write_image,
    write_rt_dose,
    write_rtstruct,
)
from sirtreg.io.deidentify import METHOD as DEIDENTIFICATION_METHOD
from sirtreg.io.dicom_seg import read_series_headers
from sirtreg.parallel import worker_pool
from sirtreg.pipeline.carried import REFERENCE_SOURCE, Carried, ScanImage
from sirtreg.pipeline.plan import Plan
from sirtreg.register import write_registration
from sirtreg.report.overlays import Contours, OverlayRow, save_contour_overlays
from sirtreg.report.views import save_registration_views

log = logging.getLogger(__name__)

RESULTS_FORMAT = "sirtreg-run"
RESULTS_VERSION = 1
DOSES_NAME = "doses.csv"
REGISTRATIONS_NAME = "registrations.csv"
REFERENCE_COLOUR, REGISTERED_COLOUR, BEFORE_COLOUR = "#ff3b30", "#34c759", "#ffcc00"


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({k: ("" if row.get(k) is None else row.get(k)) for k in columns} for row in rows)
    return path


def registration_row(item: Carried) -> dict[str, Any]:
    weights = item.weights
    check = item.liver_check
    row: dict[str, Any] = {"floating": item.entry.id, "modality": item.entry.modality, "role": item.entry.role,
                           "guidance": item.guidance, "planned_guidance": check.planned if check else item.guidance,
                           "liver": item.liver_source, "liver_flag": "; ".join(check.reasons) if check else "",
                           "affine_liver_dsc": check.affine_dsc if check else None,
                           "image_weight": weights.image_weight,
                           "label_weight": weights.label_weight, "rigidity": weights.rigidity,
                           "weights_from": weights.source, "seconds": round(item.result.seconds, 3),
                           "nonrigid": item.result.displacement is not None}
    for when in ("before", "after"):
        metrics = item.quality.get(when, {})
        for key in ("liver_dsc", "liver_msd_mm", "mean_mcd_mm", "rmsd_mm"):
            row[f"{key}_{when}"] = metrics.get(key)
    dscs = [v["dsc"] for v in item.lesion_overlap.values()]
    row["lesions"] = len(item.lesions.labels) if item.lesions is not None else 0
    row["mean_lesion_dsc_to_maa_ct"] = float(np.mean(dscs)) if dscs else None
    return row


def dicom_reference(plan: Plan, reference: Volume) -> tuple[Path, str] | None:
    """(folder, SeriesInstanceUID) of the MAA CT when it is a DICOM series, else None."""
    uid = str(reference.meta.get("SeriesInstanceUID", ""))
    if not uid:
        return None
    path = plan.reference.image
    return (path if path.is_dir() else path.parent), uid


def write_dicom_outputs(plan: Plan, reference: ScanImage, dose: Volume, carried: Sequence[Carried], staging: Path,
                 files: dict[str, Path], deidentification: Deidentification | None) -> None:
    """RT Dose, lesion SEGs and registered series, all in the MAA CT's frame of reference and study."""
    found = dicom_reference(plan, reference.volume)
    if found is None:
        log.info("the MAA CT is not a DICOM series: no DICOM outputs")
        return
    folder, uid = found
    header = read_series_headers(folder, series=uid)[0]
    files["dicom rt dose"] = write_rt_dose(dose, staging / "dicom" / "rt_dose.dcm", reference=folder, series=uid,
                                           series_description="sirtreg MAA dose (local deposition)",
                                           deidentification=deidentification)
    for item in carried:
        where = staging / "dicom" / "floating" / item.entry.id
        if item.lesions is not None and item.lesions.present_labels():
            described = {"series_description": f"sirtreg lesions of {item.entry.id}"[:64],
                         "algorithm_name": "sirtreg registration", "deidentification": deidentification}
            files[f"{item.entry.id} dicom seg"] = write_dicom_seg(item.lesions, folder, where / "lesions_seg.dcm",
                                                                  series=uid, **described)
            files[f"{item.entry.id} dicom rtstruct"] = write_rtstruct(
                item.lesions, folder, where / "lesions_rtstruct.dcm", series=uid, **described)
        elif item.lesions is not None:
            log.warning("floating %s: no lesion voxel left on the MAA CT; no DICOM SEG written", item.entry.id)
        files[f"{item.entry.id} dicom series"] = write_dicom_series(
            item.image, where / "registered", modality=item.entry.modality,
            series_description=f"sirtreg {item.entry.id} registered to MAA CT"[:64],
            frame_of_reference_uid=str(header.FrameOfReferenceUID),
            study_instance_uid=str(header.get("StudyInstanceUID", "")) or None,
            patient_name=str(header.get("PatientName", "")), patient_id=str(header.get("PatientID", "")),
            deidentification=deidentification)


def largest_lesion_centre(lesions: LabelVolume | None) -> np.ndarray | None:
    if lesions is None or not lesions.array.any():
        return None
    counts = np.bincount(lesions.array.ravel().astype(np.int64))
    counts[0] = 0
    return LabelVolume.from_mask(lesions.array == int(np.argmax(counts)), lesions.grid).mass_centre_mm()


def write_floating(item: Carried, floating: ScanImage, reference: ScanImage, spect_on_ct: Volume, folder: Path,
                    files: dict[str, Path]) -> None:
    """The NIfTI files, transform and pictures of one floating image."""
    key = item.entry.id
    volumes = {"registered image": (item.image, "registered_image.nii.gz"),
               "registered liver": (item.liver, "registered_liver.nii.gz"),
               "registered lesions": (item.lesions, "registered_lesions.nii.gz"),
               "registered landmarks": (item.landmarks, "registered_landmarks.nii.gz"),
               "CNN liver": (floating.liver if floating.liver_source == "CNN" else None, "liver_cnn.nii.gz")}
    folder.mkdir(parents=True, exist_ok=True)
    with worker_pool(2) as pool:  # the NIfTI files (compressed without the GIL) while the pictures are drawn
        written = {f"{key} {name}": pool.submit(write_image, volume, folder / filename)
                   for name, (volume, filename) in volumes.items() if volume is not None}
        write_floating_pictures(item, reference, spect_on_ct, folder, files)
        files.update({name: future.result() for name, future in written.items()})
    files[f"{key} transform"] = folder / "transform"
    write_registration(item.result, folder / "transform", extra={"floating": key, "guidance": item.guidance})


def write_floating_pictures(item: Carried, reference: ScanImage, spect_on_ct: Volume, folder: Path,
                             files: dict[str, Path]) -> None:
    """The contour overlays and the checkerboard of one floating image."""
    key = item.entry.id
    lesion_sets = [Contours("lesions drawn on the MAA CT", reference.lesions, REFERENCE_COLOUR),
                   Contours(f"lesions of {key}, registered", item.lesions, REGISTERED_COLOUR)]
    centre = largest_lesion_centre(item.lesions)
    liver_centre = reference.liver.mass_centre_mm()
    rows = [OverlayRow("MAA CT, lesions", reference.volume, lesion_sets, centre),
            OverlayRow("SPECT, lesions", spect_on_ct, lesion_sets, centre),
            OverlayRow("MAA CT, liver before registration", reference.volume,
                       [Contours("MAA CT liver", reference.liver, REFERENCE_COLOUR),
                        Contours(f"{key} liver, not registered", item.liver_before, BEFORE_COLOUR, "dashed")],
                       liver_centre),
            OverlayRow("MAA CT, liver after registration", reference.volume,
                       [Contours("MAA CT liver", reference.liver, REFERENCE_COLOUR),
                        Contours(f"{key} liver, registered", item.liver, REGISTERED_COLOUR)], liver_centre)]
    files[f"{key} overlays"] = save_contour_overlays(rows, folder / "overlays.png")
    files[f"{key} checkerboard"] = save_registration_views(reference.volume, item.image, folder / "checkerboard.png",
                                                           reference_labels=reference.liver, warped_labels=item.liver)


def write_dvh(report: DoseReport, source: str, path: Path) -> Path | None:
    structures = [report.structures[0], *(s for s in report.structures[1:] if s.name.split("/", 1)[0] == source)]
    if len(structures) == 1:
        return None
    return report.plot_dvh(structures, path, title_prefix=f"{source}: ")


def write_tables(plan: Plan, reference: ScanImage, report: DoseReport, rows: list[dict[str, Any]],
                  carried: Sequence[Carried], staging: Path, files: dict[str, Path],
                  deidentification: Deidentification | None = None) -> None:
    """Dose map, MAA CT liver, DVHs, DICOM outputs and the two CSV tables."""
    files["dose"] = write_image(report.dose, staging / "dose.nii.gz")
    if report.kernel_dose is not None:
        files["dose by voxel S values"] = write_image(report.kernel_dose, staging / "dose_vsv.nii.gz")
    files["MAA CT liver"] = write_image(reference.liver, staging / "maa_ct" / "liver.nii.gz")
    for source, path in [(REFERENCE_SOURCE, staging / "maa_ct" / "dvh.png"),
                         *((e.id, staging / "floating" / e.id / "dvh.png") for e in plan.floating)]:
        written = write_dvh(report, source, path)
        if written is not None:
            files[f"{source} dvh"] = written
    write_dicom_outputs(plan, reference, report.dose, carried, staging, files, deidentification)
    files["doses"] = write_csv(rows, staging / DOSES_NAME, list(rows[0]))
    registration_rows = [registration_row(item) for item in carried]
    columns = list(registration_rows[0]) if registration_rows else ["floating"]
    files["registrations"] = write_csv(registration_rows, staging / REGISTRATIONS_NAME, columns)


def results_document(plan: Plan, reference: ScanImage, report: DoseReport, rows: list[dict[str, Any]],
             carried: Sequence[Carried], device: str, started_utc: datetime,
             deidentification: Deidentification | None = None) -> dict[str, Any]:
    """The results.json document, less timings and files (de-identified: no input paths, no dates)."""
    hidden = deidentification is not None
    return {
        "format": RESULTS_FORMAT, "version": RESULTS_VERSION,
        "software": {"sirtreg": __version__, "python": platform.python_version(), "torch": torch.__version__},
        "started_utc": None if hidden else started_utc.isoformat(timespec="seconds"),
        "finished_utc": None if hidden else datetime.now(UTC).isoformat(timespec="seconds"), "device": device,
        "deidentified": None if deidentification is None else {"pseudonym": deidentification.pseudonym,
                                                                "dicom": DEIDENTIFICATION_METHOD},
        "plan": plan.to_dict(withhold_paths=hidden),
        "reference": {"grid": reference.volume.grid.describe(), "liver": reference.liver_source},
        "dose": report.summary(), "doses": rows,
        "dvh": [{"structure": s.name, "dose_gy": s.dvh.dose_gy.tolist(),
                 "cumulative_percent": s.dvh.cumulative_percent.tolist()}
                for s in report.structures if s.dvh is not None],
        "registrations": [{**registration_row(item), "quality": item.quality,
                           "lesion_overlap": item.lesion_overlap, "registration": item.result.summary(),
                           "landmarks": list(item.landmarks.labels.values()) if item.landmarks is not None else []}
                          for item in carried],
    }
