"""MIRD partition model and the MAA tumour-to-normal ratio against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from dose_phantoms import SPECT_GRID, box_labels, box_mask

from sirtreg.dosimetry import partition_model, tumour_to_normal_ratio
from sirtreg.errors import InputError
from sirtreg.geometry import Volume

# 2 GBq Y-90, LSF 10 %, tumour 0.2 kg at TNR 4, normal liver 1.2 kg, lung 1 kg
SHARE = 4 * 0.2 + 1.2  # 2.0 kg-equivalents
NORMAL_GY = 49.67 * 2.0 * 0.9 / SHARE  # 44.703
CASE = dict(tumour_mass_kg=0.2, normal_mass_kg=1.2, tumour_to_normal_ratio=4.0, lung_shunt_fraction=0.1)


def test_partition_model():
    doses = partition_model(2.0, **CASE)
    assert doses.normal_dose_gy == pytest.approx(NORMAL_GY)
    assert doses.tumour_dose_gy == pytest.approx(4 * NORMAL_GY)
    assert doses.lung_dose_gy == pytest.approx(49.67 * 0.2)
    assert doses.tumour_activity_gbq + doses.normal_activity_gbq + doses.lung_activity_gbq == pytest.approx(2.0)
    assert doses.tumour_activity_gbq == pytest.approx(1.8 * 0.8 / SHARE)


def test_holmium_scales_with_its_dose_factor():
    assert partition_model(2.0, isotope="ho166", **CASE).normal_dose_gy == pytest.approx(NORMAL_GY * 15.87 / 49.67)


def test_tumour_to_normal_ratio_from_the_spect():
    tumour = box_labels(SPECT_GRID, [-20] * 3, [20] * 3, "tumour")
    normal = box_labels(SPECT_GRID, [-50, -50, 30], [50, 50, 50], "normal")
    counts = np.where(box_mask(SPECT_GRID, [-20] * 3, [20] * 3), 35.0, 7.0).astype(np.float32)
    assert tumour_to_normal_ratio(Volume(counts, SPECT_GRID), tumour, normal) == pytest.approx(5.0)


def test_bad_partition_activity_is_refused():
    with pytest.raises(InputError, match="activity must be a positive number of GBq"):
        partition_model(0.0, **CASE)
