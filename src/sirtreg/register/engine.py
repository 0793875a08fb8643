"""The registration engine: affine, then dense non-rigid, over pyramids chosen by spacing in mm.

All work happens on a working region of the reference: the bounding box of the
reference liver (or the whole reference when no labels are given) grown by a
margin in mm, resampled at each pyramid level to isotropic voxels of that
level's spacing. The floating image is smoothed to the level's resolution and
sampled at T(x) with trilinear interpolation, so every term is differentiable
with respect to the affine parameters or the displacement of every voxel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume
from sirtreg.itk_bridge import to_sitk
from sirtreg.progress import Progress, no_progress
from sirtreg.register.config import RegistrationSettings
from sirtreg.register.optimiser import AnnealedAdam
from sirtreg.register.result import LevelRecord, RegistrationResult
from sirtreg.register.sampling import PlacedTensor, grid_points, index_step_matrix
from sirtreg.register.terms import FoldingPenalty, LabelSSD, MutualInformation, SpringRegulariser
from sirtreg.register.terms.mutual_information import normalise_intensities
from sirtreg.register.transforms import AffineTransform
from sirtreg.resample import empty_sitk_image, mask_box

log = logging.getLogger(__name__)

FLOATING_MARGIN_MM = 60.0
FLOATING_OVERSAMPLING = 1.5
LIVER = 1
LANDMARKS = 2
STOP_WINDOW = 15
MIN_COARSE_VOXELS = 4  # along every axis, each image spans at least this many voxels of the coarsest level


def guidance_labels(liver: LabelVolume, landmarks: LabelVolume | None = None) -> LabelVolume:
    """The paper's guidance label map: liver = 1 and, with landmarks, every landmark voxel = 2.

    ``liver`` is a mask (any non-zero value); ``landmarks`` a map with one value per
    landmark (lesions, clips, vessel knots) on the same grid.
    """
    array = np.where(liver.array > 0, LIVER, 0).astype(np.uint8)
    if landmarks is not None:
        liver.grid.require_same(landmarks.grid, what="the liver mask and the landmark map")
        array[landmarks.array > 0] = LANDMARKS
    return LabelVolume(array, liver.grid, labels={LIVER: "liver", LANDMARKS: "landmarks"} if landmarks is not None
                       else {LIVER: "liver"})


# --- input checks -----------------------------------------------------------------
def _levels_mm(settings: RegistrationSettings) -> tuple[float, ...]:
    """Spacings (mm) of every pyramid level the settings run, affine and non-rigid."""
    return (*settings.affine.levels_mm, *(settings.nonrigid.levels_mm if settings.nonrigid.enabled else ()))


Classes = list[tuple[int, ...]]


def check_inputs(
    reference: Volume, floating: Volume, settings: RegistrationSettings,
    reference_labels: LabelVolume | None, floating_labels: LabelVolume | None,
) -> tuple[Classes, Classes] | None:
    """Refuse inputs the engine cannot use; return the guiding classes (label values per channel) of both sides.

    Refused: NaN or infinite voxels, constant images, images thinner than four voxels of
    the coarsest pyramid level along any axis (a slab of a few slices), images that do
    not overlap, label maps off their image's grid, and labels the guidance cannot use.

    ``liver`` guidance: one class, every non-zero label (the liver mask).
    ``liver+landmarks``: the paper's two classes, liver (value 1) and landmarks (every value >= 2).
    ``image``: None.
    """
    for name, image in (("reference", reference), ("floating", floating)):
        if not np.all(np.isfinite(image.array)):
            raise InputError(f"the {name} image has NaN or infinite voxels; fill or mask them first")
        if np.ptp(image.array) == 0:
            raise InputError(f"the {name} image is constant: nothing to register")
    coarsest_mm = max(_levels_mm(settings))
    for name, image in (("reference", reference), ("floating", floating)):
        extent = np.asarray(image.grid.extent_mm)
        if np.any(extent < MIN_COARSE_VOXELS * coarsest_mm):
            raise InputError(
                f"the {name} image spans only {extent.min():.1f} mm along one axis ({image.grid.describe()}); "
                f"registration needs at least {MIN_COARSE_VOXELS * coarsest_mm:g} mm along every axis "
                f"({MIN_COARSE_VOXELS} voxels of its coarsest level, {coarsest_mm:g} mm)")
    reference.grid.require_overlap(floating.grid, what="reference and floating images")
    for name, image, labels in (("reference", reference, reference_labels), ("floating", floating, floating_labels)):
        if labels is not None:
            image.grid.require_same(labels.grid, what=f"the {name} label map and the {name} image")
    if not settings.uses_labels:
        return None
    if reference_labels is None or floating_labels is None:
        raise InputError(
            f"guidance {settings.guidance!r} needs label maps on both the reference and the floating image")
    present = {}
    for name, labels in (("reference", reference_labels), ("floating", floating_labels)):
        present[name] = set(labels.present_labels())
        if not present[name]:
            raise InputError(f"the {name} label map is empty: {settings.guidance} guidance needs the liver")
    if settings.guidance == "liver":
        return [tuple(sorted(present["reference"]))], [tuple(sorted(present["floating"]))]
    for name in ("reference", "floating"):
        if LIVER not in present[name]:
            raise InputError(f"the {name} label map has no liver (value {LIVER}) for liver+landmarks guidance")
    if present["reference"] != present["floating"]:
        one_side = sorted(present["reference"] ^ present["floating"])
        raise InputError(
            f"labels missing from one side: {', '.join(map(str, one_side))} "
            f"(reference has {sorted(present['reference'])}, floating has {sorted(present['floating'])})"
        )
    landmarks = tuple(sorted(present["reference"] - {LIVER}))
    if not landmarks:
        raise InputError("liver+landmarks guidance needs at least one landmark (label value >= 2) on both sides")
    classes = [(LIVER,), landmarks]
    return classes, classes


# --- pyramid levels -----------------------------------------------------------------
def working_region(reference: Volume, reference_labels: LabelVolume | None, margin_mm: float) -> Grid:
    """The reference grid cropped to its labels' bounding box plus ``margin_mm`` (whole grid without labels)."""
    if reference_labels is None or not np.any(reference_labels.array):
        return reference.grid
    return reference.grid.crop(*mask_box(reference_labels.array > 0, reference.grid, margin_mm=margin_mm))


