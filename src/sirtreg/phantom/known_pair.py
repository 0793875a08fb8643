"""Registration pairs with an exact truth, made from a real CT and its liver mask.

A real abdominal CT (HU) with a liver mask is the reference. :func:`paint_lesions`
adds lesions where the scan has none. :func:`draw_motion` draws a known motion
from the families a patient shows between two scans, and :func:`make_known_pair`
renders the floating scan on a grid of its own: as a CT, or as an MR-like image
(a non-monotonic remapping of tissue intensities, a smooth multiplicative bias
field and Rician noise), with thin or thick slices, its field of view cutting off
the top or the bottom of the liver where asked. The truth is exact: the floating
image at its voxel y shows the reference tissue at S(y), and the returned
displacement field is T = S^-1 (the reference->floating transform), so the
floating labels brought back by T are the truth floor of every registration.

Motion families (all lengths in mm, LPS):

- repositioning: a rotation of up to ``rotation_deg`` about the liver centre and a
  translation of up to ``translation_mm``;
- breathing: the liver slides 10-20 mm cranio-caudally (and up to 5 mm sideways)
  against the body wall and the spine, with a weight that is 1 in the liver and
  falls to 0 over a few centimetres outside it;
- local: a smooth cubic B-spline deformation (control points every
  ``bspline_spacing_mm``) whose largest displacement is 3-6 mm.

S(y) = R (y - c) + c + t + L(R (y - c) + c + t), with R, t the repositioning and L
the local part (breathing plus B-spline), tabulated on a grid in reference space
and read trilinearly, so that the tabulated values, not a formula, define the
motion and the truth is exact to the fixed-point tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import ndimage

from sirtreg.errors import InputError
from sirtreg.geometry import DisplacementField, Grid, LabelVolume, Volume, displacement_on
from sirtreg.phantom.shapes import rotation
from sirtreg.resample import sample_at

Modality = Literal["CT", "MR"]
Truncation = Literal["none", "top", "bottom"]

TABLE_SPACING_MM = 3.0
TABLE_MARGIN_MM = 60.0  # the local part fades to zero over this margin around the reference
FILL_HU = -1024.0
# an MR-like remapping of Hounsfield units, knots (HU) and their T1-like signal: fat bright, fluid dark, liver
# medium-bright, bone and air dark; not monotonic, so no intensity-based method can assume a linear relation
_MR_KNOTS_HU = (-1024.0, -800.0, -300.0, -110.0, -60.0, -10.0, 20.0, 45.0, 65.0, 90.0, 200.0, 600.0, 1500.0)
_MR_SIGNAL = (0.0, 20.0, 120.0, 850.0, 780.0, 160.0, 250.0, 400.0, 480.0, 420.0, 260.0, 110.0, 50.0)


# --- lesions ------------------------------------------------------------------------
def _radius_mm(volume_ml: float) -> float:
    return float((3.0 * volume_ml * 1000.0 / (4.0 * np.pi)) ** (1.0 / 3.0))


def _lesion_centre(grid: Grid, depth: np.ndarray, placed: list[tuple[np.ndarray, float]], rng: np.random.Generator,
                   *, radius: float, at_edge: bool, gap_mm: float) -> np.ndarray | None:
    """A random centre (LPS mm) for a lesion of ``radius`` at its depth in the liver (``depth``: mm from the
    liver surface, on ``grid``), ``gap_mm`` from every ``placed`` lesion; None where there is none."""
    band = (depth >= 0.35 * radius) & (depth <= 0.65 * radius) if at_edge else depth >= radius * 1.15 + 3.0
    k, j, i = np.nonzero(band)
    for index in rng.permutation(k.size)[:20_000]:
        point = grid.index_to_world([i[index], j[index], k[index]])
        if all(np.linalg.norm(point - other) >= (radius + r) * 1.15 + gap_mm for other, r in placed):
            return point
    return None


def paint_lesions(ct: Volume, liver: np.ndarray, rng: np.random.Generator, *, volumes_ml: Sequence[float],
                  at_edge: Sequence[bool], gap_mm: float = 6.0) -> tuple[Volume, LabelVolume]:
    """Paint irregular lesions into the liver of a CT (HU); returns the painted CT and the lesion map.

    Each lesion is a ball of the given volume (mL) with a lumpy surface (+-15 % of its radius), hypodense
    by 25-60 HU with, for about half of them, a 2 mm enhancing rim, a smooth internal texture and a
    1.5 mm soft edge. Interior lesions lie at least 3 mm inside the liver; a lesion ``at_edge`` is centred
    at half its radius below the liver surface and clipped by it, as a subcapsular lesion is. Lesions keep
    ``gap_mm`` between them; one the liver has no room for is made smaller, down to half its radius. The
    lesion map holds value n for the n-th lesion (1-based) inside the liver.

    ``liver``: boolean (z, y, x) on the CT's grid.
    """
    if len(volumes_ml) != len(at_edge):
        raise InputError("paint_lesions needs one at_edge flag per lesion volume")
    if liver.shape != ct.shape or not np.any(liver):
        raise InputError("paint_lesions needs a non-empty liver mask on the CT's grid")
    grid = ct.grid
    spacing_zyx = grid.spacing_mm[::-1]
    depth = ndimage.distance_transform_edt(liver, sampling=spacing_zyx)
    image = ct.array.astype(np.float32).copy()
    lesions = np.zeros(grid.shape, np.uint8)
    liver_hu = float(np.median(image[liver]))
    placed: list[tuple[np.ndarray, float]] = []
    order = np.argsort(volumes_ml)[::-1]  # the largest first, while there is room
    for number in order:
        centre, radius = None, _radius_mm(volumes_ml[number])
        for shrink in (1.0, 0.9, 0.8, 0.7, 0.6, 0.5):  # a lesion the liver has no room for is made smaller
            centre = _lesion_centre(grid, depth, placed, rng, radius=radius * shrink, at_edge=at_edge[number],
                                    gap_mm=gap_mm)
            if centre is not None:
                radius *= shrink
                break
        if centre is None:
            raise InputError(f"no room left in the liver for a {volumes_ml[number]:.1f} mL lesion")
        placed.append((centre, radius))
        reach = radius * 1.2 + 4.0
        at = grid.world_to_index(centre)
        lo = np.maximum(np.floor(at - reach / np.asarray(grid.spacing_mm)).astype(int), 0)
        hi = np.minimum(np.ceil(at + reach / np.asarray(grid.spacing_mm)).astype(int) + 1, grid.size)
        box = tuple(slice(a, b) for a, b in zip(lo[::-1], hi[::-1]))
        points = grid.crop(lo, hi).world_coordinates(np.float64) - centre
        distance = np.linalg.norm(points, axis=-1)
        unit = points / np.maximum(distance, 1e-6)[..., None]
        lumps = sum(np.sin(3.0 * unit @ d + phase)
                    for d, phase in zip(rng.normal(size=(4, 3)), rng.uniform(0, 2 * np.pi, 4)))
        signed = distance - radius * (1.0 + 0.075 * lumps)  # mm, < 0 inside
        inside_liver = liver[box]
        mask = (signed < 0) & inside_liver
        lesions[box][mask] = number + 1
        contrast = rng.uniform(-60.0, -25.0)
        texture = ndimage.gaussian_filter(rng.normal(0, 1, signed.shape), 2.0 / np.asarray(spacing_zyx))
        values = liver_hu + contrast + 8.0 * texture / max(float(texture.std()), 1e-6)
        if rng.random() < 0.5:
            values = values + 25.0 * np.clip(1.0 - np.abs(signed + 1.0) / 1.0, 0.0, 1.0)
        weight = np.clip(0.5 - signed / 1.5, 0.0, 1.0) * inside_liver
        image[box] += weight * (values - image[box])
    names = {n: f"lesion {n}" for n in range(1, len(volumes_ml) + 1)}
    return ct.with_array(image), LabelVolume(lesions, grid, labels=names)


# --- motion ---------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class KnownMotion:
    """The floating->reference map S(y) = q + L(q), q = R (y - c) + c + t (see the module docstring).

    ``local`` is L tabulated on a reference-space grid (mm, trilinear, zero outside).
    """

    rotation: np.ndarray
    centre_mm: np.ndarray
    translation_mm: np.ndarray
    local: DisplacementField
    description: dict[str, float] = field(default_factory=dict)

    def _local(self, points_mm: np.ndarray) -> np.ndarray:
        index = self.local.grid.world_to_index(points_mm.reshape(-1, 3))
        coords = index[:, ::-1].T
        out = np.stack([ndimage.map_coordinates(self.local.array[..., c], coords, order=1, mode="constant",
                                                cval=0.0, prefilter=False) for c in range(3)], axis=-1)
        return out.reshape(points_mm.shape)

    def _rigid(self, points_mm: np.ndarray) -> np.ndarray:
        return (points_mm - self.centre_mm) @ self.rotation.T + self.centre_mm + self.translation_mm

    def floating_to_reference(self, points_mm: np.ndarray) -> np.ndarray:
        """S(y) for floating points (..., 3) in mm."""
        moved = self._rigid(np.asarray(points_mm, dtype=np.float64))
        return moved + self._local(moved)

    def reference_to_floating(self, points_mm: np.ndarray, *, iterations: int = 200,
                              tolerance_mm: float = 1e-3) -> np.ndarray:
        """T(x) = S^-1(x) for reference points (..., 3): q = x - L(q) by fixed-point iteration, then R^-1.

        Each point iterates until its own step is below ``tolerance_mm`` (the points far from the liver, where
        the local part is nearly constant, stop after a few steps)."""
        target = np.asarray(points_mm, dtype=np.float64)
        flat_target = target.reshape(-1, 3)
        q = flat_target.copy()
        moving = np.arange(len(q))
        for _ in range(iterations):
            if not moving.size:
                break
            updated = flat_target[moving] - self._local(q[moving])
            step = np.max(np.abs(updated - q[moving]), axis=1)
            q[moving] = updated
            moving = moving[step >= tolerance_mm]
        else:
            if moving.size:
                raise RuntimeError("the known motion did not invert: its local part is too steep")
        q = q.reshape(target.shape)
        return (q - self.centre_mm - self.translation_mm) @ self.rotation + self.centre_mm

    transform_points = reference_to_floating  # the Transform protocol (sirtreg.geometry)
    inverse_transform_points = floating_to_reference

    def displacement_on(self, grid: Grid) -> DisplacementField:
        """T on a reference-space grid: T(x) = x + u(x)."""
        return displacement_on(self, grid)


def _sliding_weight(liver: np.ndarray, grid: Grid, *, inside_mm: float = 5.0, width_mm: float = 20.0,
                    smoothing_mm: float = 6.0) -> np.ndarray:
    """``0.5 * (1 - tanh((d - inside_mm) / width_mm))`` with d the liver's signed distance (mm) on ``grid``,
    smoothed by a Gaussian of ``smoothing_mm``: the voxel distances are steps, and the motion must stay
    invertible (its local part's slope well below 1)."""
    spacing_zyx = grid.spacing_mm[::-1]
    outside = ndimage.distance_transform_edt(~liver, sampling=spacing_zyx)
    inside = ndimage.distance_transform_edt(liver, sampling=spacing_zyx)
    signed = np.where(liver, -inside, outside)
    weight = 0.5 * (1.0 - np.tanh((signed - inside_mm) / width_mm))
    return ndimage.gaussian_filter(weight, smoothing_mm / np.asarray(spacing_zyx), mode="nearest")


def _table_grid(reference: Grid) -> Grid:
    """The grid of the local part's table: the reference's extent grown by ``TABLE_MARGIN_MM`` on every side."""
    grown = Grid(tuple(np.asarray(reference.size) + 2), reference.spacing_mm,
                 tuple(reference.index_to_world([-1.0, -1.0, -1.0])), reference.direction)
    extent = np.asarray(reference.extent_mm) + 2 * TABLE_MARGIN_MM
    size = np.ceil(extent / TABLE_SPACING_MM).astype(int)
    half = (size - 1) / 2.0 * TABLE_SPACING_MM
    origin = grown.center_mm - grown.direction_matrix @ half
    return Grid(tuple(size), (TABLE_SPACING_MM,) * 3, tuple(origin), reference.direction)


def _taper(table: Grid) -> np.ndarray:
    """A weight (z, y, x) that is 1 inside the table but its outer ``TABLE_MARGIN_MM`` and falls smoothly to 0
    at its border, so the local part has no step where the table ends."""
    weight = np.ones(table.shape, np.float32)
    for axis, n in enumerate(table.shape):
        distance = np.minimum(np.arange(n), np.arange(n)[::-1]) * TABLE_SPACING_MM  # mm from the border
        t = np.clip(distance / TABLE_MARGIN_MM, 0.0, 1.0)
        profile = t * t * (3.0 - 2.0 * t)
        shape = [1, 1, 1]
        shape[axis] = n
        weight = weight * profile.reshape(shape).astype(np.float32)
    return weight


def draw_motion(reference: Volume, liver: np.ndarray, rng: np.random.Generator, *,
                rotation_deg: float = 0.0, translation_mm: float = 0.0, sliding_mm: tuple[float, float] | None = None,
                bspline_mm: tuple[float, float] | None = None, bspline_spacing_mm: float = 50.0) -> KnownMotion:
    """A known motion of the reference anatomy (see the module docstring for the families).

    ``rotation_deg`` and ``translation_mm`` bound the repositioning (0: none); ``sliding_mm`` the range of
    the liver's cranio-caudal slide (None: no breathing); ``bspline_mm`` the range of the largest local
    B-spline displacement (None: none).
    """
    table = _table_grid(reference.grid)
    liver_volume = LabelVolume(liver.astype(np.uint8), reference.grid)
    liver_on_table = sample_at(liver_volume, table.world_coordinates(np.float64)) > 0
    if not np.any(liver_on_table):
        raise InputError("draw_motion needs a liver mask")
    local = np.zeros((*table.shape, 3), np.float32)
    description: dict[str, float] = {}
    if sliding_mm is not None:
        shift = np.array([rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(*sliding_mm)])
        shift[2] *= rng.choice([-1.0, 1.0])
        local += (_sliding_weight(liver_on_table, table)[..., None] * shift).astype(np.float32)
        description["sliding_mm"] = float(np.linalg.norm(shift))
    if bspline_mm is not None:
        controls = np.ceil(np.asarray(table.shape) * TABLE_SPACING_MM / bspline_spacing_mm).astype(int) + 3
        coefficients = rng.normal(size=(3, *controls))
        # the cubic B-spline of the control grid, evaluated on the table (prefilter=False: the values are its
        # coefficients, so the field is C2-smooth)
        axes = [np.linspace(1.0, c - 2.0, n) for c, n in zip(controls, table.shape)]
        coords = np.meshgrid(*axes, indexing="ij")
        spline = np.stack([ndimage.map_coordinates(coefficients[c], coords, order=3, prefilter=False)
                           for c in range(3)], axis=-1)
        near_liver = ndimage.distance_transform_edt(~liver_on_table, sampling=TABLE_SPACING_MM) < 60.0
        largest = float(np.max(np.linalg.norm(spline, axis=-1)[near_liver]))
        amplitude = rng.uniform(*bspline_mm)
        local += (spline * (amplitude / largest)).astype(np.float32)
        description["bspline_mm"] = float(amplitude)
    local *= _taper(table)[..., None]
    angles = rng.normal(size=3)
    angles *= rng.uniform(0.5, 1.0) * rotation_deg / max(float(np.linalg.norm(angles)), 1e-9)
    direction = rng.normal(size=3)
    translation = direction / np.linalg.norm(direction) * rng.uniform(0.5, 1.0) * translation_mm
    if rotation_deg or translation_mm:
        description["rotation_deg"] = float(np.linalg.norm(angles))
        description["translation_mm"] = float(np.linalg.norm(translation))
    k, j, i = np.nonzero(liver)
    centre = reference.grid.index_to_world([i.mean(), j.mean(), k.mean()])
    return KnownMotion(rotation(tuple(angles)), centre, translation, DisplacementField(local, table), description)


# --- floating scans -------------------------------------------------------------------
def mr_like(ct_hu: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """An MR-like signal (float32) of CT numbers: a non-monotonic remapping, its knots jittered by +-15 %."""
    signal = np.asarray(_MR_SIGNAL) * rng.uniform(0.85, 1.15, len(_MR_SIGNAL))
    signal[0] = 0.0
    return np.interp(ct_hu, _MR_KNOTS_HU, signal).astype(np.float32)


def bias_field(grid: Grid, rng: np.random.Generator, *, strength: float = 0.3) -> np.ndarray:
    """A smooth multiplicative field (z, y, x) between 1 - strength and 1 + strength, wavelengths 250-500 mm."""
    points = grid.world_coordinates(np.float32) - grid.center_mm.astype(np.float32)
    value = np.zeros(grid.shape, np.float32)
    for _ in range(3):
        direction = rng.normal(size=3).astype(np.float32)
        direction /= np.linalg.norm(direction)
        wavelength = rng.uniform(250.0, 500.0)
        value += np.sin(points @ direction * np.float32(2 * np.pi / wavelength) + np.float32(rng.uniform(0, 6.28)))
    value -= value.min()
    value /= max(float(value.max()), 1e-6)
    return (1.0 - strength + 2.0 * strength * value).astype(np.float32)


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """The magnitude of ``signal`` plus complex Gaussian noise of standard deviation ``sigma`` per channel."""
    real = signal + rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    imaginary = rng.normal(0.0, sigma, signal.shape).astype(np.float32)
    return np.sqrt(real * real + imaginary * imaginary).astype(np.float32)


def _slice_offsets_mm(thickness_mm: float) -> np.ndarray:
    """Offsets along the slice normal that average a slab of ``thickness_mm`` (about one sample per mm)."""
    n = max(1, int(round(thickness_mm)))
    return (np.arange(n) - (n - 1) / 2.0) * (thickness_mm / n)


def floating_grid(reference: Grid, liver: np.ndarray, motion: KnownMotion, *, spacing_mm: tuple[float, float, float],
                  truncation: Truncation = "none", cut_fraction: float = 0.0, rng: np.random.Generator) -> Grid:
    """An axial floating grid (x, y, z spacing) covering the moved reference, its origin off by up to 5 mm.

    With ``truncation`` "top" or "bottom", the field of view ends ``cut_fraction`` of the floating liver's
    height below its top (or above its bottom).
    """
    corners = motion.reference_to_floating(reference.corners_mm())
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    if truncation != "none":
        k, j, i = np.nonzero(liver)
        step = max(1, k.size // 20_000)
        liver_points = reference.index_to_world(np.stack([i[::step], j[::step], k[::step]], axis=1))
        z = motion.reference_to_floating(liver_points)[:, 2]
        cut = cut_fraction * (z.max() - z.min())
        if truncation == "top":
            hi[2] = z.max() - cut
        else:
            lo[2] = z.min() + cut
    lo = lo + rng.uniform(-5.0, 5.0, 3)
    spacing = np.asarray(spacing_mm, float)
    size = np.maximum(np.ceil((hi - lo) / spacing).astype(int), 8)
    return _covered_slices(Grid(tuple(size), tuple(spacing), tuple(lo + spacing / 2.0)), reference, motion)


def _covered_slices(grid: Grid, reference: Grid, motion: KnownMotion, *, share: float = 0.9) -> Grid:
    """``grid`` without the slices the reference scan does not cover: where the reference ends (a CT that
    cuts the liver, say), the floating scan ends too, instead of showing a sharp edge to air that no real
    scan has. A slice is kept when at least ``share`` of the best-covered slice's share of its voxels
    maps into the reference."""
    step = 4
    points = grid.world_coordinates(np.float64)[:, ::step, ::step]
    index = reference.world_to_index(motion.floating_to_reference(points))
    inside = np.all((index >= -0.5) & (index <= np.asarray(reference.size) - 0.5), axis=-1)
    covered = inside.mean(axis=(1, 2))
    keep = np.flatnonzero(covered >= share * covered.max())
    start, stop = keep.min(), keep.max() + 1
    return grid.crop((0, 0, start), (grid.size[0], grid.size[1], stop))


def redraw(labels: LabelVolume, rng: np.random.Generator, *, sigma_mm: float, correlation_mm: float = 15.0
           ) -> LabelVolume:
    """The labels as another person would draw them: every boundary moved in or out by a smooth random
    offset (standard deviation ``sigma_mm``, correlation length about ``correlation_mm``).

    Each label's signed distance (mm) plus the smooth offset is thresholded at 0; later labels win where
    two claim a voxel. ``sigma_mm = 0`` returns the labels unchanged.
    """
    if sigma_mm <= 0:
        return labels
    spacing_zyx = np.asarray(labels.grid.spacing_mm[::-1])
    noise = ndimage.gaussian_filter(rng.normal(size=labels.shape).astype(np.float32),
                                    correlation_mm / spacing_zyx / 2.0, mode="wrap")
    offset = noise * np.float32(sigma_mm / max(float(noise.std()), 1e-9))
    out = np.zeros_like(labels.array)
    for value in labels.present_labels():
        mask = labels.array == value
        signed = np.where(mask, -ndimage.distance_transform_edt(mask, sampling=spacing_zyx),
                          ndimage.distance_transform_edt(~mask, sampling=spacing_zyx))
        signed += np.where(mask, 0.5, -0.5) * float(spacing_zyx.min())  # from voxel centres to the boundary
        drawn = signed + offset < 0
        out[drawn if drawn.any() else mask] = value
    return labels.with_array(out)


@dataclass(frozen=True, eq=False)
class KnownPair:
    """A reference CT, a floating scan made from it, their labels and the exact reference->floating truth.

    ``lesions`` hold one value per lesion (1-based), on both sides. ``truth`` maps reference points to
    floating points.
    """

    reference: Volume
    floating: Volume
    reference_liver: LabelVolume
    floating_liver: LabelVolume
    reference_lesions: LabelVolume
    floating_lesions: LabelVolume
    truth: DisplacementField
    description: dict[str, object]


class _SlabPoints:
    """S(y) of every voxel centre y of a floating grid, at one or more offsets along the slice normal: a
    slice thicker than 2 mm averages its slab (about one sample per mm)."""

    def __init__(self, motion: KnownMotion, grid: Grid) -> None:
        self.grid = grid
        points = grid.world_coordinates(np.float64)
        normal = grid.direction_matrix[:, 2]
        offsets = _slice_offsets_mm(grid.spacing_mm[2]) if grid.spacing_mm[2] > 2.0 else np.zeros(1)
        self.mapped = [motion.floating_to_reference(points + offset * normal).reshape(-1, 3) for offset in offsets]

    def render(self, volume: Volume, *, fill: float) -> np.ndarray:
        """``volume`` at S(y), averaged over the slab (z, y, x)."""
        total = np.zeros(self.grid.n_voxels, np.float32)
        for mapped in self.mapped:
            total += sample_at(volume, mapped, fill_value=fill)
        return (total / len(self.mapped)).reshape(self.grid.shape)

    def render_labels(self, labels: LabelVolume) -> LabelVolume:
        """Labels by a one-hot vote of each label's slab-averaged indicator (background wins below 0.5)."""
        present = labels.present_labels()
        best = np.full(self.grid.n_voxels, 0.5, np.float32)
        out = np.zeros(self.grid.n_voxels, labels.array.dtype)
        for value in present:
            mask = labels.array == value
            k, j, i = np.nonzero(mask)
            lo = labels.grid.index_to_world([i.min() - 1, j.min() - 1, k.min() - 1])
            hi = labels.grid.index_to_world([i.max() + 1, j.max() + 1, k.max() + 1])
            lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
            indicator = Volume(mask.astype(np.float32), labels.grid)
            share = np.zeros(self.grid.n_voxels, np.float32)
            for mapped in self.mapped:  # only the points that land near the label
                near = np.flatnonzero(np.all((mapped >= lo) & (mapped <= hi), axis=1))
                share[near] += sample_at(indicator, mapped[near])
            share /= len(self.mapped)
            wins = share > best
            out[wins] = value
            best[wins] = share[wins]
        return labels.on_grid(out.reshape(self.grid.shape), self.grid)


def make_known_pair(reference: Volume, liver: LabelVolume, lesions: LabelVolume, motion: KnownMotion, *,
                    modality: Modality, spacing_mm: tuple[float, float, float], rng: np.random.Generator,
                    truncation: Truncation = "none", cut_fraction: float = 0.0, contour_sd_mm: float = 1.0,
                    truth_spacing_mm: float = 2.0, reference_box: tuple[Sequence[int], Sequence[int]] | None = None
                    ) -> KnownPair:
    """Render the floating scan of ``reference`` (CT, HU) under ``motion`` and return the pair with its truth.

    ``reference_box`` (start, stop voxel indices (i, j, k)): the reference of the pair is that part of
    ``reference`` (an MAA CT covers less than a diagnostic scan), while the floating scan is rendered
    from all of it.

    CT: the moved CT plus Gaussian noise of 10 HU. MR: :func:`mr_like` of the CT, a bias field of +-30 %
    and Rician noise of 4 % of the liver's signal. ``spacing_mm`` (x, y, z) of the floating grid; slices
    thicker than 2 mm average their slab. ``truncation``: see :func:`floating_grid`. The floating labels
    are the reference labels carried by the motion and then redrawn (:func:`redraw`, ``contour_sd_mm``), as
    contours drawn on each scan by hand never agree exactly: the truth floor is not zero.
    """
    reference.grid.require_same(liver.grid, what="the reference CT and its liver mask")
    reference.grid.require_same(lesions.grid, what="the reference CT and its lesion map")
    liver_mask = liver.array > 0
    grid = floating_grid(reference.grid, liver_mask, motion, spacing_mm=spacing_mm, truncation=truncation,
                         cut_fraction=cut_fraction, rng=rng)
    slab = _SlabPoints(motion, grid)
    if modality == "CT":
        image = slab.render(reference, fill=FILL_HU)
        image += rng.normal(0.0, 10.0, image.shape).astype(np.float32)
        floating = Volume(image, grid, modality="CT")
    elif modality == "MR":
        signal = reference.with_array(mr_like(reference.array, rng))
        image = slab.render(signal, fill=0.0) * bias_field(grid, rng)
        liver_signal = float(np.median(signal.array[liver_mask]))
        floating = Volume(rician(image, 0.04 * liver_signal, rng), grid, modality="MR")
    else:
        raise InputError(f"modality must be CT or MR, got {modality!r}")
    floating_liver = redraw(slab.render_labels(liver), rng, sigma_mm=contour_sd_mm)
    floating_lesions = redraw(slab.render_labels(lesions), rng, sigma_mm=contour_sd_mm)
    if reference_box is not None:
        reference, liver, lesions = (v.crop(*reference_box) for v in (reference, liver, lesions))
    truth_spacing_mm = max(truth_spacing_mm, min(reference.grid.spacing_mm))
    truth = motion.displacement_on(reference.grid.with_spacing((truth_spacing_mm,) * 3))
    description: dict[str, object] = {**motion.description, "modality": modality,
                                      "floating_spacing_mm": list(spacing_mm), "truncation": truncation,
                                      "cut_fraction": cut_fraction, "contour_sd_mm": contour_sd_mm}
    return KnownPair(reference, floating, liver, floating_liver, lesions, floating_lesions, truth, description)
