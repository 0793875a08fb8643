"""Registration quality where the answer is known: a box liver moved by a known translation."""

from __future__ import annotations

import numpy as np
import pytest

from sirtreg.geometry import Grid, LabelVolume
from sirtreg.register import AffineTransform, liver_dsc, registration_quality

GRID = Grid((60, 60, 60), (2.0, 2.0, 2.0))


def _box_liver() -> LabelVolume:
    mask = np.zeros(GRID.shape, dtype=bool)
    mask[20:40, 20:40, 20:40] = True  # 40 mm cube
    return LabelVolume.from_mask(mask, GRID, "liver")


@pytest.mark.parametrize(("shift_mm", "expected"), [(0.0, 1.0), (10.0, 0.75), (20.0, 0.5)])
def test_liver_dsc_of_a_translated_box_is_its_overlap(shift_mm, expected):
    """A 40 mm cube mapped 10 mm along x overlaps itself over 30 of 40 mm: DSC 2 * 30 / 80 = 0.75."""
    liver = _box_liver()
    moved = AffineTransform(np.eye(3), np.array([shift_mm, 0.0, 0.0]), np.zeros(3))
    dsc = liver_dsc(moved, reference_liver=liver, floating_liver=liver)
    assert dsc == pytest.approx(expected, abs=1e-9)
    assert registration_quality(moved, reference_liver=liver, floating_liver=liver).liver_dsc == pytest.approx(dsc)
