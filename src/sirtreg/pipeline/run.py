"""One patient end to end: from a plan to one output folder (``sirtreg run``).

:func:`run_plan` checks everything it can before any long work (the output folder, the
device, the plan's files from their headers, contour formats), then reads every image and
contour, segments the liver with the CNN where the plan gives no liver contour, registers
each floating image to the MAA CT with its guidance, carries its lesions, liver and
landmarks onto the MAA CT, computes the local-deposition dose map on the SPECT grid and the
dose statistics of the liver and of every lesion, and writes the results.

Lesions keep the image they were drawn on: those of floating image ``ct1`` are named
``ct1/<lesion name>``, those drawn on the MAA CT itself ``MAA CT/<lesion name>``; lesions of
several floating images are never merged. Where the MAA CT holds a lesion of the same name,
the registered lesion is compared to it (DSC, mass-centre distance). A lesion whose registrations
disagree, or differ from the MAA CT's lesion, is flagged (:mod:`sirtreg.pipeline.agreement`): in the
report's first section, the ``flag`` column of the dose table and ``lesion_agreement`` in results.json.

The output folder is written as a unit (:class:`~sirtreg.output_folder.OutputFolder`: built as
``.<name>.partial`` beside it under a lock, listed with checksums in ``sirtreg-manifest.json`` and
renamed into place at the end, so an interrupted run leaves no half-written folder and a second
run into the same folder is refused while the first works)::

    results.json                 everything: plan, dose summary, tables, lesion agreement, settings, timings, files
    doses.csv                    one row per structure (liver, lesions): volume, mean dose, Vx, Dx, DSC, flag
    registrations.csv            one row per floating image: guidance, weights and their source, time, quality
    report.html                  self-contained report (pictures embedded)
    dose.nii.gz                  absorbed dose (Gy) on the SPECT grid
    maa_ct/liver.nii.gz          the MAA CT liver used (given or CNN)
    maa_ct/dvh.png               DVHs of the liver and the lesions drawn on the MAA CT
    floating/<id>/               per floating image: registered_image, registered_liver,
                                 registered_lesions, registered_landmarks (.nii.gz, on the MAA CT grid),
                                 liver_cnn.nii.gz (its CNN liver, on its own grid), transform/
                                 (affine.tfm, displacement.nii.gz, registration.json), overlays.png,
                                 checkerboard.png, dvh.png
    dicom/                       where the MAA CT is a DICOM series: rt_dose.dcm (on the SPECT grid,
                                 frame of reference of the MAA CT), floating/<id>/lesions_seg.dcm
                                 (SEG on the MAA CT series), floating/<id>/registered/ (the registered
                                 image as a new series in the MAA CT's frame of reference and study)

Contours may be label maps, 3D Slicer segmentations, DICOM SEGs or RTSTRUCTs; an RTSTRUCT's ROIs are
rasterised onto the voxels of the image they were drawn on (:func:`sirtreg.io.rtstruct.read_rtstruct`).

De-identified (``deidentify``): the DICOM outputs follow the basic confidentiality profile with the
retain-UIDs option (:mod:`sirtreg.io.deidentify`; PatientName and PatientID are the pseudonym, they still
reference the MAA CT series and frame of reference); results.json gives what each input is ("<DICOM
folder>", "<NIfTI file>") instead of its path, whose names often hold the patient's name or ID, and has
no start and end times; the report shows no date. No output holds a DICOM patient attribute otherwise.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from sirtreg import __version__
from sirtreg.dosimetry import DoseReport, dose_report, plot_dvh
from sirtreg.errors import InputError, SirtregError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.output_folder import OutputFolder
from sirtreg.io import (
    Deidentification,
    deidentification_for,
    read_image,
    write_dicom_seg,
    write_dicom_series,
    write_image,
    write_rt_dose,
)
from sirtreg.io.deidentify import METHOD as DEIDENTIFICATION_METHOD
from sirtreg.io.dicom_seg import read_series_headers
from sirtreg.io.contours import read_contour
from sirtreg.metrics import dice
from sirtreg.pipeline.plan import (
    CONTOUR_ROLES,
    ContourInput,
    FloatingInput,
    Plan,
    check_plan,
)
from sirtreg.pipeline.agreement import (
    LesionAgreement,
    agreement_section,
    lesion_agreement,
    lesion_doses,
    row_flag,
)
from sirtreg.pipeline.liver_flags import CnnLivers, GuidanceCheck
from sirtreg.pipeline.weights import RunWeights
from sirtreg.progress import Progress
from sirtreg.register import (
    AffineTransform,
    ReferenceChannels,
    RegistrationResult,
    guidance_labels,
    liver_dsc,
    mapped_points,
    preset,
    register,
    registration_quality,
    warp,
    write_registration,
)
from sirtreg.register.guidance import check_inputs as check_registration_inputs
from sirtreg.report.html import Picture, Section, Table, Text, write_html
from sirtreg.report.overlays import Contours, OverlayRow, save_contour_overlays
from sirtreg.report.views import save_registration_views
from sirtreg.resample import resample
from sirtreg.segment import segment_liver
from sirtreg.yaml_input import refusal

log = logging.getLogger(__name__)

RESULTS_FORMAT = "sirtreg-run"
RESULTS_VERSION = 1
RESULTS_NAME = "results.json"
REPORT_NAME = "report.html"
DOSES_NAME = "doses.csv"
REGISTRATIONS_NAME = "registrations.csv"
REFERENCE_SOURCE = "MAA CT"  # the source of structures drawn on the MAA CT; not a valid floating id
REFERENCE_COLOUR, REGISTERED_COLOUR, BEFORE_COLOUR = "#ff3b30", "#34c759", "#ffcc00"
_STAGE_WEIGHTS = {"check": 0.2, "read": 1.0, "segment": 3.0, "register": 7.0, "dose": 1.0, "write": 1.0,
                  "report": 1.0}  # relative durations; segment and register once per image
_REGISTRATION_SHARE = 0.85  # of a floating image's stage: the registration; the rest carries and writes


# --- what a run returns -----------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RunResult:
    """What :func:`run_plan` wrote.

    Attributes
    ----------
    out_dir : the output folder (absolute).
    files : output name -> absolute path of every file or folder written (see the module docstring).
    results : the document written as ``results.json``.
    seconds : wall-clock time of the whole run, s.
    """

    out_dir: Path
    files: Mapping[str, Path]
    results: Mapping[str, Any]
    seconds: float

    @property
    def report(self) -> Path:
        """The HTML report."""
        return self.out_dir / REPORT_NAME

    @property
    def doses(self) -> list[dict[str, Any]]:
        """One row per structure (liver and lesions): ``source``, ``structure``, dose statistics."""
        return list(self.results["doses"])


# --- inputs -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Image:
    """One CT or MR image of the plan with its contours, all on the image's own grid."""

    name: str  # the floating id, or REFERENCE_SOURCE
    volume: Volume
    modality: str
    liver: LabelVolume | None
    lesions: LabelVolume | None
    landmarks: LabelVolume | None
    liver_source: str = "given"  # "given" or "CNN"


