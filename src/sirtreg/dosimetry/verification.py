"""Post-treatment verification: the dose delivered, from a Y-90 PET, against the dose the MAA predicted.

A Y-90 PET holds the activity concentration ``c`` (Bq/mL) at its scan time. Decay corrected to the injection,
``c0 = c 2^((t_scan - t_injection) / T_half)``, and deposited locally in tissue of density ``rho`` (g/mL):
``D = C c0 1e-9 / (rho 1e-3)`` Gy, with ``C`` the dose factor (Gy kg/GBq): every voxel's activity decays
completely where it lies, the rule of the MAA's local-deposition dose (:mod:`.deposition`). A post-treatment
SPECT (Y-90 bremsstrahlung, Ho-166) has no absolute scale: it is dosed as the MAA SPECT, its counts in the
liver calibrated by the administered activity (:func:`~sirtreg.dosimetry.deposition.local_deposition_dose`).

Predicted and delivered doses are compared per structure (mean, V70, V100 and DVHs, :mod:`.structures`) and,
over lesions, by Bland-Altman statistics of the mean dose: the mean difference (delivered - predicted) and its
95 % limits of agreement (mean +- 1.96 SD).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from sirtreg.dosimetry.deposition import DEFAULT_DENSITY_G_PER_ML, DENSITY_RANGE_G_PER_ML, require_in_range
from sirtreg.dosimetry.isotopes import Isotope, decay_corrected_activity_gbq, get_isotope
from sirtreg.dosimetry.structures import StructureDose
from sirtreg.errors import InputError
from sirtreg.geometry import Volume

#: the units a PET must state to be dosed (DICOM Units of a PET series)
PET_UNITS = "BQML"


def pet_dose(pet: Volume, *, isotope: str | Isotope = "y90", scan_time: datetime | None = None,
             injection_time: datetime | None = None,
             density_g_per_ml: float = DEFAULT_DENSITY_G_PER_ML) -> Volume:
    """The absorbed dose (Gy) of a PET's activity concentration (Bq/mL), by local deposition (module docstring).

    The PET is decay corrected to the injection as its header says (DICOM Decay Correction: ADMIN, already; START
    or NONE, from the series start or ``scan_time`` to the injection time of the header or ``injection_time``);
    without a header, from ``scan_time`` to ``injection_time`` (both or neither: without them the PET is taken as
    corrected already). The dose's ``meta["decay"]`` says which. A PET whose units are known and are not Bq/mL is
    refused, as are NaN voxels; negative voxels (reconstruction noise) count as zero.
    """
    units = str(pet.meta.get("units", "")).upper()
    if units and units != PET_UNITS:
        raise InputError(f"the PET's units are {units}, not Bq/mL ({PET_UNITS}): an activity concentration is "
                         "needed (a bremsstrahlung SPECT is dosed by its calibration with the administered activity)")
    concentration = np.asarray(pet.array, dtype=np.float64)
    if not np.all(np.isfinite(concentration)):
        raise InputError("the PET holds NaN or infinite voxels")
    isotope = get_isotope(isotope)
    factor, decay = _decay_factor(pet.meta, isotope, scan_time, injection_time)
    density = require_in_range(density_g_per_ml, *DENSITY_RANGE_G_PER_ML, what="tissue density (g/mL)")
    gy_per_bq_per_ml = isotope.dose_factor_gy_kg_per_gbq * 1e-9 / (density * 1e-3)
    dose = np.clip(concentration, 0.0, None) * factor * gy_per_bq_per_ml
    return Volume(dose.astype(np.float32), pet.grid, "", {"quantity": "absorbed dose", "units": "Gy",
                                                         "isotope": isotope.name, "decay": decay})


def _decay_factor(meta: Mapping[str, str], isotope: Isotope, scan_time: datetime | None,
                  injection_time: datetime | None) -> tuple[float, str]:
    """The factor that takes the PET to the injection, and how it was found (a line for the report)."""
    correction = str(meta.get("decay_correction", "")).upper()
    if correction == "ADMIN":
        if scan_time is not None or injection_time is not None:
            raise InputError("the PET is decay corrected to the injection already (DICOM Decay Correction ADMIN): "
                             "leave out the scan and injection times")
        return 1.0, "decay corrected to the injection by the scanner (Decay Correction ADMIN)"
    if correction in ("START", "NONE"):
        scan_time = scan_time or _parsed(meta.get("series_start"))
        injection_time = injection_time or _parsed(meta.get("injection_time"))
        if scan_time is None or injection_time is None:
            state = "corrected to its scan start" if correction == "START" else "not decay corrected"
            raise InputError(f"the PET is {state} (Decay Correction {correction}) and its header lacks the series "
                             "start or the injection time: give the scan time and the injection time")
    elif (scan_time is None) != (injection_time is None):
        raise InputError("decay correction needs both the PET's scan time and the injection time")
    if scan_time is None or injection_time is None:
        return 1.0, "taken as decay corrected to the injection (no header and no times given)"
    if scan_time < injection_time:
        raise InputError(f"the PET's scan time ({scan_time.isoformat()}) is before the injection "
                         f"({injection_time.isoformat()}): check the dates")
    factor = decay_corrected_activity_gbq(1.0, isotope=isotope, calibration_time=scan_time,
                                          injection_time=injection_time)
    hours = (scan_time - injection_time).total_seconds() / 3600
    uncorrected = " (Decay Correction NONE: the series start taken for every frame)" if correction == "NONE" else ""
    return factor, (f"decay corrected from the scan ({scan_time.isoformat()}) to the injection "
                    f"({injection_time.isoformat()}), {hours:.1f} h: x {factor:.4f}{uncorrected}")


def _parsed(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass(frozen=True)
class BlandAltman:
    """Bland-Altman statistics of paired values (Gy): ``n`` pairs, mean difference (delivered - predicted),
    its standard deviation and the 95 % limits of agreement; NaN where fewer than 2 pairs."""

    n: int
    mean_difference: float
    sd_difference: float
    lower_limit: float
    upper_limit: float


def bland_altman(predicted: Sequence[float], delivered: Sequence[float]) -> BlandAltman:
    """Bland-Altman statistics of ``delivered - predicted`` (pairs with a value on both sides)."""
    pairs = [(p, d) for p, d in zip(predicted, delivered, strict=True)
             if p is not None and d is not None and math.isfinite(p) and math.isfinite(d)]
    differences = np.array([d - p for p, d in pairs], dtype=np.float64)
    if differences.size < 2:
        nan = float("nan")
        return BlandAltman(int(differences.size), float(differences.mean()) if differences.size else nan, nan,
                           nan, nan)
    mean, sd = float(differences.mean()), float(differences.std(ddof=1))
    return BlandAltman(int(differences.size), mean, sd, mean - 1.96 * sd, mean + 1.96 * sd)


def covered_only(delivered: Sequence[StructureDose], coverage: Sequence[StructureDose]) -> list[StructureDose]:
    """The delivered statistics of the structures the PET covers whole; the others become error rows.

    ``coverage``: the same structures' statistics of the PET's field of view carried like its dose (1 inside,
    0 outside), whose minimum below 1 marks a structure reaching out of it.
    """
    rows = []
    for row, covered in zip(delivered, coverage, strict=True):
        if row.ok and covered.ok and covered.min_gy is not None and covered.min_gy < 1.0 - 1e-3:
            outside = 100.0 * (1.0 - float(covered.mean_gy))
            row = StructureDose(name=row.name, volume_ml=row.volume_ml,
                                error=f"{outside:.1f} % of it lies outside the PET's field of view")
        rows.append(row)
    return rows


def compared_rows(predicted: Sequence[StructureDose], delivered: Sequence[StructureDose]) -> list[dict]:
    """One row per structure (the two lists in the same order): its predicted and delivered mean, V70, V100
    and their differences (delivered - predicted; Gy and % points)."""
    rows = []
    for before, after in zip(predicted, delivered, strict=True):
        row = {"structure": before.name, "volume_ml": before.volume_ml}
        for what, pick in (("mean_gy", lambda s: s.mean_gy), ("V70_percent", lambda s: s.v_percent.get(70.0)),
                           ("V100_percent", lambda s: s.v_percent.get(100.0))):
            first, second = pick(before), pick(after)
            row[f"predicted_{what}"], row[f"delivered_{what}"] = first, second
            row[f"difference_{what}"] = second - first if first is not None and second is not None else None
        row["error"] = "; ".join(filter(None, (before.error, after.error)))
        rows.append(row)
    return rows
