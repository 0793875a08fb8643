"""The registration pyramid in NumPy: its stages, the working region, and the reference's smoothed channels.

No PyTorch here: a command can build the reference side of every level while PyTorch
loads (SimpleITK smooths and resamples without the GIL) and hand it to the engine in a
:class:`ReferenceChannels`. The engine turns these arrays into tensors.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.itk_bridge import to_sitk
from sirtreg.register.config import RegistrationSettings
from sirtreg.register.guidance import Classes, guiding_classes, levels_mm
from sirtreg.resample import crop_to_mask, empty_sitk_image, mask_box


@dataclass(frozen=True)
class Stage:
    """One pyramid level of the affine or the non-rigid stage and the channels it compares: the image
    (``image_term`` "mi" or "mind"; None: no image term) and the guiding labels (``labels``)."""

    name: str
    spacing_mm: float
    iterations: int
    image_term: str | None
    labels: bool


def stages(settings: RegistrationSettings, guided: bool) -> list[Stage]:
    """The levels the settings run, coarse to fine, affine first. ``guided``: the registration has guiding labels.

    The affine stage compares the labels when it has them, else the images (mutual information); the
    non-rigid stage compares what it weighs (wI > 0: the image; wS > 0: the labels).
    """
    affine = settings.affine
    result = [Stage("affine", s, n, None if guided else "mi", guided)
              for s, n in zip(affine.levels_mm, affine.iterations)]
    nonrigid = settings.nonrigid
    if nonrigid.enabled:
        image_term = nonrigid.similarity if nonrigid.image_weight > 0 else None
        result += [Stage("non-rigid", s, n, image_term, guided and nonrigid.label_weight > 0)
                   for s, n in zip(nonrigid.levels_mm, nonrigid.iterations)]
    return result


def working_region(reference: Volume, reference_labels: LabelVolume | None, settings: RegistrationSettings) -> Grid:
    """The settings' working region: the reference grid cropped to its labels' bounding box plus ``margin_mm``
    ("liver", which needs labels: see :func:`~sirtreg.register.guidance.check_inputs`), or the whole grid."""
    if settings.working_region == "whole":
        return reference.grid
    if reference_labels is None or not np.any(reference_labels.array):
        raise InputError("the working region 'liver' needs the reference's liver mask")
    return reference.grid.crop(*mask_box(reference_labels.array > 0, reference.grid, margin_mm=settings.margin_mm))


def box_around(volume: Volume, points_mm: np.ndarray, margin_mm: float,
               tried: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Voxel box (start, stop) of ``volume`` holding the world points plus a margin; refuse when it misses
    (``tried``: how the points were aligned, for the message)."""
    index = volume.grid.world_to_index(points_mm.reshape(-1, 3))
    pad = margin_mm / np.asarray(volume.grid.spacing_mm)
    start = np.maximum(np.floor(index.min(axis=0) - pad), 0).astype(int)
    stop = np.minimum(np.ceil(index.max(axis=0) + pad) + 1, volume.grid.size).astype(int)
    if np.any(stop <= start):
        raise InputError(f"the reference working region falls outside the image it is mapped into, even after "
                         f"initial alignment by {tried or 'scanner coordinates'}: "
                         "check that both images show the liver")
    return start, stop


def reference_box(reference: Volume, reference_labels: LabelVolume | None,
                  settings: RegistrationSettings) -> tuple[Grid, tuple[np.ndarray, np.ndarray]]:
    """The working region (see :func:`working_region`) and the voxel box of the reference its smoothing reads
    (three sigma of the coarsest level around it: the rest of the reference is never looked at)."""
    region = working_region(reference, reference_labels, settings)
    reach_mm = 1.5 * max(levels_mm(settings)) + max(reference.grid.spacing_mm)
    return region, box_around(reference, region.corners_mm(), reach_mm)


def smooth_and_resample(volume: Volume, onto: Grid, sigma_mm: float) -> np.ndarray:
    """Low-pass ``volume`` to about ``2 * sigma_mm`` resolution and resample it linearly onto ``onto``.

    Blocks of voxels are first averaged (integer shrink factors up to sigma / spacing),
    then a recursive Gaussian brings the remaining blur to ``sigma_mm``; both run in
    SimpleITK, in time independent of sigma. Zero outside ``volume``. Returns float32 (z, y, x).
    """
    image = to_sitk(volume.with_array(volume.array.astype(np.float32, copy=False)))
    spacing = np.asarray(volume.grid.spacing_mm)
    factors = np.maximum(1, np.floor(sigma_mm / spacing)).astype(int)
    if np.any(factors > 1):
        image = sitk.BinShrink(image, [int(f) for f in factors])
    remaining = np.sqrt(np.maximum(sigma_mm**2 - (np.asarray(image.GetSpacing()) / 2.0) ** 2, 0.0))
    if np.any(remaining > 0.1 * np.asarray(image.GetSpacing())):
        image = sitk.SmoothingRecursiveGaussian(image, [float(v) for v in np.maximum(remaining, 1e-3)])
    reference = empty_sitk_image(onto)
    out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def aligned_grid(grid: Grid, direction: tuple[float, ...], spacing_mm: float) -> Grid:
    """An isotropic grid with ``direction`` whose box holds all of ``grid``."""
    axes = np.asarray(direction, float).reshape(3, 3)
    local = grid.corners_mm() @ axes  # corner coordinates along the new axes
    lo, hi = local.min(axis=0), local.max(axis=0)
    size = np.maximum(np.ceil((hi - lo) / spacing_mm).astype(int), 2)
    origin = axes @ (lo + spacing_mm / 2.0)
    return Grid(tuple(size), (spacing_mm,) * 3, tuple(origin), direction)


