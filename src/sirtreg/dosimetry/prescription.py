"""Activity prescription from the MAA study, and the limits every plan keeps.

``C`` is the isotope's dose factor (Gy kg/GBq, :mod:`.isotopes`), ``L`` the lung shunt fraction, masses in kg
(:class:`~sirtreg.dosimetry.compartments.Compartments`):

- ``mird``, single compartment (Y-90 glass or resin, Ho-166): the activity giving a mean dose ``D`` to the
  treated territory (perfused volume, else the whole liver; tumours included) of mass ``m``:
  ``A = D m / (C (1 - L))``.
- ``partition``, the MIRD partition model (:mod:`.partition`): a mean dose ``D`` to the tumour (``D_N = D / R``)
  or to the normal liver (``D_N = D``) of the territory, with the MAA tumour-to-normal ratio ``R``:
  ``A = D_N (R m_T + m_N) / (C (1 - L))``.
- ``bsa``, the body-surface-area method of resin Y-90 microspheres (SIR-Spheres instructions for use; Kao et al.,
  Ann Nucl Med 2011;25:455-61): ``A = (BSA - 0.2 + V_T / V_liver) f V_territory / V_liver`` with BSA in m² by
  DuBois (``0.20247 h^0.725 w^0.425``, height in m, weight in kg), ``f`` 1 for ``L`` < 10 %, 0.8 up to 15 %,
  0.6 up to 20 %; above 20 % the method allows no treatment.

Every plan's lung dose ``C A L / m_lung`` stays within 30 Gy for the treatment and 50 Gy with the lung dose of
earlier treatments; a normal-liver limit may be given too. A plan that breaks a limit is refused with the largest
activity within them all, unless ``within_limits`` asks for that activity (the limit that binds is then named).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sirtreg.dosimetry.compartments import Compartments
from sirtreg.dosimetry.deposition import (
    DEFAULT_LUNG_MASS_KG,
    LUNG_MASS_RANGE_KG,
    require_fraction,
    require_in_range,
    require_positive,
)
from sirtreg.dosimetry.isotopes import Isotope, get_isotope
from sirtreg.dosimetry.partition import doses_per_gbq
from sirtreg.errors import InputError

#: mean lung dose allowed in one treatment (Gy)
LUNG_LIMIT_GY = 30.0
#: mean lung dose allowed over every treatment of a patient (Gy)
CUMULATIVE_LUNG_LIMIT_GY = 50.0
#: prescription methods
METHODS = ("mird", "partition", "bsa")
#: (largest lung shunt fraction, factor) of the BSA method's activity reduction; above the last, no treatment
BSA_SHUNT_REDUCTION = ((0.10, 1.0), (0.15, 0.8), (0.20, 0.6))


def dubois_bsa_m2(height_cm: float, weight_kg: float) -> float:
    """Body surface area (m²) by DuBois and DuBois: ``0.20247 h^0.725 w^0.425`` (h in m, w in kg)."""
    height = require_positive(height_cm, what="height (cm)")
    weight = require_positive(weight_kg, what="weight (kg)")
    if not 50 <= height <= 250 or not 10 <= weight <= 300:
        raise InputError(f"height {height:g} cm and weight {weight:g} kg: expected 50-250 cm and 10-300 kg")
    return 0.20247 * (height / 100.0) ** 0.725 * weight ** 0.425


def bsa_shunt_factor(lung_shunt_fraction: float) -> float:
    """The BSA method's activity factor for a lung shunt fraction (see :data:`BSA_SHUNT_REDUCTION`)."""
    for largest, factor in BSA_SHUNT_REDUCTION:
        if lung_shunt_fraction < largest or (largest == BSA_SHUNT_REDUCTION[-1][0]
                                             and lung_shunt_fraction <= largest):
            return factor
    raise InputError(f"a lung shunt fraction of {100 * lung_shunt_fraction:.2f} % is above 20 %: the BSA method "
                     "allows no treatment")


