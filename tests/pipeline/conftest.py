"""Fixtures of the patient-run tests."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def write_tune_table() -> Callable[..., Path]:
    """A writer of `sirtreg study tune` tables (see its docstring)."""
    return _write_tune_table


def _write_tune_table(path: Path, guidance: str, rmsd_mm: dict[tuple[str, float, float], list[float]],
                      *, name: str | None = None) -> Path:
    """A `sirtreg study tune` table: for each (modality, wI, wS), one train-split row per RMSD (mm) given."""
    from sirtreg.study import COLUMNS, Method  # not at import: this conftest may load before the cores are shared

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        for (modality, wi, ws), values in rmsd_mm.items():
            method = Method(name=name or guidance, guidance=guidance, image_weight=wi, label_weight=ws)
            for number, rmsd in enumerate(values, start=1):
                writer.writerow(dict.fromkeys(COLUMNS, "") | {
                    "patient": f"P{number:02d}", "floating": modality.lower(), "method": method.key,
                    "modality": modality, "split": "train", "method_name": method.name, "guidance": guidance,
                    "image_weight": wi, "label_weight": ws, "rigidity": 1.0, "status": "ok", "rmsd_mm": rmsd,
                    "liver_dsc": 0.9, "liver_msd_mm": 1.0, "seconds": 5.0})
    return path
