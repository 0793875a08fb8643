"""Fixtures for the segmentation tests: the trained weights, fetched once into the user cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from sirtreg.segment.weights import ModelFetchError, cached_wheel, fetch_models


@pytest.fixture(scope="session")
def trained_models() -> None:
    """Makes sure the converted weights are in the user cache; skips when they cannot be downloaded."""
    try:
        fetch_models()
    except ModelFetchError as exc:
        pytest.skip(f"trained weights unavailable (package index unreachable?): {exc}")


@pytest.fixture(scope="session")
def authors_wheel(trained_models: None) -> Path:
    """The verified ``pyliverlesionseg`` wheel holding the original Keras HDF5 weights."""
    return cached_wheel()
