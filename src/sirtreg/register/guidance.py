"""Guidance label maps and the input checks of a registration: which label values guide it, as which channels.

NumPy only (no PyTorch), so that a command can check its inputs and build the guidance
labels while PyTorch is still loading.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.register.config import RegistrationSettings

LIVER = 1
MIN_COARSE_VOXELS = 4  # along every axis, each image spans at least this many voxels of the coarsest level

Classes = list[tuple[int, ...]]
"""The label values of each guiding channel, in channel order: the liver first, then the landmarks."""


def guidance_labels(liver: LabelVolume, landmarks: LabelVolume | None = None) -> LabelVolume:
    """The guidance label map: liver = 1 and, with landmarks, the voxels of landmark value v = 1 + v.

    ``liver`` is a mask (any non-zero value); ``landmarks`` a map with one value per
    landmark (lesions, clips, vessel knots) on the same grid, the same value for the
    same landmark on every scan. Every value >= 2 is a landmark: the paper's two-class
    map (liver, landmarks) is their union, and ``landmark_channels="each"`` gives every
    landmark a channel of its own.
    """
    array = np.where(liver.array > 0, LIVER, 0).astype(np.int32)
    names = {LIVER: "liver"}
    if landmarks is not None:
        liver.grid.require_same(landmarks.grid, what="the liver mask and the landmark map")
        marked = landmarks.array > 0
        array[marked] = LIVER + landmarks.array[marked].astype(np.int32)
        names |= {LIVER + v: landmarks.labels.get(v, f"landmark {v}") for v in landmarks.present_labels()}
    return LabelVolume(array.astype(np.uint8) if array.max() < 256 else array, liver.grid, labels=names)


def levels_mm(settings: RegistrationSettings) -> tuple[float, ...]:
    """Spacings (mm) of every pyramid level the settings run, affine and non-rigid."""
    return (*settings.affine.levels_mm, *(settings.nonrigid.levels_mm if settings.nonrigid.enabled else ()))


def _require_liver(present: Collection[int], settings: RegistrationSettings, side: str) -> None:
    """Refuse an empty label map, and one without the liver (value 1) for ``liver+landmarks`` guidance."""
    if not present:
        raise InputError(f"the {side} label map is empty: {settings.guidance} guidance needs the liver")
    if settings.guidance == "liver+landmarks" and LIVER not in present:
        raise InputError(f"the {side} label map has no liver (value {LIVER}) for liver+landmarks guidance")


def guiding_classes(present: Collection[int], settings: RegistrationSettings, side: str = "reference") -> Classes:
    """The guiding classes of one side's label map, from the label values ``present`` in it (``side`` names it
    in messages).

    ``liver`` guidance: one class, every non-zero label (the liver mask).
    ``liver+landmarks``: the liver (value 1), then the landmarks (values >= 2, see
    :func:`guidance_labels`): one class per landmark with ``landmark_channels="each"``,
    all of them as one class with ``"paper"``.
    """
    _require_liver(present, settings, side)
    if settings.guidance == "liver":
        return [tuple(sorted(present))]
    landmarks = sorted(set(present) - {LIVER})
    if not landmarks:
        raise InputError("liver+landmarks guidance needs at least one landmark (label value >= 2) on both sides")
    return [(LIVER,), *((v,) for v in landmarks)] if settings.landmark_channels == "each" else \
        [(LIVER,), tuple(landmarks)]


def check_images(reference: Volume, floating: Volume, settings: RegistrationSettings) -> None:
    """Refuse images the engine cannot register with these settings: NaN or infinite voxels, a constant image,
    an image thinner than four voxels of the coarsest pyramid level along any axis (a slab of a few slices)."""
    for name, image in (("reference", reference), ("floating", floating)):
        if not np.all(np.isfinite(image.array)):
            raise InputError(f"the {name} image has NaN or infinite voxels; fill or mask them first")
        if np.ptp(image.array) == 0:
            raise InputError(f"the {name} image is constant: nothing to register")
    coarsest_mm = max(levels_mm(settings))
    for name, image in (("reference", reference), ("floating", floating)):
        extent = np.asarray(image.grid.extent_mm)
        if np.any(extent < MIN_COARSE_VOXELS * coarsest_mm):
            raise InputError(
                f"the {name} image spans only {extent.min():.1f} mm along one axis ({image.grid.describe()}); "
                f"registration needs at least {MIN_COARSE_VOXELS * coarsest_mm:g} mm along every axis "
                f"({MIN_COARSE_VOXELS} voxels of its coarsest level, {coarsest_mm:g} mm)")


def check_inputs(
    reference: Volume, floating: Volume, settings: RegistrationSettings,
    reference_labels: LabelVolume | None, floating_labels: LabelVolume | None,
) -> tuple[Classes, Classes] | None:
    """Refuse inputs the engine cannot use; return the guiding classes (see :func:`guiding_classes`) of both
    sides, or None for ``image`` guidance.

    Refused: the images :func:`check_images` refuses, label maps off their image's grid,
    labels the guidance cannot use, and the "liver" working region without reference
    labels. Images that do not overlap in space are not refused here: the engine aligns
    them first.
    """
    check_images(reference, floating, settings)
    for name, image, labels in (("reference", reference, reference_labels), ("floating", floating, floating_labels)):
        if labels is not None:
            image.grid.require_same(labels.grid, what=f"the {name} label map and the {name} image")
    if not settings.uses_labels:
        if settings.working_region == "liver" and (reference_labels is None or not np.any(reference_labels.array)):
            raise InputError("the working region 'liver' needs the reference's liver mask, even for image guidance "
                             "(it only sets the region); give it, or set the working region to 'whole'")
        return None
    if reference_labels is None or floating_labels is None:
        raise InputError(
            f"guidance {settings.guidance!r} needs label maps on both the reference and the floating image")
    sides = (("reference", reference_labels), ("floating", floating_labels))
    present = {name: set(labels.present_labels()) for name, labels in sides}
    for name, values in present.items():
        _require_liver(values, settings, name)
    if settings.guidance == "liver+landmarks" and present["reference"] != present["floating"]:
        one_side = sorted(present["reference"] ^ present["floating"])
        raise InputError(
            f"labels missing from one side: {', '.join(map(str, one_side))} "
            f"(reference has {sorted(present['reference'])}, floating has {sorted(present['floating'])})")
    return guiding_classes(present["reference"], settings), guiding_classes(present["floating"], settings, "floating")
