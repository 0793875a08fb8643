"""Dose report on a real MAA SPECT with its 3D Slicer segmentation (taranis sample, patient 2)."""

from __future__ import annotations

import pytest

from sirtreg.dosimetry import dose_report
from sirtreg.io import read_image
from sirtreg.io.slicer import read_segmentation

ACTIVITY_GBQ = 2.0  # Y-90

pytestmark = pytest.mark.slow  # the real SPECT and its 512 x 512 x 161 segmentation take seconds to read


@pytest.fixture(scope="module")
def sample(shared_data):
    """The SPECT and the segmentation of the taranis sample."""
    folder = shared_data / "taranis"
    if not (folder / "patient_2_SPECT.nrrd").is_file():
        pytest.skip("taranis sample data not found")
    return (read_image(folder / "patient_2_SPECT.nrrd", modality="NM"),
            read_segmentation(folder / "patient_2_Segmentation.seg.nrrd"))


@pytest.fixture(scope="module")
def report(sample):
    spect, segmentation = sample
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


def test_normalised_in_the_perfused_volume_the_whole_liver_gets_only_the_delivered_energy(sample):
    """The issue's example: 2 GBq, 5 % lung shunt, normalised in the perfused volume."""
    spect, segmentation = sample
    lesions = [segmentation.label_volume(name) for name in ("Tumor 1", "Tumor 2", "perfused normal")]
    report = dose_report(spect, segmentation.label_volume("liver"), ACTIVITY_GBQ, lung_shunt_fraction=0.05,
                         perfused=segmentation.label_volume("perfused volume"), lesions=lesions)
    delivered_j = 49.67 * ACTIVITY_GBQ * 0.95  # 94.4 J
    rows = {s.name: s for s in report.structures}
    liver = rows["liver"]
    mass_kg = liver.volume_ml * 1.05 / 1000  # 1.813 kg
    assert liver.mean_gy * mass_kg == pytest.approx(100.4, abs=0.1)  # the map's mean implies more than delivered
    assert liver.inside_mean_gy * mass_kg == pytest.approx(delivered_j, rel=0.005)  # 52.1 Gy
    assert liver.counts_inside_fraction == pytest.approx(0.939, abs=0.001)
    for name in ("Tumor 1", "Tumor 2", "perfused normal"):  # inside the perfused volume: both rules agree
        assert rows[name].counts_inside_fraction == pytest.approx(1.0, abs=1e-3)
        assert rows[name].inside_mean_gy == pytest.approx(rows[name].mean_gy, rel=0.005)
