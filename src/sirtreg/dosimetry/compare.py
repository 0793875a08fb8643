"""Cohort comparison of reference and registered lesion doses (paper, III.C, Figs. 9-12).

For each metric (mean dose, V70, V100, ...) over the lesions of a cohort:
the difference registered - reference (relative, in %, for mean dose; in
percentage points for Vx), its quartiles, the share of lesions with an
absolute difference below 10, Pearson's r with a Fisher-z confidence interval
and a Passing-Bablok regression of registered on reference.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from sirtreg.dosimetry.passing_bablok import (
    PassingBablokResult,
    paired_values,
    passing_bablok,
)
from sirtreg.dosimetry.structures import DEFAULT_VX_GY, StructureDose
from sirtreg.errors import InputError

log = logging.getLogger(__name__)

#: the paper reports the share of lesions whose absolute difference is below this (% or percentage points)
SMALL_DIFFERENCE = 10.0


def relative_difference_percent(reference: np.ndarray, registered: np.ndarray) -> np.ndarray:
    """``100 (registered - reference) / reference`` for each pair, shape (n,); reference must be non-zero."""
    reference, registered = paired_values(reference, registered, minimum=1)
    if np.any(reference == 0):
        raise InputError("a relative difference needs non-zero reference values")
    return 100.0 * (registered - reference) / reference


def quartiles(values: np.ndarray) -> tuple[float, float, float]:
    """(first quartile, median, third quartile) with linear interpolation between order statistics."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise InputError("quartiles of an empty set are undefined")
    q1, q2, q3 = np.percentile(values, [25.0, 50.0, 75.0])
    return float(q1), float(q2), float(q3)


@dataclass(frozen=True)
class PearsonResult:
    """Pearson's r with its confidence interval by Fisher's z transform (NaN bounds when n < 4)."""

    r: float
    ci: tuple[float, float]
    n: int


def pearson_r(x: np.ndarray, y: np.ndarray, *, confidence: float = 0.95) -> PearsonResult:
    """Pearson's r of (n,) samples; CI ``tanh(atanh(r) -+ z_(1-alpha/2) / sqrt(n - 3))``."""
    x, y = paired_values(x, y, minimum=3)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise InputError("Pearson's r is undefined when one of the variables is constant")
    r = float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))
    if x.size < 4:
        return PearsonResult(r, (math.nan, math.nan), x.size)
    half_width = norm.ppf(0.5 + confidence / 2.0) / math.sqrt(x.size - 3)
    z = math.atanh(r) if abs(r) < 1 else math.copysign(math.inf, r)
    return PearsonResult(r, (math.tanh(z - half_width), math.tanh(z + half_width)), x.size)


@dataclass(frozen=True, eq=False)
class MetricComparison:
    """Reference vs registered values of one metric over a cohort.

    ``difference`` is relative (%) when ``relative`` is True, else absolute (in the
    metric's unit: percentage points for Vx). ``pearson`` and ``passing_bablok`` are
    None when the data do not allow them (e.g. all values equal).
    """

    metric: str
    reference: np.ndarray
    registered: np.ndarray
    difference: np.ndarray
    relative: bool
    quartiles: tuple[float, float, float]
    small_difference_fraction: float
    pearson: PearsonResult | None
    passing_bablok: PassingBablokResult | None


def compare_metric(metric: str, reference: np.ndarray, registered: np.ndarray, *, relative: bool) -> MetricComparison:
    """Differences, quartiles, Pearson's r and Passing-Bablok fit of one metric, (n,) values each."""
    reference, registered = paired_values(reference, registered, minimum=1)
    difference = relative_difference_percent(reference, registered) if relative else registered - reference
    statistics = {}
    for key, function in (("pearson", pearson_r), ("passing_bablok", passing_bablok)):
        try:
            statistics[key] = function(reference, registered)
        except InputError as exc:
            log.info("%s: no %s: %s", metric, key.replace("_", "-"), exc)
            statistics[key] = None
    return MetricComparison(
        metric=metric,
        reference=reference,
        registered=registered,
        difference=difference,
        relative=relative,
        quartiles=quartiles(difference),
        small_difference_fraction=float(np.mean(np.abs(difference) < SMALL_DIFFERENCE)),
        **statistics,
    )


@dataclass(frozen=True, eq=False)
class CohortComparison:
    """Comparisons per metric ("mean dose", "V70", ...) and the lesion pairs left out, with reasons."""

    metrics: dict[str, MetricComparison]
    skipped: tuple[str, ...]


def compare_structure_doses(
    reference: Sequence[StructureDose],
    registered: Sequence[StructureDose],
    *,
    vx_gy: Sequence[float] = DEFAULT_VX_GY,
) -> CohortComparison:
    """Compare lesion doses pairwise (same order): relative mean-dose difference and Vx differences.

    Pairs where either lesion has an error are left out and listed in ``skipped``.
    """
    if len(reference) != len(registered):
        raise InputError(f"{len(reference)} reference lesions but {len(registered)} registered lesions")
    pairs, skipped = [], []
    for ref, reg in zip(reference, registered):
        if ref.ok and reg.ok:
            pairs.append((ref, reg))
        else:
            skipped.append(f"{ref.name} / {reg.name}: {ref.error or reg.error}")
    if not pairs:
        raise InputError("no lesion pair could be compared")
    metrics = {"mean dose": compare_metric(
        "mean dose", [p[0].mean_gy for p in pairs], [p[1].mean_gy for p in pairs], relative=True)}
    for threshold in vx_gy:
        name = f"V{threshold:g}"
        metrics[name] = compare_metric(name, [p[0].v_percent[float(threshold)] for p in pairs],
                                       [p[1].v_percent[float(threshold)] for p in pairs], relative=False)
    return CohortComparison(metrics, tuple(skipped))
