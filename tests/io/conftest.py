"""Synthetic geometry for the I/O tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from sirtreg.geometry import Grid


def _oblique_grid(seed: int, size: tuple[int, int, int] = (9, 7, 6), *, left_handed: bool = False) -> Grid:
    rng = np.random.default_rng(seed)
    direction = Rotation.random(random_state=seed).as_matrix()
    if left_handed:
        direction[:, 2] *= -1
    return Grid(size, tuple(rng.uniform(0.4, 4.0, 3)), tuple(rng.uniform(-400, 400, 3)), tuple(direction.ravel()))


@pytest.fixture
def oblique_grid() -> Callable[..., Grid]:
    """Factory: a random oblique grid (seed, size=(x, y, z), left_handed=False), random origin and spacing."""
    return _oblique_grid


@pytest.fixture
def corner_distance_mm() -> Callable[[Grid, Grid], float]:
    """Largest distance (mm) between the outer corners of two grids of the same size."""
    return lambda a, b: float(np.max(np.abs(a.corners_mm() - b.corners_mm())))
