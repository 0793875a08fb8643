"""Landmark mass-centre distance and the paper's RMSD / RRMSD.

RMSD of one registration = sqrt((MSD^2 + sum_i MCD_i^2) / (1 + N)) with MSD the
liver mean surface distance and MCD_i the mass-centre distance of landmark i
(N landmarks). RRMSD of a set of registrations = sqrt(mean(RMSD^2)).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume
from sirtreg.named_points import Landmarks


def mass_centre_distances_mm(reference: LabelVolume | Landmarks, other: LabelVolume | Landmarks) -> dict[str, float]:
    """Distance (mm) between the mass centres of landmarks paired by name.

    Label volumes may be on different grids: mass centres are compared in world
    space. Landmarks present on one side only are refused.
    """
    a = reference if isinstance(reference, Landmarks) else Landmarks.from_label_centroids(reference)
    b = other if isinstance(other, Landmarks) else Landmarks.from_label_centroids(other)
    if set(a.names) != set(b.names):
        missing = sorted(set(a.names) ^ set(b.names))
        raise InputError(f"landmarks do not pair up; present on one side only: {', '.join(missing)}")
    return {name: float(np.linalg.norm(a.point(name) - b.point(name))) for name in a.names}


def rmsd_mm(msd_mm: float, mcd_mm: Sequence[float] = ()) -> float:
    """The paper's RMSD = sqrt((MSD^2 + sum MCD_i^2) / (1 + N))."""
    values = np.asarray([msd_mm, *mcd_mm], dtype=float)
    if np.any(values < 0) or not np.all(np.isfinite(values)):
        raise InputError("distances must be finite and >= 0 mm")
    return float(np.sqrt(np.mean(values**2)))


def rrmsd_mm(rmsds_mm: Sequence[float]) -> float:
    """Root mean square of RMSDs over registrations."""
    values = np.asarray(rmsds_mm, dtype=float)
    if values.size == 0:
        raise InputError("RRMSD needs at least one registration")
    return float(np.sqrt(np.mean(values**2)))
