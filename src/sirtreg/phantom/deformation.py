"""A known, smooth, breathing-like deformation between the reference and a floating scan.

Convention (the sirtreg one): a transform maps a point x of REFERENCE space
(the MAA CT) to FLOATING space, T(x) = x + u(x), and the floating image at its
point y shows the tissue found at the reference point T^-1(y).

The deformation is defined analytically the other way round, as the
floating-to-reference map ``x = y + v(y)`` (:meth:`Breathing.pullback`). A
floating scan is rendered by evaluating the anatomy at ``y + v(y)`` for each of
its voxel centres y, so it needs no resampling. The transform T is obtained by
fixed-point inversion, ``u(x) = -v(x + u(x))``, which converges because the
gradient of v is small; :meth:`Breathing.displacement_field` stores u on a
reference-space grid as a :class:`~sirtreg.geometry.DisplacementField`.

v is the sum of

- a cranio-caudal breathing shift of ``amplitude_mm`` (positive: the liver lies
  lower in the floating scan, as in inspiration) weighted by a smooth bump that
  is 1 in the upper abdomen and decays toward the spine, the body wall and the
  pelvis;
- the liver's own motion relative to the body: a shift of ``liver_shift_mm``
  (10-20 mm cranio-caudal, a few mm in x and y) weighted by ``liver_weight``, a
  function of the liver's signed distance that is 1 inside the liver and falls
  to 0 over about 30 mm outside it, so the liver slides along the body wall
  and the spine, which stay where they are. Between a diagnostic scan and the
  MAA SPECT/CT days or weeks later the liver moves this much against the body
  (posture, breath hold, filling of the stomach); it is what misleads a
  registration driven by the whole image;
- a few smooth separable waves of a few mm (the non-linear part);
- a small rigid patient motion (rotation about ``pivot_mm`` and a shift).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from sirtreg.geometry import DisplacementField, Grid, displacement_on
from sirtreg.phantom.points import ScanPoints, world_coordinates
from sirtreg.phantom.shapes import rotation


@dataclass(frozen=True)
class Breathing:
    """Parameters of the floating-to-reference map v (all lengths in mm, LPS).

    ``center_mm`` (x, y, z): centre of the moving region in x and y, and the
    height below which the motion fades; ``width_mm`` (x, y, z): widths of the
    bump and of the fade; ``waves`` (n, 3, 3): per wave the amplitude vector,
    the wavenumbers (rad/mm) and the phases (rad) along x, y and z;
    ``liver_weight(x, y, z)``: the weight (0-1) of ``liver_shift_mm`` (x, y, z),
    None for no motion of the liver of its own.
    """

    amplitude_mm: float
    center_mm: np.ndarray
    width_mm: np.ndarray
    waves: np.ndarray
    rotation: np.ndarray
    pivot_mm: np.ndarray
    shift_mm: np.ndarray
    liver_shift_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))
    liver_weight: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None

    def pullback(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """v(y) (mm) at floating points given as broadcastable float32 arrays x, y, z."""
        f = np.float32
        cx, cy, z0 = self.center_mm
        sx, sy, sz = self.width_mm
        gx = np.exp(f(-0.5) * ((x - f(cx)) / f(sx)) ** 2)
        gy = np.exp(f(-0.5) * ((y - f(cy)) / f(sy)) ** 2)
        gz = f(0.5) * (1 + np.tanh((z - f(z0)) / f(sz)))
        m = (self.rotation - np.eye(3)).astype(np.float32)
        dx, dy, dz = x - f(self.pivot_mm[0]), y - f(self.pivot_mm[1]), z - f(self.pivot_mm[2])
        out = []
        for c in range(3):
            v = m[c, 0] * dx + m[c, 1] * dy + m[c, 2] * dz + f(self.shift_mm[c])
            if c == 2:
                v = v + f(self.amplitude_mm) * (gx * gy * gz)
            out.append(v)
        if self.liver_weight is not None:
            weight = self.liver_weight(x, y, z)
            out = [o + f(s) * weight for o, s in zip(out, self.liver_shift_mm)]
        for amplitude, k, phase in self.waves:
            k, phase = k.astype(np.float32), phase.astype(np.float32)
            wave = np.sin(k[0] * x + phase[0]) * np.sin(k[1] * y + phase[1]) * np.sin(k[2] * z + phase[2])
            out = [o + f(a) * wave for o, a in zip(out, amplitude)]
        return out[0], out[1], out[2]

    def floating_to_reference(self, points_mm: np.ndarray) -> np.ndarray:
        """x = y + v(y) for floating points (..., 3) in mm."""
        p = np.asarray(points_mm, dtype=np.float64)
        v = self.pullback(*(p[..., c].astype(np.float32) for c in range(3)))
        return p + np.stack(np.broadcast_arrays(*v), axis=-1)

    def reference_to_floating(self, points_mm: np.ndarray, *, iterations: int = 60,
                              tolerance_mm: float = 1e-4) -> np.ndarray:
        """T(x) = x + u(x) for reference points (..., 3), by fixed-point iteration u <- -v(x + u).

        Each point iterates until its own update is under ``tolerance_mm``: most of the body converges in a
        few steps, the liver's sliding layer (the steepest part of v) in a few tens.
        """
        x = np.asarray(points_mm, dtype=np.float64)
        flat = x.reshape(-1, 3)
        u = np.zeros_like(flat)
        active = np.arange(flat.shape[0])
        for _ in range(iterations):
            if active.size == 0:
                break
            moved = flat[active] + u[active]
            v = self.pullback(*(moved[:, c].astype(np.float32) for c in range(3)))
            updated = -np.stack(np.broadcast_arrays(*v), axis=-1).astype(np.float64)
            step = np.max(np.abs(updated - u[active]), axis=1)
            u[active] = updated
            active = active[step >= tolerance_mm]
        return (flat + u).reshape(x.shape)

    transform_points = reference_to_floating  # the Transform protocol (sirtreg.geometry)
    inverse_transform_points = floating_to_reference

    def displacement_on(self, grid: Grid) -> DisplacementField:
        """u on ``grid`` (reference space): T(x) = x + u(x) maps reference to floating points."""
        return displacement_on(self, grid)

    def scan_points(self, grid: Grid) -> ScanPoints:
        """Anatomy (reference) points y + v(y) of every voxel centre y of a floating grid."""
        x, y, z = world_coordinates(grid)
        v = self.pullback(x, y, z)
        margin = np.array([float(np.max(np.abs(c))) for c in v]) + 1e-3
        return ScanPoints(grid, x + v[0], y + v[1], z + v[2], margin)


def liver_sliding_weight(liver_sdf: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], *,
                         bounds_mm: tuple[np.ndarray, np.ndarray], inside_mm: float = 5.0, width_mm: float = 15.0,
                         sample_mm: float = 3.0) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """The weight of the liver's own motion: ``0.5 * (1 - tanh((d - inside_mm) / width_mm))``, d the liver's
    signed distance (mm) from ``liver_sdf``, tabulated on a ``sample_mm`` grid over ``bounds_mm`` (lo, hi:
    the liver's box) grown by ``inside_mm + 2.65 * width_mm`` and interpolated trilinearly (0 outside).

    It is 1 inside the liver, 0.5 at ``inside_mm`` outside it and under 1 % at the edge of the table; its
    steepest slope is about ``1 / (2 * width_mm)`` per mm. The table (not the formula) defines the motion,
    so the truth stays exact.
    """
    reach = inside_mm + 2.65 * width_mm
    lo = np.asarray(bounds_mm[0], float) - reach
    size = np.ceil((np.asarray(bounds_mm[1], float) + reach - lo) / sample_mm).astype(int) + 1
    axes = [lo[c] + sample_mm * np.arange(size[c], dtype=np.float32) for c in range(3)]
    z, y, x = np.meshgrid(axes[2], axes[1], axes[0], indexing="ij")
    d = liver_sdf(x.ravel(), y.ravel(), z.ravel()).reshape(x.shape)
    table = (0.5 * (1 - np.tanh((d - np.float32(inside_mm)) / np.float32(width_mm)))).astype(np.float32)
    origin = lo.astype(np.float32)
    step = np.float32(sample_mm)
    top = np.asarray(table.shape[::-1], np.float32) - 1

    def weight(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        x, y, z = np.broadcast_arrays(x, y, z)
        index = [(c - o) / step for c, o in zip((x, y, z), origin)]
        inside = np.ones(x.shape, bool)
        for i, n in zip(index, top):
            inside &= (i > 0) & (i < n)
        out = np.zeros(x.shape, np.float32)
        out[inside] = ndimage.map_coordinates(table, [index[2][inside], index[1][inside], index[0][inside]],
                                              order=1, mode="constant", cval=0.0)
        return out

    return weight


def draw_breathing(rng: np.random.Generator, *, pivot_mm: np.ndarray,
                   liver_weight: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
                   ) -> Breathing:
    """A breathing deformation: a 4-8 mm cranio-caudal shift of the upper abdomen, a few mm of the rest
    and, with ``liver_weight`` (see :func:`liver_sliding_weight`), a 10-20 mm cranio-caudal and up to
    5 mm lateral and antero-posterior motion of the liver against the body."""
    waves = []
    for _ in range(3):
        direction = rng.normal(size=3)
        amplitude = direction / np.linalg.norm(direction) * rng.uniform(1.5, 3.0)
        k = 2 * np.pi / rng.uniform(220, 360, 3)
        waves.append([amplitude, k, rng.uniform(0, 2 * np.pi, 3)])
    liver_shift_mm = np.array([rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(10, 20)])
    return Breathing(
        amplitude_mm=float(rng.uniform(4, 8)),
        center_mm=np.array([rng.normal(-40, 8), rng.normal(-25, 6), rng.uniform(-110, -95)]),
        width_mm=np.array([rng.uniform(100, 130), rng.uniform(60, 70), rng.uniform(40, 50)]),
        waves=np.asarray(waves, dtype=float),
        rotation=rotation(tuple(rng.uniform(-1.5, 1.5, 3))),
        pivot_mm=np.asarray(pivot_mm, float),
        shift_mm=np.array([rng.uniform(-5, 5), rng.uniform(-5, 5), rng.uniform(-3, 3)]),
        liver_shift_mm=liver_shift_mm if liver_weight is not None else np.zeros(3),
        liver_weight=liver_weight,
    )
