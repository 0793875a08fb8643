"""The registration engine: affine, then dense non-rigid, over pyramids chosen by spacing in mm.

All work happens on a working region of the reference: the bounding box of the
reference liver (or the whole reference when no labels are given) grown by a
margin in mm, resampled at each pyramid level to isotropic voxels of that
level's spacing. The floating channels (image or its MIND descriptor, label
indicators, and the floating field of view) are smoothed to the level's
resolution and sampled at T(x) with trilinear interpolation, so every term is
differentiable with respect to the affine parameters or the displacement of
every voxel. Points that T maps outside the floating field of view count in no
similarity term: a scan that cuts the liver off says nothing about the part it
does not show.

The energy of each stage is a weighted sum of named terms (:func:`stage_energy`);
one optimisation loop (:func:`optimise`) serves the affine and the non-rigid
levels and records why each level stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
from torch import nn

from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume
from sirtreg.itk_bridge import to_sitk
from sirtreg.progress import Progress, no_progress
from sirtreg.register.config import RegistrationSettings
from sirtreg.register.guidance import Classes, check_inputs
from sirtreg.register.optimiser import AnnealedAdam
from sirtreg.register.pyramid import (
    ReferenceChannels,
    Stage,
    aligned_grid,
    box_around,
    indicator,
    indicator_margin_mm,
    reference_box,
    reference_level,
    smooth_and_resample,
    stages,
)
from sirtreg.register.result import LevelRecord, RegistrationResult
from sirtreg.register.sampling import PlacedTensor, grid_points, index_step_matrix
from sirtreg.register.terms import (
    DescriptorSSD,
    FoldingPenalty,
    LabelSSD,
    MutualInformation,
    SpringRegulariser,
    mind_ssc,
)
from sirtreg.register.terms.mutual_information import normalise_intensities
from sirtreg.register.transforms import AffineTransform
from sirtreg.resample import bounding_box

log = logging.getLogger(__name__)

FLOATING_MARGIN_MM = 60.0
FLOATING_OVERSAMPLING = 1.5
STOP_WINDOW = 15
LANDMARK_REACH_MM = 25.0  # a landmark's channel is sampled this far around the reference landmark


# --- initial alignment ------------------------------------------------------------
def _foreground(volume: Volume) -> LabelVolume:
    """The voxels above the image's Otsu threshold: the body in a CT or an MR."""
    image = to_sitk(volume.with_array(volume.array.astype(np.float32, copy=False)))
    mask = sitk.OtsuThreshold(image, 0, 1, 128)
    return LabelVolume.from_mask(sitk.GetArrayFromImage(mask), volume.grid, name="foreground")


def initial_alignment(reference: Volume, floating: Volume, reference_labels: LabelVolume | None,
                      floating_labels: LabelVolume | None, region: Grid) -> tuple[AffineTransform, str]:
    """The starting affine, about the region centre, and how it was found.

    With labels on both sides: the translation that matches the labels' mass centres. Without: the
    identity (the scanners' coordinates) where the images overlap in space, else the translation
    that matches the mass centres of their foregrounds (Otsu), as scanners that put the origin
    anywhere need. Either way the aligned images overlap: each mass centre lies inside its image.
    """
    centre = region.center_mm
    if reference_labels is not None and floating_labels is not None:
        shift = floating_labels.mass_centre_mm() - reference_labels.mass_centre_mm()
        how = "label mass centres"
    elif reference.grid.overlaps(floating.grid):
        shift, how = np.zeros(3), "scanner coordinates"
    else:
        shift = _foreground(floating).mass_centre_mm() - _foreground(reference).mass_centre_mm()
        how = "foreground mass centres (the images did not overlap in space)"
    return AffineTransform(np.eye(3), shift, centre), how


# --- pyramid levels -----------------------------------------------------------------
@dataclass(frozen=True)
class _LocalChannel:
    """One landmark's floating indicator on a grid around it, and which active voxels of a level may see it
    (``near``, boolean (N,): those within ``LANDMARK_REACH_MM`` of the reference landmark's box)."""

    floating: PlacedTensor
    near: torch.Tensor


def _box_mask(mask: torch.Tensor, grow: float) -> np.ndarray:
    """The bounding box of a (D, H, W) mask grown by ``grow`` voxels, as a boolean array (none if empty)."""
    box = np.zeros(tuple(mask.shape), bool)
    if not bool(mask.any()):
        return box
    start, stop = bounding_box(mask.cpu().numpy())
    pad = int(np.ceil(grow))
    start, stop = np.maximum(start - pad, 0), stop + pad
    box[start[2]:stop[2], start[1]:stop[1], start[0]:stop[0]] = True
    return box


