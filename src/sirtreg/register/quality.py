"""How good is a registration, where the truth is known: the paper's DSC, MSD, MCD and RMSD."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sirtreg.geometry import LabelVolume, Transform
from sirtreg.metrics import dice, mass_centre_distances_mm, mean_surface_distance_mm, rmsd_mm
from sirtreg.register.warp import warp
from sirtreg.resample import mask_box

EVALUATION_MARGIN_MM = 30.0


@dataclass(frozen=True)
class RegistrationQuality:
    """Liver DSC, liver MSD (mm), landmark MCDs (mm, by name) and RMSD (mm) of one registration."""

    liver_dsc: float
    liver_msd_mm: float
    mcd_mm: dict[str, float]
    rmsd_mm: float

    def as_dict(self) -> dict[str, object]:
        return {"liver_dsc": self.liver_dsc, "liver_msd_mm": self.liver_msd_mm, "mcd_mm": dict(self.mcd_mm),
                "mean_mcd_mm": float(np.mean(list(self.mcd_mm.values()))) if self.mcd_mm else None,
                "rmsd_mm": self.rmsd_mm}


def _liver_masks(transform: Transform, reference_liver: LabelVolume,
                 floating_liver: LabelVolume) -> tuple[np.ndarray, np.ndarray, LabelVolume, tuple[Any, Any]]:
    """The reference liver and the floating liver warped onto it (one-hot), as masks (z, y, x) on the reference
    liver's grid cropped to the liver plus :data:`EVALUATION_MARGIN_MM`; the cropped reference liver and the
    crop's (start, stop) voxel indices (x, y, z)."""
    box = mask_box(reference_liver.array > 0, reference_liver.grid, margin_mm=EVALUATION_MARGIN_MM)
    cropped = reference_liver.crop(*box)
    warped = warp(floating_liver, transform, cropped.grid, label_mode="one-hot")
    return cropped.array > 0, warped.array > 0, cropped, box


def liver_dsc(transform: Transform, *, reference_liver: LabelVolume,
              floating_liver: LabelVolume) -> float:
    """The liver DSC of :func:`registration_quality` alone (e.g. after the affine stage)."""
    reference_mask, warped_mask, _, _ = _liver_masks(transform, reference_liver, floating_liver)
    return dice(reference_mask, warped_mask)


def registration_quality(
    transform: Transform, *,
    reference_liver: LabelVolume, floating_liver: LabelVolume,
    reference_landmarks: LabelVolume | None = None, floating_landmarks: LabelVolume | None = None,
) -> RegistrationQuality:
    """Warp the floating liver (and landmark map, one label per landmark) onto the reference grid and compare.

    MSD and DSC are computed on the reference liver's grid, cropped to the liver
    plus a 30 mm margin (a registration that moves the liver further is poor
    anyway); landmark mass centres are compared by name, as in the paper, with
    the floating landmarks warped one-hot onto the reference landmark grid.
    """
    reference_mask, warped_mask, cropped, box = _liver_masks(transform, reference_liver, floating_liver)
    if reference_landmarks is not None and reference_landmarks.grid.same_as(reference_liver.grid):
        reference_landmarks = reference_landmarks.crop(*box)
    msd = mean_surface_distance_mm(reference_mask, warped_mask, cropped.grid)
    mcd: dict[str, float] = {}
    if reference_landmarks is not None and floating_landmarks is not None:
        warped_landmarks = warp(floating_landmarks, transform, reference_landmarks.grid, label_mode="one-hot")
        mcd = mass_centre_distances_mm(reference_landmarks, warped_landmarks)
    return RegistrationQuality(
        liver_dsc=dice(reference_mask, warped_mask), liver_msd_mm=msd, mcd_mm=mcd,
        rmsd_mm=rmsd_mm(msd, list(mcd.values())),
    )
