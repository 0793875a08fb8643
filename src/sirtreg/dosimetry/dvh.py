"""Dose-volume histograms, Vx and Dx from dose samples of equal volume.

All functions take the doses (Gy) of a structure's voxels, shape (N,), every
sample standing for the same volume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sirtreg.errors import InputError


def _samples(dose_gy: np.ndarray) -> np.ndarray:
    values = np.asarray(dose_gy, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise InputError("no dose samples: the structure is empty")
    if not np.all(np.isfinite(values)):
        raise InputError("the dose samples hold NaN or infinite values")
    return values


def v_percent(dose_gy: np.ndarray, threshold_gy: float) -> float:
    """Vx: percentage of the volume receiving at least ``threshold_gy``."""
    values = _samples(dose_gy)
    return float(100.0 * np.count_nonzero(values >= threshold_gy) / values.size)


def d_gy(dose_gy: np.ndarray, percent: float) -> float:
    """Dx: the minimum dose (Gy) received by the hottest ``percent`` % of the volume.

    The largest d such that V(d) >= ``percent``: D0 is the maximum, D100 the minimum.
    """
    if not 0.0 <= percent <= 100.0:
        raise InputError(f"Dx needs a percentage in [0, 100], got {percent!r}")
    values = np.sort(_samples(dose_gy))[::-1]
    needed = max(1, math.ceil(percent * values.size / 100.0 - 1e-9))
    return float(values[needed - 1])


@dataclass(frozen=True, eq=False)
class DoseVolumeHistogram:
    """Cumulative and differential DVH on regular dose bins.

    Attributes
    ----------
    dose_gy : (B + 1,) bin edges from 0 Gy, the last one above the maximum dose.
    cumulative_percent : (B + 1,) percentage of the volume receiving at least ``dose_gy[i]``.
    differential_percent : (B,) percentage of the volume with dose in ``[dose_gy[i], dose_gy[i + 1])``.
    """

    dose_gy: np.ndarray
    cumulative_percent: np.ndarray
    differential_percent: np.ndarray

    @property
    def bin_gy(self) -> float:
        return float(self.dose_gy[1] - self.dose_gy[0])


def dose_volume_histogram(dose_gy: np.ndarray, *, bin_gy: float = 1.0) -> DoseVolumeHistogram:
    """Cumulative and differential DVH of dose samples (Gy) with bins of ``bin_gy`` from 0 Gy."""
    if not math.isfinite(bin_gy) or bin_gy <= 0:
        raise InputError(f"the DVH bin width must be > 0 Gy, got {bin_gy!r}")
    values = np.sort(_samples(dose_gy))
    n_bins = max(1, math.floor(max(values[-1], 0.0) / bin_gy) + 1)
    edges = np.arange(n_bins + 1) * bin_gy
    below = np.searchsorted(values, edges, side="left")
    cumulative = 100.0 * (values.size - below) / values.size
    return DoseVolumeHistogram(edges, cumulative, -np.diff(cumulative))
