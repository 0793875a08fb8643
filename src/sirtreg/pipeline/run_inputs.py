"""The inputs of a patient run: every image of the plan with its contours, read once per scan, and the checks
that need their voxels (empty contours, images the registration refuses)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sirtreg.errors import SirtregError
from sirtreg.geometry import Volume
from sirtreg.io import read_image
from sirtreg.io.contours import read_contour
from sirtreg.pipeline.carried import REFERENCE_SOURCE, ScanImage
from sirtreg.pipeline.plan import CONTOUR_ROLES, ContourInput, Plan
from sirtreg.register import preset
from sirtreg.register.guidance import check_images
from sirtreg.yaml_input import refusal


def _read_scan(name: str, path: Path, series: str | None, modality: str,
                contours: Mapping[str, ContourInput | None], read: dict[tuple[str, str | None, str], Volume]
                ) -> ScanImage:
    """One image of the plan with its contours; a scan listed several times (e.g. to compare guidance presets)
    is read once (``read``: the images read so far, by path, series and modality)."""
    source = (os.path.abspath(path), series, modality)
    if source not in read:
        read[source] = read_image(path, modality=modality, series=series)
    volume = read[source]
    found = {role: read_contour(c.path, c.segments, volume, role) if c is not None else None
             for role, c in contours.items()}
    return ScanImage(name, volume, modality, found["liver"], found["lesions"], found["landmarks"])


def read_inputs(plan: Plan) -> tuple[ScanImage, Volume, list[ScanImage]]:
    """The MAA CT, the SPECT and the floating images, with their contours."""
    def contours(entry: Any) -> dict[str, ContourInput | None]:
        return {role: getattr(entry, role) for role in CONTOUR_ROLES}

    read: dict[tuple[str, str | None, str], Volume] = {}
    reference = _read_scan(REFERENCE_SOURCE, plan.reference.image, plan.reference.series, "CT",
                            contours(plan.reference), read)
    spect = read_image(plan.spect.image, modality="NM", series=plan.spect.series)
    floating = [_read_scan(f.id, f.image, f.series, f.modality, contours(f), read) for f in plan.floating]
    return reference, spect, floating


def check_inputs(plan: Plan, reference: ScanImage, floating: Sequence[ScanImage]) -> None:
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
            check_images(reference.volume, image.volume, preset(plan.guidance(entry)))
        except SirtregError as exc:
            problems.append(f"floating {entry.id}, image: {exc}")
    if problems:
        raise refusal(sorted(set(problems), key=problems.index), what="plan")
