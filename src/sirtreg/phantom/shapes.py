"""Implicit shape primitives evaluated at world points.

Every shape is a function of the LPS coordinates ``x, y, z`` (mm, float32
arrays that broadcast to one shape) returning an approximate signed distance in
mm: negative inside, positive outside, zero on the surface. Shapes combine with
smooth minimum (union) and smooth maximum (intersection), so organs get rounded
joins instead of creases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_EPS = np.float32(1e-6)


def rotation(angles_deg: tuple[float, float, float]) -> np.ndarray:
    """3x3 rotation matrix: rotations about x, then y, then z (degrees)."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def to_local(x: np.ndarray, y: np.ndarray, z: np.ndarray, *, center: np.ndarray,
             axes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates (mm) in a frame centred at ``center`` whose columns of ``axes`` are its axes."""
    dx, dy, dz = x - np.float32(center[0]), y - np.float32(center[1]), z - np.float32(center[2])
    a = axes.astype(np.float32)
    return (a[0, 0] * dx + a[1, 0] * dy + a[2, 0] * dz,
            a[0, 1] * dx + a[1, 1] * dy + a[2, 1] * dz,
            a[0, 2] * dx + a[1, 2] * dy + a[2, 2] * dz)


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid with semi-axes ``radii_mm`` along the columns of ``axes``."""

    center_mm: np.ndarray
    radii_mm: np.ndarray
    axes: np.ndarray

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Approximate signed distance (mm), exact on the surface and at the centre's far field."""
        qx, qy, qz = to_local(x, y, z, center=self.center_mm, axes=self.axes)
        a, b, c = (np.float32(r) for r in self.radii_mm)
        k0 = np.sqrt((qx / a) ** 2 + (qy / b) ** 2 + (qz / c) ** 2)
        k1 = np.sqrt((qx / (a * a)) ** 2 + (qy / (b * b)) ** 2 + (qz / (c * c)) ** 2)
        return k0 * (k0 - 1) / (k1 + _EPS)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned box (lo, hi) in LPS mm."""
        half = np.abs(self.axes) @ np.asarray(self.radii_mm)
        return self.center_mm - half, self.center_mm + half


def ellipsoid(center_mm, radii_mm, angles_deg=(0.0, 0.0, 0.0)) -> Ellipsoid:
    """An :class:`Ellipsoid` from a centre, semi-axes and rotation angles (degrees)."""
    return Ellipsoid(np.asarray(center_mm, float), np.asarray(radii_mm, float), rotation(angles_deg))


@dataclass(frozen=True)
class Tube:
    """A straight vessel segment with a radius tapering linearly from start to end."""

    start_mm: np.ndarray
    end_mm: np.ndarray
    radius_start_mm: float
    radius_end_mm: float

    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        a, b = self.start_mm, self.end_mm
        d = (b - a).astype(np.float32)
        px, py, pz = x - np.float32(a[0]), y - np.float32(a[1]), z - np.float32(a[2])
        t = np.clip((px * d[0] + py * d[1] + pz * d[2]) / np.float32(d @ d), 0, 1)
        dist = np.sqrt((px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 + (pz - t * d[2]) ** 2)
        return dist - (np.float32(self.radius_start_mm) + t * np.float32(self.radius_end_mm - self.radius_start_mm))

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        r = max(self.radius_start_mm, self.radius_end_mm)
        return np.minimum(self.start_mm, self.end_mm) - r, np.maximum(self.start_mm, self.end_mm) + r


def tube(start_mm, end_mm, radius_start_mm: float, radius_end_mm: float | None = None) -> Tube:
    """A :class:`Tube`; ``radius_end_mm`` defaults to the start radius (a capsule)."""
    end_radius = radius_start_mm if radius_end_mm is None else radius_end_mm
    return Tube(np.asarray(start_mm, float), np.asarray(end_mm, float), float(radius_start_mm), float(end_radius))


def smooth_union(a: np.ndarray, b: np.ndarray, *, k_mm: float) -> np.ndarray:
    """Smooth minimum of two signed distances, blending over about ``k_mm``."""
    k = np.float32(k_mm)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0, 1)
    return b + (a - b) * h - k * h * (1 - h)


def smooth_intersection(a: np.ndarray, b: np.ndarray, *, k_mm: float) -> np.ndarray:
    """Smooth maximum of two signed distances."""
    return -smooth_union(-a, -b, k_mm=k_mm)


def smooth_subtraction(a: np.ndarray, b: np.ndarray, *, k_mm: float) -> np.ndarray:
    """Shape ``a`` with shape ``b`` carved out, smoothly."""
    return smooth_intersection(a, -b, k_mm=k_mm)


@dataclass(frozen=True)
class SineField:
    """A smooth random scalar field: a sum of plane waves, evaluated analytically.

    ``wavevectors`` (n, 3) in rad/mm, ``phases`` (n,) in rad, ``amplitudes`` (n,).
    """

    wavevectors: np.ndarray
    phases: np.ndarray
    amplitudes: np.ndarray

    def __call__(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        out = np.float32(0)
        for k, phase, amp in zip(self.wavevectors.astype(np.float32), self.phases, self.amplitudes):
            out = out + np.float32(amp) * np.sin(k[0] * x + k[1] * y + k[2] * z + np.float32(phase))
        return out


def sine_field(rng: np.random.Generator, *, n_waves: int, wavelength_mm: tuple[float, float],
               rms: float) -> SineField:
    """A :class:`SineField` with random directions and wavelengths, scaled to root-mean-square ``rms``."""
    directions = rng.normal(size=(n_waves, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    wavelengths = rng.uniform(*wavelength_mm, size=n_waves)
    amplitudes = rng.uniform(0.5, 1.0, size=n_waves)
    amplitudes *= rms / np.sqrt(np.sum(amplitudes**2) / 2)
    return SineField(directions * (2 * np.pi / wavelengths)[:, None], rng.uniform(0, 2 * np.pi, n_waves), amplitudes)