@dataclass(frozen=True)
class Prescription:
    """A planned activity and what it gives.

    ``activity_gbq`` is administered (before the lung shunt); ``prescribed_activity_gbq`` is what the method
    alone asks for; ``binding`` is "prescription" or the limit that lowered it. ``doses_gy`` holds the mean doses
    of the plan ("territory", "tumour" and "normal liver" where measured, "lung", "cumulative lung"); ``formula`` the
    method's formula with its numbers; ``inputs`` every input with its unit in its name.
    """

    method: str
    activity_gbq: float
    prescribed_activity_gbq: float
    binding: str
    formula: str
    doses_gy: dict[str, float]
    inputs: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    """Dose limits (Gy) a plan keeps: lung per treatment and cumulative, optionally the normal liver."""

    lung_gy: float = LUNG_LIMIT_GY
    cumulative_lung_gy: float = CUMULATIVE_LUNG_LIMIT_GY
    previous_lung_gy: float = 0.0
    normal_liver_gy: float | None = None

    def __post_init__(self) -> None:
        require_positive(self.lung_gy, what="lung limit (Gy)")
        require_positive(self.cumulative_lung_gy, what="cumulative lung limit (Gy)")
        previous = float(self.previous_lung_gy)
        if not math.isfinite(previous) or previous < 0:
            raise InputError(f"the earlier lung dose must be >= 0 Gy, got {self.previous_lung_gy!r}")
        if previous >= self.cumulative_lung_gy:
            raise InputError(f"the earlier lung dose {previous:g} Gy leaves nothing of the "
                             f"{self.cumulative_lung_gy:g} Gy cumulative lung limit")
        if self.normal_liver_gy is not None:
            require_positive(self.normal_liver_gy, what="normal liver limit (Gy)")


def _doses_per_gbq(compartments: Compartments, *, lsf: float, lung_mass_kg: float, isotope: Isotope
                   ) -> dict[str, float]:
    """Mean dose per administered GBq (Gy/GBq) of the territory, with a tumour-to-normal ratio of the tumour and
    the normal liver too, and of the lung
    (:func:`~sirtreg.dosimetry.partition.doses_per_gbq`)."""
    ratio = compartments.tumour_to_normal_ratio  # None: no tumour in the territory (its mass is 0)
    tumour, normal, lung = doses_per_gbq(isotope=isotope, tumour_mass_kg=compartments.mass_kg(compartments.tumour_ml),
                                         normal_mass_kg=compartments.mass_kg(compartments.normal_ml),
                                         ratio=1.0 if ratio is None else ratio, lsf=lsf,
                                         lung_mass_kg=lung_mass_kg)
    per_gbq = {"territory": isotope.dose_factor_gy_kg_per_gbq * (1 - lsf)
               / compartments.mass_kg(compartments.territory_ml)}
    if compartments.tumour_to_normal_ratio is not None:
        per_gbq.update({"tumour": tumour, "normal liver": normal})
    return {**per_gbq, "lung": lung}


