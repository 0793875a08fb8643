"""Explicit resampling of volumes onto another grid or at world points.

Scalar volumes are interpolated linearly. Label volumes are resampled
nearest-neighbour or one-hot (each label interpolated as a fraction, then the
label with the largest fraction wins); they are never interpolated as numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume
from sirtreg.itk_bridge import apply_grid, to_sitk

LabelMode = Literal["nearest", "one-hot"]


def empty_sitk_image(grid: Grid) -> sitk.Image:
    """An empty SimpleITK image placed on ``grid``, the target of sitk.Resample."""
    image = sitk.Image([int(n) for n in grid.size], sitk.sitkUInt8)
    return apply_grid(image, grid)


def resample(volume: Volume, onto: Grid, *, fill_value: float = 0.0, label_mode: LabelMode = "nearest") -> Volume:
    """Resample ``volume`` onto the grid ``onto`` (same world positions, no transform).

    Parameters
    ----------
    volume : a Volume (linear interpolation) or a LabelVolume (``label_mode``).
    onto : the target grid.
    fill_value : value outside the source field of view (labels: always 0).
    label_mode : "nearest" or "one-hot" for label volumes.
    """
    onto.require_overlap(volume.grid, what="the image and the target grid")
    reference = empty_sitk_image(onto)
    if isinstance(volume, LabelVolume):
        if label_mode == "nearest":
            out = sitk.Resample(to_sitk(volume), reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0)
            return volume.on_grid(sitk.GetArrayFromImage(out).astype(volume.array.dtype), onto)
        if label_mode != "one-hot":
            raise InputError(f"label_mode must be 'nearest' or 'one-hot', got {label_mode!r}")

        def fraction(indicator: Volume) -> np.ndarray:
            resampled = sitk.Resample(to_sitk(indicator), reference, sitk.Transform(), sitk.sitkLinear, 0.0,
                                      sitk.sitkFloat32)
            return sitk.GetArrayFromImage(resampled)

        return volume.on_grid(one_hot_vote(volume, onto.shape, fraction), onto)
    image = to_sitk(volume.with_array(volume.array.astype(np.float32, copy=False)))
    out = sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, float(fill_value), sitk.sitkFloat32)
    return volume.on_grid(sitk.GetArrayFromImage(out), onto)


def resample_field(field: DisplacementField, onto: Grid) -> DisplacementField:
    """The displacement field interpolated linearly onto ``onto``, in SimpleITK's threaded resampler.

    The values equal ``field.displacement_at`` at the voxel centres of ``onto``
    wherever they lie within one voxel of the field's grid (edge values beyond
    its outer voxel centres); points further out get zero.
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(field.array, dtype=np.float32), isVector=True)
    padded = sitk.ZeroFluxNeumannPad(apply_grid(image, field.grid), [1] * 3, [1] * 3)  # one voxel of edge values
    out = sitk.Resample(padded, empty_sitk_image(onto), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat32)
    return DisplacementField(sitk.GetArrayFromImage(out), onto)


def one_hot_vote(
    labels: LabelVolume, shape: tuple[int, int, int], fraction: Callable[[Volume], np.ndarray]
) -> np.ndarray:
    """One-hot label interpolation: each label's indicator is interpolated by ``fraction``
    (a float Volume of 0/1 on the label grid -> fractions of shape ``shape``); the label
    with the largest fraction wins, background (1 - sum of fractions) included.
    """
    best = np.zeros(shape, dtype=np.float32)
    total = np.zeros(shape, dtype=np.float32)
    result = np.zeros(shape, dtype=labels.array.dtype)
    for value in labels.present_labels():
        share = fraction(Volume((labels.array == value).astype(np.float32), labels.grid)).astype(np.float32)
        wins = share > best
        result[wins] = value
        best = np.where(wins, share, best)
        total += share
    result[best <= 1.0 - total] = 0
    return result


