"""Voxel S values: the share of one decay's electron energy that each voxel around a uniformly active source
voxel absorbs, from a dose-point kernel integrated over the geometry of both voxels (the method of MIRD
Pamphlet 17, Bolch et al., J Nucl Med 1999;40:11S-36S).

A point of the target voxel lies at ``d`` from a point of the source voxel with the density
``prod_i T(d_i / h_i - n_i) / V``, ``n`` the offset (voxels), ``h`` the spacing, ``V`` the voxel volume and
``T(t) = max(0, 1 - |t|)``. The target's share is then ``sum_b E_b / E * A_n(r_b)``, with ``E_b / E`` the
kernel's share of the emitted energy in shell ``b`` and ``A_n(r)`` the mean of ``prod_i T(r u_i / h_i - n_i)``
over 4608 directions ``u`` (a Fibonacci lattice with the symmetries of a cube) at the shell's middle radius.
The tents add up to 1 over all offsets, so the kernel keeps the point kernel's energy exactly. A tissue of
density ``rho`` sees the water kernel at radii divided by ``rho``.

Kernels are made once per nuclide, voxel size and density and kept in the user cache folder
(``$XDG_CACHE_HOME/sirtreg/kernels``).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sirtreg.dosimetry.point_kernel import PointKernel, shipped_point_kernel
from sirtreg.errors import InputError
from sirtreg.output_folder import user_cache_folder

log = logging.getLogger(__name__)

MEV_J = 1.602176634e-13
#: voxel sizes (mm) accepted: from a fine PET grid to a coarse SPECT's
VOXEL_RANGE_MM = (0.5, 12.0)
_DIRECTIONS = 4608
#: the integration's version, in the cache key: raise it whenever integrate_voxel_kernel changes its results
_INTEGRATION_VERSION = 2


@dataclass(frozen=True)
class VoxelKernel:
    """Share of a source voxel's emitted electron energy absorbed by each voxel around it.

    ``energy_fraction`` (z, y, x), odd sizes, the source voxel at the centre; ``spacing_mm`` (z, y, x);
    ``density_g_per_ml`` the tissue's; ``emitted_mev_per_decay`` the nuclide's electron energy per decay.
    """

    nuclide: str
    spacing_mm: tuple[float, float, float]
    density_g_per_ml: float
    energy_fraction: np.ndarray
    emitted_mev_per_decay: float

    @property
    def voxel_mass_kg(self) -> float:
        return self.density_g_per_ml * float(np.prod(self.spacing_mm)) / 1e6

    def s_value_mgy_per_mbq_s(self, offset: tuple[int, int, int] = (0, 0, 0)) -> float:
        """The voxel S value (mGy per MBq s) of the target voxel at ``offset`` (z, y, x) from the source."""
        centre = np.array(self.energy_fraction.shape) // 2
        index = tuple(int(c + o) for c, o in zip(centre, offset))
        if any(not 0 <= i < s for i, s in zip(index, self.energy_fraction.shape)):
            return 0.0
        joule_per_mbq_s = self.emitted_mev_per_decay * MEV_J * 1e6
        return float(self.energy_fraction[index]) * joule_per_mbq_s / self.voxel_mass_kg * 1e3


def _sphere_directions(count: int = _DIRECTIONS) -> np.ndarray:
    """About ``count`` unit vectors (n, 3) spread evenly over the sphere with the symmetries of a cube (so that a
    kernel's mirror images are exact): a Fibonacci lattice of ``count / 48`` points folded into one octant, with
    its 6 axis permutations and 8 reflections."""
    base = max(1, count // 48)
    k = np.arange(base) + 0.5
    cos_polar = 1.0 - 2.0 * k / base
    azimuth = np.pi * (1.0 + 5.0**0.5) * k
    sin_polar = np.sqrt(1.0 - cos_polar**2)
    octant = np.abs(np.stack([sin_polar * np.cos(azimuth), sin_polar * np.sin(azimuth), cos_polar], axis=1))
    permuted = np.concatenate([octant[:, order] for order in itertools.permutations(range(3))])
    signs = np.array(list(itertools.product([1.0, -1.0], repeat=3)))
    return (signs[:, None, :] * permuted[None, :, :]).reshape(-1, 3)


def integrate_voxel_kernel(point: PointKernel, spacing_mm: tuple[float, float, float],
                           density_g_per_ml: float) -> VoxelKernel:
    """The :class:`VoxelKernel` of ``point`` on voxels of ``spacing_mm`` (z, y, x) in tissue of the density."""
    spacing_cm = np.asarray(spacing_mm, dtype=np.float64) / 10.0
    shell_cm = point.shell_g_per_cm2 / density_g_per_ml
    shells = point.energy_mev_per_decay.size
    middle_cm = (np.arange(shells) + 0.5) * shell_cm
    share = point.energy_mev_per_decay / point.emitted_mev_per_decay
    half = np.ceil(shells * shell_cm / spacing_cm).astype(int) + 1
    directions = _sphere_directions()
    octant = np.zeros(tuple(half + 1))
    alike = [[b for b in range(3) if spacing_cm[b] == spacing_cm[a]] for a in range(3)]  # axes of equal voxels
    for index in np.ndindex(*octant.shape):
        # axes of equal voxel size may swap (the directions have the cube's symmetries): the offset with its
        # indices sorted within each such group came first in this order, and holds the same value
        canonical = list(index)
        for group in alike:
            for axis, value in zip(group, sorted(index[a] for a in group)):
                canonical[axis] = value
        if tuple(canonical) != index:
            octant[index] = octant[tuple(canonical)]
            continue
        offset = np.asarray(index, dtype=np.float64)
        nearest = np.linalg.norm(np.clip(offset - 1.0, 0.0, None) * spacing_cm)
        farthest = np.linalg.norm((offset + 1.0) * spacing_cm)
        reached = (middle_cm > nearest) & (middle_cm < farthest)
        if not reached.any():
            continue
        # the direction average of the product of tents at each reached shell's radius
        scaled = middle_cm[reached, None, None] * directions[None, :, :] / spacing_cm - offset
        overlap = np.prod(np.clip(1.0 - np.abs(scaled), 0.0, None), axis=2).mean(axis=1)
        octant[index] = float(np.sum(share[reached] * overlap))
    # mirror the octant into the whole kernel
    full = octant
    for axis in range(3):
        full = np.concatenate([np.flip(np.delete(full, 0, axis=axis), axis=axis), full], axis=axis)
    return VoxelKernel(point.nuclide, tuple(float(s) for s in spacing_mm), float(density_g_per_ml), full,
                       point.emitted_mev_per_decay)


def kernels_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The kernel cache folder: ``cache_dir`` if given, else ``$XDG_CACHE_HOME/sirtreg/kernels``."""
    return user_cache_folder("kernels", cache_dir)


def voxel_kernel(nuclide: str, spacing_mm: tuple[float, float, float], *, density_g_per_ml: float,
                 cache_dir: str | os.PathLike[str] | None = None) -> VoxelKernel:
    """The voxel kernel of a shipped nuclide ("Y-90", "Ho-166") for voxels of ``spacing_mm`` (z, y, x), made
    once and then read from the cache."""
    spacing = tuple(round(float(s), 4) for s in spacing_mm)
    if len(spacing) != 3 or not all(VOXEL_RANGE_MM[0] <= s <= VOXEL_RANGE_MM[1] for s in spacing):
        raise InputError(f"voxel kernels need voxel sizes in [{VOXEL_RANGE_MM[0]:g}, {VOXEL_RANGE_MM[1]:g}] mm, "
                         f"got {spacing_mm}")
    point = shipped_point_kernel(nuclide)
    key = hashlib.sha256(f"{point.to_csv()}|{spacing}|{density_g_per_ml:.4f}|{_DIRECTIONS}|"
                         f"{_INTEGRATION_VERSION}".encode()).hexdigest()
    path = kernels_dir(cache_dir) / f"{nuclide.lower().replace('-', '')}_{key[:16]}.npy"
    if path.is_file():
        fraction = np.load(path)
        return VoxelKernel(nuclide, spacing, float(density_g_per_ml), fraction, point.emitted_mev_per_decay)
    log.info("making the %s voxel kernel for %s mm voxels (once; kept in %s)", nuclide,
             " x ".join(f"{s:g}" for s in spacing), path.parent)
    kernel = integrate_voxel_kernel(point, spacing, density_g_per_ml)
    partial = None
    try:  # a temporary name of its own: study workers may make the same kernel at once
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, partial = tempfile.mkstemp(dir=path.parent, suffix=".partial")
        with os.fdopen(descriptor, "wb") as handle:
            np.save(handle, kernel.energy_fraction)
        os.replace(partial, path)
    except OSError as exc:
        log.warning("the voxel kernel could not be kept in %s (%s): it is made again next time", path.parent, exc)
        if partial is not None:
            Path(partial).unlink(missing_ok=True)
    return kernel
