"""Absorbed dose by voxel S values: the energy each voxel's activity emits, spread over its neighbours by the
voxel kernel of the nuclide (:mod:`.voxel_kernel`), divided by each voxel's mass.

``D_v = C sum_u A_u K_{v-u} / m_v``: ``C A_u`` the energy (J) the activity of voxel ``u`` (the local-deposition
map's activity, zero outside the territories) emits, ``K`` the kernel's energy shares and ``m_v`` the voxel's
mass, ``rho V`` with the tissue density of the dose map, or the density from the CT where one is given (the
mass-scaling correction: the kernel stays that of soft tissue, so in lung and bone it is a first-order
correction only). Energy carried past the SPECT's edges is lost. Outside the territories the dose is what
reaches there, not the counts with the pooled calibration of the local-deposition map.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from sirtreg.dosimetry.deposition import DoseMap
from sirtreg.dosimetry.voxel_kernel import VoxelKernel, voxel_kernel
from sirtreg.errors import InputError
from sirtreg.geometry import Grid, Volume

log = logging.getLogger(__name__)

#: bilinear CT calibration (g/mL per HU): water to air below 0 HU, water to cortical bone above
AIR_SLOPE_G_PER_ML_PER_HU = 1.0e-3
BONE_SLOPE_G_PER_ML_PER_HU = 0.6e-3
#: the least density given to a voxel (g/mL): air is no one's concern, and its few counts would otherwise show
#: as thousands of Gy
MIN_DENSITY_G_PER_ML = 0.1


def density_from_ct(ct: Volume, grid: Grid, *, outside_g_per_ml: float) -> Volume:
    """Tissue density (g/mL) on ``grid`` from a CT in HU on its own grid, by a generic bilinear calibration:
    ``1 + 0.001 HU`` below 0 HU, ``1 + 0.0006 HU`` above (1500 HU: 1.9 g/mL, cortical bone), at least
    :data:`MIN_DENSITY_G_PER_ML`. The CT is averaged over each voxel of ``grid`` (a box filter of the voxel's
    size, then sampling); voxels of ``grid`` outside the CT get ``outside_g_per_ml`` (with a warning)."""
    from scipy import ndimage

    from sirtreg.resample import resample

    grid.require_overlap(ct.grid, what="the CT and the SPECT")
    hu = ct.array.astype(np.float32)
    box = [max(1, int(round(t / s))) for t, s in zip(grid.spacing_mm[::-1], ct.grid.spacing_mm[::-1])]
    averaged = ct.with_array(ndimage.uniform_filter(hu, size=box, mode="nearest"))
    sampled = resample(averaged, grid, fill_value=float("nan")).array.astype(np.float64)
    outside = np.isnan(sampled)
    if outside.any():
        log.warning("%.1f %% of the SPECT's voxels lie outside the CT: they are given %.2f g/mL",
                    100.0 * outside.mean(), outside_g_per_ml)
    density = np.where(sampled < 0, 1.0 + AIR_SLOPE_G_PER_ML_PER_HU * sampled,
                       1.0 + BONE_SLOPE_G_PER_ML_PER_HU * sampled)
    density = np.where(outside, outside_g_per_ml, np.maximum(density, MIN_DENSITY_G_PER_ML))
    return Volume(density.astype(np.float32), grid, "", {"quantity": "density", "units": "g/mL"})


def kernel_dose(dose_map: DoseMap, *, density: Volume | None = None, kernel: VoxelKernel | None = None,
                cache_dir: str | os.PathLike[str] | None = None) -> Volume:
    """The voxel-S-value dose map (Gy) of ``dose_map``'s activity, on its grid.

    Parameters
    ----------
    dose_map : a local-deposition dose map (its activity, isotope and tissue density are used).
    density : tissue density (g/mL) on the dose map's grid (:func:`density_from_ct`), or None for the dose
        map's density everywhere.
    kernel : a voxel kernel of the dose map's voxel size and density (default: the shipped nuclide's, cached).
    """
    from scipy.signal import fftconvolve

    grid = dose_map.dose.grid
    spacing_zyx = tuple(float(s) for s in grid.spacing_mm[::-1])
    if kernel is None:
        kernel = voxel_kernel(dose_map.isotope.name, spacing_zyx, density_g_per_ml=dose_map.density_g_per_ml,
                              cache_dir=cache_dir)
    elif not np.allclose(kernel.spacing_mm, spacing_zyx, rtol=1e-3):
        raise InputError(f"the voxel kernel is for {kernel.spacing_mm} mm voxels, the dose map's are {spacing_zyx}")
    elif kernel.nuclide != dose_map.isotope.name or abs(kernel.density_g_per_ml - dose_map.density_g_per_ml) > 1e-3:
        raise InputError(f"the voxel kernel is of {kernel.nuclide} in {kernel.density_g_per_ml:g} g/mL tissue, the "
                         f"dose map's of {dose_map.isotope.name} in {dose_map.density_g_per_ml:g} g/mL")
    if density is not None:
        grid.require_same(density.grid, what="the density map and the dose map")
        mass_kg = density.array.astype(np.float64) * grid.voxel_volume_ml / 1000.0
    else:
        mass_kg = np.full(grid.shape, dose_map.density_g_per_ml * grid.voxel_volume_ml / 1000.0)
    energy_j = dose_map.isotope.dose_factor_gy_kg_per_gbq * dose_map.activity.array.astype(np.float64)
    spread_j = np.clip(fftconvolve(energy_j, kernel.energy_fraction, mode="same"), 0.0, None)
    log.info("voxel S value dose: %.1f %% of the emitted energy stays on the grid",
             100.0 * spread_j.sum() / max(energy_j.sum(), 1e-30))
    meta = {"quantity": "absorbed dose", "units": "Gy", "isotope": dose_map.isotope.name,
            "method": "voxel S values" + (" with CT density" if density is not None else "")}
    return Volume((spread_j / mass_kg).astype(np.float32), grid, "", meta)
