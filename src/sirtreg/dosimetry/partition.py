"""MIRD partition model (tumour, normal liver, lung) and the MAA tumour-to-normal ratio.

With administered activity ``A`` (GBq), lung shunt fraction ``L``, MAA
tumour-to-normal ratio ``R`` (activity concentration in tumour over that in
normal liver), masses ``m_T``, ``m_N``, ``m_L`` (kg) and dose factor ``C``
(Gy kg/GBq):

- ``A_lung = A L``; ``A_T = A (1 - L) R m_T / (R m_T + m_N)``; ``A_N = A (1 - L) m_N / (R m_T + m_N)``
- ``D_T = C A_T / m_T = R D_N``; ``D_N = C A (1 - L) / (R m_T + m_N)``; ``D_lung = C A L / m_L``

Every dose is proportional to ``A`` (:func:`doses_per_gbq`); :mod:`.prescription` inverts them to plan an
activity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sirtreg.dosimetry.deposition import (
    DEFAULT_LUNG_MASS_KG,
    require_fraction,
    require_positive,
)
from sirtreg.dosimetry.isotopes import Isotope, get_isotope, require_activity_gbq
from sirtreg.dosimetry.occupancy import occupancy_on_grid
from sirtreg.dosimetry.uptake import spect_counts
from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume


@dataclass(frozen=True)
class PartitionDoses:
    """Activities (GBq) and mean doses (Gy) of the three compartments for one administered activity."""

    activity_gbq: float
    tumour_activity_gbq: float
    normal_activity_gbq: float
    lung_activity_gbq: float
    tumour_dose_gy: float
    normal_dose_gy: float
    lung_dose_gy: float


def doses_per_gbq(
    *, isotope: Isotope, tumour_mass_kg: float, normal_mass_kg: float, ratio: float, lsf: float, lung_mass_kg: float
) -> tuple[float, float, float]:
    """(tumour, normal, lung) mean dose (Gy) per administered GBq; masses in kg, ``lsf`` the lung shunt fraction."""
    c = isotope.dose_factor_gy_kg_per_gbq
    normal = c * (1.0 - lsf) / (ratio * tumour_mass_kg + normal_mass_kg)
    return ratio * normal, normal, c * lsf / lung_mass_kg


def _checked(tumour_mass_kg: float, normal_mass_kg: float, ratio: float, lsf: float, lung_mass_kg: float):
    tumour = float(tumour_mass_kg)
    if not math.isfinite(tumour) or tumour < 0:
        raise InputError(f"tumour mass must be >= 0 kg, got {tumour_mass_kg!r}")
    return (
        tumour,
        require_positive(normal_mass_kg, what="normal liver mass (kg)"),
        require_positive(ratio, what="tumour-to-normal ratio"),
        require_fraction(lsf, what="lung shunt fraction"),
        require_positive(lung_mass_kg, what="lung mass (kg)"),
    )


def partition_model(
    activity_gbq: float,
    *,
    tumour_mass_kg: float,
    normal_mass_kg: float,
    tumour_to_normal_ratio: float,
    lung_shunt_fraction: float = 0.0,
    lung_mass_kg: float = DEFAULT_LUNG_MASS_KG,
    isotope: str | Isotope = "y90",
) -> PartitionDoses:
    """Mean tumour, normal-liver and lung doses of ``activity_gbq`` by the MIRD partition model (formulas above)."""
    activity = require_activity_gbq(activity_gbq)
    tumour, normal, ratio, lsf, lung = _checked(tumour_mass_kg, normal_mass_kg, tumour_to_normal_ratio,
                                                lung_shunt_fraction, lung_mass_kg)
    per_gbq = doses_per_gbq(isotope=get_isotope(isotope), tumour_mass_kg=tumour, normal_mass_kg=normal,
                            ratio=ratio, lsf=lsf, lung_mass_kg=lung)
    share = ratio * tumour + normal
    return PartitionDoses(
        activity_gbq=activity,
        tumour_activity_gbq=activity * (1 - lsf) * ratio * tumour / share,
        normal_activity_gbq=activity * (1 - lsf) * normal / share,
        lung_activity_gbq=activity * lsf,
        tumour_dose_gy=activity * per_gbq[0],
        normal_dose_gy=activity * per_gbq[1],
        lung_dose_gy=activity * per_gbq[2],
    )


def tumour_to_normal_ratio(
    spect: Volume,
    tumour: LabelVolume,
    normal: LabelVolume,
    *,
    tumour_label: int | str | None = None,
    normal_label: int | str | None = None,
) -> float:
    """MAA tumour-to-normal ratio: count density (counts per mL) in the tumour over that in the normal liver.

    Contours may be on any grid; they are carried onto the SPECT grid as fractional occupancy.
    """
    counts, _ = spect_counts(spect)
    densities = []
    for contour, label in ((tumour, tumour_label), (normal, normal_label)):
        fraction = occupancy_on_grid(contour, spect.grid, label=label)
        densities.append(float(np.sum(counts * fraction)) / float(fraction.sum(dtype=np.float64)))
    if densities[1] <= 0:
        raise InputError("the SPECT has no counts inside the normal liver contour")
    return densities[0] / densities[1]
