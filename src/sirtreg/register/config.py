"""Registration settings as frozen dataclasses, and the paper's three guidance presets.

The three methods of the paper are configurations of one engine:

- ``image``: affine on mutual information, then wI * image similarity + spring.
- ``liver`` (CNN-guided): affine on the liver masks, then wI * image similarity + wS * SSD(liver) + spring.
- ``liver+landmarks`` (CNN&LM-guided): as ``liver`` with the landmarks as label channels beside the
  liver: one channel per landmark (``landmark_channels="each"``, the default, so that two lesions cannot
  trade places) or the paper's two-class map liver = 1, landmarks = 2 (``"paper"``).

The image similarity is MIND-SSC (``similarity="mind"``, the default: robust to MR intensity maps and bias
fields) or the paper's mutual information (``"mi"``).

``image_weight = label_weight = 0`` means affine only (the paper's optimum for
CNN-guided MR to CT).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from sirtreg.errors import InputError

Guidance = Literal["image", "liver", "liver+landmarks"]
GUIDANCES: tuple[str, ...] = ("image", "liver", "liver+landmarks")
SIMILARITIES: tuple[str, ...] = ("mind", "mi")
LANDMARK_CHANNELS: tuple[str, ...] = ("each", "paper")
WORKING_REGIONS: tuple[str, ...] = ("liver", "whole")


@dataclass(frozen=True)
class AffineSettings:
    """Affine stage.

    ``levels_mm``: isotropic voxel size (mm) of each pyramid level, coarse to fine; ``iterations``: Adam steps
    per level; ``samples``: voxels drawn at random in each step where a level has more; ``matrix_step``: the
    step size of the linear part (unitless); ``translation_step_mm``: that of the translation at a 4 mm level
    (mm; it scales with the level's voxel size).
    """

    levels_mm: tuple[float, ...] = (8.0, 5.0)
    iterations: tuple[int, ...] = (50, 60)
    samples: int = 20_000
    matrix_step: float = 2e-3
    translation_step_mm: float = 1.0


@dataclass(frozen=True)
class NonRigidSettings:
    """Non-rigid stage: minimise wI * image similarity + wS * SSD(labels) + rigidity * spring energy + folding
    penalty, on a pyramid of grid spacings ``levels_mm`` (mm, coarse to fine) with at most ``iterations`` per
    level (a level stops earlier once its energy stops improving).

    The folding penalty (weight ``folding_weight``, 0 to switch it off) is not in
    the paper: springs alone can fold, and a folded transform maps lesions wrongly.

    Fields: ``image_weight`` (wI), ``label_weight`` (wS), ``rigidity`` (the spring constant), ``folding_weight``;
    ``similarity``; ``levels_mm``: control-point spacing (mm) of each level; ``iterations``: at most this many
    steps per level; ``step_mm``: the step size of the displacements at a 3 mm level (mm; it scales with the
    spacing); ``connectivity``: the springs join each control point to its 6 or 26 neighbours.

    Defaults were chosen on the tuning half of ``benchmarks/registration.py`` (real
    subjects and the digital patient, CT and MR-like floating scans); tune them on
    your own cohort with ``sirtreg study tune``.
    """

    image_weight: float = 1.0
    label_weight: float = 1.0
    rigidity: float = 1.0
    folding_weight: float = 1.0
    similarity: str = "mind"
    levels_mm: tuple[float, ...] = (8.0, 5.0, 4.0)
    iterations: tuple[int, ...] = (40, 20, 20)
    step_mm: float = 0.5
    connectivity: int = 26

    @property
    def enabled(self) -> bool:
        return self.image_weight > 0 or self.label_weight > 0


@dataclass(frozen=True)
class RegistrationSettings:
    """Everything the engine needs besides the images.

    ``guidance``: the paper's method (see the module notes); ``affine``, ``nonrigid``: the two stages;
    ``landmark_channels``: "each" or "paper" (see the module notes); ``working_region``: where the engine
    works on the reference: "liver", the bounding box of the reference's guidance labels (its liver, for
    ``image`` guidance the liver mask given for this alone) plus ``margin_mm``, or "whole", the whole
    reference image; the similarity terms look at the voxels within ``margin_mm`` of the reference labels
    where there are some; ``bins``: histogram bins of mutual information; ``device``: "cpu" or "cuda";
    ``seed``: of the affine stage's random samples; ``tolerance``: a level of either stage stops once the best
    energy of its last steps improves on the best before them by less than this fraction.
    """

    guidance: Guidance = "liver"
    affine: AffineSettings = field(default_factory=AffineSettings)
    nonrigid: NonRigidSettings = field(default_factory=NonRigidSettings)
    landmark_channels: str = "each"
    working_region: str = "liver"
    margin_mm: float = 20.0
    bins: int = 32
    device: str = "cpu"
    seed: int = 0
    tolerance: float = 1e-5

    def __post_init__(self) -> None:
        if self.guidance not in GUIDANCES:
            raise InputError(f"guidance must be one of {', '.join(GUIDANCES)}; got {self.guidance!r}")
        for name, stage in (("affine", self.affine), ("non-rigid", self.nonrigid)):
            if len(stage.levels_mm) != len(stage.iterations) or not stage.levels_mm:
                raise InputError(f"{name} stage needs one iteration count per pyramid level")
            if min(stage.levels_mm) <= 0:
                raise InputError(f"{name} pyramid spacings must be > 0 mm")
        nonrigid = self.nonrigid
        numbers = {"wI": nonrigid.image_weight, "wS": nonrigid.label_weight, "rigidity": nonrigid.rigidity,
                   "folding weight": nonrigid.folding_weight, "step": nonrigid.step_mm, "margin": self.margin_mm,
                   "pyramid spacing": sum(self.affine.levels_mm) + sum(nonrigid.levels_mm)}
        for name, value in numbers.items():
            if not math.isfinite(value):  # NaN passes every comparison: refuse it before it switches a term off
                raise InputError(f"{name} must be a finite number, got {value}")
        if min(nonrigid.image_weight, nonrigid.label_weight, nonrigid.rigidity, nonrigid.folding_weight) < 0:
            raise InputError("weights wI, wS, the rigidity and the folding weight must be >= 0")
        if self.guidance == "image" and nonrigid.label_weight > 0:
            raise InputError("image-based registration has no label term: set wS = 0 or choose liver guidance")
        if nonrigid.similarity not in SIMILARITIES:
            raise InputError(f"similarity must be one of {', '.join(SIMILARITIES)}; got {nonrigid.similarity!r}")
        if self.landmark_channels not in LANDMARK_CHANNELS:
            raise InputError(f"landmark_channels must be one of {', '.join(LANDMARK_CHANNELS)}; "
                             f"got {self.landmark_channels!r}")
        if self.working_region not in WORKING_REGIONS:
            raise InputError(f"working_region must be one of {', '.join(WORKING_REGIONS)}; got {self.working_region!r}")
        if nonrigid.connectivity not in (6, 26):
            raise InputError(f"connectivity must be 6 or 26, got {nonrigid.connectivity}")
        if self.affine.samples < 1000:
            raise InputError(f"the affine stage needs at least 1000 samples per iteration, got {self.affine.samples}")
        if self.margin_mm < 0:
            raise InputError(f"margin must be >= 0 mm, got {self.margin_mm}")

    @property
    def uses_labels(self) -> bool:
        return self.guidance != "image"


def quick_settings(settings: RegistrationSettings | None = None) -> RegistrationSettings:
    """``settings`` (default: the defaults) with one 8 mm level, 15 affine and 5 non-rigid iterations: a study's
    or a test's quick look, far from the accuracy of the defaults."""
    settings = settings or RegistrationSettings()
    return replace(settings, affine=replace(settings.affine, levels_mm=(8.0,), iterations=(15,)),
                   nonrigid=replace(settings.nonrigid, levels_mm=(8.0,), iterations=(5,)))


def preset(guidance: Guidance, **weights: float) -> RegistrationSettings:
    """The paper's preset for a guidance, with optional ``image_weight``, ``label_weight``, ``rigidity``,
    ``folding_weight``."""
    nonrigid = NonRigidSettings()
    if guidance == "image":
        nonrigid = replace(nonrigid, label_weight=0.0)
    unknown = set(weights) - {"image_weight", "label_weight", "rigidity", "folding_weight"}
    if unknown:
        raise InputError(f"unknown weight(s): {', '.join(sorted(unknown))}")
    return RegistrationSettings(guidance=guidance, nonrigid=replace(nonrigid, **weights))