def sample_one_hot(labels: LabelVolume, points_mm: Any) -> np.ndarray:
    """Labels at LPS points (..., 3) in mm by one-hot interpolation (as :func:`one_hot_vote` with
    :func:`sample_at` fractions), of shape ``points_mm.shape[:-1]``.

    Each label is interpolated only at the points whose trilinear neighbours can
    touch it (inside its bounding box grown by one voxel) and from its box alone,
    so the cost follows the labels' size, not the number of labels times the points.
    """
    points = np.asarray(points_mm, dtype=float)
    if points.shape[-1] != 3:
        raise InputError(f"points must have 3 coordinates in the last axis, got shape {points.shape}")
    index = labels.grid.world_to_index(points.reshape(-1, 3))
    upper = np.asarray(labels.grid.size, dtype=float) - 1.0
    inside = np.all((index >= -0.5) & (index <= upper + 0.5), axis=1)  # as sample_at
    index = np.clip(index, 0.0, upper)
    result = np.zeros(index.shape[0], dtype=labels.array.dtype)
    if not np.any(labels.array):
        return result.reshape(points.shape[:-1])

    def near(box: tuple[np.ndarray, np.ndarray], where: np.ndarray) -> np.ndarray:
        """Points (indices into ``index``, among ``where``) within one voxel of the voxel box [start, stop)."""
        start, stop = box
        return where[np.all((index[where] > start - 1.0) & (index[where] < stop), axis=1)]

    start, stop = bounding_box(labels.array > 0)
    candidates = np.flatnonzero(inside & np.all((index > start - 1.0) & (index < stop), axis=1))
    best = np.zeros(candidates.size, dtype=np.float32)
    total = np.zeros(candidates.size, dtype=np.float32)
    chosen = np.zeros(candidates.size, dtype=labels.array.dtype)
    position = np.full(index.shape[0], -1)
    position[candidates] = np.arange(candidates.size)
    for value in labels.present_labels():
        mask = labels.array == value
        start, stop = bounding_box(mask)
        points_near = near((start, stop), candidates)
        low, high = np.maximum(start - 1, 0), np.minimum(stop + 1, labels.grid.size)
        box = mask[low[2]:high[2], low[1]:high[1], low[0]:high[0]].astype(np.float32)
        coords = (index[points_near] - low)[:, ::-1].T  # (k, j, i) rows within the box
        share = ndimage.map_coordinates(box, coords, order=1, mode="nearest", prefilter=False)
        at = position[points_near]
        wins = share > best[at]
        chosen[at[wins]] = value
        best[at] = np.maximum(best[at], share)
        total[at] += share
    chosen[best <= 1.0 - total] = 0
    result[candidates] = chosen
    return result.reshape(points.shape[:-1])


def sample_at(volume: Volume, points_mm: Any, *, fill_value: float = 0.0) -> np.ndarray:
    """Values of ``volume`` at LPS points (..., 3) in mm; linear for images, nearest for labels.

    Returns an array of shape ``points_mm.shape[:-1]``.
    """
    points = np.asarray(points_mm, dtype=float)
    if points.shape[-1] != 3:
        raise InputError(f"points must have 3 coordinates in the last axis, got shape {points.shape}")
    index = volume.grid.world_to_index(points.reshape(-1, 3))
    # as in ITK, a voxel covers its whole extent: points up to half a voxel beyond
    # the outer voxel centres take the edge value, points further out the fill value
    upper = np.asarray(volume.grid.size, dtype=float) - 1.0
    inside = np.all((index >= -0.5) & (index <= upper + 0.5), axis=1)
    coords = np.clip(index, 0.0, upper)[:, ::-1].T  # (k, j, i) rows for the (z, y, x) array
    order = 0 if isinstance(volume, LabelVolume) else 1
    values = ndimage.map_coordinates(volume.array, coords, order=order, mode="nearest", prefilter=False)
    values = np.where(inside, values, np.asarray(fill_value, dtype=values.dtype))
    return values.reshape(points.shape[:-1])


def bounding_box(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) voxel indices in (i, j, k) order of the non-zero voxels of a (z, y, x) mask."""
    occupied = [np.flatnonzero(np.any(mask, axis=tuple(a for a in range(3) if a != axis))) for axis in (2, 1, 0)]
    if occupied[0].size == 0:
        raise InputError("the mask is empty: no voxel to crop to")
    return np.array([o[0] for o in occupied]), np.array([o[-1] + 1 for o in occupied])


def crop_to_mask(volume: Volume, mask: np.ndarray, *, margin_mm: float = 0.0) -> Volume:
    """Crop ``volume`` to the bounding box of ``mask`` (z, y, x) grown by ``margin_mm`` in every direction."""
    if mask.shape != volume.shape:
        raise InputError(f"mask shape {mask.shape} does not match image shape {volume.shape}")
    if margin_mm < 0:
        raise InputError(f"margin must be >= 0 mm, got {margin_mm}")
    return volume.crop(*mask_box(mask, volume.grid, margin_mm=margin_mm))


def mask_box(mask: np.ndarray, grid: Grid, *, margin_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) voxel indices (i, j, k) of a (z, y, x) mask's bounding box grown by ``margin_mm``,
    clipped to ``grid``."""
    start, stop = bounding_box(mask)
    pad = np.ceil(margin_mm / np.asarray(grid.spacing_mm) - 1e-9).astype(int)
    return np.maximum(start - pad, 0), np.minimum(stop + pad, np.asarray(grid.size))
