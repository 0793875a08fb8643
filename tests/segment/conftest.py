"""Fixtures for the segmentation tests: the authors' wheel (the trained weights come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sirtreg.segment.weights import cached_wheel


@pytest.fixture(scope="session")
def authors_wheel(trained_models: None) -> Path:
    """The verified ``pyliverlesionseg`` wheel holding the original Keras HDF5 weights."""
    return cached_wheel()
