"""Therapeutic isotopes for SIRT: dose factors, half-lives and decay correction.

The dose factor ``C`` (Gy kg / GBq, i.e. J / GBq) is the energy that the
complete decay of 1 GBq deposits locally, so that a mean absorbed dose is
``D = C * A / m`` with ``A`` in GBq and ``m`` in kg.

- Y-90: ``C = 49.67`` Gy kg/GBq, the value of the MIRD formalism for
  Y-90 microspheres (Gulec, Mesoloras and Stabin, J Nucl Med 2006;47:1209-11)
  used in the resin and glass microsphere instructions; AAPM TG-144 (Dezarn
  et al., Med Phys 2011;38:4824-45) quotes 49.38 J/GBq, a 0.6 % difference.
  Half-life 64.1 h (64.0-64.1 h in the NNDC/DDEP decay tables).
- Ho-166: ``C = 15.87`` Gy kg/GBq, the value used for holmium microspheres
  (Smits et al., HEPAR I, Lancet Oncol 2012;13:1025-34, and the QuiremSpheres
  instructions). Half-life 26.8 h (26.82 h in the NNDC/DDEP decay tables).

Both constants are parameters: pass an :class:`Isotope` of your own to use
other values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sirtreg.errors import InputError, describe


@dataclass(frozen=True)
class Isotope:
    """A beta emitter for local-deposition dosimetry.

    Parameters
    ----------
    name : display name, e.g. "Y-90".
    dose_factor_gy_kg_per_gbq : energy per GBq of complete decay (J/GBq = Gy kg/GBq), > 0.
    half_life_h : physical half-life in hours, > 0.
    """

    name: str
    dose_factor_gy_kg_per_gbq: float
    half_life_h: float

    def __post_init__(self) -> None:
        for what, value in (("dose factor", self.dose_factor_gy_kg_per_gbq), ("half-life", self.half_life_h)):
            if not math.isfinite(value) or value <= 0:
                raise InputError(f"the {what} of {self.name} must be a positive number, got {value!r}")


Y90 = Isotope("Y-90", dose_factor_gy_kg_per_gbq=49.67, half_life_h=64.1)
HO166 = Isotope("Ho-166", dose_factor_gy_kg_per_gbq=15.87, half_life_h=26.8)
ISOTOPES = {"y90": Y90, "ho166": HO166}


def get_isotope(isotope: str | Isotope) -> Isotope:
    """The :class:`Isotope` for a name ("y90", "Y-90", "90Y", "ho166", ...) or the isotope itself."""
    if isinstance(isotope, Isotope):
        return isotope
    key = "".join(ch for ch in str(isotope).lower() if ch.isalnum())
    digits = "".join(ch for ch in key if ch.isdigit())
    letters = "".join(ch for ch in key if ch.isalpha())
    found = ISOTOPES.get(letters + digits)
    if found is None:
        raise InputError(f"unknown isotope {isotope!r}; known: {', '.join(sorted(ISOTOPES))}")
    return found


MAX_ACTIVITY_GBQ = 100.0
"""More activity than any SIRT treatment (vials hold up to about 20 GBq): a number in MBq, or a typing error."""
PLAUSIBLE_ACTIVITY_GBQ = 20.0
"""Above this an activity is accepted with a warning."""
MAX_DECAY_HALF_LIVES = 20.0
"""Calibration and injection more half-lives apart than this are a wrong date, not a treatment."""


def require_activity_gbq(activity_gbq: float, *, what: str = "activity") -> float:
    """``activity_gbq`` as a float in (0, :data:`MAX_ACTIVITY_GBQ`] GBq, refusing NaN and infinite values."""
    try:
        value = float(activity_gbq)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a number in GBq, got {activity_gbq!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a positive number of GBq, got {activity_gbq!r}")
    if value > MAX_ACTIVITY_GBQ:
        raise InputError(f"{what} of {value:g} GBq is more than any SIRT treatment ({MAX_ACTIVITY_GBQ:g} GBq at "
                         f"most): did you give MBq? ({value:g} MBq = {value / 1000:g} GBq)")
    return value


LOW_ACTIVITY_GBQ = 0.01
"""Below this activity (GBq, i.e. 10 MBq) a typed activity is accepted with a warning: less than any treatment."""


def read_activity_gbq(value: Any, *, unit: str = "GBq", gbq_per_unit: float = 1.0) -> tuple[float, list[str]]:
    """An activity as a user types it in a plan or a manifest (a number; the unit, ``unit``, is in the key), in
    GBq, with its plausibility warnings. InputError (its message names no place) for anything but a finite
    number in (0, :data:`MAX_ACTIVITY_GBQ`] GBq; warnings above :data:`PLAUSIBLE_ACTIVITY_GBQ` and below
    :data:`LOW_ACTIVITY_GBQ` (a unit mistake?)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"must be a number of {unit}, without unit (the unit is in the key), got {describe(value)}")
    if not math.isfinite(value):
        raise InputError(f"must be a finite number of {unit}, got {value!r}")
    if value <= 0:
        raise InputError(f"must be a positive number of {unit}, got {value!r}")
    activity_gbq = float(value) * gbq_per_unit
    if activity_gbq > MAX_ACTIVITY_GBQ:
        hint = "; did you mean MBq?" if unit == "GBq" else ""
        raise InputError(f"{value!r} {unit} is more than {MAX_ACTIVITY_GBQ:g} GBq, far more than any treatment{hint}")
    if unit == "GBq":
        warnings = activity_warnings(activity_gbq)
    elif activity_gbq > PLAUSIBLE_ACTIVITY_GBQ:
        warnings = [f"{value:g} {unit} is more than {PLAUSIBLE_ACTIVITY_GBQ:g} GBq, more than usual treatments"]
    else:
        warnings = []
    if activity_gbq < LOW_ACTIVITY_GBQ:
        hint = "; did you mean GBq?" if unit == "MBq" else ""
        warnings.append(f"{value:g} {unit} is less than {LOW_ACTIVITY_GBQ:g} GBq, less than any treatment{hint}")
    return activity_gbq, warnings