def _smooth_and_resample(volume: Volume, onto: Grid, sigma_mm: float) -> np.ndarray:
    """Low-pass ``volume`` to about ``2 * sigma_mm`` resolution and resample it linearly onto ``onto``.

    Blocks of voxels are first averaged (integer shrink factors up to sigma / spacing),
    then a recursive Gaussian brings the remaining blur to ``sigma_mm``; both run in
    SimpleITK, in time independent of sigma.
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


def _box_around(volume: Volume, points_mm: np.ndarray, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Voxel box (start, stop) of ``volume`` holding the world points plus a margin; refuse when it misses."""
    index = volume.grid.world_to_index(points_mm.reshape(-1, 3))
    pad = margin_mm / np.asarray(volume.grid.spacing_mm)
    start = np.maximum(np.floor(index.min(axis=0) - pad), 0).astype(int)
    stop = np.minimum(np.ceil(index.max(axis=0) + pad) + 1, volume.grid.size).astype(int)
    if np.any(stop <= start):
        raise InputError("after initial alignment the reference working region falls outside the floating image")
    return start, stop


def _indicator(labels: LabelVolume, values: tuple[int, ...]) -> Volume:
    return Volume(np.isin(labels.array, values).astype(np.float32), labels.grid)


class Level:
    """Reference and floating data at one pyramid spacing, as torch tensors.

    Only the channels a stage uses are built: the image (``use_image``) and the
    guiding label classes (``classes``, None for none). The floating channels lie
    on a grid of the level spacing / ``FLOATING_OVERSAMPLING`` (never finer than
    the floating image), smoothed to the level's resolution.
    """

    def __init__(self, spacing_mm: float, region: Grid, reference: Volume, floating: Volume,
                 reference_labels: LabelVolume | None, floating_labels: LabelVolume | None,
                 classes: tuple[Classes, Classes] | None, device: torch.device, *, use_image: bool = True,
                 cache: dict[tuple[Any, ...], torch.Tensor] | None = None) -> None:
        self.spacing_mm = spacing_mm
        self.grid = region.with_spacing((spacing_mm,) * 3)
        self.points = grid_points(self.grid, device)
        sigma = spacing_mm / 2.0
        floating_grid = floating.grid.with_spacing(
            tuple(max(spacing_mm / FLOATING_OVERSAMPLING, s) for s in floating.grid.spacing_mm))
        cache = {} if cache is None else cache

        def channel(key: tuple[Any, ...], make: Callable[[], Volume], onto: Grid) -> torch.Tensor:
            """A smoothed, resampled channel; the affine and non-rigid stages share those of equal spacing."""
            if (*key, spacing_mm) not in cache:
                cache[(*key, spacing_mm)] = torch.from_numpy(_smooth_and_resample(make(), onto, sigma)).to(device)
            return cache[(*key, spacing_mm)]

        self.reference_image: torch.Tensor | None = None
        self.reference_labels: torch.Tensor | None = None
        channels = []
        if use_image:
            self.reference_image = normalise_intensities(channel(("reference",), lambda: reference, self.grid))[None]
            channels.append(normalise_intensities(channel(("floating",), lambda: floating, floating_grid)))
        if classes:
            assert reference_labels is not None and floating_labels is not None
            reference_classes, floating_classes = classes
            self.reference_labels = torch.stack([
                channel(("reference", c), lambda c=c: _indicator(reference_labels, c), self.grid)
                for c in reference_classes])
            channels += [channel(("floating", c), lambda c=c: _indicator(floating_labels, c), floating_grid)
                         for c in floating_classes]
        # image and label channels share one grid: one interpolation serves every term
        self.floating = PlacedTensor(torch.stack(channels), floating_grid, with_gradients=True)

    def sample_floating(self, points: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor]:
        """Warped floating image (1, *S) or None, label channels (C, *S) or None, and the inside mask (*S)."""
        values, inside = self.floating.sample(points)
        image = values[:1] if self.reference_image is not None else None
        labels = values[int(image is not None):] if self.reference_labels is not None else None
        return image, labels, inside


