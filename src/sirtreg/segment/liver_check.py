"""Checks on a CNN liver mask before it guides a registration or normalises a dose.

The paper excluded an MR whose CNN mask agreed poorly with the liver (DSC 0.72);
a mask that the network got wrong must not pass unnoticed. A mask is flagged
when

- its volume lies outside :data:`VOLUME_RANGE_ML` (600-4000 mL: adult livers
  lie in about 1000-2500 mL; a partial-liver MR slab or a mask spilling into
  the spleen and stomach leaves that range),
- it falls into several pieces of at least :data:`LARGE_PIECE_ML` (50 mL)
  each (26-connected: pieces that touch at a corner are one), or
- after the affine stage of a registration it guides, its DSC with the liver
  of the other scan is below :data:`MIN_AFFINE_DSC` (0.8).

The first two need the mask alone (:func:`check_liver`); the third belongs to
a registration and is judged once its affine stage has run
(:func:`affine_dsc_reason`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from sirtreg.geometry import LabelVolume

VOLUME_RANGE_ML = (600.0, 4000.0)
LARGE_PIECE_ML = 50.0
MIN_AFFINE_DSC = 0.8


@dataclass(frozen=True)
class LiverCheck:
    """What the checks found on one CNN liver mask.

    Attributes
    ----------
    image : the scan the mask was segmented on (its name in the run or study).
    volume_ml : the mask's volume, mL.
    large_pieces : how many 26-connected pieces of >= :data:`LARGE_PIECE_ML` it has.
    """

    image: str
    volume_ml: float
    large_pieces: int

    @property
    def reasons(self) -> tuple[str, ...]:
        """Why the mask is flagged, one phrase per failed check; empty when none failed."""
        low, high = VOLUME_RANGE_ML
        reasons = []
        if not low <= self.volume_ml <= high:
            reasons.append(f"volume {self.volume_ml:.0f} mL, outside {low:.0f}-{high:.0f} mL")
        if self.large_pieces > 1:
            reasons.append(f"{self.large_pieces} pieces of >= {LARGE_PIECE_ML:.0f} mL")
        return tuple(reasons)

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {"image": self.image, "volume_ml": self.volume_ml, "large_pieces": self.large_pieces,
                "flagged": self.flagged, "reasons": list(self.reasons)}


def describe_checks() -> str:
    """The checks in one sentence, for reports."""
    low, high = VOLUME_RANGE_ML
    return (f"A CNN liver is flagged when its volume lies outside {low:.0f}-{high:.0f} mL, when it falls into "
            f"several pieces of >= {LARGE_PIECE_ML:.0f} mL, or when its DSC with the other scan's liver after the "
            f"affine stage is below {MIN_AFFINE_DSC:g}.")


def check_liver(mask: LabelVolume, image: str) -> LiverCheck:
    """Volume and pieces of a liver mask (every non-zero voxel is liver); ``image`` names its scan."""
    pieces, count = ndimage.label(mask.array != 0, structure=np.ones((3, 3, 3), dtype=bool))
    sizes_ml = np.bincount(pieces.ravel(), minlength=count + 1)[1:] * mask.grid.voxel_volume_ml
    return LiverCheck(image=image, volume_ml=float(sizes_ml.sum()),
                      large_pieces=int(np.count_nonzero(sizes_ml >= LARGE_PIECE_ML)))


def affine_dsc_reason(dsc: float) -> str | None:
    """Why a liver DSC after the affine stage flags the CNN livers that guided it, or None if it does not."""
    if dsc >= MIN_AFFINE_DSC:
        return None
    return f"DSC {dsc:.2f} with the other scan's liver after the affine stage (< {MIN_AFFINE_DSC:g})"
