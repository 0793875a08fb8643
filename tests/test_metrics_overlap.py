"""Dice coefficient: analytic values and refusals."""

import numpy as np
import pytest

from sirtreg.errors import InputError
from sirtreg.metrics import dice


def test_dice_of_half_overlapping_boxes():
    a = np.zeros((10, 10, 10), dtype=bool)
    b = np.zeros_like(a)
    a[:, :, 0:4] = True
    b[:, :, 2:6] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(a, a) == 1.0
    assert dice(a, ~a) == 0.0


def test_dice_refusals():
    with pytest.raises(InputError, match="differ in shape"):
        dice(np.ones((2, 2, 2)), np.ones((2, 2, 3)))
    with pytest.raises(InputError, match="undefined"):
        dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