def _initial_affine(region: Grid, reference_labels: LabelVolume | None,
                    floating_labels: LabelVolume | None) -> AffineTransform:
    """Identity about the region centre, translated to match the label mass centres when labels exist."""
    centre = region.center_mm
    if reference_labels is None or floating_labels is None:
        return AffineTransform.identity(centre)

    def mass_centre(labels: LabelVolume) -> np.ndarray:
        k, j, i = np.nonzero(labels.array)
        return labels.grid.index_to_world([i.mean(), j.mean(), k.mean()])

    return AffineTransform(np.eye(3), mass_centre(floating_labels) - mass_centre(reference_labels), centre)


# --- optimisation -------------------------------------------------------------------
class _Stopper:
    """Early stopping: the best loss of the last window improved on the best before it by less than
    ``tolerance`` (relative), after at least two windows."""

    def __init__(self, tolerance: float) -> None:
        self.tolerance = tolerance
        self.history: list[float] = []

    def done(self, loss: float) -> bool:
        self.history.append(loss)
        if len(self.history) < 2 * STOP_WINDOW:
            return False
        before = min(self.history[:-STOP_WINDOW])
        recent = min(self.history[-STOP_WINDOW:])
        return before - recent <= self.tolerance * max(abs(before), 1e-12)


def _affine_level(level: Level, affine: AffineTransform, settings: RegistrationSettings, iterations: int,
                  tick: Callable[[], None]) -> tuple[AffineTransform, dict[str, list[float]]]:
    device = level.points.device
    centre = torch.tensor(affine.centre_mm, dtype=torch.float32, device=device)
    matrix = torch.tensor(affine.matrix, dtype=torch.float32, device=device, requires_grad=True)
    translation = torch.tensor(affine.translation_mm, dtype=torch.float32, device=device, requires_grad=True)
    optimiser = AnnealedAdam([(matrix, settings.affine.matrix_step),
                              (translation, settings.affine.translation_step_mm * level.spacing_mm / 4.0)],
                             iterations=iterations)
    mutual_information = MutualInformation(bins=settings.bins).to(device)
    label_ssd = LabelSSD()
    points = (level.points - centre).reshape(-1, 3)
    reference_image = level.reference_image.flatten(1) if level.reference_image is not None else None
    reference_labels = level.reference_labels.flatten(1) if level.reference_labels is not None else None
    # 12 parameters need few voxels: a fresh random subset per iteration, as elastix does
    samples = settings.affine.samples if points.shape[0] > settings.affine.samples else None
    generator = torch.Generator(device=device).manual_seed(settings.seed)
    losses: dict[str, list[float]] = {"total": []}
    stopper = _Stopper(settings.tolerance)
    for _ in range(iterations):
        optimiser.zero_grad()
        chosen = (torch.randint(points.shape[0], (samples,), generator=generator, device=device) if samples
                  else slice(None))
        mapped = points[chosen] @ matrix.T + centre + translation
        warped, warped_labels, inside = level.sample_floating(mapped)
        if reference_labels is not None:
            loss = label_ssd(reference_labels[:, chosen], warped_labels, torch.ones_like(warped_labels[0]))
        else:
            loss = mutual_information(reference_image[:, chosen], warped, inside)
        loss.backward()
        optimiser.step()
        losses["total"].append(float(loss.detach()))
        tick()
        if stopper.done(losses["total"][-1]):
            break
    with torch.no_grad():
        result = AffineTransform(matrix.detach().double().cpu().numpy(),
                                 translation.detach().double().cpu().numpy(), affine.centre_mm)
    return result, losses


