"""`sirtreg dose` on DICOM: a DICOM SPECT, the liver as DICOM SEG and the lesions as RTSTRUCT on the MAA CT
series; an RT Dose in the SPECT's frame of reference whose grid and values are those of the NIfTI dose map."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.io import (
    read_image,
    read_labels,
    read_rt_dose,
    write_dicom_nm,
    write_dicom_seg,
    write_dicom_series,
    write_rtstruct,
)

runner = CliRunner()


@pytest.fixture(scope="module")
def dicom_patient(fast_patient_folder, tmp_path_factory):
    """The digital patient's MAA CT as a series, its SPECT as one NM file, liver SEG and lesion RTSTRUCT."""
    folder, manifest = fast_patient_folder
    out = tmp_path_factory.mktemp("dicom")
    ref = manifest["reference"]
    ct = write_dicom_series(read_image(folder / ref["image"], modality="CT"), out / "maa_ct",
                            series_description="MAA CT")
    header = pydicom.dcmread(min(ct.iterdir()), stop_before_pixels=True)
    spect = write_dicom_nm(read_image(folder / manifest["spect"]["image"]), out / "spect" / "spect.dcm",
                           series_description="MAA SPECT", frame_of_reference_uid=header.FrameOfReferenceUID,
                           study_instance_uid=header.StudyInstanceUID)
    names = {int(v): n for v, n in manifest["labels"]["lesions"].items()}
    liver = write_dicom_seg(read_labels(folder / ref["liver"]), ct, out / "liver_seg.dcm",
                            segment_names={1: "Liver"})
    lesions = write_rtstruct(read_labels(folder / ref["lesions"]), ct, out / "lesions_rtstruct.dcm", roi_names=names)
    return {"ct": ct, "spect": spect, "liver": liver, "lesions": lesions, "header": header, "names": names}


def test_dose_reads_dicom_contours_and_writes_an_rt_dose_matching_the_nifti(dicom_patient, tmp_path):
    files = dicom_patient
    out = tmp_path / "dose"
    result = runner.invoke(app, ["dose", "--spect", str(files["spect"]), "--liver", str(files["liver"]),
                                 "--lesions", str(files["lesions"]), "--contour-image", str(files["ct"]),
                                 "--activity-gbq", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "structures.json").read_text())["structures"]
    assert [row["structure"] for row in rows] == ["Liver", *files["names"].values()]
    assert all(row["error"] == "" and row["mean_gy"] > 0 for row in rows)
    nifti = read_image(out / "dose.nii.gz")
    rt_dose = read_rt_dose(out / "rt_dose.dcm")
    assert rt_dose.grid.same_as(nifti.grid)
    scale = float(nifti.array.max())
    assert np.max(np.abs(rt_dose.array - nifti.array)) <= 1e-4 * scale
    dataset = pydicom.dcmread(out / "rt_dose.dcm")
    assert dataset.Modality == "RTDOSE" and dataset.DoseUnits == "GY"
    assert dataset.FrameOfReferenceUID == files["header"].FrameOfReferenceUID
    assert dataset.StudyInstanceUID == files["header"].StudyInstanceUID


def test_dicom_contours_need_the_series_they_were_drawn_on(dicom_patient, tmp_path):
    result = runner.invoke(app, ["dose", "--spect", str(dicom_patient["spect"]), "--liver",
                                 str(dicom_patient["liver"]), "--activity-gbq", "2", "-o", str(tmp_path / "dose")])
    assert result.exit_code == 2
    assert "a DICOM SEG or RTSTRUCT needs the series it was drawn on (--contour-image)" in result.stderr
    assert not (tmp_path / "dose").exists()
