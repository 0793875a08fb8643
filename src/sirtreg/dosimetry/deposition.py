"""Absorbed dose by local deposition: ``D = C * A / m`` voxel by voxel.

Each territory (the whole liver, a perfused volume, or one lobe with its own
injection) receives its activity after the lung shunt, ``A_t (1 - LSF)``,
distributed by the SPECT counts inside its contour (:mod:`.uptake`). All the
energy of a voxel's activity is absorbed in that voxel's tissue:

``D_v = C * A_v / m_v``, ``A_v = sum_t A_t (1 - LSF) c_v f_tv / S_t``,
``m_v = rho * V * F_v``

with ``C`` the isotope dose factor (Gy kg/GBq), ``c_v`` the counts, ``f_tv``
the fraction of voxel ``v`` inside territory ``t``, ``S_t = sum_v c_v f_tv``,
``rho`` the tissue density (default 1.05 g/mL, soft tissue/liver), ``V`` the
voxel volume and ``F_v = min(1, sum_t f_tv)`` the tissue fraction. For one
territory this is ``D_v = C A (1 - LSF) c_v / (S rho V)`` inside the contour.

Outside every contour no activity is assigned, but the dose map still shows
the counts with the pooled calibration ``C sum_t A_t (1 - LSF) / sum_t S_t``
per count and tissue mass: structures drawn up to or slightly beyond the
contour edge are then not pulled toward zero when the dose is interpolated
onto their grid. The activity balance (:meth:`DoseMap.absorbed_energy_j`)
covers the contour tissue only. The lung dose is the mean dose
``C A LSF / m_lung`` (default lung mass 1 kg, the MIRD/partition-model
convention), not a voxel map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sirtreg.dosimetry.isotopes import Isotope, get_isotope, require_activity_gbq
from sirtreg.dosimetry.occupancy import occupancy_on_grid
from sirtreg.dosimetry.uptake import MAX_OUTSIDE_FRACTION, Uptake, measure_uptake
from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume

#: soft-tissue (liver) density in g/mL
DEFAULT_DENSITY_G_PER_ML = 1.05
#: lung mass in kg used for the lung dose when none is given (MIRD partition-model convention)
DEFAULT_LUNG_MASS_KG = 1.0
#: tissue densities (g/mL) accepted: from lung to cortical bone
DENSITY_RANGE_G_PER_ML = (0.3, 2.0)
#: lung masses (kg) accepted: a child's to a large adult's
LUNG_MASS_RANGE_KG = (0.1, 5.0)


def require_positive(value: float, *, what: str) -> float:
    """``value`` as a float, refusing NaN, infinite, zero and negative values."""
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a positive number, got {value!r}")
    return value


def require_in_range(value: float, low: float, high: float, *, what: str) -> float:
    """``value`` as a float in [low, high], refusing NaN; ``what`` names it with its unit."""
    value = float(value)
    if not low <= value <= high:
        raise InputError(f"{what} must be in [{low:g}, {high:g}], got {value!r}")
    return value


def require_fraction(value: float, *, what: str) -> float:
    """``value`` as a float in [0, 1), refusing NaN."""
    value = float(value)
    if not (0.0 <= value < 1.0):
        raise InputError(f"{what} must be in [0, 1), got {value!r}")
    return value


def mean_dose_gy(activity_gbq: float, mass_kg: float, *, isotope: str | Isotope = "y90") -> float:
    """Mean absorbed dose (Gy) of ``activity_gbq`` (>= 0) fully absorbed in ``mass_kg``: ``C * A / m``."""
    activity = float(activity_gbq)
    if not math.isfinite(activity) or activity < 0:
        raise InputError(f"activity must be >= 0 GBq, got {activity_gbq!r}")
    return get_isotope(isotope).dose_factor_gy_kg_per_gbq * activity / require_positive(mass_kg, what="mass (kg)")


@dataclass(frozen=True)
class Territory:
    """A contour that receives its own administered activity.

    Parameters
    ----------
    contour : label map on any grid overlapping the SPECT.
    activity_gbq : activity injected into this territory at injection time (GBq, > 0),
        before the lung shunt.
    label : label value or name inside ``contour``; None takes every non-zero voxel.
    """

    contour: LabelVolume
    activity_gbq: float
    label: int | str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "activity_gbq", require_activity_gbq(self.activity_gbq))


@dataclass(frozen=True, eq=False)
class DoseMap:
    """A local-deposition dose map and the quantities it was made from.

    ``dose`` (Gy) and ``activity`` (GBq per voxel, zero outside the territories)
    are on the SPECT grid.
    """

    dose: Volume
    activity: Volume
    uptake: Uptake
    isotope: Isotope
    administered_activity_gbq: float
    density_g_per_ml: float
    lung_shunt_fraction: float
    lung_mass_kg: float

    @property
    def liver_activity_gbq(self) -> float:
        """Activity reaching the territories: administered activity times (1 - LSF)."""
        return self.administered_activity_gbq * (1.0 - self.lung_shunt_fraction)

    @property
    def lung_activity_gbq(self) -> float:
        return self.administered_activity_gbq * self.lung_shunt_fraction

    @property
    def lung_dose_gy(self) -> float:
        """Mean lung dose ``C A LSF / m_lung`` (Gy)."""
        return mean_dose_gy(self.lung_activity_gbq, self.lung_mass_kg, isotope=self.isotope)

    @property
    def counts_inside_fraction(self) -> float:
        return self.uptake.counts_inside_fraction

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.uptake.warnings

    def tissue_mass_kg(self) -> np.ndarray:
        """(z, y, x) contour tissue mass per voxel in kg."""
        return self.density_g_per_ml * self.dose.grid.voxel_volume_ml * self.uptake.tissue_fraction / 1000.0

    def absorbed_energy_j(self) -> float:
        """Energy absorbed in the contour tissue, ``sum_v D_v m_v`` (J); equals ``C * liver activity``."""
        return float(np.sum(self.dose.array.astype(np.float64) * self.tissue_mass_kg()))

    def delivered(self, structure: LabelVolume, *, label: int | str | None = None) -> tuple[float | None, float]:
        """What a structure (``label`` of ``structure``; None: every non-zero voxel) holds of the delivered activity.

        Returns ``(inside, mean_gy)``: ``inside`` is the fraction of the structure's SPECT counts that lie inside
        the normalising contours (None when it holds no counts); ``mean_gy`` the mean dose of the activity
        delivered inside them alone, over the structure's whole mass: ``C sum_v A_v o_v / f_tv / (rho V sum_v
        f_sv)``, with ``o_v = min(f_sv, f_tv)`` the voxel's share in both (exact when one holds the other). Beside
        the dose map's mean, which shows counts outside the contours with the pooled calibration, this one adds
        up to no more energy than was delivered.
        """
        inside_tissue = self.uptake.tissue_fraction
        share = occupancy_on_grid(structure, self.dose.grid, label=label).astype(np.float64)
        both = np.minimum(share, inside_tissue)
        counts = float(np.sum(self.uptake.counts * share))
        energy_j = self.isotope.dose_factor_gy_kg_per_gbq * float(np.sum(
            self.activity.array.astype(np.float64) * np.divide(both, inside_tissue, out=np.zeros_like(both),
                                                               where=inside_tissue > 0)))
        mass_kg = self.density_g_per_ml * self.dose.grid.voxel_volume_ml * float(share.sum()) / 1000.0
        inside = float(np.sum(self.uptake.counts * both)) / counts if counts > 0 else None
        return inside, energy_j / mass_kg


def local_deposition_dose(
    spect: Volume,
    territories: Sequence[Territory],
    *,
    isotope: str | Isotope = "y90",
    density_g_per_ml: float = DEFAULT_DENSITY_G_PER_ML,
    lung_shunt_fraction: float = 0.0,
    lung_mass_kg: float = DEFAULT_LUNG_MASS_KG,
    max_outside_fraction: float = MAX_OUTSIDE_FRACTION,
) -> DoseMap:
    """Dose map (Gy) on the SPECT grid by local deposition of each territory's activity.

    Parameters
    ----------
    spect : MAA SPECT counts (z, y, x), no NaN, no negative voxels.
    territories : one or more :class:`Territory`; one with the liver contour and the
        summed activity reproduces the paper.
    isotope : "y90", "ho166" or an :class:`Isotope`.
    density_g_per_ml : tissue density (default 1.05 g/mL).
    lung_shunt_fraction : LSF in [0, 1); the territories receive ``A (1 - LSF)``.
    lung_mass_kg : lung mass for the mean lung dose (default 1 kg).
    max_outside_fraction : warn when more counts than this lie outside the contours.
    """
    if not territories:
        raise InputError("at least one territory (contour and activity) is needed")
    isotope = get_isotope(isotope)
    density = require_in_range(density_g_per_ml, *DENSITY_RANGE_G_PER_ML, what="tissue density (g/mL)")
    lsf = require_fraction(lung_shunt_fraction, what="lung shunt fraction")
    lung_mass = require_in_range(lung_mass_kg, *LUNG_MASS_RANGE_KG, what="lung mass (kg)")
    uptake = measure_uptake(
        spect,
        [t.contour for t in territories],
        labels=[t.label for t in territories],
        max_outside_fraction=max_outside_fraction,
    )
    reaching = [t.activity_gbq * (1.0 - lsf) for t in territories]
    activity = np.zeros(spect.shape, dtype=np.float64)
    for index, activity_gbq in enumerate(reaching):
        activity += activity_gbq * uptake.fractional_uptake(index)
    voxel_mass_kg = density * spect.grid.voxel_volume_ml / 1000.0
    tissue = uptake.tissue_fraction
    pooled_gbq_per_count = sum(reaching) / sum(uptake.contour_counts)
    dose = isotope.dose_factor_gy_kg_per_gbq * np.where(
        tissue > 0,
        activity / (voxel_mass_kg * np.where(tissue > 0, tissue, 1.0)),
        pooled_gbq_per_count * uptake.counts / voxel_mass_kg,
    )
    meta = {"quantity": "absorbed dose", "units": "Gy", "isotope": isotope.name}
    return DoseMap(
        dose=Volume(dose.astype(np.float32), spect.grid, "", meta),
        activity=Volume(activity.astype(np.float32), spect.grid, "", {"quantity": "activity", "units": "GBq"}),
        uptake=uptake,
        isotope=isotope,
        administered_activity_gbq=sum(t.activity_gbq for t in territories),
        density_g_per_ml=density,
        lung_shunt_fraction=lsf,
        lung_mass_kg=lung_mass,
    )