@dataclass(frozen=True, eq=False)
class _Carried:
    """A floating image after registration: what was carried onto the MAA CT grid, and how well."""

    entry: FloatingInput
    guidance: str
    weights: RunWeights
    liver_source: str
    result: RegistrationResult
    image: Volume
    liver_before: LabelVolume  # the floating liver on the MAA CT grid without any transform
    liver: LabelVolume
    lesions: LabelVolume | None  # names "<id>/<lesion name>"
    landmarks: LabelVolume | None
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)  # "before"/"after" -> metrics
    lesion_overlap: dict[str, dict[str, float | None]] = field(default_factory=dict)  # structure -> dsc, mcd_mm
    liver_check: GuidanceCheck | None = None  # the CNN livers behind the registration, if any


# --- progress and timing ----------------------------------------------------------------
class _Stages:
    """Maps the progress of weighted stages (some repeated, e.g. one registration per image) onto 0..1."""

    def __init__(self, progress: Progress | None, counts: Mapping[str, int]) -> None:
        self._progress = progress
        weights = {stage: weight * counts.get(stage, 1) for stage, weight in _STAGE_WEIGHTS.items()}
        total = sum(weights.values())
        self._span = {stage: weight / total for stage, weight in weights.items()}
        self._start, start = {}, 0.0
        for stage, span in self._span.items():
            self._start[stage] = start
            start += span
        self._counts = dict(counts)

    def report(self, stage: str, fraction: float = 0.0, *, step: str = "", index: int = 0) -> None:
        """Stage ``stage`` (its ``index``-th repetition) is ``fraction`` done."""
        if self._progress is None:
            return
        count = max(1, self._counts.get(stage, 1))
        done = (index + min(max(fraction, 0.0), 1.0)) / count
        self._progress(f"{stage}: {step}" if step else stage, self._start[stage] + self._span[stage] * done)

    def callback(self, stage: str, *, index: int = 0, label: str = "", share: float = 1.0) -> Progress:
        """A ``progress(step, fraction)`` callback for library code doing the first ``share`` of a stage."""
        return lambda step, fraction: self.report(stage, share * fraction, step=f"{label} {step}".strip(),
                                                  index=index)


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = round(time.perf_counter() - start, 3)


# --- checks before any long work --------------------------------------------------------
def _contours(plan: Plan) -> list[tuple[str, ContourInput]]:
    """(where, contour) of every contour in the plan."""
    entries = [("reference", plan.reference), *((f"floating {f.id}", f) for f in plan.floating)]
    return [(f"{where}, {role}", getattr(entry, role)) for where, entry in entries for role in CONTOUR_ROLES
            if getattr(entry, role) is not None]


def _input_paths(plan: Plan) -> list[Path]:
    images = [plan.reference.image, plan.spect.image, *(f.image for f in plan.floating)]
    return [Path(os.path.abspath(p)) for p in [*images, *(c.path for _, c in _contours(plan))]]


def _check_device(device: str) -> None:
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}") from None
    if kind not in ("cpu", "cuda"):
        raise InputError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but PyTorch sees no CUDA GPU; use --device cpu")


def check_run(plan: Plan, out_dir: str | os.PathLike[str], *, overwrite: bool = False, device: str = "cpu") -> Path:
    """Everything :func:`run_plan` checks before any long work; returns the absolute output folder.

    Refuses (:class:`~sirtreg.errors.OutputExistsError`) an output folder that is a file, is not
    empty (unless ``overwrite``; then only an earlier sirtreg output holding nothing else), holds an
    input, lies inside an input folder or cannot be written; refuses (:class:`~sirtreg.errors.InputError`)
    an unknown or missing device, and a plan whose files do not pass :func:`~sirtreg.pipeline.plan.check_plan`.
    """
    output = _output_folder(plan, out_dir, overwrite)
    output.check()
    _check_device(device)
    check_plan(plan)
    return output.path


