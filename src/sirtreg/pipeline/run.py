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
    dose_vsv.nii.gz              the dose by voxel S values, where the plan asks for it (voxel_s_values)
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

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from sirtreg import __version__
from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.io import deidentification_for
from sirtreg.output_folder import OutputFolder
from sirtreg.pipeline.agreement import agreement_section
from sirtreg.pipeline.carried import REFERENCE_SOURCE, Carried, ScanImage
from sirtreg.pipeline.liver_flags import CnnLivers
from sirtreg.pipeline.plan import CONTOUR_ROLES, ContourInput, FloatingInput, Plan
from sirtreg.pipeline.plan_checks import check_plan
from sirtreg.pipeline.run_doses import (
    by_lesion,
    dose_rows,
    image_names,
    image_sources,
    lesion_agreements,
    lesion_overlap,
    run_dose,
)
from sirtreg.pipeline.run_inputs import check_inputs, read_inputs
from sirtreg.pipeline.run_outputs import results_document, write_floating, write_tables
from sirtreg.pipeline.weights import RunWeights
from sirtreg.progress import Progress
from sirtreg.register import (
    AffineTransform,
    Annotated,
    GuidedReference,
    RegistrationResult,
    RegistrationSettings,
    liver_dsc,
    mapped_points,
    preset,
    register_guided,
    registration_quality,
    warp,
)
from sirtreg.report.html import write_html
from sirtreg.report.run_report import run_report_sections
from sirtreg.resample import resample
from sirtreg.segment import segment_liver

log = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
REPORT_NAME = "report.html"
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
    an unknown or missing device, and a plan whose files do not pass :func:`~sirtreg.pipeline.plan_checks.check_plan`.
    """
    output = _output_folder(plan, out_dir, overwrite)
    output.check()
    _check_device(device)
    check_plan(plan)
    return output.path


def _output_folder(plan: Plan, out_dir: str | os.PathLike[str], overwrite: bool) -> OutputFolder:
    return OutputFolder(out_dir, overwrite=overwrite, inputs=_input_paths(plan), command="run")


# --- registration and carrying ----------------------------------------------------------
class _ReferenceSide:
    """What every registration of a run shares: the MAA CT with its contours, and its guidance labels and
    pyramid channels (a :class:`~sirtreg.register.GuidedReference`)."""

    def __init__(self, reference: ScanImage) -> None:
        self.reference = reference
        self.guided = GuidedReference(Annotated(reference.volume, reference.liver, reference.landmarks))


def preset_settings(guidance: str, weights: RunWeights, device: str) -> RegistrationSettings:
    """The engine settings of one registration of a run: the guidance's preset with the plan's weights."""
    return replace(preset(guidance, **weights.preset_weights()), device=device)  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunTools:
    """What a run calls for its long work, each replaceable (a test passes quick settings or a stand-in CNN).

    ``settings(guidance, weights, device)``: one registration's engine settings; ``segment_liver``,
    ``register`` and ``write_html``: with the signatures of :func:`~sirtreg.segment.segment_liver`,
    :func:`~sirtreg.register.register_guided` and :func:`~sirtreg.report.html.write_html`;
    ``read_inputs(plan)``: (MAA CT, SPECT, floating images), as :func:`~sirtreg.pipeline.run_inputs.read_inputs`.
    """

    settings: Callable[[str, RunWeights, str], RegistrationSettings] = preset_settings
    segment_liver: Callable[..., LabelVolume] = segment_liver
    read_inputs: Callable[[Plan], tuple[ScanImage, Volume, list[ScanImage]]] = read_inputs
    register: Callable[..., RegistrationResult] = register_guided
    write_html: Callable[..., Path] = write_html


def _register(shared: _ReferenceSide, floating: ScanImage, guidance: str, weights: RunWeights, device: str,
              progress: Progress, tools: RunTools) -> RegistrationResult:
    return tools.register(shared.guided, Annotated(floating.volume, floating.liver, floating.landmarks),
                          tools.settings(guidance, weights, device), progress=progress)


def _carry(reference: ScanImage, floating: ScanImage, entry: FloatingInput, guidance: str, weights: RunWeights,
           result: RegistrationResult, liver_before: LabelVolume) -> Carried:
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
        overlap = lesion_overlap(reference.lesions, lesions, floating.lesions.labels)
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
    return Carried(entry, guidance, weights, floating.liver_source, result, image, liver_before, liver, lesions,
                    landmarks, quality, overlap or {})


# --- the run ----------------------------------------------------------------------------
def _relative(files: Mapping[str, Path], folder: Path) -> dict[str, str]:
    return {name: path.relative_to(folder).as_posix() for name, path in files.items()}


def _segment_missing(images: Sequence[ScanImage], sources: Sequence[tuple[str, str | None]], names: Sequence[str],
                     device: str, stages: _Stages, timings: dict[str, float], checks: CnnLivers,
                     segment: Callable[..., LabelVolume]) -> list[ScanImage]:
    """The images, each with a liver: where the plan gives none, the CNN's (once per scan), checked (``names``:
    each image's scan name)."""
    done: list[ScanImage] = []
    livers: dict[tuple[str, str | None], LabelVolume] = {}
    for image, source, name in zip(images, sources, names, strict=True):
        if image.liver is None:
            if source not in livers:
                with _timed(timings, f"segment {image.name}"):
                    livers[source] = segment(
                        image.volume, modality=image.modality.lower(), device=device,
                        progress=stages.callback("segment", index=len(livers), label=f"{image.name} liver"))
                log.info("%s: liver segmented by the CNN (%.0f mL)", image.name, livers[source].volume_ml(1))
                check = checks.check(name, livers[source])
                if check.flagged:
                    log.warning("%s: the CNN liver is flagged: %s", name, "; ".join(check.reasons))
            image = replace(image, liver=livers[source], liver_source="CNN")
        done.append(image)
    return done


