"""Explicit resampling of volumes onto another grid or at world points.

Scalar volumes are interpolated linearly. Label volumes are resampled
nearest-neighbour or one-hot (each label interpolated as a fraction, then the
label with the largest fraction wins); they are never interpolated as numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import SimpleITK as sitk

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume
from sirtreg.itk_bridge import apply_grid, to_sitk
from sirtreg.parallel import in_parallel

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

    The values equal ``field.displacement_at`` at the voxel centres of ``onto``: trilinear inside the
    field's grid, the edge values beyond its outer voxel centres (the border extended, as ``displacement_at``).
    """
    image = sitk.GetImageFromArray(np.ascontiguousarray(field.array, dtype=np.float32), isVector=True)
    padded = sitk.ZeroFluxNeumannPad(apply_grid(image, field.grid), [1] * 3, [1] * 3)  # one voxel of edge values
    out = sitk.Resample(padded, empty_sitk_image(onto), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat32,
                        useNearestNeighborExtrapolator=True)
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


_CHUNK_POINTS = 1 << 18  # points per step and thread: temporaries of a few MB, reused from step to step


def _chunks(count: int) -> list[tuple[int, int]]:
    """(start, stop) of the consecutive steps of at most :data:`_CHUNK_POINTS` that cover ``count`` points."""
    return [(start, min(start + _CHUNK_POINTS, count)) for start in range(0, count, _CHUNK_POINTS)]


def map_coordinates_threaded(array: np.ndarray, coords: np.ndarray, *, order: int) -> np.ndarray:
    """``ndimage.map_coordinates(array, coords, order, mode="nearest", prefilter=False)`` over the columns
    of ``coords`` (3, n) in blocks on several threads (SciPy releases the GIL while it interpolates)."""
    from scipy import ndimage  # at first use: commands that never resample start without SciPy

    count = coords.shape[1]
    out = np.empty(count, dtype=array.dtype)

    def block(start: int, stop: int) -> Callable[[], None]:
        return lambda: ndimage.map_coordinates(array, coords[:, start:stop], output=out[start:stop], order=order,
                                               mode="nearest", prefilter=False)

    in_parallel([block(start, stop) for start, stop in _chunks(count)])
    return out


@dataclass(frozen=True, eq=False)
class GridPoints:
    """World points located on one grid, to sample several volumes of that grid at the same points.

    Attributes
    ----------
    grid : the grid whose voxels are sampled.
    coords : (3, n) float32 continuous voxel indices in (k, j, i) order (the rows ``map_coordinates`` takes),
        clipped to the grid: a point beyond the outer voxel centres takes the edge value.
    inside : (n,) bool, the points within half a voxel of the outer voxel centres (as ITK: a voxel covers its
        whole extent); the others take the fill value.
    shape : the shape of the points' array without its last axis, the shape of every sampled result.
    """

    grid: Grid
    coords: np.ndarray
    inside: np.ndarray
    shape: tuple[int, ...]

    @classmethod
    def locate(cls, grid: Grid, points_mm: Any) -> GridPoints:
        """LPS points (..., 3) in mm on ``grid``."""
        points = np.asarray(points_mm)
        if points.ndim < 1 or points.shape[-1] != 3:
            raise InputError(f"points must have 3 coordinates in the last axis, got shape {points.shape}")
        flat = points.reshape(-1, 3)
        return cls.from_blocks(grid, points.shape[:-1],
                               [(a, b, lambda a=a, b=b: flat[a:b]) for a, b in _chunks(flat.shape[0])])

    @classmethod
    def from_blocks(cls, grid: Grid, shape: tuple[int, ...],
                    blocks: Sequence[tuple[int, int, Callable[[], np.ndarray]]]) -> GridPoints:
        """Points of ``shape`` (without the last axis) given in blocks ``(start, stop, make)``: ``make()``
        returns the (stop - start, 3) LPS points (mm) of the flat positions start:stop. The blocks, which
        must cover every position, are located on several threads."""
        count = math.prod(shape)
        if sum(stop - start for start, stop, _ in blocks) != count:
            raise InputError(f"the blocks of points do not cover the {count} positions of shape {tuple(shape)}")
        coords = np.empty((3, count), np.float32)
        inside = np.empty(count, bool)
        upper = np.asarray(grid.size, dtype=float) - 1.0

        scaled = grid.direction_matrix / np.asarray(grid.spacing_mm)  # index = p @ scaled - origin @ scaled
        offset = np.asarray(grid.origin_mm) @ scaled

        def locate(start: int, stop: int, make: Callable[[], np.ndarray]) -> Callable[[], None]:
            def job() -> None:
                index = scaled.T @ np.asarray(make(), dtype=float).T  # (3, m): contiguous rows (i, j, k)
                ok = np.ones(stop - start, bool)
                for axis in range(3):
                    row = index[axis]
                    row -= offset[axis]
                    ok &= (row >= -0.5) & (row <= upper[axis] + 0.5)
                    np.clip(row, 0.0, upper[axis], out=row)
                    coords[2 - axis, start:stop] = row
                inside[start:stop] = ok
            return job

        in_parallel([locate(*block) for block in blocks])
        return cls(grid, coords, inside, tuple(shape))

    def require_grid(self, grid: Grid) -> None:
        if not self.grid.same_as(grid):
            raise InputError(f"points located on {self.grid.describe()} cannot sample a volume on {grid.describe()}")


