"""`sirtreg verify` on the digital patient: a simulated post-treatment Y-90 PET, or a post-treatment SPECT, against
the MAA prediction.

A PET of uniform concentration over the whole liver gives every structure a dose known by hand; a PET of the
patient's true activity gives the liver the energy that reached it, and its lesions more than the blurred MAA
SPECT predicts (its partial-volume loss). A post-treatment SPECT is calibrated by the administered activity: its
liver gets the dose of the activity that reached it."""

from __future__ import annotations

import csv
import json
from datetime import datetime, timedelta

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.dosimetry.verification import bland_altman, pet_dose
from sirtreg.errors import InputError
from sirtreg.geometry import Grid, Volume
from sirtreg.io import read_image, write_dicom_series, write_image

runner = CliRunner()
INJECTED = datetime(2026, 3, 2, 10, 0)
ACTIVITY_GBQ = 2.0


def rows_of(folder) -> dict[str, dict[str, str]]:
    with open(folder / "verification.csv", newline="", encoding="utf-8") as handle:
        return {row["structure"]: row for row in csv.DictReader(handle)}


def arguments(folder, manifest, pet, out, *, source: str = "--pet") -> list[str]:
    ref = manifest["reference"]
    return ["verify", "--spect", str(folder / manifest["spect"]["image"]), "--liver", str(folder / ref["liver"]),
            "--lesions", str(folder / ref["lesions"]), "--activity-gbq", str(ACTIVITY_GBQ), source, str(pet),
            "-o", str(out)]


