"""What a patient run carries: each scan of the plan with its contours, and each floating image after
its registration, on the MAA CT grid (see :mod:`sirtreg.pipeline.run`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sirtreg.geometry import LabelVolume, Volume
from sirtreg.pipeline.liver_flags import GuidanceCheck
from sirtreg.pipeline.plan import FloatingInput
from sirtreg.pipeline.weights import RunWeights
from sirtreg.register import RegistrationResult

REFERENCE_SOURCE = "MAA CT"  # the source of structures drawn on the MAA CT; not a valid floating id


@dataclass(frozen=True, eq=False)
class ScanImage:
    """One CT or MR image of the plan with its contours, all on the image's own grid."""

    name: str  # the floating id, or REFERENCE_SOURCE
    volume: Volume
    modality: str
    liver: LabelVolume | None
    lesions: LabelVolume | None
    landmarks: LabelVolume | None
    liver_source: str = "given"  # "given" or "CNN"


@dataclass(frozen=True, eq=False)
class Carried:
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