def _prescribed(method: str, compartments: Compartments, *, dose_gy: float | None, target: str, lsf: float,
                factor: float, height_cm: float | None, weight_kg: float | None) -> tuple[float, str]:
    """The activity (GBq) the method asks for, and its formula with the numbers."""
    if method == "bsa":
        if height_cm is None or weight_kg is None:
            raise InputError("the BSA method needs the patient's height (cm) and weight (kg)")
        bsa = dubois_bsa_m2(height_cm, weight_kg)
        reduction = bsa_shunt_factor(lsf)
        share = compartments.territory_ml / compartments.liver_ml
        activity = (bsa - 0.2 + compartments.tumour_involvement) * reduction * share
        return activity, (f"A = (BSA - 0.2 + V_T/V_liver) f V_territory/V_liver = ({bsa:.3f} - 0.2 + "
                          f"{compartments.tumour_involvement:.4f}) x {reduction:g} x {share:.4f}")
    if dose_gy is None:
        raise InputError(f"the {method} method needs a target dose (Gy)")
    dose = require_positive(dose_gy, what=f"{method} target dose (Gy)")
    if method == "mird":
        mass = compartments.mass_kg(compartments.territory_ml)
        return dose * mass / (factor * (1 - lsf)), (f"A = D m / (C (1 - L)) = {dose:g} x {mass:.4f} / "
                                                   f"({factor:g} x (1 - {lsf:g}))")
    ratio = compartments.tumour_to_normal_ratio
    if ratio is None:
        raise InputError(f"the partition model needs tumour contours in the {compartments.territory} (for the "
                         "tumour-to-normal ratio)")
    if target not in ("tumour", "normal"):
        raise InputError(f"the partition model's target is tumour or normal, got {target!r}")
    tumour_kg = compartments.mass_kg(compartments.tumour_ml)
    normal_kg = compartments.mass_kg(compartments.normal_ml)
    if target == "tumour" and ratio <= 0:
        raise InputError(f"the tumours of the {compartments.territory} hold no MAA counts (tumour-to-normal ratio 0): "
                         "no activity gives them a dose; plan for the normal liver or by mird")
    normal_dose = dose / ratio if target == "tumour" else dose
    return normal_dose * (ratio * tumour_kg + normal_kg) / (factor * (1 - lsf)), (
        f"A = D_N (R m_T + m_N) / (C (1 - L)) = {normal_dose:.3f} x ({ratio:.4f} x {tumour_kg:.4f} + "
        f"{normal_kg:.4f}) / ({factor:g} x (1 - {lsf:g}))")


def prescribe(method: str, compartments: Compartments, **options: Any) -> Prescription:
    """Plan the activity of one territory by ``method``: :func:`prescribe_territories` of that territory alone."""
    return prescribe_territories(method, [compartments], **options)[0]


