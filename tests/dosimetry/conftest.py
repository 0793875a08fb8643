"""Fixtures for the dosimetry tests: a 1000 mL liver cube and a uniform SPECT."""

from __future__ import annotations

import numpy as np
import pytest
from dose_phantoms import CT_GRID, SPECT_GRID, liver_box

from sirtreg.geometry import Grid, LabelVolume, Volume


@pytest.fixture
def spect_grid() -> Grid:
    return SPECT_GRID


@pytest.fixture
def liver_on_spect() -> LabelVolume:
    """The 1000 mL liver cube on the SPECT grid."""
    return liver_box(SPECT_GRID)


@pytest.fixture
def liver_on_ct() -> LabelVolume:
    """The same liver cube on the 1 x 1 x 2 mm CT grid."""
    return liver_box(CT_GRID)


@pytest.fixture
def uniform_spect(liver_on_spect: LabelVolume) -> Volume:
    """10 counts per voxel inside the liver, none outside."""
    return Volume(np.where(liver_on_spect.array > 0, 10.0, 0.0).astype(np.float32), SPECT_GRID, "NM")
