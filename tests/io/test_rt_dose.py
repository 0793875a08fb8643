"""DICOM RT Dose: write/read round trips on oblique grids, the referenced series, and refusals."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from sirtreg.errors import DicomSeriesError, InputError, OutputExistsError
from sirtreg.geometry import Grid, Volume
from sirtreg.io import orient_like, read_dicom, write_dicom_series
from sirtreg.io.rt_dose import read_rt_dose, write_rt_dose

FRAME = generate_uid()


def dose_volume(grid: Grid, seed: int = 0, peak_gy: float = 250.0) -> Volume:
    array = np.random.default_rng(seed).uniform(0, peak_gy, grid.shape).astype(np.float32)
    return Volume(array, grid, "", {"quantity": "absorbed dose", "units": "Gy"})


def tolerance_gy(path, dose: Volume) -> float:
    """Half a DoseGridScaling step plus the float32 rounding of the largest dose."""
    scaling = float(pydicom.dcmread(path, stop_before_pixels=True).DoseGridScaling)
    return scaling / 2 + float(np.spacing(np.float32(dose.array.max())))


def edit(path, change) -> None:
    dataset = pydicom.dcmread(path)
    change(dataset)
    dataset.save_as(path)


# --- round trips ----------------------------------------------------------------------
def test_round_trip_keeps_oblique_geometry_and_dose(tmp_path, oblique_grid, corner_distance_mm):
    dose = dose_volume(oblique_grid(50))
    path = write_rt_dose(dose, tmp_path / "dose.dcm", frame_of_reference_uid=FRAME)
    assert [p.name for p in tmp_path.iterdir()] == ["dose.dcm"]  # no temporary left behind
    back = read_rt_dose(path)
    assert back.grid.same_as(dose.grid, tolerance_mm=1e-4)
    assert corner_distance_mm(back.grid, dose.grid) < 1e-4
    assert back.array.dtype == np.float32 and back.modality == "RTDOSE"
    assert np.max(np.abs(back.array - dose.array)) <= tolerance_gy(path, dose)
    assert back.meta["units"] == "Gy" and back.meta["FrameOfReferenceUID"] == FRAME
    assert back.meta["DoseType"] == "PHYSICAL" and back.meta["DoseSummationType"] == "PLAN"


def test_header_is_an_rt_dose_that_simpleitk_places_alike(tmp_path, oblique_grid):
    dose = dose_volume(oblique_grid(51))
    path = write_rt_dose(dose, tmp_path / "dose.dcm", frame_of_reference_uid=FRAME)
    header = pydicom.dcmread(path)
    assert header.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2" and header.Modality == "RTDOSE"
    assert (header.DoseUnits, header.DoseType, header.DoseSummationType) == ("GY", "PHYSICAL", "PLAN")
    assert (header.BitsAllocated, header.PixelRepresentation) == (32, 0)
    assert header.FrameIncrementPointer == pydicom.tag.Tag("GridFrameOffsetVector")
    offsets = np.asarray(header.GridFrameOffsetVector, dtype=float)
    assert offsets[0] == 0 and np.allclose(np.diff(offsets), dose.grid.spacing_mm[2])
    assert int(header.pixel_array.max()) > 2**31  # the uint32 range is used, not 16 bits
    image = sitk.ReadImage(str(path))  # GDCM, an independent reader
    np.testing.assert_allclose(image.GetOrigin(), dose.grid.origin_mm, atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), dose.grid.direction, atol=1e-6)
    np.testing.assert_allclose(image.GetSpacing(), dose.grid.spacing_mm, atol=1e-6)
    gdcm_gy = sitk.GetArrayFromImage(image) * float(header.DoseGridScaling)
    assert np.max(np.abs(gdcm_gy - dose.array)) <= tolerance_gy(path, dose)


def test_left_handed_grid_is_written_with_reversed_frames(tmp_path, oblique_grid):
    dose = dose_volume(oblique_grid(52, left_handed=True))
    back = read_rt_dose(write_rt_dose(dose, tmp_path / "dose.dcm", frame_of_reference_uid=FRAME))
    assert np.linalg.det(back.grid.direction_matrix) > 0
    on_grid = orient_like(back, dose.grid, tolerance_mm=1e-4)
    assert np.max(np.abs(on_grid.array - dose.array)) <= tolerance_gy(tmp_path / "dose.dcm", dose)


def test_zero_and_integer_doses_read_back(tmp_path, oblique_grid):
    grid = oblique_grid(53)
    for name, array in (("zero", np.zeros(grid.shape)), ("whole", np.arange(np.prod(grid.shape)).reshape(grid.shape))):
        back = read_rt_dose(write_rt_dose(Volume(array, grid), tmp_path / f"{name}.dcm", frame_of_reference_uid=FRAME))
        np.testing.assert_allclose(back.array, array, atol=1e-6)


def test_study_frame_and_patient_come_from_the_referenced_series(tmp_path, oblique_grid):
    grid = oblique_grid(54)
    ct = write_dicom_series(Volume(np.zeros(grid.shape, np.int16), grid, "CT"), tmp_path / "ct",
                            patient_name="Doe^Jane", patient_id="P042")
    meta = read_dicom(ct).meta
    path = write_rt_dose(dose_volume(grid), tmp_path / "dose.dcm", reference=ct)
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.FrameOfReferenceUID == meta["FrameOfReferenceUID"]
    assert header.StudyInstanceUID == meta["StudyInstanceUID"]
    assert header.SeriesInstanceUID != meta["SeriesInstanceUID"]
    assert (str(header.PatientName), header.PatientID) == ("Doe^Jane", "P042")
    path = write_rt_dose(dose_volume(grid), tmp_path / "anonymous.dcm", reference=ct,
                         frame_of_reference_uid=meta["FrameOfReferenceUID"], patient_name="Anonymous", patient_id="X")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert (str(header.PatientName), header.PatientID) == ("Anonymous", "X")


def test_absolute_frame_offsets_of_axial_grids_are_read(tmp_path):
    grid = Grid((5, 4, 3), (2.0, 2.0, 3.0), (-10.0, 20.0, -50.0))
    path = write_rt_dose(dose_volume(grid), tmp_path / "dose.dcm", frame_of_reference_uid=FRAME)
    edit(path, lambda ds: setattr(ds, "GridFrameOffsetVector", [-50.0, -47.0, -44.0]))
    assert read_rt_dose(path).grid.same_as(grid, tolerance_mm=1e-6)
    edit(path, lambda ds: setattr(ds, "GridFrameOffsetVector", [-44.0, -47.0, -50.0]))
    edit(path, lambda ds: setattr(ds, "ImagePositionPatient", [-10.0, 20.0, -44.0]))
    back = read_rt_dose(path)  # decreasing offsets: the same voxels, slices in reverse order
    assert back.grid.index_to_world([0, 0, 2]) == pytest.approx(grid.origin_mm)


# --- refusals ---------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "message"), [
    (-0.5, r"negative doses \(down to -0\.5 Gy\)"),
    (np.nan, r"1 NaN or infinite voxels"),
])
def test_negative_or_nan_dose_is_refused(tmp_path, oblique_grid, value, message):
    dose = dose_volume(oblique_grid(55))
    array = dose.array.copy()
    array[0, 1, 2] = value
    with pytest.raises(InputError, match=message):
        write_rt_dose(dose.with_array(array), tmp_path / "dose.dcm", frame_of_reference_uid=FRAME)
    assert not (tmp_path / "dose.dcm").exists()


def test_image_that_is_not_a_dose_is_refused(tmp_path, oblique_grid):
    activity = Volume(np.ones(oblique_grid(56).shape), oblique_grid(56), "", {"units": "GBq"})
    with pytest.raises(InputError, match=r"absorbed dose in Gy; this image is in 'GBq'"):
        write_rt_dose(activity, tmp_path / "dose.dcm", frame_of_reference_uid=FRAME)


def test_frame_of_reference_is_required_and_must_agree(tmp_path, oblique_grid):
    grid = oblique_grid(57)
    with pytest.raises(InputError, match=r"must name the frame of reference"):
        write_rt_dose(dose_volume(grid), tmp_path / "dose.dcm")
    ct = write_dicom_series(Volume(np.zeros(grid.shape, np.int16), grid, "CT"), tmp_path / "ct")
    with pytest.raises(InputError, match=r"the frame of reference given \(.*\) differs from the referenced series'"):
        write_rt_dose(dose_volume(grid), tmp_path / "dose.dcm", reference=ct, frame_of_reference_uid=FRAME)


def test_unknown_summation_type_is_refused(tmp_path, oblique_grid):
    with pytest.raises(InputError, match=r"unknown DoseSummationType 'TOTAL'"):
        write_rt_dose(dose_volume(oblique_grid(58)), tmp_path / "dose.dcm", frame_of_reference_uid=FRAME,
                      dose_summation_type="TOTAL")


def test_existing_output_is_kept_unless_overwrite(tmp_path, oblique_grid):
    dose = dose_volume(oblique_grid(59))
    path = write_rt_dose(dose, tmp_path / "dose.dcm", frame_of_reference_uid=FRAME)
    with pytest.raises(OutputExistsError, match=r"dose\.dcm exists; choose another name or pass overwrite"):
        write_rt_dose(dose, path, frame_of_reference_uid=FRAME)
    write_rt_dose(dose.with_array(dose.array * 2), path, frame_of_reference_uid=FRAME, overwrite=True)
    assert read_rt_dose(path).array.max() == pytest.approx(2 * dose.array.max(), rel=1e-6)


def test_files_that_are_not_absolute_dose_grids_are_refused(tmp_path, oblique_grid):
    grid = oblique_grid(60)
    ct = write_dicom_series(Volume(np.zeros(grid.shape, np.int16), grid, "CT"), tmp_path / "ct")
    with pytest.raises(InputError, match=r"is not an RT Dose \(modality 'CT'\)"):
        read_rt_dose(next(ct.iterdir()))
    path = write_rt_dose(dose_volume(grid), tmp_path / "dose.dcm", frame_of_reference_uid=FRAME)
    edit(path, lambda ds: setattr(ds, "DoseUnits", "RELATIVE"))
    with pytest.raises(InputError, match=r"holds dose in 'RELATIVE' units; absolute dose in GY is needed"):
        read_rt_dose(path)
    edit(path, lambda ds: setattr(ds, "DoseUnits", "GY"))
    edit(path, lambda ds: setattr(ds, "GridFrameOffsetVector", [0.0, 1.0, 2.0, 4.0, 5.0, 6.0]))
    with pytest.raises(DicomSeriesError, match=r"irregular frame offsets \(1 to 2 mm\)"):
        read_rt_dose(path)
    edit(path, lambda ds: setattr(ds, "GridFrameOffsetVector", [3.0, 4.0, 5.0, 6.0, 7.0, 8.0]))
    with pytest.raises(DicomSeriesError, match=r"absolute GridFrameOffsetVector values on a non-axial grid"):
        read_rt_dose(path)
