"""Dose figures are written as readable PNG files and never overwrite silently."""

from __future__ import annotations

import numpy as np
import pytest

from sirtreg.dosimetry import (
    StructureDose,
    compare_structure_doses,
    dose_volume_histogram,
    plot_difference_boxes,
    plot_dvh,
    plot_passing_bablok,
)
from sirtreg.errors import InputError, OutputExistsError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def cohort(seed: int, spread: float):
    rng = np.random.default_rng(seed)
    reference, registered = [], []
    for i, mean in enumerate(rng.uniform(40, 300, 15)):
        doses = rng.gamma(4.0, mean / 4.0, 500)
        moved = doses * rng.normal(1.0, spread) + rng.normal(0, spread * 20, doses.size)
        for rows, values in ((reference, doses), (registered, np.clip(moved, 0, None))):
            rows.append(StructureDose(name=f"L{i}", volume_ml=10.0, mean_gy=float(values.mean()),
                                      v_percent={t: float(100 * np.mean(values >= t)) for t in (70.0, 100.0)}))
    return compare_structure_doses(reference, registered)


@pytest.fixture(scope="module")
def groups():
    return {"CNN&LM": cohort(0, 0.05), "CNN": cohort(1, 0.15)}


@pytest.mark.slow
def test_box_plots_and_passing_bablok_plots(groups, tmp_path):
    for plot in (plot_difference_boxes, plot_passing_bablok):
        path = plot(groups, tmp_path / f"{plot.__name__}.png")
        assert path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 20_000
        with pytest.raises(OutputExistsError, match="exists; choose another name or pass overwrite"):
            plot(groups, path)
        plot(groups, path, overwrite=True)


def test_dvh_plot(tmp_path):
    rng = np.random.default_rng(3)
    structures = []
    for name, scale in (("liver", 15.0), ("Tumor 1", 60.0), ("Tumor 2", 45.0)):
        doses = rng.gamma(3.0, scale, 2000)
        structures.append(StructureDose(name=name, volume_ml=1.0, mean_gy=float(doses.mean()),
                                        dvh=dose_volume_histogram(doses, bin_gy=2.0)))
    structures.append(StructureDose(name="Tumor 3", volume_ml=1.0, error="outside"))
    path = plot_dvh(structures, tmp_path / "dvh.png", title="Y-90")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_figures_must_be_png(groups, tmp_path):
    with pytest.raises(InputError, match="figures are written as PNG; got boxes.pdf"):
        plot_difference_boxes(groups, tmp_path / "boxes.pdf")
