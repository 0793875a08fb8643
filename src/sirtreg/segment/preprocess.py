"""The authors' preprocessing, in world geometry.

Their arrays are (x, y, z) in RAS order (index x grows to the patient's
right, y to anterior, z to superior) and are resampled with pymirc's
``zoom3d``: per axis, a grid of ``ceil(n * zoom)`` voxels centred on the
same point, linear interpolation (zero outside) when upsampling and exact
area averaging when downsampling. Here the same operations run on our
(z, y, x) arrays of a grid whose index axes point R, A, S, and every result
keeps an exact :class:`~sirtreg.geometry.Grid`, so labels go back to the
input grid by world position.

Liver chain: body crop -> 1.5 mm -> 3x3x3 median -> 3 mm -> intensity
normalisation to [-0.5, 0.5]: CT ``clip(HU / 1000, -0.2, 0.2) * 2.5``;
MR ``(clip(v, min, min + 0.8 * range) - min) / (0.8 * range) - 0.5``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import SimpleITK as sitk
from scipy import ndimage, sparse

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, Volume
from sirtreg.resample import resample

log = logging.getLogger(__name__)

Modality = Literal["ct", "mr"]

RAS_DIRECTION = np.diag([-1.0, -1.0, 1.0])  # columns: index axes toward R, A, S in LPS world
CT_TISSUE_HU = -150.0  # the authors' soft-tissue threshold for the body crop
MR_TISSUE_FRACTION = 0.01  # the authors' MR tissue threshold, as a fraction of the maximum
MIN_SLICES = 3


@dataclass(frozen=True)
class Prepared:
    """Network-ready image: ``array`` (z, y, x) float32 on ``grid`` (R, A, S index axes)."""

    array: np.ndarray
    grid: Grid


def check_modality(modality: str) -> Modality:
    value = str(modality).lower()
    if value not in ("ct", "mr"):
        raise InputError(f"modality must be 'ct' or 'mr', got {modality!r}")
    return value  # type: ignore[return-value]


def check_image(volume: Volume) -> None:
    """Refuse what cannot be segmented: non-volumes, 2D images, NaN voxels, constant images."""
    if not isinstance(volume, Volume):
        raise InputError(f"expected a sirtreg Volume (a 3D image), got {type(volume).__name__}")
    if min(volume.grid.size) < MIN_SLICES:
        raise InputError(
            f"the image is 2D or too thin ({volume.grid.describe()}): liver segmentation needs a 3D "
            f"volume with at least {MIN_SLICES} voxels along every axis"
        )
    if not np.all(np.isfinite(volume.array)):
        raise InputError("the image holds NaN or infinite voxels")


def to_ras(volume: Volume) -> Volume:
    """The same voxels with index axes toward R, A, S (axes permuted and flipped, no interpolation).

    An oblique image is resampled (linearly; label maps one-hot) onto an
    axis-aligned grid of the same spacing first.
    """
    source = volume.grid
    cosines = source.direction_matrix.T @ RAS_DIRECTION
    axes = np.argmax(np.abs(cosines), axis=0)
    if sorted(axes) != [0, 1, 2] or source.is_oblique():
        log.warning("oblique image %s: resampling onto an axis-aligned grid before segmentation", source.describe())
        spacing = [source.spacing_mm[a] for a in axes] if sorted(axes) == [0, 1, 2] else [min(source.spacing_mm)] * 3
        lo, hi = source.bounds_mm()
        size = np.maximum(1, np.round((hi - lo) / np.asarray(spacing))).astype(int)
        centre = (lo + hi) / 2.0
        origin = centre - RAS_DIRECTION @ ((size - 1) / 2.0 * np.asarray(spacing))
        grid = Grid(tuple(size), tuple(spacing), tuple(origin), tuple(RAS_DIRECTION.reshape(-1)))
        return resample(volume, grid, fill_value=float(np.min(volume.array)), label_mode="one-hot")
    signs = np.sign(cosines[axes, [0, 1, 2]])
    array = np.transpose(volume.array, [2 - axes[2 - t] for t in range(3)])
    for b in range(3):
        if signs[b] < 0:
            array = np.flip(array, axis=2 - b)
    size = [source.size[a] for a in axes]
    start = np.array([0.0 if signs[b] > 0 else source.size[a] - 1.0 for b, a in enumerate(axes)])
    source_index = np.empty(3)
    source_index[axes] = start
    direction = source.direction_matrix[:, axes] * signs[None, :]
    grid = Grid(tuple(size), tuple(source.spacing_mm[a] for a in axes), tuple(source.index_to_world(source_index)),
                tuple(direction.reshape(-1)))
    return volume.on_grid(np.ascontiguousarray(array), grid)


def _zoom_matrix(n: int, zoom: float) -> sparse.csr_matrix:
    """pymirc ``zoom3d`` along one axis as an (n_out, n) matrix; n_out = ceil(n * zoom)."""
    delta = 1.0 / zoom
    if zoom > 1:
        n_out = math.ceil(n / delta)
        centre = delta * (np.arange(n_out) - 0.5 * n_out + 0.5) + 0.5 * n - 0.5
        left = np.floor(centre).astype(int)
        rows = np.concatenate([np.arange(n_out)] * 2)
        cols = np.concatenate([left, left + 1])
        values = np.concatenate([left + 1 - centre, centre - left])
    else:
        n_out = math.ceil(n / delta)
        i = np.arange(n)
        lo = (1.0 / delta) * (i - 0.5 * n) + 0.5 * n_out
        hi = (1.0 / delta) * (i + 1 - 0.5 * n) + 0.5 * n_out
        left = np.floor(lo).astype(int)
        right = np.ceil(hi).astype(int) - 1
        split = np.ceil(lo)
        whole = left == right
        rows = np.concatenate([left, right])
        cols = np.concatenate([i, i])
        values = np.concatenate([np.where(whole, 1.0 / delta, split - lo), np.where(whole, 0.0, hi - split)])
    keep = (cols >= 0) & (cols < n) & (rows >= 0) & (rows < n_out)
    return sparse.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=(n_out, n))


def zoom3d(array: np.ndarray, zoom_xyz: tuple[float, float, float]) -> np.ndarray:
    """pymirc ``zoom3d`` (zero outside) of a (z, y, x) array; zoom factors given in (x, y, z) order."""
    out = np.asarray(array, dtype=np.float32)
    for axis_xyz, zoom in enumerate(zoom_xyz):
        if zoom == 1:
            continue
        axis = 2 - axis_xyz
        moved = np.moveaxis(out, axis, 0)
        matrix = _zoom_matrix(moved.shape[0], zoom).astype(np.float32)
        flat = matrix @ moved.reshape(moved.shape[0], -1)
        out = np.moveaxis(flat.reshape(matrix.shape[0], *moved.shape[1:]), 0, axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def zoomed_grid(grid: Grid, spacing_mm: tuple[float, float, float]) -> Grid:
    """The grid ``zoom3d`` produces from ``grid`` at ``spacing_mm`` (x, y, z): same centre, ceil sizes."""
    size, spacing = [], []
    for n, old, new in zip(grid.size, grid.spacing_mm, spacing_mm):
        zoom = old / new
        size.append(n if zoom == 1 else math.ceil(n / (1.0 / zoom)))
        spacing.append(old if zoom == 1 else new)
    half = (np.asarray(size) - 1) / 2.0 * np.asarray(spacing)
    origin = grid.center_mm - grid.direction_matrix @ half
    return Grid(tuple(size), tuple(spacing), tuple(origin), grid.direction)


def resize(volume: Volume, spacing_mm: tuple[float, float, float]) -> Volume:
    """``zoom3d`` of a volume to ``spacing_mm`` (x, y, z), with its exact new grid."""
    zoom = tuple(old / new for old, new in zip(volume.grid.spacing_mm, spacing_mm))
    array = zoom3d(volume.array, zoom)  # type: ignore[arg-type]
    grid = zoomed_grid(volume.grid, spacing_mm)
    return Volume(array, grid, volume.modality)


def median3(array: np.ndarray) -> np.ndarray:
    """3x3x3 median, edges by reflection (scipy ``median_filter(size=3)``, computed by ITK: faster)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    return sitk.GetArrayFromImage(sitk.Median(image, [1, 1, 1]))


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def _box_erosion(mask: np.ndarray, width: int) -> np.ndarray:
    """Binary erosion by a ``width``^3 box (outside the array counts as background), as three 1D erosions:
    the same result as the 3D box, in a fraction of the time."""
    for axis in range(3):
        shape = [1, 1, 1]
        shape[axis] = width
        mask = ndimage.binary_erosion(mask, np.ones(shape, dtype=bool))
    return mask


