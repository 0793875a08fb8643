"""Uptake: MAA SPECT counts inside contours, and the fractional uptake map of the paper.

The activities of the perfused territories are distributed by the SPECT counts
inside the liver contour (paper, II.D): the fractional uptake of voxel ``v`` is
``u_v = c_v f_v / sum_w c_w f_w``, with ``c`` the counts and ``f`` the fraction
of the voxel inside the contour (:mod:`sirtreg.dosimetry.occupancy`), so that
``u`` sums to 1 over the contour.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sirtreg.dosimetry.occupancy import contour_mask, contour_name, occupancy_on_grid
from sirtreg.errors import InputError
from sirtreg.geometry import Grid, LabelVolume, Volume

log = logging.getLogger(__name__)

#: warn when more than this fraction of all counts lies outside the contours
MAX_OUTSIDE_FRACTION = 0.20
#: warn when more than this fraction of a contour lies outside the SPECT field of view
_MAX_UNCOVERED_FRACTION = 0.02
#: refuse a SPECT whose negative voxels add up to more than this fraction of its positive counts
_MAX_NEGATIVE_FRACTION = 1e-3


def spect_counts(spect: Volume) -> tuple[np.ndarray, tuple[str, ...]]:
    """The SPECT voxels as float64 counts (z, y, x) and warnings about them.

    Refuses NaN or infinite voxels, images without counts, and images whose
    negative voxels add up to more than 0.1 % of the positive counts (a
    background-subtracted image, not counts). Fewer negative counts, left by
    some reconstructions as noise around zero, are set to zero with a warning.
    """
    counts = np.asarray(spect.array, dtype=np.float64)
    if not np.all(np.isfinite(counts)):
        raise InputError(f"the SPECT holds {np.count_nonzero(~np.isfinite(counts))} NaN or infinite voxels")
    negative = counts < 0
    positive_sum = float(counts[~negative].sum())
    if positive_sum <= 0:
        raise InputError("the SPECT holds no counts")
    if not negative.any():
        return counts, ()
    negative_sum = -float(counts[negative].sum())
    if negative_sum > _MAX_NEGATIVE_FRACTION * positive_sum:
        raise InputError(
            f"the SPECT holds negative counts ({100 * negative_sum / positive_sum:.2g} % of the positive counts, "
            f"minimum {counts.min():g}); give counts, not a background-subtracted image"
        )
    warning = (f"{np.count_nonzero(negative)} SPECT voxels with small negative values "
               f"({100 * negative_sum / positive_sum:.2g} % of the counts) were set to 0")
    log.warning(warning)
    return np.where(negative, 0.0, counts), (warning,)


@dataclass(frozen=True, eq=False)
class Uptake:
    """Counts of a SPECT inside one or more contours.

    Attributes
    ----------
    counts : (z, y, x) float64 SPECT counts.
    grid : the SPECT grid.
    names : display name of each contour.
    occupancy : per contour, the (z, y, x) fraction of each SPECT voxel inside it.
    contour_counts : per contour, ``sum(counts * occupancy)``.
    counts_inside_fraction : fraction of all counts inside the union of the contours.
    warnings : one line per problem found (also logged).
    """

    counts: np.ndarray
    grid: Grid
    names: tuple[str, ...]
    occupancy: tuple[np.ndarray, ...]
    contour_counts: tuple[float, ...]
    counts_inside_fraction: float
    warnings: tuple[str, ...]

    @property
    def tissue_fraction(self) -> np.ndarray:
        """(z, y, x) fraction of each voxel inside any contour (overlaps counted once)."""
        return np.minimum(np.sum(self.occupancy, axis=0), 1.0)

    def fractional_uptake(self, index: int = 0) -> np.ndarray:
        """(z, y, x) fractional uptake of contour ``index``: sums to 1 over that contour."""
        return self.counts * self.occupancy[index] / self.contour_counts[index]


def measure_uptake(
    spect: Volume,
    contours: Sequence[LabelVolume],
    *,
    labels: Sequence[int | str | None] | None = None,
    max_outside_fraction: float = MAX_OUTSIDE_FRACTION,
) -> Uptake:
    """Counts of ``spect`` inside each contour, with warnings about counts outside.

    Parameters
    ----------
    spect : MAA SPECT (counts, any units proportional to activity).
    contours : label maps on any grid overlapping the SPECT (e.g. the liver on a 1 mm CT grid).
    labels : per contour, the label value or name to use (None: every non-zero voxel).
    max_outside_fraction : warn when more than this fraction (default 0.2) of all counts
        lies outside the union of the contours.
    """
    if not contours:
        raise InputError("at least one contour is needed to normalise the SPECT counts")
    labels = [None] * len(contours) if labels is None else list(labels)
    if len(labels) != len(contours):
        raise InputError(f"{len(labels)} labels given for {len(contours)} contours")
    counts, count_warnings = spect_counts(spect)
    warnings: list[str] = []
    names, occupancy, contour_counts = [], [], []
    for contour, label in zip(contours, labels):
        name = contour_name(contour, label=label)
        fraction = occupancy_on_grid(contour, spect.grid, label=label)
        inside = float(np.sum(counts * fraction))
        if inside <= 0:
            raise InputError(f"the SPECT has no counts inside the contour {name!r}")
        contour_ml = np.count_nonzero(contour_mask(contour, label=label)) * contour.grid.voxel_volume_ml
        uncovered = 1.0 - float(fraction.sum(dtype=np.float64)) * spect.grid.voxel_volume_ml / contour_ml
        if uncovered > _MAX_UNCOVERED_FRACTION:
            warnings.append(f"{100 * uncovered:.1f} % of the contour {name!r} lies outside the SPECT field of view")
        names.append(name)
        occupancy.append(fraction)
        contour_counts.append(inside)
    union = np.minimum(np.sum(occupancy, axis=0), 1.0)
    inside_fraction = float(np.sum(counts * union) / counts.sum())
    if 1.0 - inside_fraction > max_outside_fraction:
        warnings.append(
            f"{100 * (1 - inside_fraction):.1f} % of the SPECT counts lie outside {' + '.join(names)} "
            f"(more than {100 * max_outside_fraction:.0f} %): check the contour, lung shunt or extrahepatic uptake"
        )
    for line in warnings:
        log.warning(line)
    return Uptake(counts, spect.grid, tuple(names), tuple(occupancy), tuple(contour_counts), inside_fraction,
                  (*count_warnings, *warnings))


def fractional_uptake_map(spect: Volume, contour: LabelVolume, *, label: int | str | None = None) -> Volume:
    """The paper's fractional uptake map: SPECT counts normalised to sum 1 inside ``contour``, on the SPECT grid."""
    uptake = measure_uptake(spect, [contour], labels=[label])
    return Volume(uptake.fractional_uptake(0).astype(np.float32), spect.grid, "", {"quantity": "fractional uptake"})