def _located(volume: Volume, points_mm: Any) -> GridPoints:
    if isinstance(points_mm, GridPoints):
        points_mm.require_grid(volume.grid)
        return points_mm
    return GridPoints.locate(volume.grid, points_mm)


def _within(rows: np.ndarray, box: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Which columns of ``rows`` (3, b) (k, j, i) lie strictly inside ``box`` (start, stop), each (k, j, i)."""
    start, stop = box
    keep = (rows[0] > start[0]) & (rows[0] < stop[0])
    for axis in (1, 2):
        keep &= (rows[axis] > start[axis]) & (rows[axis] < stop[axis])
    return keep


def sample_one_hot(labels: LabelVolume, points_mm: Any) -> np.ndarray:
    """Labels at LPS points (..., 3) in mm (or :class:`GridPoints` on the labels' grid) by one-hot
    interpolation (as :func:`one_hot_vote` with :func:`sample_at` fractions), of the points' shape.

    Each label is interpolated only at the points whose trilinear neighbours can
    touch it (inside its bounding box grown by one voxel) and from its box alone,
    so the cost follows the labels' size, not the number of labels times the points.
    The points are voted on in blocks, on several threads.
    """
    located = _located(labels, points_mm)
    coords, count = located.coords, located.coords.shape[1]
    result = np.zeros(count, dtype=labels.array.dtype)
    if not np.any(labels.array):
        return result.reshape(located.shape)
    boxes = []  # per label: value, the box its neighbours reach (k, j, i), its indicator's corner, the indicator
    for value in labels.present_labels():
        mask = labels.array == value
        start, stop = bounding_box(mask)
        low, high = np.maximum(start - 1, 0), np.minimum(stop + 1, labels.grid.size)
        indicator = mask[low[2]:high[2], low[1]:high[1], low[0]:high[0]].astype(np.float32)
        boxes.append((value, (start[::-1] - 1.0, stop[::-1].astype(float)), low[::-1, None].astype(np.float32),
                      indicator))
    from scipy import ndimage

    start, stop = bounding_box(labels.array > 0)
    every_label = (start[::-1] - 1.0, stop[::-1].astype(float))

    def vote(first: int, last: int) -> None:
        candidates = np.flatnonzero(_within(coords[:, first:last], every_label) & located.inside[first:last])
        rows = coords[:, first + candidates]
        best = np.zeros(candidates.size, dtype=np.float32)
        total = np.zeros(candidates.size, dtype=np.float32)
        chosen = np.zeros(candidates.size, dtype=labels.array.dtype)
        for value, reach, corner, indicator in boxes:
            near = np.flatnonzero(_within(rows, reach))
            share = ndimage.map_coordinates(indicator, rows[:, near] - corner, order=1, mode="nearest",
                                            prefilter=False)  # (k, j, i) within the indicator's box
            wins = share > best[near]
            chosen[near[wins]] = value
            best[near] = np.maximum(best[near], share)
            total[near] += share
        chosen[best <= 1.0 - total] = 0
        result[first + candidates] = chosen

    in_parallel([lambda first=first, last=last: vote(first, last) for first, last in _chunks(count)])
    return result.reshape(located.shape)


def sample_at(volume: Volume, points_mm: Any, *, fill_value: float = 0.0) -> np.ndarray:
    """Values of ``volume`` at LPS points (..., 3) in mm (or :class:`GridPoints` on the volume's grid);
    linear for images, nearest for labels; ``fill_value`` beyond half a voxel outside the outer voxel
    centres. Returns an array of the points' shape.
    """
    located = _located(volume, points_mm)
    order = 0 if isinstance(volume, LabelVolume) else 1
    values = map_coordinates_threaded(volume.array, located.coords, order=order)
    if not located.inside.all():
        values[~located.inside] = fill_value
    return values.reshape(located.shape)


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
