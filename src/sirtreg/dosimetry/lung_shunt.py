"""The lung shunt fraction measured on the MAA images.

- **Planar** (the microsphere makers' method): anterior and posterior views with a lung and a liver region on
  each; the geometric mean of each organ's counts ``G = sqrt(anterior * posterior)``;
  ``LSF = G_lung / (G_lung + G_liver)``.
- **SPECT/CT**: the counts inside the lung contour over those inside the lung and liver contours, the contours
  carried onto the SPECT grid as fractional occupancy. The SPECT often misses the upper lungs: the share of the
  lung contour inside its field of view is reported, and under :data:`MIN_LUNG_COVERAGE` the result is a lower
  bound (warned). Liver counts scattered across the diaphragm raise it (a known overestimate of the method).
- **The lungs from the CT** where none is drawn (:func:`lungs_from_ct`): air below -400 HU that does not touch
  the image's side faces (the air around the patient), holes filled slice by slice (vessels), connected parts of
  at least 25 % of the largest and of :data:`MIN_LUNG_PART_ML`, whose mass centre lies above the liver's (bowel
  and stomach gas lie lower or are smaller). Check it on the picture: a drawn contour is better.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sirtreg.dosimetry.occupancy import contour_mask, occupancy_on_grid
from sirtreg.dosimetry.uptake import spect_counts
from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import LabelVolume, Volume

log = logging.getLogger(__name__)

#: warn when less of the lung contour than this lies inside the SPECT's field of view
MIN_LUNG_COVERAGE = 0.9
#: air below this (HU) is lung or gas
AIR_HU = -400.0
#: the smallest connected part of air kept as lung (mL)
MIN_LUNG_PART_ML = 50.0


@dataclass(frozen=True)
class LungShunt:
    """A measured lung shunt fraction, how it was measured and what to know about it.

    ``method`` is "planar" or "SPECT/CT"; ``lung_counts`` and ``liver_counts`` are the geometric means (planar)
    or the counts inside the contours (SPECT/CT); ``lung_coverage`` the share of the lung contour inside the
    SPECT's field of view (SPECT/CT only); ``warnings`` one line each.
    """

    fraction: float
    method: str
    lung_counts: float
    liver_counts: float
    lung_coverage: float | None = None
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for reports: the fraction, the method, its counts and, where the SPECT misses part of the
        lung, that the fraction is a lower bound."""
        covered = ""
        if self.lung_coverage is not None:
            covered = f", {100 * self.lung_coverage:.0f} % of the lung in the field of view"
            if self.lung_coverage < MIN_LUNG_COVERAGE:
                covered += ": a lower bound"
        return (f"lung shunt fraction {100 * self.fraction:.2f} % measured on the {self.method} (lung "
                f"{self.lung_counts:.4g}, liver {self.liver_counts:.4g} counts{covered})")


def _region_counts(image: Volume, region: LabelVolume, *, what: str) -> float:
    """The counts of a planar view inside a region drawn on its pixels (the same size and pixel spacing: a planar
    view has no place in the patient's frame, so its origin, orientation and thickness are not compared)."""
    if region.grid.size != image.grid.size or not np.allclose(region.grid.spacing_mm[:2],
                                                                image.grid.spacing_mm[:2], atol=1e-3):
        raise InputError(f"the {what} region lies on another grid than its view ({region.grid.describe()} against "
                         f"{image.grid.describe()}): draw it on that view")
    counts, _ = spect_counts(image)
    total = float(counts[contour_mask(region)].sum())
    if total <= 0:
        raise InputError(f"the {what} region holds no counts")
    return total