def indicator(labels: LabelVolume, values: tuple[int, ...], margin_mm: float) -> Volume:
    """The indicator (0/1) of ``values``, cropped to their box plus ``margin_mm``: a lesion's channel is
    smoothed and resampled around the lesion only (zero elsewhere)."""
    mask = np.isin(labels.array, values)
    return crop_to_mask(Volume(mask.astype(np.float32), labels.grid), mask, margin_mm=margin_mm)


def indicator_margin_mm(spacing_mm: float) -> float:
    """How far around a label its smoothed indicator at a level of ``spacing_mm`` is still above zero (mm)."""
    return 4.0 * spacing_mm / 2.0 + 2.0 * spacing_mm


def near_labels(labels: LabelVolume, grid: Grid, margin_mm: float) -> np.ndarray | None:
    """Flat indices of the voxels of ``grid`` within ``margin_mm`` of the labels (None: no label voxel)."""
    if not np.any(labels.array):
        return None
    inside = smooth_and_resample(Volume((labels.array > 0).astype(np.float32), labels.grid), grid,
                                 min(grid.spacing_mm) / 2.0) > 0.5
    if not np.any(inside):
        return None
    distance = ndimage.distance_transform_edt(~inside, sampling=grid.spacing_mm[::-1])
    return np.flatnonzero(distance <= margin_mm)


@dataclass(frozen=True)
class ReferenceLevel:
    """The reference side of one level on its grid: the voxels near the labels (flat indices, None: every
    voxel), the smoothed image (None: no image term) and one smoothed indicator per guiding class."""

    near: np.ndarray | None
    image: np.ndarray | None
    labels: list[np.ndarray]


def reference_level(found: dict[tuple[Any, ...], Any], stage: Stage, grid: Grid, reference: Volume,
                    labels: LabelVolume | None, classes: Classes | None, margin_mm: float) -> ReferenceLevel:
    """The reference side of ``stage`` on ``grid`` (its working region at the stage spacing), computed once:
    every array is kept in ``found`` (keys start with "reference") for the next stage or call at that spacing.

    ``reference`` and ``labels`` are the reference image and label map (cropped to the box the smoothing
    reads); ``classes`` the guiding classes (None: no label channels); ``margin_mm`` how far from the labels
    the similarity terms look.
    """
    spacing, sigma = stage.spacing_mm, stage.spacing_mm / 2.0

    def kept(key: tuple[Any, ...], make: Any) -> Any:
        if (*key, spacing) not in found:
            found[(*key, spacing)] = make()
        return found[(*key, spacing)]

    near = kept(("reference", "near"), lambda: near_labels(labels, grid, margin_mm)) if labels is not None else None
    image = (kept(("reference", "image"), lambda: smooth_and_resample(reference, grid, sigma))
             if stage.image_term is not None else None)
    channels = []
    if stage.labels and classes:
        assert labels is not None
        margin = indicator_margin_mm(spacing)
        channels = [kept(("reference", c), lambda c=c: smooth_and_resample(indicator(labels, c, margin), grid, sigma))
                    for c in classes]
    return ReferenceLevel(near, image, channels)


class ReferenceChannels:
    """The reference side of the pyramid (smoothed and resampled image, its MIND descriptor, label indicators,
    the voxels near the labels), kept for every registration given this object: registering several
    floating images to one reference computes them once, and :meth:`prepare` computes them ahead.

    Entries are kept per reference volume and label map (by identity: this object holds both, so neither
    can be replaced by another at the same address), working region, crop, margin and device; a call with
    another reference, other labels or other settings gets entries of its own.
    """

    def __init__(self) -> None:
        self._scopes: dict[tuple[Any, ...], tuple[Volume, LabelVolume | None, dict[tuple[Any, ...], Any]]] = {}

    def scope(self, reference: Volume, labels: LabelVolume | None, region: Grid, box: tuple[np.ndarray, np.ndarray],
              margin_mm: float, device: str) -> dict[tuple[Any, ...], Any]:
        """The channel cache of one reference, label map, working region, crop (start, stop), margin and device."""
        key = (id(reference), id(labels), json.dumps(region.to_dict()), tuple(map(int, box[0])),
               tuple(map(int, box[1])), float(margin_mm), device)
        if key not in self._scopes:
            self._scopes[key] = (reference, labels, {})
        return self._scopes[key][2]

    def prepare(self, reference: Volume, reference_labels: LabelVolume | None, settings: RegistrationSettings) -> None:
        """Compute, now, the NumPy channels a registration to ``reference`` with these labels and settings will
        use (not the MIND descriptors, which need PyTorch): SimpleITK work that can run beside other work."""
        guided = settings.uses_labels and reference_labels is not None
        classes = guiding_classes(reference_labels.present_labels(), settings) if guided else None
        region, box = reference_box(reference, reference_labels, settings)
        found = self.scope(reference, reference_labels, region, box, settings.margin_mm, settings.device)
        reference_crop = reference.crop(*box)
        labels_crop = reference_labels.crop(*box) if reference_labels is not None else None
        for stage in stages(settings, guided):
            reference_level(found, stage, region.with_spacing((stage.spacing_mm,) * 3), reference_crop, labels_crop,
                            classes, settings.margin_mm)
