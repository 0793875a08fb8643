"""Shared test fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder: $SIRTREG_DATA, else shared/data beside the repository; skips when absent."""
    folder = Path(os.environ.get("SIRTREG_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not folder.is_dir():
        pytest.skip("real data folder not found: set SIRTREG_DATA")
    return folder


@pytest.fixture(scope="session")
def trained_models() -> None:
    """Makes sure the converted CNN weights are in the user cache; skips when they cannot be downloaded."""
    from sirtreg.segment.weights import ModelFetchError, fetch_models

    try:
        fetch_models()
    except ModelFetchError as exc:
        pytest.skip(f"trained weights unavailable (package index unreachable?): {exc}")


@pytest.fixture(scope="session")
def fast_patient():
    """The seed-0 digital patient at the coarse 'fast' resolution (about 2 x 2 x 5 mm MAA CT)."""
    from sirtreg.phantom import make_patient

    return make_patient(0, resolution="fast")
