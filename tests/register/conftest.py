"""A small digital patient shared by the registration tests."""

from __future__ import annotations

import pytest

from sirtreg.phantom import make_patient


@pytest.fixture(scope="session")
def fast_patient():
    """The seed-0 digital patient at the coarse 'fast' resolution (about 2 x 2 x 5 mm MAA CT)."""
    return make_patient(0, resolution="fast")
