"""One registration of a study: a floating image of a patient, registered to its reference with one method.

Guidance uses the CNN liver mask where the manifest names a mask file
(``cnn_liver``), else the manual contour (:attr:`TaskRegistration.guidance_liver`
says which). A CNN mask that guides is checked (:mod:`sirtreg.segment.liver_check`:
its volume, its pieces, and its DSC with the other scan's guiding liver after the
affine stage). Image-based methods are guided by no mask, as in the paper; on the
default "liver" working region (the engine settings' ``working_region``, as in a
patient run) the reference's liver (the same mask that guides the other methods)
sets where they work, and on the "whole" region they read no mask at all.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume
from sirtreg.io import read_image, read_labels
from sirtreg.register import Annotated, RegistrationResult, RegistrationSettings, liver_dsc, register_guided
from sirtreg.segment.liver_check import affine_dsc_reason, check_liver
from sirtreg.study.manifest import COMPUTE, Cohort, FloatingImage, ReferenceImage
from sirtreg.study.methods import Method

TaskKey = tuple[str, str, str]


@dataclass(frozen=True, kw_only=True)
class Task:
    """One registration of a study: a floating image of a patient, registered with one method."""

    patient: str
    floating: str
    method: Method

    @property
    def key(self) -> TaskKey:
        return (self.patient, self.floating, self.method.key)


def study_tasks(cohort: Cohort, methods: Sequence[Method], *, split: str | None = None) -> tuple[Task, ...]:
    """Every (patient, floating image, method) of one split (or all), patients in manifest order."""
    if not methods or not all(isinstance(method, Method) for method in methods):
        raise InputError(f"a study needs one or more methods (sirtreg.study.Method), got {methods!r}")
    keys = [method.key for method in methods]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise InputError(f"methods must differ in name or weights; repeated: {', '.join(repeated)}")
    pairs = cohort.registrations(split=split)
    if not pairs:
        raise InputError(f"the cohort has no registrations in the {split} split")
    return tuple(Task(patient=patient.id, floating=floating.id, method=method)
                 for patient, floating in pairs for method in methods)


def engine_settings_id(settings: RegistrationSettings | None = None) -> str:
    """A short id of the engine settings that a method does not set (pyramids, iterations, steps, margins, seed).

    Guidance and weights belong to the method (its key); the device is left out, so a
    study may resume on another device.
    """
    summary = asdict(settings or RegistrationSettings())
    for name in ("guidance", "device"):
        summary.pop(name)
    for name in ("image_weight", "label_weight", "rigidity"):
        summary["nonrigid"].pop(name)
    return hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()[:12]


def guidance_liver_of(image: ReferenceImage | FloatingImage, what: str) -> tuple[Path, str]:
    """The liver mask that guides the registration: the CNN mask file if any, else the manual contour."""
    if image.cnn_liver == COMPUTE:  # run_study computes them first (sirtreg.study.cnn_masks)
        raise InputError(f"{what}: cnn_liver is 'compute': run the task through run_study, which segments it")
    if image.cnn_liver is None:
        return image.liver, "manual"
    return Path(image.cnn_liver), "cnn"


def lookup(cohort: Cohort, task: Task) -> tuple[ReferenceImage, FloatingImage]:
    """The reference and the floating image of a task (InputError if the cohort has no such image)."""
    patient = cohort.patient(task.patient)
    for floating in patient.floating:
        if floating.id == task.floating:
            return patient.reference, floating
    raise InputError(f"patient {task.patient} has no floating image {task.floating!r}")


@dataclass(frozen=True, eq=False)
class TaskRegistration:
    """A task's registration and what it was measured against.

    ``livers`` and ``landmarks`` are the manual annotations (reference, floating); ``guidance_liver`` is
    "manual", "cnn", "mixed" or "none" (image guidance); ``liver_flag`` says why a guiding CNN liver is
    flagged (None if none is); ``seconds`` is the registration's wall time.
    """

    result: RegistrationResult
    livers: tuple[LabelVolume, LabelVolume]
    landmarks: tuple[LabelVolume, LabelVolume]
    guidance_liver: str
    liver_flag: str | None
    seconds: float


def register_task(cohort: Cohort, task: Task, settings: RegistrationSettings | None) -> TaskRegistration:
    """Register the task's floating image to its reference with the task's method (engine ``settings``)."""
    reference, floating = lookup(cohort, task)
    where = f"patient {task.patient}"
    livers = [read_labels(reference.liver), read_labels(floating.liver)]
    landmarks = [read_labels(reference.landmark_map), read_labels(floating.landmark_map)]
    method_settings = task.method.settings(settings)
    guidance = task.method.guidance
    sides = [(reference, f"{where}, reference"), (floating, f"{where}, floating {floating.id}")]
    if guidance == "image":  # no mask guides; the reference liver sets the working region alone
        sides = sides[:1] if method_settings.working_region == "liver" else []
    guides: list[LabelVolume | None] = [None, None]
    sources: list[str] = []
    for index, (image, what) in enumerate(sides):
        path, source = guidance_liver_of(image, what)
        guides[index] = livers[index] if path == image.liver else read_labels(path)
        sources.append(source)
    source = "none" if guidance == "image" else sources[0] if sources[0] == sources[1] else "mixed"
    cnn = [] if guidance == "image" else [side for side, kind in zip(("reference", "floating"), sources)
                                          if kind == "cnn"]
    flags = [f"{side} CNN liver: {reason}" for side, guide in zip(("reference", "floating"), guides, strict=True)
             if side in cnn and guide is not None for reason in check_liver(guide, side).reasons]
    start = time.perf_counter()
    result = register_guided(Annotated(read_image(reference.image), guides[0], landmarks[0]),
                             Annotated(read_image(floating.image), guides[1], landmarks[1]), method_settings)
    seconds = time.perf_counter() - start
    if cnn:
        assert guides[0] is not None and guides[1] is not None
        low = affine_dsc_reason(liver_dsc(result.affine, reference_liver=guides[0], floating_liver=guides[1]))
        flags += [f"{' and '.join(cnn)} CNN liver: {low}"] if low else []
    return TaskRegistration(result=result, livers=(livers[0], livers[1]), landmarks=(landmarks[0], landmarks[1]),
                            guidance_liver=source, liver_flag="; ".join(flags) or None, seconds=seconds)
