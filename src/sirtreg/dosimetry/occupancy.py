"""Fractional occupancy: the fraction of each voxel of a grid that lies inside a contour.

A contour drawn on a fine CT grid (e.g. 1 mm) is carried onto a coarse SPECT
grid (e.g. 4.4 mm) as the fraction of each SPECT voxel that it covers, not as
a nearest-neighbour or one-hot label. A SPECT voxel half inside the liver then
holds half liver tissue, which keeps the activity balance and the liver mass
right at the edge, where a binary mask would add or drop whole 4.4 mm voxels.

The fraction is estimated by supersampling: every SPECT voxel near the contour
is divided into ``m`` x ``m`` x ``m`` sub-voxels (``m`` per axis so that a
sub-voxel is no wider than the contour's smallest spacing, at most 8), and the
contour is looked up (nearest neighbour) at each sub-voxel centre. Voxels fully
inside the contour get exactly 1.
"""

from __future__ import annotations

import math

import numpy as np

from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import Grid, LabelVolume
from sirtreg.resample import bounding_box

_MAX_SUBDIVISIONS = 8


def contour_mask(contour: LabelVolume, *, label: int | str | None = None) -> np.ndarray:
    """Boolean (z, y, x) mask of one label (value or name), or of every non-zero voxel when ``label`` is None."""
    mask = contour.array != 0 if label is None else contour.mask(label)
    if not mask.any():
        raise InputError(f"the contour {contour_name(contour, label=label)!r} is empty")
    return mask


def contour_name(contour: LabelVolume, *, label: int | str | None = None) -> str:
    """Display name of a contour label (its label name), or the joined names of all labels."""
    if label is None:
        return " + ".join(contour.labels.values()) or "contour"
    return contour.labels.get(contour.value_of(label), f"label {label}")


def _index_to_index(source: Grid, target: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(matrix, offset) mapping continuous (i, j, k) indices of ``source`` to those of ``target``."""
    a = source.index_to_world_matrix
    b = np.linalg.inv(target.index_to_world_matrix)
    combined = b @ a
    return combined[:3, :3], combined[:3, 3]


def _target_box(mask: np.ndarray, contour: Grid, onto: Grid) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) (i, j, k) indices of the ``onto`` voxels that the mask's bounding box touches."""
    start, stop = bounding_box(mask)
    lo, hi = start - 0.5, stop - 0.5
    corners = np.array([[(lo, hi)[a][0], (lo, hi)[b][1], (lo, hi)[c][2]] for a in (0, 1) for b in (0, 1) for c in (0, 1)])
    matrix, offset = _index_to_index(contour, onto)
    mapped = corners @ matrix.T + offset
    first = np.maximum(np.floor(mapped.min(axis=0) + 0.5).astype(int), 0)
    last = np.minimum(np.floor(mapped.max(axis=0) + 0.5).astype(int) + 1, np.asarray(onto.size))
    return first, last


def occupancy_on_grid(contour: LabelVolume, onto: Grid, *, label: int | str | None = None) -> np.ndarray:
    """Fraction (0..1) of each voxel of ``onto`` inside the contour, float32 array of ``onto.shape`` (z, y, x).

    Parameters
    ----------
    contour : label map on any grid overlapping ``onto``.
    onto : the target grid (typically the SPECT grid).
    label : label value or name; None takes every non-zero voxel.
    """
    mask = contour_mask(contour, label=label)
    if contour.grid.same_as(onto):
        return mask.astype(np.float32)
    name = contour_name(contour, label=label)
    onto.require_overlap(contour.grid, what=f"the contour {name!r} and the image grid")
    first, last = _target_box(mask, contour.grid, onto)
    if np.any(last <= first):
        raise GeometryMismatchError(f"the contour {name!r} lies outside the image field of view ({onto.describe()})")
    finest_mm = min(contour.grid.spacing_mm)
    steps = [min(_MAX_SUBDIVISIONS, max(1, math.ceil(s / finest_mm - 1e-6))) for s in onto.spacing_mm]
    offsets = np.stack(
        np.meshgrid(*[(np.arange(m) + 0.5) / m - 0.5 for m in steps], indexing="ij"), axis=-1
    ).reshape(-1, 3)
    matrix, shift = _index_to_index(onto, contour.grid)
    step = offsets @ matrix.T  # sub-voxel offsets in contour index units
    ny, nx = contour.grid.shape[1:]
    size = np.asarray(contour.grid.size)
    flat_mask = mask.ravel()
    jj, ii = np.meshgrid(np.arange(first[1], last[1]), np.arange(first[0], last[0]), indexing="ij")
    plane = np.stack([ii.ravel(), jj.ravel(), np.zeros(ii.size)], axis=-1).astype(float)
    out = np.zeros(onto.shape, dtype=np.float32)
    for k in range(first[2], last[2]):
        plane[:, 2] = k
        index = np.floor((plane @ matrix.T + shift + 0.5)[:, None, :] + step[None]).astype(np.int64)
        inside = np.all((index >= 0) & (index < size), axis=-1)
        flat = (index[..., 2] * ny + index[..., 1]) * nx + index[..., 0]
        hit = flat_mask[np.where(inside, flat, 0)] & inside
        out[k, first[1]:last[1], first[0]:last[0]] = hit.mean(axis=1).reshape(jj.shape)
    if not out.any():
        raise GeometryMismatchError(f"the contour {name!r} lies outside the image field of view ({onto.describe()})")
    return out