class Level:
    """Reference and floating channels at one pyramid spacing, as torch tensors.

    Channels come in named groups: ``"image"`` (the normalised intensity, or its
    12-channel MIND descriptor when the stage's image term is ``"mind"``) and ``"labels"``
    (one indicator per guiding class). Only the groups a stage uses are built. The
    reference side comes from :func:`~sirtreg.register.pyramid.reference_level`. The
    floating channels lie on an isotropic grid in the reference orientation, of the
    level spacing / ``FLOATING_OVERSAMPLING`` (never finer than the floating image),
    with one more channel first: the floating field of view (1 inside, 0 outside).

    The similarity terms look at the active voxels only: those within ``margin_mm`` of the reference
    labels (the liver), or every voxel without labels. The displacement lives on the whole level
    grid, where the regularisers see it.
    """

    def __init__(self, stage: Stage, region: Grid, reference: Volume, floating: Volume,
                 reference_labels: LabelVolume | None, floating_labels: LabelVolume | None,
                 classes: tuple[Classes, Classes] | None, device: torch.device, *, margin_mm: float,
                 cache: dict[tuple[Any, ...], Any], reference_cache: dict[tuple[Any, ...], Any] | None = None) -> None:
        spacing_mm = self.spacing_mm = stage.spacing_mm
        self.grid = region.with_spacing((spacing_mm,) * 3)
        self.points = grid_points(self.grid, device)
        sigma = spacing_mm / 2.0
        shared = cache if reference_cache is None else reference_cache  # the reference side, maybe shared
        side = reference_level(shared, stage, self.grid, reference, reference_labels,
                               classes[0] if classes else None, margin_mm)
        self.active = torch.from_numpy(side.near).to(device) if side.near is not None else None
        self.active_points = self.points.reshape(-1, 3)
        if self.active is not None:
            self.active_points = self.active_points[self.active]
        floating_spacing = max(spacing_mm / FLOATING_OVERSAMPLING, min(floating.grid.spacing_mm))
        floating_grid = aligned_grid(floating.grid, self.grid.direction, floating_spacing)

        def channel(key: tuple[Any, ...], make: Callable[[], Volume]) -> torch.Tensor:
            """A floating channel smoothed and resampled onto ``floating_grid``; the affine and non-rigid stages
            share those of equal spacing."""
            if (*key, spacing_mm) not in cache:
                smoothed = smooth_and_resample(make(), floating_grid, sigma)
                cache[(*key, spacing_mm)] = torch.from_numpy(smoothed).to(device)
            return cache[(*key, spacing_mm)]

        self.reference: dict[str, torch.Tensor] = {}
        groups: list[tuple[str, torch.Tensor]] = [("fov", channel(
            ("floating fov",), lambda: floating.with_array(np.ones(floating.shape, np.float32)))[None])]
        if stage.image_term == "mi":
            self.reference["image"] = normalise_intensities(torch.from_numpy(side.image).to(device))[None]
            groups.append(("image", normalise_intensities(channel(("floating",), lambda: floating))[None]))
        elif stage.image_term == "mind":
            if ("reference", "mind", spacing_mm) not in shared:
                shared[("reference", "mind", spacing_mm)] = mind_ssc(torch.from_numpy(side.image).to(device))
            self.reference["image"] = shared[("reference", "mind", spacing_mm)]
            if ("floating", "mind", spacing_mm) not in cache:  # MIND at the level spacing, sampled on floating_grid
                same = aligned_grid(floating_grid, self.grid.direction, spacing_mm)
                descriptor = mind_ssc(torch.from_numpy(smooth_and_resample(floating, same, sigma)).to(device))
                cache[("floating", "mind", spacing_mm)] = PlacedTensor(descriptor, same).sample(
                    grid_points(floating_grid, device))[0]
            groups.append(("image", cache[("floating", "mind", spacing_mm)]))
        self.landmarks: list[_LocalChannel] = []
        if side.labels:
            assert classes is not None and floating_labels is not None
            floating_classes = classes[1]
            margin = indicator_margin_mm(spacing_mm)
            self.reference["labels"] = torch.stack([torch.from_numpy(array) for array in side.labels]).to(device)
            # the liver is sampled with the other channels; each landmark on a grid of its own, at the
            # active voxels near it only (elsewhere its warped indicator is zero)
            groups.append(("labels", channel(("floating", floating_classes[0]),
                                             lambda: indicator(floating_labels, floating_classes[0], margin))[None]))
            for values, reference_channel in zip(floating_classes[1:], self.reference["labels"][1:]):
                if ("floating local", values, spacing_mm) not in cache:
                    crop = indicator(floating_labels, values, margin)
                    onto = aligned_grid(crop.grid, self.grid.direction, floating_spacing)
                    data = torch.from_numpy(smooth_and_resample(crop, onto, sigma)).to(device)
                    cache[("floating local", values, spacing_mm)] = PlacedTensor(data[None], onto, with_gradients=True)
                near = _box_mask(reference_channel > 1e-3, LANDMARK_REACH_MM / spacing_mm)
                self.landmarks.append(_LocalChannel(cache[("floating local", values, spacing_mm)],
                                                    self.select(torch.from_numpy(near.reshape(-1)).to(device))))
        self.slices: dict[str, slice] = {}
        start = 0
        for name, data in groups:
            self.slices[name] = slice(start, start + data.shape[0])
            start += data.shape[0]
        # every group on one grid: one interpolation serves every term
        self.floating = PlacedTensor(torch.cat([data for _, data in groups]), floating_grid, with_gradients=True)
        self.reference = {name: self.select(data.flatten(1)) for name, data in self.reference.items()}

    def select(self, flat: torch.Tensor) -> torch.Tensor:
        """The active voxels (..., N) of a (..., D * H * W) tensor: those the similarity terms look at."""
        return flat if self.active is None else flat[..., self.active]

    def sample_floating(self, points: torch.Tensor, chosen: torch.Tensor | None = None
                        ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The warped floating groups {name: (C, N)} at points (N, 3) of the active voxels ``chosen`` (indices
        into them; None: all of them, in order), and the (N,) mask of points in the floating field of view."""
        values, inside = self.floating.sample(points)
        groups = {name: values[part] for name, part in self.slices.items() if name != "fov"}
        in_view = inside & (values[self.slices["fov"]][0].detach() > 0.5)
        if self.landmarks:
            columns = [groups["labels"]]
            for landmark in self.landmarks:
                where = torch.nonzero(landmark.near if chosen is None else landmark.near[chosen]).squeeze(1)
                sampled = landmark.floating.sample(points[where])[0][0]
                columns.append(points.new_zeros(points.shape[0]).index_put((where,), sampled)[None])
            groups["labels"] = torch.cat(columns)
        return groups, in_view


# --- energy and optimisation --------------------------------------------------------
@dataclass(frozen=True)
class Term:
    """One named, weighted term of an energy. Similarity terms compare a channel group of the reference
    with the warped floating group of the same name; regularisers see the non-affine displacement."""

    name: str
    weight: float
    module: nn.Module
    regulariser: bool = False


def stage_energy(settings: RegistrationSettings, stage: str, level: Level, affine_matrix: np.ndarray,
                 device: torch.device) -> list[Term]:
    """The terms of a stage at one level, weights included (zero-weight terms left out).

    affine: SSD of the guiding labels where there are labels, else mutual information.
    non-rigid: wI * image similarity (MIND or MI) + wS * SSD(labels) + rigidity * springs + folding.
    """
    nonrigid = settings.nonrigid
    if stage == "affine":
        if "labels" in level.reference:
            return [Term("labels", 1.0, LabelSSD())]
        return [Term("image", 1.0, MutualInformation(bins=settings.bins))]
    image = DescriptorSSD() if nonrigid.similarity == "mind" else MutualInformation(bins=settings.bins)
    steps = index_step_matrix(level.grid)
    matrix = torch.from_numpy(affine_matrix)
    terms = [Term("image", nonrigid.image_weight, image), Term("labels", nonrigid.label_weight, LabelSSD()),
             Term("spring", nonrigid.rigidity,
                  SpringRegulariser(steps, matrix, connectivity=nonrigid.connectivity), regulariser=True),
             Term("folding", nonrigid.folding_weight, FoldingPenalty(steps, matrix), regulariser=True)]
    return [Term(t.name, t.weight, t.module.to(device), t.regulariser) for t in terms
            if t.weight > 0 and (t.regulariser or t.name in level.reference)]


def evaluate_energy(terms: Sequence[Term], reference: dict[str, torch.Tensor], warped: dict[str, torch.Tensor],
                    mask: torch.Tensor, displacement: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Each term's weighted value: similarities on (C, N) channel groups and the (N,) mask, regularisers on the
    (D, H, W, 3) displacement."""
    values = {}
    for term in terms:
        if term.regulariser:
            values[term.name] = term.weight * term.module(displacement)
        else:
            values[term.name] = term.weight * term.module(reference[term.name], warped[term.name], mask)
    return values


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


def optimise(parameters: Sequence[tuple[torch.Tensor, float]], energy: Callable[[], dict[str, torch.Tensor]], *,
             iterations: int, tolerance: float, tick: Callable[[], None]) -> tuple[dict[str, list[float]], str]:
    """Minimise the sum of the named terms ``energy()`` returns over ``parameters`` (leaf tensor, step size).

    Returns the history of every term and of their total, and why the loop stopped: "converged" (the
    total stopped improving, see :class:`_Stopper`) or "iteration limit".
    """
    optimiser = AnnealedAdam(parameters, iterations=iterations)
    stopper = _Stopper(tolerance)
    history: dict[str, list[float]] = {"total": []}
    for _ in range(iterations):
        optimiser.zero_grad()
        terms = energy()
        total = sum(terms.values())
        total.backward()
        optimiser.step()
        for name, value in terms.items():
            history.setdefault(name, []).append(float(value.detach()))
        history["total"].append(float(total.detach()))
        tick()
        if stopper.done(history["total"][-1]):
            return history, "converged"
    return history, "iteration limit"


def _affine_level(level: Level, affine: AffineTransform, settings: RegistrationSettings, iterations: int,
                  tick: Callable[[], None]) -> tuple[AffineTransform, dict[str, list[float]], str]:
    device = level.points.device
    centre = torch.tensor(affine.centre_mm, dtype=torch.float32, device=device)
    matrix = torch.tensor(affine.matrix, dtype=torch.float32, device=device, requires_grad=True)
    translation = torch.tensor(affine.translation_mm, dtype=torch.float32, device=device, requires_grad=True)
    terms = stage_energy(settings, "affine", level, affine.matrix, device)
    points = level.active_points - centre
    reference = level.reference
    # 12 parameters need few voxels: a fresh random subset per iteration, as elastix does
    samples = settings.affine.samples if points.shape[0] > settings.affine.samples else None
    generator = torch.Generator(device=device).manual_seed(settings.seed)

    def energy() -> dict[str, torch.Tensor]:
        chosen = (torch.randint(points.shape[0], (samples,), generator=generator, device=device) if samples
                  else slice(None))
        warped, in_view = level.sample_floating(points[chosen] @ matrix.T + centre + translation,
                                                chosen if samples else None)
        return evaluate_energy(terms, {n: d[:, chosen] for n, d in reference.items()}, warped, in_view)

    history, stopped = optimise([(matrix, settings.affine.matrix_step),
                                 (translation, settings.affine.translation_step_mm * level.spacing_mm / 4.0)],
                                energy, iterations=iterations, tolerance=settings.tolerance, tick=tick)
    result = AffineTransform(matrix.detach().double().cpu().numpy(), translation.detach().double().cpu().numpy(),
                             affine.centre_mm)
    return result, history, stopped


def _nonrigid_level(level: Level, affine: AffineTransform, initial: torch.Tensor | None,
                    settings: RegistrationSettings, iterations: int,
                    tick: Callable[[], None]) -> tuple[torch.Tensor, dict[str, list[float]], str]:
    device = level.points.device
    with torch.no_grad():
        affine_points = torch.from_numpy(
            affine.transform_points(level.points.cpu().numpy().astype(np.float64)).astype(np.float32)).to(device)
    residual = (initial if initial is not None else torch.zeros_like(level.points)).clone().requires_grad_(True)
    terms = stage_energy(settings, "non-rigid", level, affine.matrix, device)
    def energy() -> dict[str, torch.Tensor]:
        warped, in_view = level.sample_floating(level.select((affine_points + residual).reshape(-1, 3).T).T)
        return evaluate_energy(terms, level.reference, warped, in_view, residual)

    history, stopped = optimise([(residual, settings.nonrigid.step_mm * level.spacing_mm / 3.0)], energy,
                                iterations=iterations, tolerance=settings.tolerance, tick=tick)
    return residual.detach(), history, stopped


def _upsample_residual(residual: torch.Tensor, coarse: Grid, fine: Level) -> torch.Tensor:
    placed = PlacedTensor(residual.permute(3, 0, 1, 2).contiguous(), coarse)
    values, _ = placed.sample(fine.points)
    return values.permute(1, 2, 3, 0).contiguous()


def _full_field(grid: Grid, affine: AffineTransform, residual: DisplacementField) -> DisplacementField:
    """The whole transform on ``grid`` (covering the reference): the affine plus the non-rigid residual,
    which is extended at constant value beyond the working region."""
    total = affine.displacement_on(grid).array + residual.displacement_on(grid).array
    return DisplacementField(total, grid)


def register(
    reference: Volume, floating: Volume, *, settings: RegistrationSettings | None = None,
    reference_labels: LabelVolume | None = None, floating_labels: LabelVolume | None = None,
    progress: Progress | None = None, reference_channels: ReferenceChannels | None = None,
) -> RegistrationResult:
    """Register ``floating`` to ``reference``; returns the reference->floating transform.

    Parameters
    ----------
    reference, floating : the images, each on its own grid (LPS mm). Where they do not overlap in
        space, they are first aligned by their mass centres (see :func:`initial_alignment`).
    settings : guidance, weights, pyramids (default: the ``liver`` preset).
    reference_labels, floating_labels : label maps on the images' own grids (see
        :func:`guidance_labels`): the liver (value 1) for ``liver`` guidance; liver = 1 and one
        value >= 2 per landmark for ``liver+landmarks``. With ``image`` guidance, reference labels
        only set the working region.
    progress : optional callback ``progress(step, fraction)``.
    reference_channels : the reference side of the pyramid, kept for the next call with the same reference
        and reference labels (see :class:`ReferenceChannels`); the result does not depend on it.
    """
    settings = settings or RegistrationSettings()
    progress = progress or no_progress
    classes = check_inputs(reference, floating, settings, reference_labels, floating_labels)
    torch.manual_seed(settings.seed)
    device = torch.device(settings.device)
    region, crop_box = reference_box(reference, reference_labels, settings)
    affine, how = initial_alignment(reference, floating, reference_labels if classes else None,
                                    floating_labels if classes else None, region)
    log.debug("initial alignment by %s: %s mm", how, np.round(affine.translation_mm, 1))
    floating_box = box_around(floating, affine.transform_points(region.corners_mm()), FLOATING_MARGIN_MM, tried=how)
    floating_crop = floating.crop(*floating_box)
    floating_labels_crop = floating_labels.crop(*floating_box) if classes and floating_labels is not None else None
    reference_crop = reference.crop(*crop_box)
    reference_labels_crop = reference_labels.crop(*crop_box) if reference_labels is not None else None
    reference_cache = (None if reference_channels is None
                       else reference_channels.scope(reference, reference_labels, region, crop_box,
                                                     settings.margin_mm, settings.device))

    levels = stages(settings, classes is not None)
    total = sum(stage.iterations for stage in levels)
    done = 0
    channels: dict[tuple[Any, ...], Any] = {}
    records: list[LevelRecord] = []
    residual: torch.Tensor | None = None
    previous_grid: Grid | None = None
    final_level: Level | None = None
    for stage in levels:
        start = time.perf_counter()
        label = f"{stage.name} {stage.spacing_mm:g} mm"

        def tick(label: str = label) -> None:
            nonlocal done
            done += 1
            if done % 10 == 0:
                progress(label, done / total)

        level = Level(stage, region, reference_crop, floating_crop, reference_labels_crop, floating_labels_crop,
                      classes, device, margin_mm=settings.margin_mm, cache=channels, reference_cache=reference_cache)
        iterations = stage.iterations
        if stage.name == "affine":
            affine, losses, stopped = _affine_level(level, affine, settings, iterations, tick)
        else:
            initial = _upsample_residual(residual, previous_grid, level) if residual is not None else None
            residual, losses, stopped = _nonrigid_level(level, affine, initial, settings, iterations, tick)
            previous_grid, final_level = level.grid, level
        used = len(losses["total"])
        done += iterations - used
        records.append(LevelRecord(stage.name, stage.spacing_mm, used, time.perf_counter() - start, losses, stopped))
        log.debug("%s: %d iterations (%s), loss %.5f, %.2f s", label, used, stopped, losses["total"][-1],
                  records[-1].seconds)
    progress("done", 1.0)

    displacement = None
    if residual is not None and final_level is not None:
        displacement = _full_field(reference.grid.with_spacing((final_level.spacing_mm,) * 3), affine,
                                   DisplacementField(residual.cpu().numpy(), final_level.grid))
    summary: dict[str, Any] = {**asdict(settings), "initial_alignment": how}
    return RegistrationResult(affine=affine, displacement=displacement, levels=tuple(records), settings=summary)