def test_pet_dose_is_local_deposition_decay_corrected_to_the_injection():
    grid = Grid((4, 4, 4), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    pet = Volume(np.full(grid.shape, 1e6, np.float32), grid, "PT", {"units": "BQML"})  # 1 MBq/mL
    at_injection = pet_dose(pet)
    assert float(at_injection.array.mean()) == pytest.approx(49.67 / 1.05, rel=1e-6)  # C c 1e-9 / (rho 1e-3)
    later = pet_dose(pet, scan_time=INJECTED + timedelta(hours=64.1), injection_time=INJECTED)
    assert float(later.array.mean()) == pytest.approx(2 * 49.67 / 1.05, rel=1e-6)  # one half-life later
    with pytest.raises(InputError, match="the PET's units are CNTS, not Bq/mL"):
        pet_dose(Volume(pet.array, grid, "PT", {"units": "CNTS"}))
    with pytest.raises(InputError, match="needs both the PET's scan time and the injection time"):
        pet_dose(pet, scan_time=INJECTED)
    with pytest.raises(InputError, match="is before the injection"):
        pet_dose(pet, scan_time=INJECTED - timedelta(days=1), injection_time=INJECTED)


def dicom_pet(folder, *, decay_correction: str, injected: str | None = "20260302100000"):
    """A PET series of 1 MBq/mL in Bq/mL (a CT series made into PET Image Storage), started 2026-03-03 10:00."""
    grid = Grid((8, 8, 4), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    written = write_dicom_series(Volume(np.full(grid.shape, 1e6, np.float32), grid, "CT"), folder)
    for path in written.iterdir():
        dataset = pydicom.dcmread(path)
        dataset.Modality, dataset.SOPClassUID = "PT", "1.2.840.10008.5.1.4.1.1.128"
        dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
        dataset.Units, dataset.DecayCorrection = "BQML", decay_correction
        dataset.SeriesDate, dataset.SeriesTime = "20260303", "100000"
        if injected is not None:
            item = pydicom.Dataset()
            item.RadiopharmaceuticalStartDateTime = injected
            dataset.RadiopharmaceuticalInformationSequence = [item]
        del dataset.RescaleType
        dataset.save_as(path)
    return read_image(written)


def test_a_dicom_pet_is_decay_corrected_as_its_header_says(tmp_path):
    at_injection_gy = 49.67 / 1.05  # 1 MBq/mL at the injection
    started = dicom_pet(tmp_path / "start", decay_correction="START")  # 24 h after the injection
    dose = pet_dose(started)
    assert float(dose.array.mean()) == pytest.approx(at_injection_gy * 2 ** (24 / 64.1), rel=1e-5)
    assert "decay corrected from the scan (2026-03-03T10:00:00) to the injection (2026-03-02T10:00:00)" in (
        dose.meta["decay"])
    administered = dicom_pet(tmp_path / "admin", decay_correction="ADMIN")
    assert float(pet_dose(administered).array.mean()) == pytest.approx(at_injection_gy, rel=1e-5)
    with pytest.raises(InputError, match="corrected to the injection already"):
        pet_dose(administered, scan_time=INJECTED, injection_time=INJECTED)
    with pytest.raises(InputError, match="its header lacks the series start or the injection time"):
        pet_dose(dicom_pet(tmp_path / "no_injection", decay_correction="START", injected=None))
    with pytest.raises(InputError, match=r"the PET is not decay corrected \(Decay Correction NONE\)"):
        pet_dose(dicom_pet(tmp_path / "raw", decay_correction="NONE", injected=None))


def test_bland_altman_of_known_differences():
    statistics = bland_altman([100.0, 50.0, 80.0, 20.0], [110.0, 54.0, 92.0, 22.0])  # differences 10, 4, 12, 2
    assert statistics.n == 4 and statistics.mean_difference == pytest.approx(7.0)
    sd = float(np.std([10, 4, 12, 2], ddof=1))
    assert (statistics.lower_limit, statistics.upper_limit) == (pytest.approx(7 - 1.96 * sd),
                                                                pytest.approx(7 + 1.96 * sd))


def test_a_uniform_pet_gives_every_structure_its_hand_computed_dose(fast_patient_folder, tmp_path):
    folder, manifest = fast_patient_folder
    truth = read_image(folder / manifest["spect"]["activity_truth"])  # the activity's 4.4 mm grid
    pet = write_image(Volume(np.full(truth.shape, 1e6, np.float32), truth.grid, "PT"), tmp_path / "pet.nii.gz")
    scanned = INJECTED + timedelta(hours=24)
    result = runner.invoke(app, [*arguments(folder, manifest, pet, tmp_path / "out"), "--scan-time",
                                 scanned.isoformat(), "--injection-time", INJECTED.isoformat()])
    assert result.exit_code == 0, result.output
    expected_gy = 49.67 * 1e6 * 2 ** (24 / 64.1) * 1e-9 / 1.05e-3  # 61.3 Gy everywhere
    rows = rows_of(tmp_path / "out")
    assert len(rows) == 1 + len(manifest["labels"]["lesions"])
    for name, row in rows.items():
        assert float(row["delivered_mean_gy"]) == pytest.approx(expected_gy, rel=1e-4), name
        assert float(row["difference_mean_gy"]) == pytest.approx(
            float(row["delivered_mean_gy"]) - float(row["predicted_mean_gy"]))
    document = json.loads((tmp_path / "out" / "verification.json").read_text())
    assert document["bland_altman_lesions"]["n"] == len(manifest["labels"]["lesions"])
    assert "no registration" in " ".join(document["facts"])
    page = (tmp_path / "out" / "verification.html").read_text()
    assert page.count('<img src="data:image/png;base64,') == 2  # DVHs and Bland-Altman
    # one lesion: no limits of agreement, written as null (NaN is no JSON)
    one = runner.invoke(app, [*arguments(folder, manifest, pet, tmp_path / "one"), "--lesion-segments", "1"])
    assert one.exit_code == 0, one.output
    agreement = json.loads((tmp_path / "one" / "verification.json").read_text())["bland_altman_lesions"]
    assert agreement["n"] == 1 and agreement["sd_difference"] is None and agreement["lower_limit"] is None


def test_structures_the_pet_does_not_cover_are_not_given_a_delivered_dose(fast_patient_folder, tmp_path):
    folder, manifest = fast_patient_folder
    truth = read_image(folder / manifest["spect"]["activity_truth"])
    half = truth.grid.crop((0, 0, 0), (truth.grid.size[0], truth.grid.size[1], truth.grid.size[2] // 2))
    pet = write_image(Volume(np.full(half.shape, 1e6, np.float32), half, "PT"), tmp_path / "pet.nii.gz")
    result = runner.invoke(app, arguments(folder, manifest, pet, tmp_path / "out"))
    assert result.exit_code == 0, result.output
    liver = rows_of(tmp_path / "out")["liver"]
    assert liver["delivered_mean_gy"] == "" and "lies outside the PET's field of view" in liver["error"]


@pytest.mark.slow
def test_a_pet_of_the_true_activity_registered_to_the_maa_ct(fast_patient_folder, tmp_path):
    """The PET's CT is the MAA CT itself: the registration must leave the dose where it is."""
    folder, manifest = fast_patient_folder
    truth = read_image(folder / manifest["spect"]["activity_truth"])
    voxel_ml = truth.grid.voxel_volume_ml
    bq_per_ml = truth.array.astype(np.float64) * ACTIVITY_GBQ * 1e9 / (float(truth.array.sum()) * voxel_ml)
    pet = write_image(Volume(bq_per_ml.astype(np.float32), truth.grid, "PT"), tmp_path / "pet.nii.gz")
    result = runner.invoke(app, [*arguments(folder, manifest, pet, tmp_path / "out"), "--maa-ct",
                                 str(folder / manifest["reference"]["image"]), "--pet-ct",
                                 str(folder / manifest["reference"]["image"]), "--affine-only",
                                 "--lung-shunt-fraction", str(manifest["spect"]["lung_shunt_fraction"])])
    assert result.exit_code == 0, result.output
    rows = rows_of(tmp_path / "out")
    liver = rows.pop(next(iter(rows)))
    # the liver's dose is that of the activity that reached it: C A (1 - LSF) / m, less the partial volume of
    # the PET's 4.4 mm voxels at the liver's edge (the same for both doses)
    assert float(liver["delivered_mean_gy"]) == pytest.approx(float(liver["predicted_mean_gy"]), rel=0.05)
    # the MAA SPECT's 12 mm blur spreads each hot lesion into the liver around it: it predicts less
    delivered = np.array([float(row["delivered_mean_gy"]) for row in rows.values()])
    predicted = np.array([float(row["predicted_mean_gy"]) for row in rows.values()])
    assert np.mean(delivered - predicted) > 0 and np.all(delivered > 0)


@pytest.mark.parametrize("isotope", ["y90", "ho166"])
def test_a_post_treatment_spect_carries_the_administered_activity(fast_patient_folder, tmp_path, isotope):
    """A post-treatment SPECT, calibrated by the activity that reached the liver: of uniform counts, every
    structure gets the dose of that activity spread evenly over the liver; of the true activity (sharper than the
    MAA SPECT), the hot lesions get more than predicted."""
    folder, manifest = fast_patient_folder
    truth = read_image(folder / manifest["spect"]["activity_truth"])
    labels = read_image(folder / manifest["reference"]["liver"])
    liver_kg = 1.05 * float(np.count_nonzero(labels.array)) * labels.grid.voxel_volume_ml / 1000
    factor = {"y90": 49.67, "ho166": 15.87}[isotope]
    shunt = 0.1
    expected_gy = factor * ACTIVITY_GBQ * (1 - shunt) / liver_kg  # C A (1 - LSF) / (rho V)
    outcomes = {}
    for name, counts in (("uniform", np.full(truth.shape, 50.0)), ("true", truth.array * 1000.0)):
        spect = write_image(Volume(counts.astype(np.float32), truth.grid, "NM"), tmp_path / f"{name}.nii.gz")
        result = runner.invoke(app, [*arguments(folder, manifest, spect, tmp_path / name, source="--post-spect"),
                                     "--isotope", isotope, "--lung-shunt-fraction", str(shunt)])
        assert result.exit_code == 0, result.output
        outcomes[name] = rows_of(tmp_path / name)
    for structure, row in outcomes["uniform"].items():
        assert float(row["delivered_mean_gy"]) == pytest.approx(expected_gy, rel=2e-3), structure
    rows = dict(outcomes["true"])
    liver = rows.pop(next(iter(rows)))
    assert float(liver["delivered_mean_gy"]) == pytest.approx(expected_gy, rel=2e-3)
    delivered = np.array([float(row["delivered_mean_gy"]) for row in rows.values()])
    predicted = np.array([float(row["predicted_mean_gy"]) for row in rows.values()])
    assert np.mean(delivered - predicted) > 0
    facts = " ".join(json.loads((tmp_path / "true" / "verification.json").read_text())["facts"])
    assert "post-treatment SPECT" in facts and "administered activity" in facts


def test_a_post_treatment_spect_must_cover_the_liver(fast_patient_folder, tmp_path):
    folder, manifest = fast_patient_folder
    truth = read_image(folder / manifest["spect"]["activity_truth"])
    half = truth.grid.crop((0, 0, 0), (truth.grid.size[0], truth.grid.size[1], truth.grid.size[2] // 2))
    spect = write_image(Volume(np.full(half.shape, 50.0, np.float32), half, "NM"), tmp_path / "half.nii.gz")
    result = runner.invoke(app, arguments(folder, manifest, spect, tmp_path / "out", source="--post-spect"))
    assert result.exit_code == 2 and "the administered activity cannot calibrate its counts" in " ".join(
        result.stderr.split()), result.stderr
    assert not (tmp_path / "out").exists()
