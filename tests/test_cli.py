"""The command line: happy paths and one-line refusals with exit status 2."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from sirtreg import __version__
from sirtreg.cli import app
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import read_image, write_image

runner = CliRunner()


@pytest.fixture()
def image_and_labels(tmp_path):
    grid = Grid((12, 10, 8), (1.5, 1.5, 3.0), (-9.0, -7.5, 0.0))
    image = write_image(Volume(np.arange(960, dtype=np.int16).reshape(grid.shape), grid), tmp_path / "ct.nii.gz")
    array = np.zeros(grid.shape, dtype=np.uint8)
    array[2:4, 3:6, 4:8] = 1
    labels = write_image(LabelVolume(array, grid), tmp_path / "liver.nii.gz")
    return image, labels


def assert_refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert message in lines[0]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_info_prints_one_line_per_image_and_label_volumes(image_and_labels):
    image, labels = image_and_labels
    result = runner.invoke(app, ["info", str(image), "--labels", str(labels)])
    assert result.exit_code == 0, result.output
    assert "ct.nii.gz: 12x10x8 voxels, 1.5x1.5x3 mm, LPS" in result.stdout
    assert "0.2" in result.stdout  # 24 voxels of 6.75 mm^3 = 0.162 mL


def test_convert_keeps_geometry_and_values(image_and_labels, tmp_path):
    image, _ = image_and_labels
    result = runner.invoke(app, ["convert", str(image), str(tmp_path / "ct.mha")])
    assert result.exit_code == 0, result.output
    original, converted = read_image(image), read_image(tmp_path / "ct.mha")
    assert converted.grid.same_as(original.grid)
    np.testing.assert_array_equal(converted.array, original.array)


def test_missing_file_is_refused(tmp_path):
    assert_refused(runner.invoke(app, ["info", str(tmp_path / "nothing.nii.gz")]), "no such file")


def test_2d_image_is_refused(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 30), dtype=np.int16)), str(path))
    assert_refused(runner.invoke(app, ["info", str(path)]), "2D image")


def test_label_map_on_another_grid_is_refused(image_and_labels, tmp_path):
    image, _ = image_and_labels
    other = Grid((12, 10, 8), (1.5, 1.5, 3.0), (0.0, 0.0, 0.0))
    labels = write_image(LabelVolume(np.ones(other.shape, dtype=np.uint8), other), tmp_path / "shifted.nii.gz")
    assert_refused(runner.invoke(app, ["info", str(image), "--labels", str(labels)]), "not on the same grid")


def test_output_that_would_overwrite_the_input_is_refused(image_and_labels):
    image, _ = image_and_labels
    before = image.read_bytes()
    assert_refused(runner.invoke(app, ["convert", str(image), str(image), "--overwrite"]), "would overwrite the input")
    assert image.read_bytes() == before


def test_existing_output_needs_overwrite(image_and_labels):
    image, labels = image_and_labels
    assert_refused(runner.invoke(app, ["convert", str(labels), str(image), "--labels"]), "exists")
    result = runner.invoke(app, ["convert", str(labels), str(image), "--labels", "--overwrite"])
    assert result.exit_code == 0, result.output


def test_truncated_dicom_series_is_refused(tmp_path):
    from sirtreg.io import write_dicom_series

    grid = Grid((16, 16, 8), (1.0, 1.0, 2.5))
    folder = write_dicom_series(Volume(np.zeros(grid.shape, dtype=np.int16), grid), tmp_path / "ct", modality="CT")
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == 8
    files[4].unlink()
    assert_refused(runner.invoke(app, ["info", str(folder)]), "missing")


def test_real_dicom_series_and_its_label_map_overlay(shared_data):
    folder = shared_data / "totalsegmentator"
    result = runner.invoke(app, ["info", str(folder / "example_ct_dicom"), "--labels",
                                 str(folder / "example_seg_dicom.nii.gz")])
    assert result.exit_code == 0, result.output
    assert "CT 512x512x20 voxels, 0.977x0.977x2 mm, LPS" in result.stdout


def test_phantom_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    assert_refused(runner.invoke(app, ["phantom", str(tmp_path), "--resolution", "fast"]), "not empty")
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_phantom_writes_a_patient(tmp_path):
    result = runner.invoke(app, ["phantom", str(tmp_path / "patient"), "--seed", "2", "--resolution", "fast"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "patient" / "patient.json").is_file()


def _uniform_spect_and_liver(tmp_path):
    grid = Grid((20, 20, 20), (5.0, 5.0, 5.0), (-50.0, -50.0, -50.0))
    spect = write_image(Volume(np.full(grid.shape, 10.0, dtype=np.float32), grid), tmp_path / "spect.nii.gz")
    array = np.zeros(grid.shape, dtype=np.uint8)
    array[5:15, 5:15, 5:15] = 1  # 1000 voxels of 0.125 mL = 125 mL
    liver = write_image(LabelVolume(array, grid, labels={1: "liver"}), tmp_path / "liver.nii.gz")
    return spect, liver


def test_dose_of_a_uniform_liver(tmp_path):
    spect, liver = _uniform_spect_and_liver(tmp_path)
    result = runner.invoke(app, ["dose", "--spect", str(spect), "--liver", str(liver), "--activity-gbq", "0.125",
                                 "-o", str(tmp_path / "dose")])
    assert result.exit_code == 0, result.output
    # 0.125 GBq in 125 mL * 1.05 g/mL = 0.13125 kg of liver: 49.67 * 0.125 / 0.13125 = 47.30 Gy
    assert "47.3" in result.stdout
    assert {p.name for p in (tmp_path / "dose").iterdir()} == {"dose.nii.gz", "structures.csv", "structures.json",
                                                                "dvh.png", "sirtreg-manifest.json"}


def test_dose_by_voxel_s_values_beside_local_deposition(tmp_path):
    spect, liver = _uniform_spect_and_liver(tmp_path)
    ct_grid = Grid((40, 40, 40), (2.5, 2.5, 2.5), (-51.25, -51.25, -51.25))
    ct = write_image(Volume(np.full(ct_grid.shape, 50.0, dtype=np.float32), ct_grid), tmp_path / "ct.nii.gz")
    outputs = {}
    for name, options in (("plain", ["--voxel-s-values"]), ("ct", ["--density-ct", str(ct)])):
        result = runner.invoke(app, ["dose", "--spect", str(spect), "--liver", str(liver), "--activity-gbq", "0.125",
                                     *options, "-o", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        assert "VSV" in result.stdout
        with open(tmp_path / name / "structures.csv", newline="") as handle:
            outputs[name] = next(csv.DictReader(handle))
        assert (tmp_path / name / "dose_vsv.nii.gz").is_file()
    plain = outputs["plain"]
    # local deposition as before; the 50 mm cube loses to its surroundings the energy that crosses its faces
    assert float(plain["mean_gy"]) == pytest.approx(47.30, abs=0.01)
    assert 0.9 * 47.30 < float(plain["vsv_mean_gy"]) < 0.99 * 47.30
    # the CT's 50 HU is 1.03 g/mL against the default 1.05: the same energy in less mass
    assert float(outputs["ct"]["vsv_mean_gy"]) == pytest.approx(float(plain["vsv_mean_gy"]) * 1.05 / 1.03, rel=1e-3)


def test_dose_refuses_a_density_ct_away_from_the_spect(tmp_path):
    spect, liver = _uniform_spect_and_liver(tmp_path)
    grid = Grid((10, 10, 10), (2.0, 2.0, 2.0), (500.0, 500.0, 500.0))
    ct = write_image(Volume(np.zeros(grid.shape, dtype=np.float32), grid), tmp_path / "ct.nii.gz")
    result = runner.invoke(app, ["dose", "--spect", str(spect), "--liver", str(liver), "--activity-gbq", "0.125",
                                 "--density-ct", str(ct), "-o", str(tmp_path / "dose")])
    assert_refused(result, "do not overlap")
    assert not (tmp_path / "dose").exists()


def test_dose_refuses_a_negative_activity_before_writing(tmp_path):
    spect, liver = _uniform_spect_and_liver(tmp_path)
    result = runner.invoke(app, ["dose", "--spect", str(spect), "--liver", str(liver), "--activity-gbq", "-1",
                                 "-o", str(tmp_path / "dose")])
    assert_refused(result, "activity")
    assert not (tmp_path / "dose").exists() or not any((tmp_path / "dose").iterdir())


@pytest.mark.parametrize(("option", "value", "message"), [("--modality", "pet", "ct or mr"),
                                                          ("--target", "spleen", "liver or lesions")])
def test_segment_refuses_unknown_choices(image_and_labels, tmp_path, option, value, message):
    image, _ = image_and_labels
    arguments = {"--modality": "ct", "--target": "liver", option: value}
    result = runner.invoke(app, ["segment", str(image), "-o", str(tmp_path / "out.nii.gz"),
                                 *[item for pair in arguments.items() for item in pair]])
    assert_refused(result, message)


def test_dose_decay_corrects_a_calibrated_activity(tmp_path):
    spect, liver = _uniform_spect_and_liver(tmp_path)
    # Y-90 half-life 64.1 h: calibrated 64.1 h before injection, half the activity is left (47.30 / 2 Gy)
    result = runner.invoke(app, ["dose", "--spect", str(spect), "--liver", str(liver), "--activity-gbq", "0.125",
                                 "--calibration-time", "2026-01-01T00:00:00", "--injection-time",
                                 "2026-01-03T16:06:00", "-o", str(tmp_path / "dose")])
    assert result.exit_code == 0, result.output
    assert "23.7" in result.stdout


def test_train_segmenter_refuses_a_missing_manifest(tmp_path):
    result = runner.invoke(app, ["train-segmenter", str(tmp_path / "cases.yaml"), "--checkpoint-dir",
                                 str(tmp_path / "ckpt")])
    assert_refused(result, "no such file")


@pytest.mark.parametrize("option, value, message", [
    ("--similarity", "ncc", "similarity must be one of mind, mi"),
    ("--landmark-channels", "some", "landmark_channels must be one of each, paper"),
    ("--wi", "nan", "wI must be a finite number, got nan"),
    ("--rigidity", "nan", "rigidity must be a finite number, got nan"),
    ("--ws", "inf", "wS must be a finite number, got inf"),
])
def test_register_refuses_bad_settings_before_any_work(image_and_labels, tmp_path, option, value, message):
    image, labels = image_and_labels
    result = runner.invoke(app, ["register", "--reference", str(image), "--floating", str(image),
                                 "--reference-liver", str(labels), "--floating-liver", str(labels),
                                 option, value, "-o", str(tmp_path / "out")])
    assert_refused(result, message)


def test_dose_takes_the_liver_of_a_multi_label_map_by_its_value(tmp_path):
    spect, liver = _uniform_spect_and_liver(tmp_path)
    grid = Grid((20, 20, 20), (5.0, 5.0, 5.0), (-50.0, -50.0, -50.0))
    organs = np.zeros(grid.shape, dtype=np.uint8)
    organs[5:15, 5:15, 5:15] = 1  # the liver of the uniform case: 125 mL
    organs[0:4, 0:4, 0:4], organs[16:20, 16:20, 0:4] = 5, 6  # two other organs
    path = write_image(LabelVolume(organs, grid), tmp_path / "organs.nii.gz")  # NIfTI: values without names
    result = runner.invoke(app, ["dose", "--spect", str(spect), "--liver", str(path), "--liver-segment", "1",
                                 "--activity-gbq", "0.125", "-o", str(tmp_path / "dose")])
    assert result.exit_code == 0, result.output
    assert "47.3" in result.stdout  # the same dose as the liver alone, not spread over three organs
