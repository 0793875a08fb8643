"""The body box's erosion by a 5x5x5 box, done as three 1D erosions, equals the 3D erosion."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sirtreg.segment.preprocess import _box_erosion


def test_separable_box_erosion_equals_the_3d_box():
    rng = np.random.default_rng(5)
    mask = ndimage.binary_dilation(rng.uniform(size=(40, 50, 60)) > 0.97, iterations=3)
    mask[:, :, :4] = True  # touching the array's border: outside counts as background
    expected = ndimage.binary_erosion(mask, np.ones((5, 5, 5), bool))
    assert expected.any() and not expected.all()
    assert np.array_equal(_box_erosion(mask, 5), expected)
