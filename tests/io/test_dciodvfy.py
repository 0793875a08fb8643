"""Every kind of DICOM object sirtreg writes, checked by the dicom3tools validator ``dciodvfy`` (skipped where it
is not installed; CI installs it)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import write_dicom_nm, write_dicom_seg, write_dicom_series, write_rt_dose, write_rtstruct

pytestmark = pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (Debian dicom3tools) not found")

GRID = Grid((32, 24, 12), (2.0, 2.0, 3.0), (-32.0, -24.0, -18.0))


def validate(path) -> tuple[int, list[str]]:
    """dciodvfy's exit status and its error lines for one file."""
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return result.returncode, [line for line in (result.stdout + result.stderr).splitlines()
                               if line.startswith("Error")]


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A CT and an MR series, an NM SPECT, a SEG, an RTSTRUCT and an RT Dose in one frame of reference."""
    root = tmp_path_factory.mktemp("dicom")
    rng = np.random.default_rng(0)
    ct = write_dicom_series(Volume(rng.normal(40, 20, GRID.shape).astype(np.float32), GRID, "CT"), root / "ct")
    header = pydicom.dcmread(min(ct.iterdir()), stop_before_pixels=True)
    same = {"frame_of_reference_uid": header.FrameOfReferenceUID, "study_instance_uid": header.StudyInstanceUID}
    mr = write_dicom_series(Volume(rng.uniform(0, 500, GRID.shape).astype(np.float32), GRID, "MR"), root / "mr",
                            modality="MR", **same)
    nm = write_dicom_nm(Volume(rng.poisson(50, GRID.shape).astype(np.float32), GRID, "NM"), root / "nm.dcm", **same)
    labels = np.zeros(GRID.shape, np.uint8)
    labels[3:9, 6:18, 8:24], labels[5:7, 10:14, 12:16] = 1, 2
    lesions = LabelVolume(labels, GRID, labels={1: "liver", 2: "lesion"})
    seg = write_dicom_seg(lesions, ct, root / "seg.dcm")
    rtstruct = write_rtstruct(lesions, ct, root / "rtstruct.dcm")
    dose = write_rt_dose(Volume(rng.uniform(0, 120, GRID.shape).astype(np.float32), GRID), root / "rt_dose.dcm",
                         reference=ct)
    return {"CT": min(ct.iterdir()), "MR": min(mr.iterdir()), "NM": nm, "SEG": seg, "RTSTRUCT": rtstruct,
            "RT Dose": dose}


@pytest.mark.parametrize("kind", ["CT", "MR", "NM", "SEG", "RTSTRUCT"])
def test_the_validator_finds_no_error(written, kind):
    code, errors = validate(written[kind])
    assert errors == [] and code == 0, errors


def test_the_rt_dose_is_valid_but_for_what_the_validator_cannot_read(written, tmp_path):
    """dciodvfy aborts on 32-bit pixel data (an assertion in its reader: at most 16 bits); the same RT Dose
    re-encoded in 16 bits is valid but for the RT Plan it references, which SIRT has none of."""
    code, _ = validate(written["RT Dose"])
    assert code != 0
    dataset = pydicom.dcmread(written["RT Dose"])
    dose_gy = dataset.pixel_array.astype(np.float64) * float(dataset.DoseGridScaling)
    scaling = dose_gy.max() / 65535
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
    dataset.PixelData = np.round(dose_gy / scaling).astype("<u2").tobytes()
    dataset.DoseGridScaling = f"{scaling:.10g}"
    dataset.save_as(tmp_path / "rt_dose_16.dcm")
    code, errors = validate(tmp_path / "rt_dose_16.dcm")
    assert errors == ["Error - Missing attribute Type 1C Conditional Element=<ReferencedRTPlanSequence> "
                      "Module=<RTDose>"]