def _register_checked(plan: Plan, shared: _ReferenceSide, entry: FloatingInput, image: ScanImage, livers: CnnLivers,
                      scan: str, device: str, progress: Progress,
                      tools: RunTools) -> tuple[str, RunWeights, RegistrationResult]:
    """Register one floating image with its planned guidance, or with image guidance where the plan says so for
    flagged CNN livers (checked before, and after the affine stage); returns (guidance, weights, result)."""
    planned = plan.guidance(entry)
    scans = [name for name, side in ((REFERENCE_SOURCE, shared.reference), (scan, image)) if side.liver_source == "CNN"]
    guidance = livers.guidance(planned, scans) if scans else planned
    weights = plan.weights_for(entry, guidance)
    result = _register(shared, image, guidance, weights, device, progress, tools)
    if scans and guidance != "image":
        assert shared.reference.liver is not None and image.liver is not None
        dsc = liver_dsc(result.affine, reference_liver=shared.reference.liver, floating_liver=image.liver)
        if livers.after_affine(entry.id, planned, scans, dsc) != guidance:
            log.warning("floating %s: its CNN liver is flagged; registering again with image guidance", entry.id)
            guidance, weights = "image", plan.weights_for(entry, "image")
            result = _register(shared, image, guidance, weights, device, progress, tools)
    elif scans:
        livers.unmeasured(entry.id, planned, guidance, scans)
    log.info("floating %s: %s registration in %.1f s, %s", entry.id, guidance, result.seconds, weights.describe())
    return guidance, weights, result


def _register_all(plan: Plan, reference: ScanImage, floating: Sequence[ScanImage], spect: Volume, staging: Path,
                  files: dict[str, Path], device: str, stages: _Stages, timings: dict[str, float],
                  livers: CnnLivers, tools: RunTools) -> list[Carried]:
    """Register every floating image, carry its contours onto the MAA CT and write its outputs."""
    spect_on_ct = resample(spect, reference.volume.grid)
    shared = _ReferenceSide(reference)
    unregistered: dict[int, LabelVolume] = {}  # the floating livers on the MAA CT grid, without transform
    names = image_names(plan)
    carried = []
    for index, (entry, image) in enumerate(zip(plan.floating, floating)):
        with _timed(timings, f"register {entry.id}"):
            guidance, weights, result = _register_checked(
                plan, shared, entry, image, livers, names[entry.id], device,
                stages.callback("register", index=index, label=entry.id, share=_REGISTRATION_SHARE), tools)
        with _timed(timings, f"carry {entry.id}"):
            if id(image.liver) not in unregistered:  # one per floating liver (a scan listed several times)
                unregistered[id(image.liver)] = resample(image.liver, reference.volume.grid, label_mode="one-hot")
            item = replace(_carry(reference, image, entry, guidance, weights, result, unregistered[id(image.liver)]),
                           liver_check=livers.of(entry.id))
            write_floating(item, image, reference, spect_on_ct, staging / "floating" / entry.id, files)
        carried.append(item)
        stages.report("register", 1.0, step=f"{entry.id} carried", index=index)
    return carried


