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