def planar_lung_shunt(anterior: Volume, posterior: Volume, *, lung_anterior: LabelVolume,
                      liver_anterior: LabelVolume, lung_posterior: LabelVolume,
                      liver_posterior: LabelVolume) -> LungShunt:
    """The lung shunt fraction of planar MAA views (geometric mean; see the module docstring).

    Each region is a label map on the grid of its view (every non-zero pixel); a view is a one-slice image.
    """
    lung = math.sqrt(_region_counts(anterior, lung_anterior, what="anterior lung")
                     * _region_counts(posterior, lung_posterior, what="posterior lung"))
    liver = math.sqrt(_region_counts(anterior, liver_anterior, what="anterior liver")
                      * _region_counts(posterior, liver_posterior, what="posterior liver"))
    return LungShunt(fraction=lung / (lung + liver), method="planar views", lung_counts=lung, liver_counts=liver)


def spect_lung_shunt(spect: Volume, lung: LabelVolume, liver: LabelVolume) -> LungShunt:
    """The lung shunt fraction of a SPECT with lung and liver contours on any grid (see the module docstring)."""
    counts, _ = spect_counts(spect)
    mask = contour_mask(lung)
    try:
        lung_share = occupancy_on_grid(lung, spect.grid).astype(np.float64)
    except GeometryMismatchError:
        raise InputError("the lungs lie outside the SPECT's field of view: the lung shunt fraction cannot be "
                         "measured on it") from None
    lung_ml = float(mask.sum()) * lung.grid.voxel_volume_ml
    coverage = min(1.0, float(lung_share.sum()) * spect.grid.voxel_volume_ml / lung_ml)
    lung_counts = float(np.sum(counts * lung_share))
    liver_counts = float(np.sum(counts * occupancy_on_grid(liver, spect.grid)))
    if liver_counts <= 0:
        raise InputError("the SPECT holds no counts inside the liver")
    warnings = []
    if coverage < MIN_LUNG_COVERAGE:
        warnings.append(f"only {100 * coverage:.0f} % of the lung lies inside the SPECT's field of view: the lung "
                        "shunt fraction measured is a lower bound")
    for warning in warnings:
        log.warning(warning)
    return LungShunt(fraction=lung_counts / (lung_counts + liver_counts), method="SPECT/CT",
                     lung_counts=lung_counts, liver_counts=liver_counts, lung_coverage=coverage,
                     warnings=tuple(warnings))


def lungs_from_ct(ct: Volume, liver: LabelVolume) -> LabelVolume:
    """The lungs of a CT (HU) by threshold (see the module docstring), on the CT grid; ``liver`` on any grid.

    Refuses a CT in which no part of air qualifies.
    """
    air = np.asarray(ct.array) < AIR_HU
    parts, count = ndimage.label(air)
    touching = np.unique(np.concatenate([parts[:, 0, :].ravel(), parts[:, -1, :].ravel(), parts[:, :, 0].ravel(),
                                         parts[:, :, -1].ravel()]))
    inside = air & ~np.isin(parts, touching)
    inside = np.stack([ndimage.binary_fill_holes(plane) for plane in inside])
    parts, count = ndimage.label(inside)
    if count == 0:
        raise InputError("the CT holds no air inside the body below -400 HU: draw the lungs")
    voxel_ml = ct.grid.voxel_volume_ml
    sizes_ml = ndimage.sum_labels(np.ones(parts.shape, np.float32), parts, np.arange(1, count + 1)) * voxel_ml
    liver_centre = liver.mass_centre_mm()
    if liver_centre is None:
        raise InputError("the liver contour is empty")
    centres = ndimage.center_of_mass(inside, parts, np.arange(1, count + 1))
    matrix = ct.grid.index_to_world_matrix
    keep = [index + 1 for index, (size, centre) in enumerate(zip(sizes_ml, centres))
            if size >= max(MIN_LUNG_PART_ML, 0.25 * sizes_ml.max())
            and (matrix @ np.array([centre[2], centre[1], centre[0], 1.0]))[2] > liver_centre[2]]
    if not keep:
        raise InputError("no air inside the body above the liver is large enough to be lung: draw the lungs")
    lungs = np.isin(parts, keep)
    log.info("lungs from the CT: %d part(s), %.0f mL", len(keep), float(lungs.sum()) * voxel_ml)
    return LabelVolume.from_mask(lungs, ct.grid, name="lungs (from the CT)")
