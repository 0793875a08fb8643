"""One patient's dose report and its output files."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta

import numpy as np
import pytest
from dose_phantoms import CT_GRID, SPECT_GRID, box_labels, box_mask

from sirtreg.dosimetry import dose_report, write_dose_outputs
from sirtreg.errors import InputError, OutputExistsError
from sirtreg.geometry import Grid, LabelVolume
from sirtreg.io import read_image


@pytest.fixture
def spect_with_lesion(uniform_spect):
    """10 counts per liver voxel, 50 in a 40 mm cube lesion."""
    return uniform_spect.with_array(np.where(box_mask(SPECT_GRID, [-20] * 3, [20] * 3), 50.0, uniform_spect.array))


@pytest.fixture
def lesions():
    inside = box_labels(CT_GRID, [-20] * 3, [20] * 3, "Tumor 1")
    far_grid = Grid((8, 8, 8), (1.0, 1.0, 1.0), (0.0, 0.0, 400.0))
    far = LabelVolume.from_mask(np.ones(far_grid.shape, bool), far_grid, name="Tumor 2")
    return [inside, far]


def test_report_rows_and_warnings(spect_with_lesion, liver_on_ct, lesions):
    report = dose_report(spect_with_lesion, liver_on_ct, 1.0, lesions=lesions, vx_gy=(70, 100, 150))
    names = [s.name for s in report.structures]
    assert names == ["liver", "Tumor 1", "Tumor 2"]
    liver, tumour, far = report.structures
    # C A / m, less the sharp-edge loss of linear interpolation (see test_dose_structures)
    assert liver.mean_gy == pytest.approx(49.67 / 1.05, rel=0.03)
    assert tumour.volume_ml == pytest.approx(64.0)  # measured on its own 1 x 1 x 2 mm grid
    assert tumour.v_percent[150.0] > 50 and not far.ok
    assert report.warnings == ("Tumor 2: 'Tumor 2' lies outside the SPECT field of view",)
    assert report.counts_inside_fraction == pytest.approx(1.0)
    rows = report.rows()
    assert list(rows[0]) == list(rows[2]) and "V150_percent" in rows[0] and rows[2]["mean_gy"] is None
    assert report.summary()["absorbed_energy_j"] == pytest.approx(49.67, rel=1e-6)


def test_perfused_volume_lung_shunt_and_decay(spect_with_lesion, liver_on_spect):
    perfused = box_labels(SPECT_GRID, [-50, -50, -50], [50, 50, 0], "perfused volume")
    calibration = datetime(2024, 3, 1, 9, 0)
    report = dose_report(spect_with_lesion, liver_on_spect, 4.0, perfused=perfused, lung_shunt_fraction=0.05,
                         calibration_time=calibration, injection_time=calibration + timedelta(hours=64.1))
    summary = report.summary()
    assert summary["administered_activity_gbq"] == pytest.approx(2.0)
    assert summary["liver_activity_gbq"] == pytest.approx(1.9)
    assert summary["lung_dose_gy"] == pytest.approx(49.67 * 0.1)
    assert summary["normalised_within"] == "perfused volume"
    assert [s.name for s in report.structures] == ["liver", "perfused volume"]
    assert report.dose_map.absorbed_energy_j() == pytest.approx(49.67 * 1.9, rel=1e-6)


def test_decay_needs_both_times(uniform_spect, liver_on_spect):
    with pytest.raises(InputError, match="decay correction needs both the calibration time and the injection time"):
        dose_report(uniform_spect, liver_on_spect, 1.0, calibration_time=datetime(2024, 1, 1))


def test_outputs_are_written_and_never_overwritten(spect_with_lesion, liver_on_ct, lesions, tmp_path):
    report = dose_report(spect_with_lesion, liver_on_ct, 1.0, lesions=lesions)
    paths = write_dose_outputs(report, tmp_path / "out")
    assert sorted(p.name for p in paths.values()) == ["dose.nii.gz", "dvh.png", "structures.csv", "structures.json"]
    dose = read_image(paths["dose.nii.gz"])
    np.testing.assert_allclose(dose.array, report.dose.array)
    with open(paths["structures.csv"], newline="", encoding="utf-8") as handle:
        table = list(csv.DictReader(handle))
    assert [r["structure"] for r in table] == ["liver", "Tumor 1", "Tumor 2"]
    assert float(table[0]["mean_gy"]) == pytest.approx(report.structures[0].mean_gy)
    assert table[2]["mean_gy"] == "" and "field of view" in table[2]["error"]
    document = json.loads(paths["structures.json"].read_text(encoding="utf-8"))
    assert document["summary"]["isotope"] == "Y-90" and len(document["structures"]) == 3
    assert [d["structure"] for d in document["dvh"]] == ["liver", "Tumor 1"]
    paths["structures.csv"].unlink()
    with pytest.raises(OutputExistsError, match="is not empty"):
        write_dose_outputs(report, tmp_path / "out")
    assert not paths["structures.csv"].exists()  # nothing was written
    write_dose_outputs(report, tmp_path / "out", overwrite=True)
    assert paths["structures.csv"].is_file()


def test_report_refuses_bad_activity(uniform_spect, liver_on_spect):
    with pytest.raises(InputError, match="activity must be a positive number of GBq, got -1"):
        dose_report(uniform_spect, liver_on_spect, -1.0)


def test_outside_the_perfused_volume_only_the_delivered_activity_counts(uniform_spect, liver_on_spect):
    """Uniform counts; the perfused volume is 13 of the liver's 25 SPECT slices, a lesion 3 of its 5 inside."""
    perfused = box_labels(SPECT_GRID, [-50, -50, -50], [50, 50, 0], "perfused volume")
    lesion = box_labels(SPECT_GRID, [-10, -10, -10], [10, 10, 10], "straddling")
    report = dose_report(uniform_spect, liver_on_spect, 2.0, perfused=perfused, lesions=[lesion])
    liver, territory, straddling = report.structures
    perfused_gy = 49.67 * 2.0 / (1.05 * 0.52)  # all the activity in 520 mL
    assert territory.mean_gy == pytest.approx(perfused_gy, rel=1e-5)
    assert territory.inside_mean_gy == pytest.approx(perfused_gy, rel=1e-5)
    assert territory.counts_inside_fraction == pytest.approx(1.0)
    # the dose map shows the whole liver at the perfused calibration: 52 % of the energy its mean implies
    assert liver.mean_gy == pytest.approx(perfused_gy, rel=1e-5)
    assert liver.counts_inside_fraction == pytest.approx(0.52)
    assert liver.inside_mean_gy == pytest.approx(49.67 * 2.0 / 1.05, rel=1e-5)  # C A / m of the whole liver
    assert liver.inside_mean_gy * 1.05 == pytest.approx(report.dose_map.absorbed_energy_j(), rel=1e-5)
    assert straddling.counts_inside_fraction == pytest.approx(0.6)
    assert straddling.inside_mean_gy == pytest.approx(0.6 * perfused_gy, rel=1e-5)
    row = report.rows()[0]
    assert row["inside_mean_gy"] == liver.inside_mean_gy and row["counts_inside_fraction"] == pytest.approx(0.52)
