"""The compartments of an activity plan, measured on the MAA SPECT and its contours.

The treated territory is the perfused volume when one is drawn, else the whole liver. Within it, the tumour
compartment is every tumour contour (their union, cut to the territory) and the normal compartment the rest of the
territory, or a normal-liver contour when one is given. Volumes count the voxels of the contours on their own grid
(all contours on one grid, as a segmentation drawn on the CT has them); masses are ``density * volume``. The MAA
tumour-to-normal ratio is the count density (counts per mL) in the tumour over that in the normal compartment,
the contours carried onto the SPECT grid as fractional occupancy (:mod:`.occupancy`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sirtreg.dosimetry.deposition import DEFAULT_DENSITY_G_PER_ML, DENSITY_RANGE_G_PER_ML, require_in_range
from sirtreg.dosimetry.occupancy import contour_mask, contour_name, occupancy_on_grid
from sirtreg.dosimetry.partition import tumour_to_normal_ratio
from sirtreg.dosimetry.uptake import spect_counts
from sirtreg.errors import GeometryMismatchError, InputError
from sirtreg.geometry import LabelVolume, Volume


@dataclass(frozen=True)
class Compartments:
    """Volumes (mL), masses (kg) and MAA count shares of a plan's compartments (``tumour_ml`` and ``normal_ml``
    within the territory, ``liver_tumour_ml`` the tumours of the whole liver).

    ``territory`` names what is treated ("perfused volume" or "liver"); ``tumour_to_normal_ratio`` is None
    without tumour in the territory; ``territory_count_fraction`` is the territory's share of all the SPECT's counts.
    """

    territory: str
    liver_ml: float
    territory_ml: float
    tumour_ml: float
    normal_ml: float
    liver_tumour_ml: float
    density_g_per_ml: float
    tumour_to_normal_ratio: float | None
    territory_count_fraction: float

    def mass_kg(self, volume_ml: float) -> float:
        """The tissue mass (kg) of ``volume_ml``."""
        return volume_ml * self.density_g_per_ml / 1000.0

    @property
    def tumour_involvement(self) -> float:
        """The whole liver's tumour volume over its volume (tumours included), the BSA method's tumour term."""
        return self.liver_tumour_ml / self.liver_ml


def _masks_on_one_grid(named: Sequence[tuple[str, LabelVolume]]) -> list[np.ndarray]:
    """The non-zero masks of contours that share one grid; contours on another grid are refused."""
    first_name, first = named[0]
    for name, contour in named[1:]:
        if not contour.grid.same_as(first.grid):
            raise GeometryMismatchError(f"the {name} contour lies on another grid than the {first_name} contour: "
                                        "draw every contour of a plan on one image (or resample them onto it)")
    return [contour_mask(contour) for _, contour in named]


def measure_compartments(
    spect: Volume,
    liver: LabelVolume,
    *,
    tumours: Sequence[LabelVolume] = (),
    perfused: LabelVolume | None = None,
    normal: LabelVolume | None = None,
    density_g_per_ml: float = DEFAULT_DENSITY_G_PER_ML,
    territory_name: str | None = None,
) -> Compartments:
    """Measure the compartments (see the module docstring) of a plan on the MAA ``spect`` (counts).

    Parameters
    ----------
    spect : the MAA SPECT, counts (z, y, x).
    liver : the whole liver (every non-zero voxel), tumours included.
    tumours : tumour contours (every non-zero voxel of each); their union is the tumour compartment.
    perfused : the perfused volume, the territory when given (else the liver).
    normal : the normal liver of the territory; default the territory minus the tumours.
    density_g_per_ml : tissue density for the masses.
    territory_name : the territory's name (default "perfused volume", or "liver" without one).

    Refuses contours on different grids, empty contours and a territory with no normal liver; a territory that
    no tumour reaches has no tumour-to-normal ratio.
    """
    density = require_in_range(density_g_per_ml, *DENSITY_RANGE_G_PER_ML, what="density (g/mL)")
    named = [("liver", liver), *((contour_name(t), t) for t in tumours),
             *([("perfused", perfused)] if perfused is not None else []),
             *([("normal liver", normal)] if normal is not None else [])]
    masks = _masks_on_one_grid(named)
    liver_mask = masks[0]
    territory = masks[1 + len(tumours)] if perfused is not None else liver_mask
    tumour = np.zeros_like(liver_mask)
    for mask in masks[1:1 + len(tumours)]:
        tumour |= mask
    liver_tumour_ml = float(np.count_nonzero(tumour & liver_mask)) * liver.grid.voxel_volume_ml
    tumour &= territory
    normal_mask = masks[-1] if normal is not None else territory & ~tumour
    if not normal_mask.any():
        raise InputError("the treated territory holds no normal liver outside the tumours")
    voxel_ml = liver.grid.voxel_volume_ml
    counts, _ = spect_counts(spect)
    ratio = None
    if tumour.any():
        ratio = tumour_to_normal_ratio(Volume(counts, spect.grid), LabelVolume.from_mask(tumour, liver.grid),
                                       LabelVolume.from_mask(normal_mask, liver.grid))
    occupancy = occupancy_on_grid(LabelVolume.from_mask(territory, liver.grid), spect.grid)
    return Compartments(
        territory=territory_name or ("perfused volume" if perfused is not None else "liver"),
        liver_ml=float(liver_mask.sum()) * voxel_ml, territory_ml=float(territory.sum()) * voxel_ml,
        tumour_ml=float(tumour.sum()) * voxel_ml, normal_ml=float(normal_mask.sum()) * voxel_ml,
        liver_tumour_ml=liver_tumour_ml,
        density_g_per_ml=density, tumour_to_normal_ratio=ratio,
        territory_count_fraction=float(np.sum(counts * occupancy)) / float(counts.sum()),
    )