def _output_folder(plan: Plan, out_dir: str | os.PathLike[str], overwrite: bool) -> OutputFolder:
    return OutputFolder(out_dir, overwrite=overwrite, inputs=_input_paths(plan), command="run")


# --- reading ----------------------------------------------------------------------------
def _read_image(name: str, path: Path, series: str | None, modality: str,
                contours: Mapping[str, ContourInput | None], read: dict[tuple[str, str | None, str], Volume]) -> _Image:
    """One image of the plan with its contours; a scan listed several times (e.g. to compare guidance presets)
    is read once (``read``: the images read so far, by path, series and modality)."""
    source = (os.path.abspath(path), series, modality)
    if source not in read:
        read[source] = read_image(path, modality=modality, series=series)
    volume = read[source]
    found = {role: read_contour(c.path, c.segments, volume, role) if c is not None else None for role, c in contours.items()}
    return _Image(name, volume, modality, found["liver"], found["lesions"], found["landmarks"])


def _read_inputs(plan: Plan) -> tuple[_Image, Volume, list[_Image]]:
    """The MAA CT, the SPECT and the floating images, with their contours."""
    def contours(entry: Any) -> dict[str, ContourInput | None]:
        return {role: getattr(entry, role) for role in CONTOUR_ROLES}

    read: dict[tuple[str, str | None, str], Volume] = {}
    reference = _read_image(REFERENCE_SOURCE, plan.reference.image, plan.reference.series, "CT",
                            contours(plan.reference), read)
    spect = read_image(plan.spect.image, modality="NM", series=plan.spect.series)
    floating = [_read_image(f.id, f.image, f.series, f.modality, contours(f), read) for f in plan.floating]
    return reference, spect, floating


def _check_inputs(plan: Plan, reference: _Image, floating: Sequence[_Image]) -> None:
    """What the voxels tell, before any long work: empty contours, images the engine refuses."""
    problems = []
    for image in (reference, *floating):
        where = "reference" if image is reference else f"floating {image.name}"
        if image.liver is not None and not image.liver.array.any():
            problems.append(f"{where}, liver: the liver contour is empty")
    for entry, image in zip(plan.floating, floating):
        if plan.guidance(entry) == "liver+landmarks":
            problems += [f"{where}, landmarks: no landmark voxel, which liver+landmarks guidance needs"
                         for where, marks in (("reference", reference.landmarks), (f"floating {entry.id}",
                                                                                      image.landmarks))
                         if marks is not None and not marks.array.any()]
        try:
            check_registration_inputs(reference.volume, image.volume, preset("image"), None, None)
        except SirtregError as exc:
            problems.append(f"floating {entry.id}, image: {exc}")
    if problems:
        raise refusal(sorted(set(problems), key=problems.index), what="plan")


# --- registration and carrying ----------------------------------------------------------
class _ReferenceSide:
    """What every registration of a run shares: the MAA CT's guidance labels (with and without landmarks)
    and its pyramid channels."""

    def __init__(self, reference: _Image) -> None:
        self.reference = reference
        self.channels = ReferenceChannels()
        self._labels: dict[bool, LabelVolume] = {}

    def labels(self, with_landmarks: bool) -> LabelVolume:
        if with_landmarks not in self._labels:
            assert self.reference.liver is not None
            self._labels[with_landmarks] = guidance_labels(
                self.reference.liver, self.reference.landmarks if with_landmarks else None)
        return self._labels[with_landmarks]


def _register(shared: _ReferenceSide, floating: _Image, guidance: str, weights: RunWeights, device: str,
              progress: Progress) -> RegistrationResult:
    settings = replace(preset(guidance, **weights.preset_weights()), device=device)  # type: ignore[arg-type]
    with_landmarks = guidance == "liver+landmarks"
    floating_labels = None if guidance == "image" else guidance_labels(
        floating.liver, floating.landmarks if with_landmarks else None)
    return register(shared.reference.volume, floating.volume, settings=settings,
                    reference_labels=shared.labels(with_landmarks), floating_labels=floating_labels,
                    progress=progress, reference_channels=shared.channels)


def _lesion_overlap(reference: LabelVolume | None, carried: LabelVolume, names: Mapping[int, str]
                    ) -> dict[str, dict[str, float | None]]:
    """DSC and mass-centre distance (mm) of each carried lesion to the MAA CT lesion of the same name."""
    if reference is None:
        return {}
    by_name = {name: value for value, name in reference.labels.items()}
    boxes = {"carried": ndimage.find_objects(carried.array), "reference": ndimage.find_objects(reference.array)}
    overlap = {}
    for value, structure in carried.labels.items():
        name = names[value]
        if name not in by_name:
            continue
        # both lesions lie in the union of their boxes: DSC and mass centres from that box alone
        found = [box[label - 1] if label <= len(box) else None
                 for box, label in ((boxes["reference"], by_name[name]), (boxes["carried"], value))]
        found = [box for box in found if box is not None] or [(slice(0, 1),) * 3]
        start = np.array([min(box[axis].start for box in found) for axis in (2, 1, 0)])
        stop = np.array([max(box[axis].stop for box in found) for axis in (2, 1, 0)])
        window = (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))
        mask = carried.array[window] == value
        reference_mask = reference.array[window] == by_name[name]
        grid = carried.grid.crop(start, stop)
        centres = [LabelVolume.from_mask(m, grid).mass_centre_mm() for m in (reference_mask, mask)]
        distance = float(np.linalg.norm(centres[0] - centres[1])) if all(c is not None for c in centres) else None
        overlap[structure] = {"dsc": dice(reference_mask, mask), "mcd_mm": distance}
    return overlap


