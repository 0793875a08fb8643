"""Dose report on a real MAA SPECT with its 3D Slicer segmentation (taranis sample, patient 2)."""

from __future__ import annotations

import pytest

from sirtreg.dosimetry import dose_report
from sirtreg.io import read_image
from sirtreg.io.slicer import read_segmentation

ACTIVITY_GBQ = 2.0  # Y-90

pytestmark = pytest.mark.slow  # the real SPECT and its 512 x 512 x 161 segmentation take seconds to read


@pytest.fixture(scope="module")
def report(shared_data):
    folder = shared_data / "taranis"
    if not (folder / "patient_2_SPECT.nrrd").is_file():
        pytest.skip("taranis sample data not found")
    spect = read_image(folder / "patient_2_SPECT.nrrd", modality="NM")
    segmentation = read_segmentation(folder / "patient_2_Segmentation.seg.nrrd")
    lesions = [segmentation.label_volume(name) for name in ("Tumor 1", "Tumor 2", "perfused normal")]
    return dose_report(spect, segmentation.label_volume("liver"), ACTIVITY_GBQ, lesions=lesions)


def test_structures_and_counts_inside_the_liver(report):
    rows = {s.name: s for s in report.structures}
    assert list(rows) == ["liver", "Tumor 1", "Tumor 2", "perfused normal"]
    assert all(s.ok for s in rows.values())
    assert rows["liver"].volume_ml == pytest.approx(1726.4, abs=0.1)
    assert rows["Tumor 1"].volume_ml == pytest.approx(112.8, abs=0.1)
    assert rows["Tumor 2"].volume_ml == pytest.approx(128.5, abs=0.1)
    assert report.counts_inside_fraction == pytest.approx(0.602, abs=0.005)  # 60.2 % in the data's description
    assert any("of the SPECT counts lie outside liver" in w for w in report.warnings)
    # the tumours take up far more than the normal liver
    assert rows["Tumor 1"].mean_gy > 3 * rows["perfused normal"].mean_gy
    assert rows["Tumor 1"].v_percent[70.0] == 100.0
    assert 0 < rows["liver"].v_percent[100.0] < rows["liver"].v_percent[70.0] < 100


def test_total_absorbed_energy_is_c_times_a(report):
    c_times_a = 49.67 * ACTIVITY_GBQ
    assert report.dose_map.absorbed_energy_j() == pytest.approx(c_times_a, rel=1e-6)  # on the SPECT grid
    liver = report.structures[0]
    # sampled on the 1 mm CT grid of the segmentation: mean dose times liver mass
    assert liver.mean_gy * liver.volume_ml * 1.05 / 1000 == pytest.approx(c_times_a, rel=0.005)