def _nonrigid_level(level: Level, affine: AffineTransform, initial: torch.Tensor | None,
                    settings: RegistrationSettings, iterations: int,
                    tick: Callable[[], None]) -> tuple[torch.Tensor, dict[str, list[float]]]:
    device = level.points.device
    weights = settings.nonrigid
    with torch.no_grad():
        affine_points = torch.from_numpy(
            affine.transform_points(level.points.cpu().numpy().astype(np.float64)).astype(np.float32)).to(device)
    residual = (initial if initial is not None else torch.zeros_like(level.points)).clone().requires_grad_(True)
    optimiser = AnnealedAdam([(residual, weights.step_mm * level.spacing_mm / 3.0)], iterations=iterations)
    spring = SpringRegulariser(index_step_matrix(level.grid), torch.from_numpy(affine.matrix),
                               connectivity=weights.connectivity).to(device)
    folding = FoldingPenalty(index_step_matrix(level.grid), torch.from_numpy(affine.matrix)).to(device)
    mutual_information = MutualInformation(bins=settings.bins).to(device)
    label_ssd = LabelSSD()
    losses: dict[str, list[float]] = {"total": [], "image": [], "labels": [], "spring": [], "folding": []}
    stopper = _Stopper(settings.tolerance)
    for _ in range(iterations):
        optimiser.zero_grad()
        mapped = affine_points + residual
        terms: dict[str, torch.Tensor] = {}
        warped, warped_labels, inside = level.sample_floating(mapped)
        if level.reference_image is not None:
            terms["image"] = weights.image_weight * mutual_information(level.reference_image, warped, inside)
        if level.reference_labels is not None:
            terms["labels"] = weights.label_weight * label_ssd(level.reference_labels, warped_labels,
                                                               torch.ones_like(warped_labels[0]))
        terms["spring"] = weights.rigidity * spring(residual)
        if weights.folding_weight > 0:
            terms["folding"] = weights.folding_weight * folding(residual)
        loss = sum(terms.values())
        loss.backward()
        optimiser.step()
        for name, value in terms.items():
            losses[name].append(float(value.detach()))
        losses["total"].append(float(loss.detach()))
        tick()
        if stopper.done(losses["total"][-1]):
            break
    return residual.detach(), {name: values for name, values in losses.items() if values}


def _upsample_residual(residual: torch.Tensor, coarse: Grid, fine: Level) -> torch.Tensor:
    placed = PlacedTensor(residual.permute(3, 0, 1, 2).contiguous(), coarse)
    values, _ = placed.sample(fine.points)
    return values.permute(1, 2, 3, 0).contiguous()


def _full_field(grid: Grid, affine: AffineTransform, residual: DisplacementField) -> DisplacementField:
    """The whole transform on ``grid`` (covering the reference): the affine plus the non-rigid residual,
    which is extended at constant value beyond the working region."""
    points = grid.world_coordinates(np.float64)
    total = affine.transform_points(points) - points + residual.displacement_at(points)
    return DisplacementField(total.astype(np.float32), grid)