def prescribe_territories(
    method: str,
    territories: Sequence[Compartments],
    *,
    dose_gy: float | None = None,
    target: str = "tumour",
    lung_shunt_fraction: float = 0.0,
    lung_mass_kg: float = DEFAULT_LUNG_MASS_KG,
    isotope: str | Isotope = "y90",
    microspheres: str = "glass",
    height_cm: float | None = None,
    weight_kg: float | None = None,
    limits: Limits | None = None,
    within_limits: bool = False,
    lung_shunt_source: str = "given",
) -> list[Prescription]:
    """Plan the activity of each territory (a lobe or perfused volume with its own injection) by ``method`` (see
    the module docstring), in one treatment: the normal-liver limit holds in each territory, the lung limits for
    the lung dose of all the injections together (the ``lung`` dose of every prescription is that total).

    Parameters
    ----------
    method : "mird", "partition" or "bsa".
    territories : the measured compartments of each territory.
    dose_gy : the target mean dose (Gy) of mird (the territory) and partition (see ``target``); not for bsa.
    target : the partition model's target, "tumour" or "normal" (the normal liver of the territory).
    lung_shunt_fraction, lung_mass_kg : the lung's share of the activity and its mass.
    isotope : "y90" or "ho166" (or an :class:`Isotope`).
    microspheres : "glass" or "resin" for Y-90 (bsa is for resin only); ignored for Ho-166.
    height_cm, weight_kg : the patient's, for bsa.
    limits : the dose limits (default :class:`Limits`).
    within_limits : plan the largest activities within the limits (those of the territories the normal-liver limit
        binds lowered, then all alike for the lung) instead of refusing a plan that breaks one.
    lung_shunt_source : where the lung shunt fraction comes from, for the plan's inputs (e.g. a
        :meth:`~sirtreg.dosimetry.lung_shunt.LungShunt.describe`).
    """
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if microspheres not in ("glass", "resin"):
        raise InputError(f"microspheres must be glass or resin, got {microspheres!r}")
    if not territories:
        raise InputError("a plan needs at least one territory")
    isotope = get_isotope(isotope)
    if method == "bsa" and (isotope.name != "Y-90" or microspheres != "resin"):
        raise InputError("the BSA method is for resin Y-90 microspheres only: choose mird or partition")
    if method == "bsa" and dose_gy is not None:
        raise InputError("the BSA method takes no target dose: leave out the dose")
    lsf = require_fraction(lung_shunt_fraction, what="lung shunt fraction")
    lung_mass = require_in_range(lung_mass_kg, *LUNG_MASS_RANGE_KG, what="lung mass (kg)")
    limits = limits or Limits()
    factor = isotope.dose_factor_gy_kg_per_gbq
    planned = []  # per territory: (compartments, prescribed GBq, formula, Gy per GBq, allowed GBq, binding)
    for compartments in territories:
        prescribed, formula = _prescribed(method, compartments, dose_gy=dose_gy, target=target, lsf=lsf,
                                          factor=factor, height_cm=height_cm, weight_kg=weight_kg)
        per_gbq = _doses_per_gbq(compartments, lsf=lsf, lung_mass_kg=lung_mass, isotope=isotope)
        allowed, binding = prescribed, "prescription"
        if limits.normal_liver_gy is not None:
            normal_cap = limits.normal_liver_gy / per_gbq.get("normal liver", per_gbq["territory"])
            if normal_cap < prescribed:
                allowed, binding = normal_cap, f"normal liver limit of {limits.normal_liver_gy:g} Gy"
        planned.append((compartments, prescribed, formula, per_gbq, allowed, binding))
    lung_per_gbq = planned[0][3]["lung"]
    total = sum(item[4] for item in planned)
    lung_caps = {f"lung limit of {limits.lung_gy:g} Gy per treatment": limits.lung_gy,
                 f"cumulative lung limit of {limits.cumulative_lung_gy:g} Gy ({limits.previous_lung_gy:g} Gy "
                 "before)": limits.cumulative_lung_gy - limits.previous_lung_gy}
    lung_binding = min(lung_caps, key=lung_caps.__getitem__)
    scale = min(1.0, lung_caps[lung_binding] / (lung_per_gbq * total)) if lung_per_gbq > 0 else 1.0
    broken = [item[5] for item in planned if item[5] != "prescription"] + ([lung_binding] if scale < 1 else [])
    if broken and not within_limits:
        prescribed_total = sum(item[1] for item in planned)
        lung = prescribed_total * lung_per_gbq
        several = f" ({len(planned)} territories)" if len(planned) > 1 else ""
        raise InputError(f"the {method} plan of {prescribed_total:.2f} GBq{several} breaks the {broken[0]} (lung "
                         f"{lung:.1f} Gy, cumulative {lung + limits.previous_lung_gy:.1f} Gy): at most "
                         f"{total * scale:.2f} GBq keeps every limit (plan it with --within-limits)")
    lung_dose = lung_per_gbq * total * scale
    inputs = {"isotope": isotope.name, "microspheres": microspheres if isotope.name == "Y-90" else "-",
              "dose_factor_gy_kg_per_gbq": factor, "target_dose_gy": dose_gy,
              "lung_shunt_fraction": lsf, "lung_shunt_fraction_source": lung_shunt_source, "lung_mass_kg": lung_mass,
              "height_cm": height_cm, "weight_kg": weight_kg, "lung_limit_gy": limits.lung_gy,
              "cumulative_lung_limit_gy": limits.cumulative_lung_gy,
              "previous_lung_dose_gy": limits.previous_lung_gy, "normal_liver_limit_gy": limits.normal_liver_gy}
    prescriptions = []
    for compartments, prescribed, formula, per_gbq, allowed, binding in planned:
        activity = allowed * scale
        doses = {name: activity * value for name, value in per_gbq.items() if name != "lung"}
        doses.update({"lung": lung_dose, "cumulative lung": lung_dose + limits.previous_lung_gy})
        prescriptions.append(Prescription(
            method=method, activity_gbq=activity, prescribed_activity_gbq=prescribed,
            binding=lung_binding if scale < 1 else binding, formula=formula, doses_gy=doses,
            inputs={**inputs, "target": target if method == "partition" else compartments.territory}))
    return prescriptions
