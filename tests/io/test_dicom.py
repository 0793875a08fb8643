"""DICOM series and multi-frame files: write/read round trips, series selection and refusals."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from sirtreg.errors import DicomSeriesError, InputError, OutputExistsError
from sirtreg.geometry import Grid, Volume
from sirtreg.io import (
    list_series,
    orient_like,
    read_dicom,
    read_image,
    read_labels,
    write_dicom_nm,
    write_dicom_series,
)


def ct_volume(grid: Grid, seed: int = 0) -> Volume:
    array = np.random.default_rng(seed).integers(-1024, 3000, grid.shape).astype(np.int16)
    return Volume(array, grid, "CT")


FLOAT32_STEP = float(np.spacing(np.float32(5000)))  # rounding of the largest test value in float32


def float_volume(grid: Grid, modality: str, seed: int = 0) -> Volume:
    array = np.random.default_rng(seed).uniform(0, 5000, grid.shape).astype(np.float32)
    return Volume(array, grid, modality)


def edit(path, change) -> None:
    """Apply ``change`` to the dataset in ``path`` and save it in place."""
    dataset = pydicom.dcmread(path)
    change(dataset)
    dataset.save_as(path)


# --- round trips ----------------------------------------------------------------------
def test_ct_series_round_trip_keeps_geometry_and_hu(tmp_path, oblique_grid, corner_distance_mm):
    volume = ct_volume(oblique_grid(10))
    frame = generate_uid()
    folder = write_dicom_series(volume, tmp_path / "ct", series_description="synthetic CT", frame_of_reference_uid=frame)
    assert len(list(folder.glob("*.dcm"))) == volume.grid.size[2]
    back = read_dicom(folder)
    assert back.grid.same_as(volume.grid, tolerance_mm=1e-4)
    assert corner_distance_mm(back.grid, volume.grid) < 1e-4
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.modality == "CT"
    assert back.meta["FrameOfReferenceUID"] == frame and back.meta["units"] == "HU"
    header = pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True)
    assert str(header.PatientName) == "Anonymous" and header.PatientID == "ANON"


def test_mr_series_round_trip_within_the_rescale_step(tmp_path, oblique_grid):
    volume = float_volume(oblique_grid(11), "MR")
    folder = write_dicom_series(volume, tmp_path / "mr")
    slope = float(pydicom.dcmread(next(folder.glob("*.dcm")), stop_before_pixels=True).RescaleSlope)
    back = read_image(folder)
    assert back.modality == "MR" and back.grid.same_as(volume.grid, tolerance_mm=1e-4)
    assert np.max(np.abs(back.array - volume.array)) <= slope / 2 + FLOAT32_STEP


def test_series_is_read_alike_by_simpleitk(tmp_path, oblique_grid):
    volume = float_volume(oblique_grid(12), "MR")
    folder = write_dicom_series(volume, tmp_path / "mr")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    ours = read_dicom(folder)
    np.testing.assert_allclose(image.GetOrigin(), ours.grid.origin_mm, atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), ours.grid.direction, atol=1e-6)
    np.testing.assert_allclose(image.GetSpacing(), ours.grid.spacing_mm, atol=1e-4)
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), ours.array, atol=1e-3)


def test_pixels_fall_back_to_simpleitk_when_pydicom_cannot_decode(tmp_path, oblique_grid, monkeypatch):
    volume = float_volume(oblique_grid(13), "MR")
    folder = write_dicom_series(volume, tmp_path / "mr")
    expected = read_dicom(folder).array

    def no_decoder(self):
        raise NotImplementedError("no decoder for this transfer syntax")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_decoder))
    np.testing.assert_allclose(read_dicom(folder).array, expected, atol=1e-3)


def test_left_handed_volume_is_written_with_reversed_slices(tmp_path, oblique_grid):
    volume = ct_volume(oblique_grid(14, left_handed=True))
    back = read_dicom(write_dicom_series(volume, tmp_path / "ct"))
    np.testing.assert_array_equal(orient_like(back, volume.grid).array, volume.array)


def test_nm_multi_frame_round_trip_within_half_a_slope(tmp_path, oblique_grid):
    volume = float_volume(oblique_grid(15), "NM")
    path = write_dicom_nm(volume, tmp_path / "spect.dcm", series_description="MAA SPECT")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert header.NumberOfFrames == volume.grid.size[2] and "ImagePositionPatient" not in header
    back = read_image(path)
    assert back.modality == "NM" and back.meta["SeriesDescription"] == "MAA SPECT"
    assert back.grid.same_as(volume.grid, tolerance_mm=1e-4)
    assert np.max(np.abs(back.array - volume.array)) <= float(header.RescaleSlope) / 2 + FLOAT32_STEP


def test_nm_geometry_at_top_level_and_real_world_value_mapping(tmp_path, oblique_grid):
    volume = float_volume(oblique_grid(16), "NM")
    path = write_dicom_nm(volume, tmp_path / "spect.dcm")

    def move(dataset):
        detector = dataset.DetectorInformationSequence[0]
        dataset.ImagePositionPatient = detector.ImagePositionPatient
        dataset.ImageOrientationPatient = detector.ImageOrientationPatient
        del dataset.DetectorInformationSequence
        mapping, units = Dataset(), Dataset()
        mapping.RealWorldValueSlope = float(dataset.RescaleSlope)
        mapping.RealWorldValueIntercept = 0.0
        units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = "{counts}", "UCUM", "Counts"
        mapping.MeasurementUnitsCodeSequence = [units]
        dataset.RealWorldValueMappingSequence = [mapping]
        del dataset.RescaleSlope, dataset.RescaleIntercept

    edit(path, move)
    back = read_dicom(path)
    assert back.grid.same_as(volume.grid, tolerance_mm=1e-4) and back.meta["units"] == "{counts}"
    np.testing.assert_allclose(back.array, volume.array, atol=0.1)


def test_enhanced_multi_frame_is_placed_frame_by_frame(tmp_path):
    grid = Grid((4, 3, 5), (0.7, 0.9, 1.5), (10.0, -20.0, 30.0), (0, 1, 0, 0, 0, -1, -1, 0, 0))
    array = np.arange(np.prod(grid.shape), dtype=np.int16).reshape(grid.shape)
    dataset = pydicom.dcmread(write_dicom_nm(Volume(array, grid), tmp_path / "nm.dcm"))
    dataset.Modality = "CT"
    shared, measures, orientation, transform = Dataset(), Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [0.9, 0.7]
    orientation.ImageOrientationPatient = dataset.DetectorInformationSequence[0].ImageOrientationPatient
    transform.RescaleSlope, transform.RescaleIntercept = 1, -1024
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = [measures], [orientation]
    shared.PixelValueTransformationSequence = [transform]
    dataset.SharedFunctionalGroupsSequence = [shared]
    order = [3, 0, 4, 1, 2]  # frames stored out of order
    frames = []
    for k in order:
        item, position = Dataset(), Dataset()
        position.ImagePositionPatient = [float(v) for v in grid.index_to_world([0, 0, k])]
        item.PlanePositionSequence = [position]
        frames.append(item)
    dataset.PerFrameFunctionalGroupsSequence = frames
    dataset.PixelData = array[order].astype("<i2").tobytes()
    dataset.PixelRepresentation = 1
    for keyword in ("DetectorInformationSequence", "RescaleSlope", "RescaleIntercept", "NumberOfSlices"):
        delattr(dataset, keyword)
    dataset.save_as(tmp_path / "enhanced.dcm")
    back = read_dicom(tmp_path / "enhanced.dcm")
    assert back.grid.same_as(grid, tolerance_mm=1e-4)
    np.testing.assert_array_equal(back.array, array.astype(np.int32) - 1024)


def test_modality_can_be_overridden(tmp_path, oblique_grid):
    folder = write_dicom_series(ct_volume(oblique_grid(17)), tmp_path / "ct")
    assert read_dicom(folder, modality="PT").modality == "PT"


# --- several series ----------------------------------------------------------------
@pytest.fixture
def two_series(tmp_path, oblique_grid):
    folder = tmp_path / "study"
    folder.mkdir()
    for description, seed in (("Liver arterial", 20), ("Liver venous", 21)):
        written = write_dicom_series(ct_volume(oblique_grid(seed), seed), tmp_path / description,
                                     series_description=description)
        for path in written.iterdir():
            path.rename(folder / f"{description[-3:]}{path.name}")
    (folder / "README.txt").write_text("not DICOM")
    return folder


def test_series_are_listed_without_identifiers(two_series):
    found = list_series(two_series)
    assert [(s.modality, s.description, s.n_files) for s in found] == [
        ("CT", "Liver arterial", 6), ("CT", "Liver venous", 6)]
    assert "Anonymous" not in found[0].summary()


def test_series_are_selected_by_uid_or_description(two_series):
    uid = list_series(two_series)[1].uid
    assert read_dicom(two_series, series=uid).meta["SeriesInstanceUID"] == uid
    assert read_dicom(two_series, series="Liver venous").meta["SeriesInstanceUID"] == uid
    assert read_dicom(two_series, series="VENOUS").meta["SeriesInstanceUID"] == uid


def test_ambiguous_selection_is_refused_with_a_listing(two_series):
    with pytest.raises(DicomSeriesError, match=r"holds 2 series; choose one by UID or description: CT 'Liver "
                                               r"arterial', series number 1, 6 slices, uid .*; CT 'Liver venous', "
                                               r"series number 1, 6 slices"):
        read_dicom(two_series)
    with pytest.raises(DicomSeriesError, match=r"'liver' matches 2 series in .*; choose one by UID"):
        read_dicom(two_series, series="liver")
    with pytest.raises(DicomSeriesError, match=r"no series matches 'portal' in .*; found: CT 'Liver arterial'"):
        read_dicom(two_series, series="portal")


def test_one_slice_file_brings_its_series(two_series):
    one = next(two_series.glob("ial*.dcm"))
    volume = read_image(one)
    assert volume.meta["SeriesDescription"] == "Liver arterial" and volume.grid.size[2] == 6


# --- series without SeriesInstanceUID ---------------------------------------------------
def without_uid(folder, prefix: str, into, **changes) -> None:
    """Blank the SeriesInstanceUID of the files in ``folder``, apply ``changes`` and move them into ``into``."""
    def change(dataset):
        for keyword, value in {"SeriesInstanceUID": "", **changes}.items():
            setattr(dataset, keyword, value)

    into.mkdir(exist_ok=True)
    for path in sorted(folder.iterdir()):
        edit(path, change)
        path.rename(into / f"{prefix}{path.name}")
    folder.rmdir()


@pytest.fixture
def same_positions():
    """Two CT series written on one grid (same positions), in one study and frame of reference."""
    grid = Grid((6, 5, 20), (0.8, 0.8, 2.0), (0.0, 0.0, 0.0))
    uids = {"frame_of_reference_uid": generate_uid(), "study_instance_uid": generate_uid()}
    return grid, uids


def test_two_series_without_uid_are_refused_listing_both_and_each_is_selectable(tmp_path, same_positions):
    grid, uids = same_positions
    study = tmp_path / "study"
    for k, description in enumerate(("arterial", "venous")):
        folder = write_dicom_series(ct_volume(grid, k), tmp_path / description, series_description=description, **uids)
        without_uid(folder, description[:3], study, SeriesNumber=3 + k, SeriesTime="101500")
    found = list_series(study)
    assert [(s.description, s.number, s.uid, s.n_slices) for s in found] == [("arterial", "3", "", 20),
                                                                             ("venous", "4", "", 20)]
    with pytest.raises(DicomSeriesError, match=r"holds 2 series; choose one by UID, or by description or series "
                                               r"number \(series without UID\): CT 'arterial', series number 3, "
                                               r"20 slices, uid \(none\); CT 'venous', series number 4, 20 slices"):
        read_dicom(study)
    for k, selector in ((0, "arterial"), (1, "4"), (1, "VEN")):
        volume = read_dicom(study, series=selector)
        assert volume.grid.size == (6, 5, 20)
        np.testing.assert_array_equal(volume.array, ct_volume(grid, k).array)
    assert read_image(next(study.glob("ven*.dcm"))).meta["SeriesDescription"] == "venous"


def test_one_series_without_uid_reads_and_is_selected_by_its_number(tmp_path, oblique_grid):
    volume = ct_volume(oblique_grid(22))
    folder = write_dicom_series(volume, tmp_path / "ct")
    without_uid(folder, "", tmp_path / "blank")
    for selector in (None, "1", ""):
        back = read_dicom(tmp_path / "blank", series=selector)
        assert "SeriesInstanceUID" not in back.meta
        np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_array_equal(read_image(tmp_path / "blank" / "00003.dcm").array, volume.array)


def test_series_without_uid_told_apart_by_reconstruction_are_split(tmp_path, same_positions):
    grid, uids = same_positions
    study = tmp_path / "study"
    for k, kernel in enumerate(("B30f", "B70f")):
        folder = write_dicom_series(ct_volume(grid, k), tmp_path / kernel, series_description="CT", **uids)
        without_uid(folder, kernel, study, SeriesTime="101500", ConvolutionKernel=kernel)
    assert [s.n_slices for s in list_series(study)] == [20, 20]
    np.testing.assert_array_equal(read_image(next(study.glob("B70f*.dcm"))).array, ct_volume(grid, 1).array)


@pytest.mark.parametrize("offset_mm, clash", [(0.0, "20 repeated slice positions and 20 repeated instance numbers"),
                                              (1.0, "20 repeated instance numbers")])
def test_series_without_uid_that_cannot_be_told_apart_are_refused(tmp_path, same_positions, offset_mm, clash):
    grid, uids = same_positions
    study = tmp_path / "study"
    for k in range(2):
        shifted = Grid(grid.size, grid.spacing_mm, (0.0, 0.0, k * offset_mm))
        folder = write_dicom_series(ct_volume(shifted, k), tmp_path / str(k), series_description="CT", **uids)
        without_uid(folder, str(k), study, SeriesTime="101500")
    message = (rf"CT 'CT', series number 1, 40 slices, uid \(none\) in .*: its 40 files have no SeriesInstanceUID "
               rf"and show {clash}: several series .*; put the files of each series in a folder of its own")
    with pytest.raises(DicomSeriesError, match=message):
        read_dicom(study)
    with pytest.raises(DicomSeriesError, match=message):
        read_image(study / "000001.dcm")


# --- refusals -----------------------------------------------------------------------
def test_truncated_series_says_where_and_how_many(tmp_path):
    grid = Grid((6, 5, 10), (0.8, 0.8, 2.0), (0.0, 0.0, 0.0))
    folder = write_dicom_series(ct_volume(grid), tmp_path / "ct")
    (folder / "00005.dcm").unlink()
    (folder / "00006.dcm").unlink()
    with pytest.raises(DicomSeriesError, match=r"is truncated: 2 slice\(s\) missing, the first gap between 6\.00 "
                                               r"and 12\.00 mm along the slice normal \(after slice 4 of 8\)"):
        read_dicom(folder)


def test_mixed_orientations_are_refused(tmp_path, oblique_grid):
    folder = write_dicom_series(ct_volume(oblique_grid(30)), tmp_path / "ct")
    edit(folder / "00002.dcm", lambda ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0, -1]))
    with pytest.raises(DicomSeriesError, match=r"mixes orientations: 5 slices like the first, 1 others"):
        read_dicom(folder)


def test_mixed_image_sizes_are_refused(tmp_path, oblique_grid):
    first = write_dicom_series(ct_volume(oblique_grid(31)), tmp_path / "a")
    second = write_dicom_series(ct_volume(oblique_grid(32, size=(4, 4, 6))), tmp_path / "b")
    uid = pydicom.dcmread(first / "00001.dcm").SeriesInstanceUID
    edit(second / "00001.dcm", lambda ds: setattr(ds, "SeriesInstanceUID", uid))
    with pytest.raises(DicomSeriesError, match=r"mixes image sizes \(columns x rows\): 9x7 \(6 slices\), 4x4 \(1 slices\)"):
        read_dicom([*first.iterdir(), second / "00001.dcm"])


def test_duplicate_positions_are_refused(tmp_path, oblique_grid):
    folder = write_dicom_series(ct_volume(oblique_grid(33)), tmp_path / "ct")
    shutil.copy(folder / "00003.dcm", folder / "00099.dcm")
    edit(folder / "00099.dcm", lambda ds: setattr(ds, "SOPInstanceUID", generate_uid()))
    with pytest.raises(DicomSeriesError, match=r"has 1 duplicate slice positions"):
        read_dicom(folder)


def test_non_uniform_spacing_is_refused(tmp_path):
    grid = Grid((6, 5, 6), (0.8, 0.8, 2.0), (0.0, 0.0, 0.0))
    folder = write_dicom_series(ct_volume(grid), tmp_path / "ct")
    edit(folder / "00004.dcm", lambda ds: setattr(ds, "ImagePositionPatient", [0, 0, 6.8]))
    with pytest.raises(DicomSeriesError, match=r"non-uniform slice spacing \(1\.2 to 2\.8 mm\)"):
        read_dicom(folder)


def test_single_slice_is_a_2d_image(tmp_path, oblique_grid):
    folder = write_dicom_series(ct_volume(oblique_grid(34)), tmp_path / "ct")
    with pytest.raises(DicomSeriesError, match=r"is a single slice, a 2D image"):
        read_dicom([folder / "00001.dcm"])


def test_folder_without_dicom_images_is_refused(tmp_path):
    (tmp_path / "inner").mkdir()
    (tmp_path / "notes.txt").write_text("nothing")
    with pytest.raises(DicomSeriesError, match=r"no DICOM image files in .* \(it has 1 subfolders: pass one of them\)"):
        read_image(tmp_path)


def test_nm_file_with_several_energy_windows_is_refused(tmp_path, oblique_grid):
    path = write_dicom_nm(float_volume(oblique_grid(35), "NM"), tmp_path / "nm.dcm")
    edit(path, lambda ds: setattr(ds, "NumberOfSlices", 3))
    with pytest.raises(DicomSeriesError, match=r"holds 6 frames for 3 slices"):
        read_dicom(path)


def test_outputs_are_not_overwritten(tmp_path, oblique_grid):
    volume = ct_volume(oblique_grid(36))
    folder = write_dicom_series(volume, tmp_path / "ct")
    with pytest.raises(OutputExistsError, match=r"ct exists; choose another name or pass overwrite"):
        write_dicom_series(volume, folder)
    write_dicom_series(volume, folder, overwrite=True)
    assert len(list(folder.iterdir())) == volume.grid.size[2]
    (tmp_path / "ct" / "notes.txt").write_text("keep me")
    with pytest.raises(OutputExistsError, match=r"holds other things than DICOM files; not replacing it"):
        write_dicom_series(volume, folder, overwrite=True)
    path = write_dicom_nm(volume, tmp_path / "nm.dcm")
    with pytest.raises(OutputExistsError, match=r"nm\.dcm exists"):
        write_dicom_nm(volume, path)
    assert not list(tmp_path.glob(".*partial*"))


def test_non_finite_values_are_refused(tmp_path, oblique_grid):
    volume = float_volume(oblique_grid(37), "MR")
    volume.array[0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or infinite"):
        write_dicom_series(volume, tmp_path / "mr")


# --- real data ----------------------------------------------------------------------
def test_real_ct_series_overlays_its_label_map(shared_data):
    folder = shared_data / "totalsegmentator" / "example_ct_dicom"
    labels = read_labels(shared_data / "totalsegmentator" / "example_seg_dicom.nii.gz")
    ct = read_image(folder)
    assert ct.modality == "CT" and ct.grid.size == (512, 512, 20)
    np.testing.assert_allclose(ct.grid.spacing_mm, (0.9765625, 0.9765625, 2.0))
    on_labels = orient_like(ct, labels.grid)
    assert on_labels.grid.same_as(labels.grid)
    liver_hu = float(np.median(on_labels.array[labels.array == 5]))
    assert 20 < liver_hu < 200  # soft tissue: the label map sits on the liver


def test_real_truncated_series_is_refused(shared_data, tmp_path):
    source = shared_data / "totalsegmentator" / "example_ct_dicom"
    shutil.copytree(source, tmp_path / "ct")
    files = sorted((tmp_path / "ct").iterdir())
    (tmp_path / "ct" / files[10].name).unlink()
    with pytest.raises(DicomSeriesError, match=r"'CT Body 3\.0' is truncated: 1 slice\(s\) missing, the first gap "
                                               r"between -788\.50 and -784\.50 mm along the slice normal \(after slice 9 of 19\)"):
        read_image(tmp_path / "ct")


def test_real_three_slice_ct(shared_data):
    ct = read_image(shared_data / "dcmqi" / "ct-3slice")
    assert ct.modality == "CT" and ct.grid.size == (512, 512, 3)
    assert ct.array.min() >= -3024 and ct.meta["units"] == "HU"


def test_slices_stating_one_frame_are_still_a_series(tmp_path, oblique_grid):
    volume = ct_volume(oblique_grid(18))
    folder = write_dicom_series(volume, tmp_path / "ct")
    for path in folder.iterdir():
        edit(path, lambda ds: setattr(ds, "NumberOfFrames", 1))
    np.testing.assert_array_equal(read_dicom(folder).array, volume.array)