def read_isotope(value: Any) -> tuple[str, list[str]]:
    """The canonical name ("Y-90", "Ho-166") of an isotope as a user types it ("y90", "Ho166", ...); no
    warnings. InputError for an unknown isotope."""
    return get_isotope(str(value)).name, []


def activity_warnings(activity_gbq: float) -> list[str]:
    """Plausibility warnings for an administered activity (GBq) that was accepted."""
    if activity_gbq > PLAUSIBLE_ACTIVITY_GBQ:
        return [f"an activity of {activity_gbq:g} GBq is more than {PLAUSIBLE_ACTIVITY_GBQ:g} GBq: did you mean MBq?"]
    return []


def decay_corrected_activity_gbq(
    activity_gbq: float, *, isotope: str | Isotope, calibration_time: datetime, injection_time: datetime
) -> float:
    """Activity (GBq) at ``injection_time`` of a source that held ``activity_gbq`` at ``calibration_time``.

    ``A_inj = A_cal * 2 ** (-(t_inj - t_cal) / T_half)``; an injection before the
    calibration time gives more activity than calibrated. Both times must be
    both naive or both timezone-aware.
    """
    activity = require_activity_gbq(activity_gbq, what="calibrated activity")
    try:
        elapsed_h = (injection_time - calibration_time).total_seconds() / 3600.0
    except TypeError:
        raise InputError("calibration and injection times must both carry a timezone or both not") from None
    isotope = get_isotope(isotope)
    if abs(elapsed_h) > MAX_DECAY_HALF_LIVES * isotope.half_life_h:
        raise InputError(
            f"calibration ({calibration_time.isoformat()}) and injection ({injection_time.isoformat()}) are "
            f"{abs(elapsed_h) / 24:.0f} days apart, more than {MAX_DECAY_HALF_LIVES:g} half-lives of {isotope.name} "
            f"({MAX_DECAY_HALF_LIVES * isotope.half_life_h / 24:.0f} days): check the dates")
    return activity * 2.0 ** (-elapsed_h / isotope.half_life_h)