def _carry(reference: _Image, floating: _Image, entry: FloatingInput, guidance: str, weights: RunWeights,
           result: RegistrationResult, liver_before: LabelVolume) -> _Carried:
    """Warp the floating image and its contours onto the MAA CT grid; measure what can be measured."""
    grid = reference.volume.grid
    transform = result.transform
    points = mapped_points(transform, grid)  # T(x) once for every warp onto the MAA CT
    image = warp(floating.volume, transform, grid, fill_value=float(floating.volume.array.min()), points=points)
    liver = warp(floating.liver, transform, grid, label_mode="one-hot", points=points)
    lesions = overlap = None
    if floating.lesions is not None:
        warped = warp(floating.lesions, transform, grid, label_mode="one-hot", points=points)
        lesions = LabelVolume(warped.array, grid,
                              labels={v: f"{entry.id}/{n}" for v, n in floating.lesions.labels.items()})
        overlap = _lesion_overlap(reference.lesions, lesions, floating.lesions.labels)
    landmarks = (None if floating.landmarks is None
                 else warp(floating.landmarks, transform, grid, label_mode="one-hot", points=points))
    quality = {}
    if reference.liver_source == "given" and floating.liver_source == "given":  # truth exists
        with_landmarks = reference.landmarks is not None and floating.landmarks is not None
        for when, applied in (("before", AffineTransform.identity()), ("after", result.transform)):
            quality[when] = registration_quality(
                applied, reference_liver=reference.liver, floating_liver=floating.liver,
                reference_landmarks=reference.landmarks if with_landmarks else None,
                floating_landmarks=floating.landmarks if with_landmarks else None).as_dict()
    return _Carried(entry, guidance, weights, floating.liver_source, result, image, liver_before, liver, lesions,
                    landmarks, quality, overlap or {})


# --- dose -------------------------------------------------------------------------------
def _dose(plan: Plan, reference: _Image, spect: Volume, carried: Sequence[_Carried]) -> DoseReport:
    lesions = [item.lesions for item in carried if item.lesions is not None]
    if reference.lesions is not None:
        named = LabelVolume(reference.lesions.array, reference.lesions.grid,
                            labels={v: f"{REFERENCE_SOURCE}/{n}" for v, n in reference.lesions.labels.items()})
        lesions.insert(0, named)
    return dose_report(spect, reference.liver, plan.spect.activity_gbq, isotope=plan.spect.isotope,
                       lesions=lesions, lung_shunt_fraction=plan.spect.lung_shunt_fraction or 0.0)


def _dose_rows(report: DoseReport, carried: Sequence[_Carried]) -> list[dict[str, Any]]:
    """The structure table with its source (the image it was drawn on) and the DSC to the MAA CT lesion."""
    overlap = {name: values for item in carried for name, values in item.lesion_overlap.items()}
    rows = []
    for structure, row in zip(report.structures, report.rows()):
        is_liver = structure is report.structures[0]
        source = REFERENCE_SOURCE if is_liver else structure.name.split("/", 1)[0]
        match = overlap.get(structure.name, {})
        rows.append({"source": source, "role": "liver" if is_liver else "lesion", **row,
                     "dsc_to_maa_ct_lesion": match.get("dsc"), "mcd_mm_to_maa_ct_lesion": match.get("mcd_mm")})
    return rows


def _image_names(plan: Plan) -> dict[str, str]:
    """floating id -> the ids of every floating entry of the same scan, joined: the scan's name in tables."""
    groups: dict[tuple[str, str | None], list[str]] = {}
    for entry, source in zip(plan.floating, _image_sources(plan)[1:], strict=True):
        groups.setdefault(source, []).append(entry.id)
    return {floating_id: ", ".join(ids) for ids in groups.values() for floating_id in ids}


def _agreement(plan: Plan, reference: _Image, carried: Sequence[_Carried], rows: list[dict[str, Any]]
               ) -> list[LesionAgreement]:
    """Each carried lesion's agreement across the registrations of its scan and with the MAA CT's lesion; sets
    the ``flag`` of every dose row (the reasons, "" if none)."""
    doses = {row["structure"]: row for row in rows if row["role"] == "lesion"}
    images = _image_names(plan)
    carried_doses = []
    for item in carried:
        if item.lesions is not None:  # labels "<id>/<name>"; ids hold no "/"
            labels = item.lesions.labels
            carried_doses += lesion_doses(item.lesions, {v: n.split("/", 1)[1] for v, n in labels.items()},
                                          {v: doses.get(n, {}) for v, n in labels.items()}, source=item.entry.id,
                                          image=images[item.entry.id])
    drawn = {} if reference.lesions is None else {lesion.name: lesion for lesion in lesion_doses(
        reference.lesions, reference.lesions.labels,
        {v: doses.get(f"{REFERENCE_SOURCE}/{n}", {}) for v, n in reference.lesions.labels.items()},
        source=REFERENCE_SOURCE, image=REFERENCE_SOURCE)}
    agreements = lesion_agreement(carried_doses, drawn)
    by_lesion = {(a.image, a.name): a for a in agreements}
    for row in rows:
        carried_row = row["role"] == "lesion" and row["source"] != REFERENCE_SOURCE
        row["flag"] = row_flag(by_lesion.get((images[row["source"]], row["structure"].split("/", 1)[1])),
                               row["source"]) if carried_row else ""
    return agreements


