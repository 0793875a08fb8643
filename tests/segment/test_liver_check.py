"""The checks on a CNN liver mask: volume, pieces, and the DSC after the affine stage, on masks of known size."""

from __future__ import annotations

import numpy as np
import pytest

from sirtreg.geometry import Grid, LabelVolume
from sirtreg.segment.liver_check import MIN_AFFINE_DSC, affine_dsc_reason, check_liver

GRID = Grid((100, 100, 100), (2.0, 2.0, 2.0))  # 200 mm cube of 8 uL voxels


def _box(mask: np.ndarray, start_mm: tuple[int, int, int], size_mm: tuple[int, int, int]) -> None:
    """Set a box of whole voxels (z, y, x in mm from the grid's corner, multiples of 2 mm) in ``mask``."""
    index = tuple(slice(s // 2, (s + n) // 2) for s, n in zip(start_mm, size_mm))
    mask[index] = True


def _mask(*boxes: tuple[tuple[int, int, int], tuple[int, int, int]]) -> LabelVolume:
    mask = np.zeros(GRID.shape, dtype=bool)
    for start, size in boxes:
        _box(mask, start, size)
    return LabelVolume.from_mask(mask, GRID, "liver")


def test_a_liver_of_plausible_size_in_one_piece_is_not_flagged():
    check = check_liver(_mask(((20, 20, 20), (100, 120, 100))), "ct")  # 1200 mL
    assert check.volume_ml == pytest.approx(1200.0)
    assert check.large_pieces == 1 and not check.flagged and check.reasons == ()


def test_a_mask_of_300_ml_is_flagged_for_its_volume():
    check = check_liver(_mask(((20, 20, 20), (50, 60, 100))), "mr")  # 300 mL
    assert check.volume_ml == pytest.approx(300.0)
    assert check.flagged and check.reasons == ("volume 300 mL, outside 600-4000 mL",)
    assert check_liver(_mask(((0, 0, 0), (200, 200, 110))), "mr").reasons == (
        "volume 4400 mL, outside 600-4000 mL",)


def test_a_mask_in_two_large_pieces_is_flagged():
    check = check_liver(_mask(((20, 20, 20), (60, 100, 100)), ((100, 20, 20), (60, 100, 100))), "ct")  # 2 x 600 mL
    assert check.volume_ml == pytest.approx(1200.0) and check.large_pieces == 2
    assert check.reasons == ("2 pieces of >= 50 mL",)


def test_small_specks_and_pieces_touching_at_a_corner_are_not_pieces():
    liver = ((20, 20, 20), (100, 100, 100))  # 1000 mL
    speck = ((140, 140, 140), (20, 20, 20))  # 8 mL, apart
    corner = ((120, 120, 120), (40, 40, 40))  # 64 mL, touching the liver at one corner voxel only
    assert check_liver(_mask(liver, speck), "ct").large_pieces == 1
    assert check_liver(_mask(liver, corner), "ct").large_pieces == 1


def test_the_dsc_after_the_affine_stage_flags_below_the_papers_excluded_case():
    assert affine_dsc_reason(0.72) == "DSC 0.72 with the other scan's liver after the affine stage (< 0.8)"
    assert affine_dsc_reason(MIN_AFFINE_DSC) is None and affine_dsc_reason(0.93) is None