def body_box(volume: Volume, modality: Modality) -> tuple[np.ndarray, np.ndarray]:
    """(start, stop) voxel indices (i, j, k) of the body, as the authors crop it in-plane.

    Tissue is CT > -150 HU or MR > 1 % of the maximum; the box is the
    in-plane extent of the largest connected tissue region after a 5x5x5
    erosion (after a 3x3x3 cross erosion if that leaves nothing), over the
    slices of the largest region (the authors choose the slices by finding
    the lungs and the hips; tiling makes that unnecessary here). Raises
    InputError when there is no body.
    """
    array = volume.array
    if modality == "ct":
        tissue = array > CT_TISSUE_HU
        what = f"no voxel above {CT_TISSUE_HU:g} HU"
    else:
        top = float(np.max(array))
        tissue = array > MR_TISSUE_FRACTION * top if top > 0 else np.zeros(array.shape, dtype=bool)
        what = "no voxel above 1 % of the maximum intensity"
    body = _largest_component(ndimage.binary_erosion(tissue))
    if not body.any():
        raise InputError(f"no body found in the image ({what}); is this a {modality.upper()} of the abdomen?")
    k, j, i = (np.flatnonzero(body.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    # slices: those of the body, plus the one the erosion takes at each end
    k = np.arange(max(k[0] - 1, 0), min(k[-1] + 2, array.shape[0]))
    start, stop = np.array([i[0], j[0], k[0]]), np.array([i[-1], j[-1], k[-1]]) + 1
    inner = tissue[k[0]:k[-1] + 1, j[0]:j[-1] + 1, i[0]:i[-1] + 1]
    core = _largest_component(_box_erosion(inner, 5))
    if core.any():
        jj, ii = np.flatnonzero(core.any(axis=(0, 2))), np.flatnonzero(core.any(axis=(0, 1)))
        start[:2] += (ii[0], jj[0])
        stop[:2] = start[:2] - (ii[0], jj[0]) + (ii[-1] + 1, jj[-1] + 1)
    return start, stop


def normalise_liver_input(array: np.ndarray, modality: Modality) -> np.ndarray:
    """The authors' intensity mapping to [-0.5, 0.5] (CT in HU; MR from its min and 80 % of its range)."""
    if modality == "ct":
        return (np.clip(array / 1000.0, -0.2, 0.2) * 2.5).astype(np.float32)
    lower = float(np.min(array))
    upper = lower + 0.8 * (float(np.max(array)) - lower)
    if upper <= lower:
        raise InputError("the MR image is constant: nothing to segment")
    return ((np.clip(array, lower, upper) - lower) / (upper - lower) - 0.5).astype(np.float32)


def prepare_liver_input(volume: Volume, modality: Modality, *, spacing_mm: tuple[float, float, float]) -> Prepared:
    """Body crop, 1.5 mm, median, ``spacing_mm`` (3 mm), normalisation: the network's input image."""
    ras = to_ras(volume)
    start, stop = body_box(ras, modality)
    cropped = ras.crop(start, stop)
    cropped = cropped.with_array(cropped.array.astype(np.float32))
    fine = resize(cropped, tuple(s / 2.0 for s in spacing_mm))  # type: ignore[arg-type]
    filtered = fine.with_array(median3(fine.array))
    coarse = resize(filtered, spacing_mm)
    return Prepared(normalise_liver_input(coarse.array, modality), coarse.grid)


def normalise_lesion_input(array: np.ndarray, liver: np.ndarray, modality: Modality) -> np.ndarray:
    """The authors' lesion-network intensities: CT as for the liver; MR centred on the liver median
    and scaled so that the liver's minimum or maximum reaches +-0.5."""
    if modality == "ct":
        return (np.clip(array / 1000.0, -0.2, 0.2) * 2.5).astype(np.float32)
    inside = array[liver]
    median = float(np.median(inside))
    spread = max(abs(float(inside.min()) - median), abs(float(inside.max()) - median))
    if spread == 0:
        raise InputError("the MR image is constant inside the liver: nothing to segment")
    return ((array - median) * (0.5 / spread)).astype(np.float32)


def prepare_lesion_input(
    volume: Volume, liver: np.ndarray, modality: Modality, *, spacing_mm: tuple[float, float, float]
) -> Prepared:
    """The lesion network's input: normalise, resize to ``spacing_mm`` (1x1x3), keep the liver
    (mask resized, > 0.5, dilated by two 18-connected steps), set the rest to -0.5, clip to
    [-0.5, 0.5] and crop to the dilated liver. ``liver`` is a boolean (z, y, x) mask on the
    volume's grid."""
    ras = to_ras(volume)
    liver_ras = to_ras(Volume(liver.astype(np.float32), volume.grid)).array > 0.5
    if not liver_ras.any():
        raise InputError("the liver mask is empty: lesions are searched inside the liver")
    image = resize(ras.with_array(normalise_lesion_input(ras.array.astype(np.float32), liver_ras, modality)), spacing_mm)
    mask = resize(Volume(liver_ras.astype(np.float32), ras.grid), spacing_mm).array > 0.5
    ball = ndimage.iterate_structure(ndimage.generate_binary_structure(3, 2), 2)
    mask = ndimage.binary_dilation(mask, ball)
    if not mask.any():
        raise InputError("the liver mask vanishes at the lesion network's voxel size")
    array = np.where(mask, np.clip(image.array, -0.5, 0.5), -0.5).astype(np.float32)
    k, j, i = (np.flatnonzero(mask.any(axis=axes)) for axes in ((1, 2), (0, 2), (0, 1)))
    start, stop = (i[0], j[0], k[0]), (i[-1] + 1, j[-1] + 1, k[-1] + 1)
    cropped = array[k[0]:k[-1] + 1, j[0]:j[-1] + 1, i[0]:i[-1] + 1]
    return Prepared(np.ascontiguousarray(cropped), image.grid.crop(start, stop))