def _by_lesion(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The liver first, then the rows of each lesion name together (the MAA CT's first), in order of appearance."""
    def name(row: Mapping[str, Any]) -> str:
        return row["structure"].split("/", 1)[1]

    lesions = [row for row in rows if row["role"] == "lesion"]
    order = list(dict.fromkeys(name(row) for row in lesions))
    return [*(row for row in rows if row["role"] != "lesion"),
            *sorted(lesions, key=lambda row: (order.index(name(row)), row["source"] != REFERENCE_SOURCE))]


# --- writing ----------------------------------------------------------------------------
def _write_csv(rows: Sequence[Mapping[str, Any]], path: Path, columns: Sequence[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({k: ("" if row.get(k) is None else row.get(k)) for k in columns} for row in rows)
    return path


def _registration_row(item: _Carried) -> dict[str, Any]:
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


def _dicom_reference(plan: Plan, reference: Volume) -> tuple[Path, str] | None:
    """(folder, SeriesInstanceUID) of the MAA CT when it is a DICOM series, else None."""
    uid = str(reference.meta.get("SeriesInstanceUID", ""))
    if not uid:
        return None
    path = plan.reference.image
    return (path if path.is_dir() else path.parent), uid


def _write_dicom(plan: Plan, reference: _Image, dose: Volume, carried: Sequence[_Carried], staging: Path,
                 files: dict[str, Path], deidentification: Deidentification | None) -> None:
    """RT Dose, lesion SEGs and registered series, all in the MAA CT's frame of reference and study."""
    found = _dicom_reference(plan, reference.volume)
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
            files[f"{item.entry.id} dicom seg"] = write_dicom_seg(
                item.lesions, folder, where / "lesions_seg.dcm", series=uid,
                series_description=f"sirtreg lesions of {item.entry.id}"[:64], algorithm_name="sirtreg registration",
                deidentification=deidentification)
        elif item.lesions is not None:
            log.warning("floating %s: no lesion voxel left on the MAA CT; no DICOM SEG written", item.entry.id)
        files[f"{item.entry.id} dicom series"] = write_dicom_series(
            item.image, where / "registered", modality=item.entry.modality,
            series_description=f"sirtreg {item.entry.id} registered to MAA CT"[:64],
            frame_of_reference_uid=str(header.FrameOfReferenceUID),
            study_instance_uid=str(header.get("StudyInstanceUID", "")) or None,
            patient_name=str(header.get("PatientName", "")), patient_id=str(header.get("PatientID", "")),
            deidentification=deidentification)


def _largest_lesion_centre(lesions: LabelVolume | None) -> np.ndarray | None:
    if lesions is None or not lesions.array.any():
        return None
    counts = np.bincount(lesions.array.ravel().astype(np.int64))
    counts[0] = 0
    return LabelVolume.from_mask(lesions.array == int(np.argmax(counts)), lesions.grid).mass_centre_mm()


def _write_floating(item: _Carried, floating: _Image, reference: _Image, spect_on_ct: Volume, folder: Path,
                    files: dict[str, Path]) -> None:
    """The NIfTI files, transform and pictures of one floating image."""
    key = item.entry.id
    volumes = {"registered image": (item.image, "registered_image.nii.gz"),
               "registered liver": (item.liver, "registered_liver.nii.gz"),
               "registered lesions": (item.lesions, "registered_lesions.nii.gz"),
               "registered landmarks": (item.landmarks, "registered_landmarks.nii.gz"),
               "CNN liver": (floating.liver if floating.liver_source == "CNN" else None, "liver_cnn.nii.gz")}
    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(2) as pool:  # the NIfTI files (compressed without the GIL) while the pictures are drawn
        written = {f"{key} {name}": pool.submit(write_image, volume, folder / filename)
                   for name, (volume, filename) in volumes.items() if volume is not None}
        _write_floating_pictures(item, reference, spect_on_ct, folder, files)
        files.update({name: future.result() for name, future in written.items()})
    files[f"{key} transform"] = folder / "transform"
    write_registration(item.result, folder / "transform", extra={"floating": key, "guidance": item.guidance})


def _write_floating_pictures(item: _Carried, reference: _Image, spect_on_ct: Volume, folder: Path,
                             files: dict[str, Path]) -> None:
    """The contour overlays and the checkerboard of one floating image."""
    key = item.entry.id
    lesion_sets = [Contours("lesions drawn on the MAA CT", reference.lesions, REFERENCE_COLOUR),
                   Contours(f"lesions of {key}, registered", item.lesions, REGISTERED_COLOUR)]
    centre = _largest_lesion_centre(item.lesions)
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


def _write_dvh(report: DoseReport, source: str, path: Path) -> Path | None:
    structures = [report.structures[0], *(s for s in report.structures[1:] if s.name.split("/", 1)[0] == source)]
    if len(structures) == 1:
        return None
    return plot_dvh(structures, path, title=f"{source}: {report.dose_map.isotope.name} local deposition",
                    thresholds_gy=report.vx_gy)


# --- the report -------------------------------------------------------------------------
_DOSE_FORMATS = {"volume (mL)": ".2f", "mean (Gy)": ".1f", "V70 (%)": ".1f", "V100 (%)": ".1f",
                 "DSC to MAA CT lesion": ".2f", "MCD (mm)": ".1f"}


def _dose_table(rows: Sequence[Mapping[str, Any]], source: str | None = None) -> Table:
    chosen = [r for r in rows if source is None or r["source"] == source or r["role"] == "liver"]
    return Table(
        ["image", "structure", "volume (mL)", "mean (Gy)", "V70 (%)", "V100 (%)", "DSC to MAA CT lesion",
         "MCD (mm)", "flagged", "note"],
        [[r["source"], r["structure"], r["volume_ml"], r["mean_gy"], r.get("V70_percent"), r.get("V100_percent"),
          r["dsc_to_maa_ct_lesion"], r["mcd_mm_to_maa_ct_lesion"], "yes" if r.get("flag") else "", r["error"]]
         for r in chosen],
        formats=_DOSE_FORMATS,
        note="Vx: % of the structure's volume receiving at least x Gy. DSC and MCD (mass-centre distance) compare "
             "a registered lesion with the lesion of the same name drawn on the MAA CT, where there is one. Why a "
             "lesion is flagged: see the first section.")


def _quality_table(item: _Carried) -> Table:
    rows = []
    for key, label in (("liver_dsc", "liver DSC"), ("liver_msd_mm", "liver MSD (mm)"),
                       ("mean_mcd_mm", "mean landmark MCD (mm)"), ("rmsd_mm", "RMSD (mm)")):
        rows.append([label, item.quality["before"].get(key), item.quality["after"].get(key)])
    guided = "the liver" + (" and landmarks" if item.guidance == "liver+landmarks" else "")
    return Table(["metric", "before registration", "after registration"], rows, title="registration quality",
                 formats={"before registration": ".3g", "after registration": ".3g"},
                 note=f"Against the contours given in the plan. With {item.guidance} guidance these contours "
                      f"({guided}) also guided the registration, so they are not an independent test."
                      if item.guidance != "image" else "Against the contours given in the plan.")


def _parameter_rows(plan: Plan, carried: Sequence[_Carried], reference: _Image, device: str) -> list[list[Any]]:
    spect = plan.spect
    rows: list[list[Any]] = [
        ["isotope", spect.isotope], ["activity (GBq)", spect.activity_gbq],
        ["lung shunt fraction", spect.lung_shunt_fraction if spect.lung_shunt_fraction is not None else "not given (0)"],
        ["MAA CT liver", reference.liver_source], ["device", device],
    ]
    for item in carried:
        folding = item.result.settings.get("nonrigid", {}).get("folding_weight")
        chosen = "chosen" if item.entry.guidance is not None else "default"
        rows.append([f"{item.entry.id}: guidance", f"{item.guidance} ({chosen}); liver {item.liver_source}"])
        rows.append([f"{item.entry.id}: non-rigid weights", f"{item.weights.describe()}; folding weight {folding}"])
    return rows


def _report_sections(plan: Plan, reference: _Image, report: DoseReport, rows: Sequence[Mapping[str, Any]],
                     agreements: Sequence[LesionAgreement], livers: CnnLivers, carried: Sequence[_Carried],
                     files: Mapping[str, Path], timings: Mapping[str, float], device: str) -> list[Section]:
    summary = report.summary()
    liver = report.structures[0]
    mean = f"{liver.mean_gy:.1f} Gy" if liver.mean_gy is not None else "not evaluated"
    facts = (f"{summary['isotope']}, {plan.spect.activity_gbq:.4g} GBq administered, "
             f"{summary['liver_activity_gbq']:.4g} GBq to the liver; liver {liver.volume_ml:.0f} mL "
             f"({reference.liver_source}), mean liver dose {mean}, lung dose {summary['lung_dose_gy']:.1f} Gy; "
             f"{100 * summary['counts_inside_fraction']:.1f} % of the SPECT counts inside the liver.")
    items: list[Any] = [Text(facts), _dose_table(_by_lesion(rows))]
    items += [Text(f"warning: {w}") for w in summary["warnings"]]
    if "MAA CT dvh" in files:
        items.append(Picture.from_file(files["MAA CT dvh"], title="DVH: lesions drawn on the MAA CT"))
    sections = [agreement_section(agreements, livers.summary()), Section("Absorbed dose (local deposition)", items)]
    for item in carried:
        key = item.entry.id
        described = f"{item.entry.modality}" + (f", {item.entry.role}" if item.entry.role else "")
        parts: list[Any] = [Text(f"{item.guidance} guidance, liver {item.liver_source}, registered in "
                                 f"{item.result.seconds:.1f} s; {item.weights.describe()}.")]
        if item.liver_check is not None and item.liver_check.flagged:
            instead = (f" Registered with {item.guidance} guidance instead of the planned {item.liver_check.planned}."
                       if item.guidance != item.liver_check.planned else "")
            parts.append(Text(f"warning: flagged CNN liver: {'; '.join(item.liver_check.reasons)}.{instead}"))
        if item.quality:
            parts.append(_quality_table(item))
        parts.append(Picture.from_file(
            files[f"{key} overlays"], title="contours",
            caption="Red: drawn on the MAA CT; green: carried over by the registration; yellow dashed: the "
                    "floating liver where it lies without registration. Slices through the largest registered "
                    "lesion (lesion rows) and the MAA CT liver (liver rows); the SPECT is shown on the MAA CT grid."))
        if item.lesions is not None:
            parts.append(_dose_table(rows, key))
        if f"{key} dvh" in files:
            parts.append(Picture.from_file(files[f"{key} dvh"], title="DVH"))
        parts.append(Picture.from_file(files[f"{key} checkerboard"], title="checkerboard",
                                       caption="Top: MAA CT and registered image in alternate tiles; bottom: the "
                                               "registered image with the MAA CT liver (red) and its own (green)."))
        sections.append(Section(f"Floating image {key} ({described})", parts))
    sections.append(Section("Parameters", [Table(["parameter", "value"],
                                                 _parameter_rows(plan, carried, reference, device))]))
    timing_rows = [[name, seconds] for name, seconds in timings.items()]
    sections.append(Section("Software and timings", [
        Table(["software", "version"], [["sirtreg", __version__], ["Python", platform.python_version()],
                                        ["PyTorch", torch.__version__], ["NumPy", np.__version__]]),
        Table(["step", "seconds"], timing_rows, formats={"seconds": ".1f"}),
    ]))
    return sections


# --- the run ----------------------------------------------------------------------------
def _relative(files: Mapping[str, Path], folder: Path) -> dict[str, str]:
    return {name: path.relative_to(folder).as_posix() for name, path in files.items()}


def _image_sources(plan: Plan) -> list[tuple[str, str | None]]:
    """(absolute path, series) of the MAA CT and of each floating image, in plan order: equal for one scan
    listed several times (e.g. to compare guidance presets)."""
    return [(os.path.abspath(entry.image), entry.series) for entry in (plan.reference, *plan.floating)]


def _segment_missing(images: Sequence[_Image], sources: Sequence[tuple[str, str | None]], names: Sequence[str],
                     device: str, stages: _Stages, timings: dict[str, float], checks: CnnLivers) -> list[_Image]:
    """The images, each with a liver: where the plan gives none, the CNN's (once per scan), checked (``names``:
    each image's scan name)."""
    done: list[_Image] = []
    livers: dict[tuple[str, str | None], LabelVolume] = {}
    for image, source, name in zip(images, sources, names, strict=True):
        if image.liver is None:
            if source not in livers:
                with _timed(timings, f"segment {image.name}"):
                    livers[source] = segment_liver(
                        image.volume, modality=image.modality.lower(), device=device,
                        progress=stages.callback("segment", index=len(livers), label=f"{image.name} liver"))
                log.info("%s: liver segmented by the CNN (%.0f mL)", image.name, livers[source].volume_ml(1))
                check = checks.check(name, livers[source])
                if check.flagged:
                    log.warning("%s: the CNN liver is flagged: %s", name, "; ".join(check.reasons))
            image = replace(image, liver=livers[source], liver_source="CNN")
        done.append(image)
    return done


def _register_checked(plan: Plan, shared: _ReferenceSide, entry: FloatingInput, image: _Image, livers: CnnLivers,
                      scan: str, device: str, progress: Progress) -> tuple[str, RunWeights, RegistrationResult]:
    """Register one floating image with its planned guidance, or with image guidance where the plan says so for
    flagged CNN livers (checked before, and after the affine stage); returns (guidance, weights, result)."""
    planned = plan.guidance(entry)
    scans = [name for name, side in ((REFERENCE_SOURCE, shared.reference), (scan, image)) if side.liver_source == "CNN"]
    guidance = livers.guidance(planned, scans) if scans else planned
    weights = plan.weights_for(entry, guidance)
    result = _register(shared, image, guidance, weights, device, progress)
    if scans and guidance != "image":
        assert shared.reference.liver is not None and image.liver is not None
        dsc = liver_dsc(result.affine, reference_liver=shared.reference.liver, floating_liver=image.liver)
        if livers.after_affine(entry.id, planned, scans, dsc) != guidance:
            log.warning("floating %s: its CNN liver is flagged; registering again with image guidance", entry.id)
            guidance, weights = "image", plan.weights_for(entry, "image")
            result = _register(shared, image, guidance, weights, device, progress)
    elif scans:
        livers.unmeasured(entry.id, planned, guidance, scans)
    log.info("floating %s: %s registration in %.1f s, %s", entry.id, guidance, result.seconds, weights.describe())
    return guidance, weights, result


def _register_all(plan: Plan, reference: _Image, floating: Sequence[_Image], spect: Volume, staging: Path,
                  files: dict[str, Path], device: str, stages: _Stages, timings: dict[str, float],
                  livers: CnnLivers) -> list[_Carried]:
    """Register every floating image, carry its contours onto the MAA CT and write its outputs."""
    spect_on_ct = resample(spect, reference.volume.grid)
    shared = _ReferenceSide(reference)
    unregistered: dict[int, LabelVolume] = {}  # the floating livers on the MAA CT grid, without transform
    names = _image_names(plan)
    carried = []
    for index, (entry, image) in enumerate(zip(plan.floating, floating)):
        with _timed(timings, f"register {entry.id}"):
            guidance, weights, result = _register_checked(
                plan, shared, entry, image, livers, names[entry.id], device,
                stages.callback("register", index=index, label=entry.id, share=_REGISTRATION_SHARE))
        with _timed(timings, f"carry {entry.id}"):
            if id(image.liver) not in unregistered:  # one per floating liver (a scan listed several times)
                unregistered[id(image.liver)] = resample(image.liver, reference.volume.grid, label_mode="one-hot")
            item = replace(_carry(reference, image, entry, guidance, weights, result, unregistered[id(image.liver)]),
                           liver_check=livers.of(entry.id))
            _write_floating(item, image, reference, spect_on_ct, staging / "floating" / entry.id, files)
        carried.append(item)
        stages.report("register", 1.0, step=f"{entry.id} carried", index=index)
    return carried


def _write_tables(plan: Plan, reference: _Image, report: DoseReport, rows: list[dict[str, Any]],
                  carried: Sequence[_Carried], staging: Path, files: dict[str, Path],
                  deidentification: Deidentification | None = None) -> None:
    """Dose map, MAA CT liver, DVHs, DICOM outputs and the two CSV tables."""
    files["dose"] = write_image(report.dose, staging / "dose.nii.gz")
    files["MAA CT liver"] = write_image(reference.liver, staging / "maa_ct" / "liver.nii.gz")
    for source, path in [(REFERENCE_SOURCE, staging / "maa_ct" / "dvh.png"),
                         *((e.id, staging / "floating" / e.id / "dvh.png") for e in plan.floating)]:
        written = _write_dvh(report, source, path)
        if written is not None:
            files[f"{source} dvh"] = written
    _write_dicom(plan, reference, report.dose, carried, staging, files, deidentification)
    files["doses"] = _write_csv(rows, staging / DOSES_NAME, list(rows[0]))
    registration_rows = [_registration_row(item) for item in carried]
    columns = list(registration_rows[0]) if registration_rows else ["floating"]
    files["registrations"] = _write_csv(registration_rows, staging / REGISTRATIONS_NAME, columns)


def _results(plan: Plan, reference: _Image, report: DoseReport, rows: list[dict[str, Any]],
             carried: Sequence[_Carried], device: str, started_utc: datetime,
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
        "registrations": [{**_registration_row(item), "quality": item.quality,
                           "lesion_overlap": item.lesion_overlap, "registration": item.result.summary(),
                           "landmarks": list(item.landmarks.labels.values()) if item.landmarks is not None else []}
                          for item in carried],
    }


def run_plan(plan: Plan, out_dir: str | os.PathLike[str], *, overwrite: bool = False, device: str = "cpu",
             progress: Progress | None = None, deidentify: bool = False, pseudonym: str | None = None) -> RunResult:
    """Run one patient's plan end to end and write every output into ``out_dir`` (see the module docstring).

    Parameters
    ----------
    plan : the patient's inputs (:func:`~sirtreg.pipeline.plan.read_plan`).
    out_dir : the output folder: new or empty; with ``overwrite``, a non-empty one is replaced as a
        whole once the new results are complete.
    overwrite : replace a non-empty output folder.
    device : "cpu" or "cuda", for the CNN and the registration.
    progress : called as ``progress(step, fraction)``, fraction of the whole run in [0, 1].
    deidentify : strip patient identifiers from every output (see the module docstring).
    pseudonym : PatientName and PatientID of the de-identified DICOM outputs (default "ANONYMOUS");
        only with ``deidentify``.

    Returns
    -------
    What was written (:class:`RunResult`).

    Raises :class:`~sirtreg.errors.SirtregError` subclasses for bad input before any long work
    (see :func:`check_run`; empty contours and images the registration refuses are found right
    after reading, before the CNN and the registrations). On any error or interruption the
    output folder is left as it was.
    """
    started, started_utc = time.perf_counter(), datetime.now(UTC)
    timings: dict[str, float] = {}
    deidentification = deidentification_for(deidentify, pseudonym)
    with _timed(timings, "check"):
        out_dir = check_run(plan, out_dir, overwrite=overwrite, device=device)
    sources = _image_sources(plan)
    missing = len({source for source, entry in zip(sources, (plan.reference, *plan.floating)) if entry.liver is None})
    stages = _Stages(progress, {"segment": missing, "register": len(plan.floating)})
    stages.report("check", 1.0)
    with _output_folder(plan, out_dir, overwrite) as output:
        staging = output.staging
        files: dict[str, Path] = {}
        with _timed(timings, "read"):
            reference, spect, floating = _read_inputs(plan)
            _check_inputs(plan, reference, floating)
        stages.report("read", 1.0)
        livers = CnnLivers(plan.flagged_cnn_liver)
        names = [REFERENCE_SOURCE, *(_image_names(plan)[entry.id] for entry in plan.floating)]
        reference, *floating = _segment_missing([reference, *floating], sources, names, device, stages, timings,
                                                livers)
        carried = _register_all(plan, reference, floating, spect, staging, files, device, stages, timings, livers)
        with _timed(timings, "dose"):
            report = _dose(plan, reference, spect, carried)
            rows = _dose_rows(report, carried)
            agreements = _agreement(plan, reference, carried, rows)
        stages.report("dose", 1.0)
        with _timed(timings, "write"):
            _write_tables(plan, reference, report, rows, carried, staging, files, deidentification)
        stages.report("write", 1.0)
        with _timed(timings, "report"):
            sections = _report_sections(plan, reference, report, rows, agreements, livers, carried, files, timings,
                                        device)
            when = (f"{started_utc:%Y-%m-%d %H:%M} UTC" if deidentification is None
                    else f"de-identified ({deidentification.pseudonym})")
            files["report"] = write_html(staging / REPORT_NAME, "sirtreg run report", sections,
                                         subtitle=f"sirtreg {__version__}, {when}, {len(carried)} floating image(s)")
        files["results"] = staging / RESULTS_NAME
        seconds = round(time.perf_counter() - started, 3)
        results = {**_results(plan, reference, report, rows, carried, device, started_utc, deidentification),
                   "lesion_agreement": [{**asdict(a), "flagged": a.flagged} for a in agreements],
                   "cnn_livers": livers.as_dict(),
                   "timings_s": timings, "seconds": seconds, "files": _relative(files, staging)}
        files["results"].write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    stages.report("report", 1.0, step="done")
    log.info("run finished in %.1f s; report %s", seconds, out_dir / REPORT_NAME)
    return RunResult(out_dir, {name: out_dir / path for name, path in _relative(files, staging).items()},
                     results, seconds)