def run_plan(plan: Plan, out_dir: str | os.PathLike[str], *, overwrite: bool = False, device: str = "cpu",
             progress: Progress | None = None, deidentify: bool = False, pseudonym: str | None = None,
             tools: RunTools | None = None) -> RunResult:
    """Run one patient's plan end to end and write every output into ``out_dir`` (see the module docstring).

    Parameters
    ----------
    plan : the patient's inputs (:func:`~sirtreg.pipeline.plan_reader.read_plan`).
    out_dir : the output folder: new or empty; with ``overwrite``, a non-empty one is replaced as a
        whole once the new results are complete.
    overwrite : replace a non-empty output folder.
    device : "cpu" or "cuda", for the CNN and the registration.
    progress : called as ``progress(step, fraction)``, fraction of the whole run in [0, 1].
    deidentify : strip patient identifiers from every output (see the module docstring).
    pseudonym : PatientName and PatientID of the de-identified DICOM outputs (default "ANONYMOUS");
        only with ``deidentify``.
    tools : what the run calls for its long work (default :class:`RunTools`: the presets, the CNN, ...).

    Returns
    -------
    What was written (:class:`RunResult`).

    Raises :class:`~sirtreg.errors.SirtregError` subclasses for bad input before any long work
    (see :func:`check_run`; empty contours and images the registration refuses are found right
    after reading, before the CNN and the registrations). On any error or interruption the
    output folder is left as it was.
    """
    started, started_utc = time.perf_counter(), datetime.now(UTC)
    tools = tools or RunTools()
    timings: dict[str, float] = {}
    deidentification = deidentification_for(deidentify, pseudonym)
    with _timed(timings, "check"):
        out_dir = check_run(plan, out_dir, overwrite=overwrite, device=device)
    sources = image_sources(plan)
    missing = len({source for source, entry in zip(sources, (plan.reference, *plan.floating)) if entry.liver is None})
    stages = _Stages(progress, {"segment": missing, "register": len(plan.floating)})
    stages.report("check", 1.0)
    with _output_folder(plan, out_dir, overwrite) as output:
        staging = output.staging
        files: dict[str, Path] = {}
        with _timed(timings, "read"):
            reference, spect, floating = tools.read_inputs(plan)
            check_inputs(plan, reference, floating)
        stages.report("read", 1.0)
        livers = CnnLivers(plan.flagged_cnn_liver)
        names = [REFERENCE_SOURCE, *(image_names(plan)[entry.id] for entry in plan.floating)]
        reference, *floating = _segment_missing([reference, *floating], sources, names, device, stages, timings,
                                                livers, tools.segment_liver)
        carried = _register_all(plan, reference, floating, spect, staging, files, device, stages, timings, livers,
                                tools)
        with _timed(timings, "dose"):
            report = run_dose(plan, reference, spect, carried)
            rows = dose_rows(report, carried)
            agreements = lesion_agreements(plan, reference, carried, rows)
        stages.report("dose", 1.0)
        with _timed(timings, "write"):
            write_tables(plan, reference, report, rows, carried, staging, files, deidentification)
        stages.report("write", 1.0)
        with _timed(timings, "report"):
            sections = run_report_sections(plan, reference, report, by_lesion(rows),
                                           agreement_section(agreements, livers.summary()), carried, files, timings,
                                           device)
            when = (f"{started_utc:%Y-%m-%d %H:%M} UTC" if deidentification is None
                    else f"de-identified ({deidentification.pseudonym})")
            files["report"] = tools.write_html(staging / REPORT_NAME, "sirtreg run report", sections,
                                         subtitle=f"sirtreg {__version__}, {when}, {len(carried)} floating image(s)")
        files["results"] = staging / RESULTS_NAME
        seconds = round(time.perf_counter() - started, 3)
        results = {**results_document(plan, reference, report, rows, carried, device, started_utc, deidentification),
                   "lesion_agreement": [{**asdict(a), "flagged": a.flagged} for a in agreements],
                   "cnn_livers": livers.as_dict(),
                   "timings_s": timings, "seconds": seconds, "files": _relative(files, staging)}
        files["results"].write_text(json.dumps(results, indent=2, default=float) + "\n", encoding="utf-8")
    stages.report("report", 1.0, step="done")
    log.info("run finished in %.1f s; report %s", seconds, out_dir / REPORT_NAME)
    return RunResult(out_dir, {name: out_dir / path for name, path in _relative(files, staging).items()},
                     results, seconds)