def register(
    reference: Volume, floating: Volume, *, settings: RegistrationSettings | None = None,
    reference_labels: LabelVolume | None = None, floating_labels: LabelVolume | None = None,
    progress: Progress | None = None,
) -> RegistrationResult:
    """Register ``floating`` to ``reference``; returns the reference->floating transform.

    Parameters
    ----------
    reference, floating : the images (any grids that overlap in LPS space).
    settings : guidance, weights, pyramids (default: the ``liver`` preset).
    reference_labels, floating_labels : label maps on the images' own grids:
        the liver (value 1) for ``liver`` guidance; liver = 1 and landmarks = 2
        for ``liver+landmarks``. With ``image`` guidance, reference labels only
        set the working region.
    progress : optional callback ``progress(step, fraction)``.
    """
    settings = settings or RegistrationSettings()
    progress = progress or no_progress
    classes = check_inputs(reference, floating, settings, reference_labels, floating_labels)
    torch.manual_seed(settings.seed)
    device = torch.device(settings.device)
    region = working_region(reference, reference_labels, settings.margin_mm)
    affine = _initial_affine(region, reference_labels if classes else None, floating_labels if classes else None)
    box = _box_around(floating, affine.transform_points(region.corners_mm()), FLOATING_MARGIN_MM)
    floating_crop = floating.crop(*box)
    floating_labels_crop = floating_labels.crop(*box) if classes and floating_labels is not None else None
    # smoothing reads 3 sigma around the region: the rest of the reference is never looked at
    box = _box_around(reference, region.corners_mm(), 1.5 * max(_levels_mm(settings)) + max(reference.grid.spacing_mm))
    reference_crop = reference.crop(*box)
    reference_labels_crop = reference_labels.crop(*box) if classes and reference_labels is not None else None

    stages = [("affine", s, n) for s, n in zip(settings.affine.levels_mm, settings.affine.iterations)]
    if settings.nonrigid.enabled:
        stages += [("non-rigid", s, n) for s, n in zip(settings.nonrigid.levels_mm, settings.nonrigid.iterations)]
    total = sum(n for _, _, n in stages)
    done = 0
    channels: dict[tuple[Any, ...], torch.Tensor] = {}
    records: list[LevelRecord] = []
    residual: torch.Tensor | None = None
    previous_grid: Grid | None = None
    final_level: Level | None = None
    for stage, spacing, iterations in stages:
        start = time.perf_counter()
        label = f"{stage} {spacing:g} mm"

        def tick(label: str = label) -> None:
            nonlocal done
            done += 1
            if done % 10 == 0:
                progress(label, done / total)

        # the affine stage uses the labels when it has them, else the image; the non-rigid one what it weighs
        if stage == "affine":
            use_image, level_classes = classes is None, classes
        else:
            use_image = settings.nonrigid.image_weight > 0
            level_classes = classes if settings.nonrigid.label_weight > 0 else None
        level = Level(spacing, region, reference_crop, floating_crop, reference_labels_crop, floating_labels_crop,
                      level_classes, device, use_image=use_image, cache=channels)
        if stage == "affine":
            affine, losses = _affine_level(level, affine, settings, iterations, tick)
        else:
            initial = _upsample_residual(residual, previous_grid, level) if residual is not None else None
            residual, losses = _nonrigid_level(level, affine, initial, settings, iterations, tick)
            previous_grid, final_level = level.grid, level
        used = len(losses["total"])
        done += iterations - used
        records.append(LevelRecord(stage, spacing, used, time.perf_counter() - start, losses))
        log.debug("%s: %d iterations, loss %.5f, %.2f s", label, used, losses["total"][-1], records[-1].seconds)
    progress("done", 1.0)

    displacement = None
    if residual is not None and final_level is not None:
        displacement = _full_field(reference.grid.with_spacing((final_level.spacing_mm,) * 3), affine,
                                   DisplacementField(residual.cpu().numpy(), final_level.grid))
    summary: dict[str, Any] = asdict(settings)
    return RegistrationResult(affine=affine, displacement=displacement, levels=tuple(records), settings=summary)
