"""`sirtreg plan` end to end: its files on a box phantom, and the partition model on the real MAA SPECT of the
taranis sample against a hand computation."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
from dose_phantoms import CT_GRID, SPECT_GRID, box_labels, box_mask
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import write_image

runner = CliRunner()


def activity_of(folder, territory: str | None = None) -> dict[tuple[str, str], str]:
    """(part, quantity) -> value of the plan's table: the inputs and one territory's rows (the only one)."""
    with open(folder / "activity_plan.csv", newline="", encoding="utf-8") as handle:
        return {(row["part"], row["quantity"]): row["value"] for row in csv.DictReader(handle)
                if territory is None or row["territory"] in ("", territory)}


def test_plan_writes_a_table_a_document_and_a_page_with_every_input_and_the_formula(tmp_path):
    spect = Volume(np.where(box_mask(SPECT_GRID, [-18] * 3, [18] * 3), 35.0, 7.0).astype(np.float32), SPECT_GRID,
                   "NM")
    paths = {name: write_image(volume, tmp_path / f"{name}.nii.gz") for name, volume in (
        ("spect", spect), ("liver", box_labels(CT_GRID, [-50] * 3, [50] * 3, "liver")),
        ("tumour", box_labels(CT_GRID, [-18] * 3, [18] * 3, "tumour")))}
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", "--spect", str(paths["spect"]), "--liver", str(paths["liver"]), "--tumours",
                                 str(paths["tumour"]), "--dose-gy", "120", "--lung-shunt-fraction", "0.1", "-o",
                                 str(out)])
    assert result.exit_code == 0, result.output
    # R = 5; tumour 46.656 mL and normal 953.344 mL at 1.05 g/mL; D_N = 24 Gy
    hand_gbq = 24.0 * (5 * 0.046656 * 1.05 + 0.953344 * 1.05) / (49.67 * 0.9)
    table = activity_of(out)
    assert float(table[("plan", "activity")]) == pytest.approx(hand_gbq)
    assert float(table[("dose", "tumour mean dose")]) == pytest.approx(120.0)
    assert float(table[("compartment", "tumour_to_normal_ratio")]) == pytest.approx(5.0)
    assert table[("input", "lung_shunt_fraction")] == "0.1" and table[("plan", "set by")] == "prescription"
    document = json.loads((out / "activity_plan.json").read_text())
    assert document["territories"][0]["prescription"]["activity_gbq"] == pytest.approx(hand_gbq)
    page = (out / "activity_plan.html").read_text()
    assert "MIRD partition model" in page and "A = D_N (R m_T + m_N) / (C (1 - L))" in page
    assert f"{hand_gbq:.2f} GBq" in result.output


def test_two_territories_are_planned_alike_and_their_lung_doses_add_up(tmp_path):
    spect = Volume(np.where(box_mask(SPECT_GRID, [-18] * 3, [18] * 3), 35.0, 7.0).astype(np.float32), SPECT_GRID,
                   "NM")
    lobes = np.zeros(CT_GRID.shape, np.uint8)
    lobes[box_mask(CT_GRID, [-50, -50, -50], [50, 50, 0])] = 1  # 500 mL each, edges on the CT's voxel edges
    lobes[box_mask(CT_GRID, [-50, -50, 0.5], [50, 50, 50])] = 2
    paths = {name: write_image(volume, tmp_path / f"{name}.nii.gz") for name, volume in (
        ("spect", spect), ("liver", box_labels(CT_GRID, [-50] * 3, [50] * 3, "liver")),
        ("lobes", LabelVolume(lobes, CT_GRID)))}
    common = ["plan", "--spect", str(paths["spect"]), "--liver", str(paths["liver"]), "--method", "mird",
              "--dose-gy", "100", "--perfused", str(paths["lobes"]), "--perfused-segment", "1,2"]
    result = runner.invoke(app, [*common, "--lung-shunt-fraction", "0.1", "-o", str(tmp_path / "plan")])
    assert result.exit_code == 0, result.output
    each_gbq = 100 * 0.525 / (49.67 * 0.9)  # 100 Gy to 0.525 kg: 1.174 GBq in each lobe
    for lobe in ("lobes 1", "lobes 2"):  # a plain label map: its values name the territories
        table = activity_of(tmp_path / "plan", lobe)
        assert float(table[("plan", "activity")]) == pytest.approx(each_gbq, rel=1e-6)
        assert float(table[("dose", "territory mean dose")]) == pytest.approx(100.0, rel=1e-6)
        assert float(table[("dose", "lung mean dose")]) == pytest.approx(49.67 * 0.1 * 2 * each_gbq, rel=1e-6)
    # two territories that share voxels are refused: each voxel is fed by one injection
    shutil.copy(paths["liver"], tmp_path / "whole.nii.gz")
    overlapping = runner.invoke(app, [*common[:-4], "--perfused", str(paths["liver"]), "--perfused",
                                      str(tmp_path / "whole.nii.gz"), "-o", str(tmp_path / "overlapping")])
    assert overlapping.exit_code == 2 and "the territories 'liver' and 'whole' overlap" in overlapping.stderr
    # a 25 % shunt: 2 x 1.409 GBq give the lung 35.0 Gy together, though each lobe's alone would be within 30 Gy
    refused = runner.invoke(app, [*common, "--lung-shunt-fraction", "0.25", "-o", str(tmp_path / "refused")])
    assert refused.exit_code == 2
    assert "mird plan of 2.82 GBq (2 territories) breaks the lung limit of 30 Gy per treatment" in refused.stderr


@pytest.mark.slow
def test_partition_plan_on_a_real_maa_spect_agrees_with_a_hand_computation(shared_data, tmp_path):
    folder = shared_data / "taranis"
    if not (folder / "patient_2_SPECT.nrrd").is_file():
        pytest.skip("taranis sample data not found")
    segmentation = str(folder / "patient_2_Segmentation.seg.nrrd")
    command = ["plan", "--spect", str(folder / "patient_2_SPECT.nrrd"), "--liver", segmentation, "--liver-segment",
               "liver", "--tumours", segmentation, "--tumour-segments", "Tumor 1,Tumor 2", "--perfused", segmentation,
               "--perfused-segment", "perfused volume", "--dose-gy", "120"]
    result = runner.invoke(app, [*command, "--lung-shunt-fraction", "0.05", "-o", str(tmp_path / "plan")])
    assert result.exit_code == 0, result.output
    # By hand, sampling the SPECT voxel that holds each voxel centre of the segmentation (not the occupancy the
    # program uses): tumours 241.35 mL -> 0.25342 kg, the perfused normal liver 840.88 mL -> 0.88293 kg, count
    # densities give R = 3.9533; D_N = 120 / 3.9533 = 30.355 Gy;
    # A = 30.355 x (3.9533 x 0.25342 + 0.88293) / (49.67 x 0.95) = 1.2124 GBq
    table = activity_of(tmp_path / "plan")
    assert float(table[("plan", "activity")]) == pytest.approx(1.2124, rel=0.01)
    assert float(table[("compartment", "tumour_ml")]) == pytest.approx(241.35, abs=0.05)
    assert float(table[("compartment", "normal_ml")]) == pytest.approx(840.88, abs=0.05)
    # with a 40 % lung shunt the same target needs 1.92 GBq: 38.1 Gy to the lung
    refused = runner.invoke(app, [*command, "--lung-shunt-fraction", "0.4", "-o", str(tmp_path / "refused")])
    assert refused.exit_code == 2
    assert "breaks the lung limit of 30 Gy per treatment (lung 38.1 Gy" in refused.stderr
    assert not (tmp_path / "refused").exists()


def test_plan_measures_the_lung_shunt_on_the_spect_ct_and_says_so(fast_patient_folder, tmp_path):
    folder, manifest = fast_patient_folder
    common = ["plan", "--spect", str(folder / "maa_spect.nii.gz"), "--liver", str(folder / "maa_ct_liver.nii.gz"),
              "--method", "mird", "--dose-gy", "100"]
    found = runner.invoke(app, [*common, "--ct", str(folder / "maa_ct.nii.gz"), "-o", str(tmp_path / "found")])
    assert found.exit_code == 0, found.output
    drawn = runner.invoke(app, [*common, "--lung", str(folder / "maa_ct_organs.nii.gz"), "--lung-segment", "7",  # lung
                                "-o", str(tmp_path / "drawn")])
    assert drawn.exit_code == 0, drawn.output
    truth = manifest["spect"]["lung_shunt_fraction"]  # 4.95 %
    for name in ("found", "drawn"):
        table = activity_of(tmp_path / name)
        assert float(table[("input", "lung_shunt_fraction")]) == pytest.approx(truth, abs=0.005)
        assert "measured on the SPECT/CT" in table[("input", "lung_shunt_fraction_source")]
    page = (tmp_path / "found" / "activity_plan.html").read_text()
    assert "lung shunt fraction 4." in page and "measured on the SPECT/CT" in page



def test_the_lungs_of_several_segments_count_together(tmp_path):
    """Two lungs above a 10-count liver, 1 count per voxel: named together they hold twice the counts of one."""
    counts = np.where(box_mask(SPECT_GRID, [-48] * 3, [48] * 3), 10.0, 0.0)
    counts[box_mask(SPECT_GRID, [-48, -48, 52], [48, 48, 56])] = 1.0
    lungs = np.zeros(CT_GRID.shape, np.uint8)
    lungs[box_mask(CT_GRID, [-50, -50, 51], [-1, 50, 55])] = 1  # right lung
    lungs[box_mask(CT_GRID, [1, -50, 51], [50, 50, 55])] = 2  # left lung
    paths = {name: write_image(volume, tmp_path / f"{name}.nii.gz") for name, volume in (
        ("spect", Volume(counts.astype(np.float32), SPECT_GRID, "NM")),
        ("liver", box_labels(CT_GRID, [-50] * 3, [50] * 3, "liver")), ("lungs", LabelVolume(lungs, CT_GRID)))}
    fractions = {}
    for segments in ("1", "1,2"):
        out = tmp_path / f"plan {segments}"
        result = runner.invoke(app, ["plan", "--spect", str(paths["spect"]), "--liver", str(paths["liver"]),
                                     "--method", "mird", "--dose-gy", "50", "--lung", str(paths["lungs"]),
                                     "--lung-segment", segments, "-o", str(out)])
        assert result.exit_code == 0, result.output
        fractions[segments] = float(activity_of(out)[("input", "lung_shunt_fraction")])
    one = fractions["1"]
    lung_over_liver = one / (1 - one)  # one lung's counts over the liver's
    assert fractions["1,2"] == pytest.approx(2 * lung_over_liver / (2 * lung_over_liver + 1), rel=1e-3)


def test_plan_measures_the_lung_shunt_on_planar_views(tmp_path):
    grid = Grid((64, 64, 1), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    regions = np.zeros(grid.shape, np.uint8)
    regions[0, 5:15, 10:20], regions[0, 30:50, 10:40] = 1, 2  # lung, liver
    files = {"regions": write_image(LabelVolume(regions, grid), tmp_path / "regions.nii.gz")}
    for name, lung, liver in (("anterior", 100.0, 900.0), ("posterior", 64.0, 1600.0)):
        counts = np.where(regions == 1, lung / 100, np.where(regions == 2, liver / 600, 0.0)).astype(np.float32)
        files[name] = write_image(Volume(counts, grid, "NM"), tmp_path / f"{name}.nii.gz")
    spect = Volume(np.where(box_mask(SPECT_GRID, [-18] * 3, [18] * 3), 35.0, 7.0).astype(np.float32), SPECT_GRID,
                   "NM")
    files["spect"] = write_image(spect, tmp_path / "spect.nii.gz")
    files["liver"] = write_image(box_labels(CT_GRID, [-50] * 3, [50] * 3, "liver"), tmp_path / "liver.nii.gz")
    common = ["plan", "--spect", str(files["spect"]), "--liver", str(files["liver"]), "--method", "mird",
              "--dose-gy", "100", "--planar-anterior", str(files["anterior"]), "--planar-posterior",
              str(files["posterior"]), "--planar-anterior-regions", str(files["regions"])]
    result = runner.invoke(app, [*common, "--planar-posterior-regions", str(files["regions"]), "-o",
                                 str(tmp_path / "plan")])
    assert result.exit_code == 0, result.output
    table = activity_of(tmp_path / "plan")
    assert float(table[("input", "lung_shunt_fraction")]) == pytest.approx(0.0625)  # 80 / (80 + 1200)
    assert "measured on the planar views" in table[("input", "lung_shunt_fraction_source")]
    partial = runner.invoke(app, [*common, "-o", str(tmp_path / "partial")])  # no posterior regions
    assert partial.exit_code == 2 and "planar views need" in partial.stderr
    three_d = runner.invoke(app, [*common, "--planar-posterior-regions", str(files["liver"]), "-o",
                                  str(tmp_path / "three_d")])
    assert three_d.exit_code == 2 and "a planar view is one image" in three_d.stderr
    regions = ["--planar-posterior-regions", str(files["regions"])]
    for extra, message in ((["--planar-labels", "1"], "--planar-labels takes the label values of the lung and"),
                           (["--planar-labels", "1,3"], "regions.nii.gz holds no region of label 3")):
        refused = runner.invoke(app, [*common, *regions, *extra, "-o", str(tmp_path / "refused")])
        assert refused.exit_code == 2 and message in refused.stderr, refused.stderr
    (tmp_path / "views").mkdir()  # a folder (as a DICOM export would be), not a view
    a_folder = [str(tmp_path / "views") if part == str(files["anterior"]) else part for part in common]
    refused = runner.invoke(app, [*a_folder, *regions, "-o", str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "views is a folder: give the planar view's file" in refused.stderr
    refused = runner.invoke(app, [*common, "--planar-posterior-regions", str(tmp_path / "views"), "-o",
                                  str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "the regions of a planar view are read from a NIfTI" in refused.stderr
    assert not (tmp_path / "refused").exists()


def _planar_dicom(path, frames: list[np.ndarray], views: list[str], *, modality: str = "NM"):
    """A DICOM planar file of these frames (uint16 counts, 4 mm pixels), one detector per frame naming its view."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, NuclearMedicineImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = NuclearMedicineImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, \
        modality
    ds.Rows, ds.Columns = frames[0].shape
    ds.NumberOfFrames, ds.SamplesPerPixel, ds.PhotometricInterpretation = len(frames), 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelSpacing = [4.0, 4.0]
    ds.DetectorVector = list(range(1, len(frames) + 1))
    detectors = []
    for view in views:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "0", "99TEST", view
        detector = Dataset()
        detector.ViewCodeSequence = [code]
        detectors.append(detector)
    ds.DetectorInformationSequence = detectors
    ds.PixelData = np.stack(frames).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_plan_reads_both_planar_views_from_one_dicom_file(tmp_path):
    grid = Grid((64, 64, 1), (4.0, 4.0, 4.0), (0.0, 0.0, 0.0))
    anterior_regions = np.zeros(grid.shape, np.uint8)
    anterior_regions[0, 5:15, 10:20], anterior_regions[0, 30:50, 10:40] = 1, 2  # lung, liver
    posterior_regions = np.roll(anterior_regions, 20, axis=2)  # the posterior view, mirrored: regions elsewhere
    region_files = [write_image(LabelVolume(regions, grid), tmp_path / f"{name}_regions.nii.gz")
                    for name, regions in (("anterior", anterior_regions), ("posterior", posterior_regions))]
    # whole counts per pixel, lung and liver: anterior 2 and 4, posterior 1 and 3, in their own regions
    anterior = np.where(anterior_regions[0] == 1, 2, np.where(anterior_regions[0] == 2, 4, 0))
    posterior = np.where(posterior_regions[0] == 1, 1, np.where(posterior_regions[0] == 2, 3, 0))
    both = _planar_dicom(tmp_path / "planar.dcm", [posterior, anterior], ["posterior", "anterior"])
    spect = Volume(np.where(box_mask(SPECT_GRID, [-18] * 3, [18] * 3), 35.0, 7.0).astype(np.float32), SPECT_GRID,
                   "NM")
    common = ["plan", "--spect", str(write_image(spect, tmp_path / "spect.nii.gz")), "--liver",
              str(write_image(box_labels(CT_GRID, [-50] * 3, [50] * 3, "liver"), tmp_path / "liver.nii.gz")),
              "--method", "mird", "--dose-gy", "100", "--planar-anterior-regions", str(region_files[0]),
              "--planar-posterior-regions", str(region_files[1])]
    result = runner.invoke(app, [*common, "--planar-anterior", str(both), "--planar-posterior", str(both), "-o",
                                 str(tmp_path / "plan")])
    assert result.exit_code == 0, result.output
    lung, liver = np.sqrt(200 * 100), np.sqrt(2400 * 1800)  # G = sqrt(anterior x posterior counts)
    assert float(activity_of(tmp_path / "plan")[("input", "lung_shunt_fraction")]) == pytest.approx(
        lung / (lung + liver), rel=1e-6)
    unnamed = _planar_dicom(tmp_path / "unnamed.dcm", [posterior, anterior], ["", ""])
    oblique = _planar_dicom(tmp_path / "oblique.dcm", [posterior, anterior], ["posterior", "left anterior oblique"])
    posterior_only = _planar_dicom(tmp_path / "posterior.dcm", [posterior], ["posterior"])
    not_nm = _planar_dicom(tmp_path / "ct.dcm", [anterior], ["anterior"], modality="CT")
    (tmp_path / "notes.txt").write_text("no image")
    for view, message in ((unnamed, "holds 2 frames and its detectors do not name one anterior view: give each"),
                          (oblique, "holds 2 frames and its detectors do not name one anterior view"),
                          (posterior_only, "posterior.dcm is the posterior view, given as the anterior one"),
                          (not_nm, "ct.dcm is CT, not a planar NM view"),
                          (tmp_path / "notes.txt", "cannot read notes.txt as a DICOM image")):
        refused = runner.invoke(app, [*common, "--planar-anterior", str(view), "--planar-posterior", str(both), "-o",
                                      str(tmp_path / "refused")])
        assert refused.exit_code == 2 and message in " ".join(refused.stderr.split()), refused.stderr
    assert not (tmp_path / "refused").exists()
