"""DICOM SEG: write/read round trips on a CT series, the real dcmqi SEG, and refusals."""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from sirtreg.errors import GeometryMismatchError, InputError, OutputExistsError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import orient_like, read_dicom, read_labels, write_dicom_series
from sirtreg.io.dicom_seg import read_dicom_seg, read_series_headers, series_grid, write_dicom_seg
from sirtreg.io.rt_dose import write_rt_dose
from sirtreg.io.rtstruct import read_rtstruct, write_rtstruct

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def ct_series(tmp_path, grid: Grid, name: str = "ct", **kwargs):
    volume = Volume(np.zeros(grid.shape, dtype=np.int16), grid, "CT")
    return write_dicom_series(volume, tmp_path / name, patient_name="Doe^Jane", patient_id="P042", **kwargs)


def lesions_and_liver(grid: Grid) -> LabelVolume:
    """Label values 2, 5 and 9 (not 1..N) with names; the last slice holds no label."""
    array = np.zeros(grid.shape, dtype=np.int16)
    array[1:4, 2:5, 3:7] = 5
    array[2:5, 0:2, 0:3] = 2
    array[0, 0, 0] = 9
    return LabelVolume(array, grid, labels={2: "Tumor 1", 5: "liver", 9: "spot"})


SEGMENT_OF_VALUE = {2: 1, 5: 2, 9: 3}  # label values become segments 1..N in ascending order


def as_segments(labels: LabelVolume) -> np.ndarray:
    return np.vectorize(lambda v: SEGMENT_OF_VALUE.get(int(v), 0))(labels.array)


@pytest.fixture
def oblique_ct(tmp_path, oblique_grid):
    grid = oblique_grid(40)
    return grid, ct_series(tmp_path, grid)


# --- round trips ----------------------------------------------------------------------
def test_round_trip_onto_the_reference_series(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    labels = lesions_and_liver(grid)
    path = write_dicom_seg(labels, folder, tmp_path / "seg.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "seg.dcm"]  # no temporary left behind
    for reference in (folder, read_dicom(folder)):
        back = read_dicom_seg(path, reference=reference)
        assert back.grid.same_as(grid, tolerance_mm=1e-4)
        np.testing.assert_array_equal(back.array, as_segments(labels))
        assert back.labels == {1: "Tumor 1", 2: "liver", 3: "spot"}


def test_written_seg_is_a_valid_highdicom_segmentation_of_its_series(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    path = write_dicom_seg(lesions_and_liver(grid), folder, tmp_path / "seg.dcm", algorithm_name="liver U-Net")
    dataset = pydicom.dcmread(path)
    seg = hd.seg.Segmentation.from_dataset(dataset)
    ct_headers = read_series_headers(folder)
    assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
    assert seg.segment_numbers == [1, 2, 3]
    assert dataset.FrameOfReferenceUID == ct_headers[0].FrameOfReferenceUID
    assert dataset.StudyInstanceUID == ct_headers[0].StudyInstanceUID
    assert str(dataset.PatientName) == "Doe^Jane" and dataset.PatientID == "P042"
    referenced = dataset.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == ct_headers[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} <= {
        h.SOPInstanceUID for h in ct_headers}
    ct_positions = np.array([[float(v) for v in h.ImagePositionPatient] for h in ct_headers])
    for frame in dataset.PerFrameFunctionalGroupsSequence:  # each frame cites the CT slice at its position
        position = np.array([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        nearest = int(np.argmin(np.linalg.norm(ct_positions - position, axis=1)))
        assert np.linalg.norm(ct_positions[nearest] - position) < 1e-3
        source = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == ct_headers[nearest].SOPInstanceUID
    liver = seg.get_segment_description(2)
    assert liver.segment_label == "liver" and liver.segmented_property_type == codes.SCT.Liver
    assert seg.get_segment_description(1).segmented_property_type == codes.SCT.Lesion
    assert liver.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    assert liver.algorithm_identification[0].AlgorithmName == "liver U-Net"


def test_without_a_reference_the_grid_spans_the_stored_frames(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    labels = lesions_and_liver(grid)
    back = read_dicom_seg(write_dicom_seg(labels, folder, tmp_path / "seg.dcm"))
    frames = grid.crop((0, 0, 0), (grid.size[0], grid.size[1], grid.size[2] - 1))  # the empty last slice is omitted
    on_frames = orient_like(back, frames)
    np.testing.assert_array_equal(on_frames.array, as_segments(labels)[:-1])
    assert back.meta["ReferencedSeriesInstanceUID"] == read_dicom(folder).meta["SeriesInstanceUID"]


def test_same_voxels_in_another_axis_order_are_reordered(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    labels = lesions_and_liver(grid)
    direction = grid.direction_matrix * np.array([1.0, -1.0, -1.0])
    flipped = Grid(grid.size, grid.spacing_mm, tuple(grid.index_to_world([0, grid.size[1] - 1, grid.size[2] - 1])),
                   tuple(direction.reshape(-1)))
    stored = LabelVolume(labels.array[::-1, ::-1].copy(), flipped, labels=labels.labels)
    back = read_dicom_seg(write_dicom_seg(stored, folder, tmp_path / "seg.dcm"), reference=folder)
    np.testing.assert_array_equal(back.array, as_segments(labels))


def test_names_and_patient_can_be_replaced(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    path = write_dicom_seg(lesions_and_liver(grid), folder, tmp_path / "seg.dcm", segment_names={9: "landmark"},
                           patient_name="Anonymous", patient_id="ANON", series_description="lesions")
    header = pydicom.dcmread(path, stop_before_pixels=True)
    assert str(header.PatientName) == "Anonymous" and header.PatientID == "ANON"
    assert header.SeriesDescription == "lesions"
    assert read_dicom_seg(path).labels[3] == "landmark"


def test_the_referenced_series_is_chosen_in_a_folder_of_several(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    other = ct_series(tmp_path, grid, "other", series_description="other")
    for source, prefix in ((folder, "a"), (other, "b")):
        for file in source.iterdir():
            file.rename(tmp_path / f"{prefix}{file.name}")
    with pytest.raises(InputError, match="holds 2 series"):
        write_dicom_seg(lesions_and_liver(grid), tmp_path, tmp_path / "out" / "seg.dcm")
    path = write_dicom_seg(lesions_and_liver(grid), tmp_path, tmp_path / "out" / "seg.dcm", series="other")
    back = read_dicom_seg(path, reference=tmp_path)
    assert back.meta["ReferencedSeriesInstanceUID"] == read_dicom(tmp_path, series="other").meta["SeriesInstanceUID"]


# --- series with empty UIDs -----------------------------------------------------------------
def blank(folder, *keywords: str) -> None:
    """Empty ``keywords`` in every file of ``folder`` (the file meta information keeps its UIDs)."""
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        for keyword in keywords:
            setattr(dataset, keyword, "")
        dataset.save_as(path)


def test_series_with_empty_sop_class_is_written_as_seg_and_read_back(tmp_path, oblique_ct, caplog):
    grid, folder = oblique_ct
    blank(folder, "SOPClassUID")
    labels = lesions_and_liver(grid)
    path = write_dicom_seg(labels, folder, tmp_path / "seg.dcm")
    assert "empty SOPClassUID" in caplog.text
    dataset = pydicom.dcmread(path)
    references = dataset.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert {str(r.ReferencedSOPClassUID) for r in references} == {CT_IMAGE_STORAGE}
    for reference in (folder, read_dicom(folder)):
        np.testing.assert_array_equal(read_dicom_seg(path, reference=reference).array, as_segments(labels))


def test_datasets_without_sop_class_or_file_meta_take_it_from_the_modality(tmp_path, oblique_grid):
    grid = oblique_grid(41)
    volume = Volume(np.zeros(grid.shape, dtype=np.int16), grid, "MR")
    headers = read_series_headers(write_dicom_series(volume, tmp_path / "mr"))
    for header in headers:
        header.SOPClassUID = ""
        del header.file_meta
    path = write_dicom_seg(lesions_and_liver(grid), headers, tmp_path / "seg.dcm")
    references = pydicom.dcmread(path).ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert {str(r.ReferencedSOPClassUID) for r in references} == {MR_IMAGE_STORAGE}
    assert all(h.SOPClassUID == "" for h in headers)  # the caller's datasets are left as they were
    for header in headers:
        header.Modality = "OT"
    with pytest.raises(InputError, match=r"has no SOPClassUID and its modality 'OT' does not say which"):
        write_dicom_seg(lesions_and_liver(grid), headers, tmp_path / "other.dcm")
    assert not (tmp_path / "other.dcm").exists()


def test_objects_on_a_series_without_uids_cite_the_same_derived_uids(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    blank(folder, "SOPClassUID", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")
    labels = lesions_and_liver(grid)
    seg = pydicom.dcmread(write_dicom_seg(labels, folder, tmp_path / "seg.dcm"), stop_before_pixels=True)
    rtstruct = pydicom.dcmread(write_rtstruct(labels, folder, tmp_path / "rtstruct.dcm"))
    dose = Volume(np.ones(grid.shape, dtype=np.float32), grid, "RTDOSE", {"units": "Gy"})
    rt_dose = pydicom.dcmread(write_rt_dose(dose, tmp_path / "dose.dcm", reference=folder), stop_before_pixels=True)
    study = rtstruct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert seg.StudyInstanceUID == rtstruct.StudyInstanceUID == rt_dose.StudyInstanceUID != ""
    assert study.ReferencedSOPInstanceUID == seg.StudyInstanceUID
    series_uid = study.RTReferencedSeriesSequence[0].SeriesInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid != ""
    instances = {pydicom.dcmread(p, stop_before_pixels=True).file_meta.MediaStorageSOPInstanceUID
                 for p in folder.iterdir()}
    cited = {str(i.ReferencedSOPInstanceUID) for i in study.RTReferencedSeriesSequence[0].ContourImageSequence}
    assert cited <= instances and {str(i.ReferencedSOPInstanceUID) for i in
                                   seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence} <= instances
    np.testing.assert_array_equal(read_dicom_seg(tmp_path / "seg.dcm", reference=folder).array, as_segments(labels))
    assert read_rtstruct(tmp_path / "rtstruct.dcm", reference=folder).grid.same_as(grid, tolerance_mm=1e-4)


# --- refusals ---------------------------------------------------------------------------
def test_label_map_off_the_reference_grid_is_refused(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    shifted = Grid(grid.size, grid.spacing_mm, tuple(grid.index_to_world([0.5, 0, 0])), grid.direction)
    labels = lesions_and_liver(grid)
    with pytest.raises(GeometryMismatchError, match=r"is not on the grid of the referenced series .*resample it"):
        write_dicom_seg(LabelVolume(labels.array, shifted), folder, tmp_path / "seg.dcm")
    assert not (tmp_path / "seg.dcm").exists()


def test_empty_label_map_is_refused(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    with pytest.raises(InputError, match="the label map is empty"):
        write_dicom_seg(LabelVolume(np.zeros(grid.shape, np.uint8), grid), folder, tmp_path / "seg.dcm")


def test_existing_output_is_kept_unless_overwrite(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    path = write_dicom_seg(lesions_and_liver(grid), folder, tmp_path / "seg.dcm")
    with pytest.raises(OutputExistsError, match=r"seg\.dcm exists; choose another name or pass overwrite"):
        write_dicom_seg(lesions_and_liver(grid), folder, path)
    write_dicom_seg(lesions_and_liver(grid), folder, path, segment_names={2: "Tumor A"}, overwrite=True)
    assert read_dicom_seg(path).labels[1] == "Tumor A"


def test_seg_of_another_series_is_refused(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    path = write_dicom_seg(lesions_and_liver(grid), folder, tmp_path / "seg.dcm")
    frame = read_dicom(folder).meta["FrameOfReferenceUID"]
    same_frame = ct_series(tmp_path, grid, "same-frame", frame_of_reference_uid=frame)
    with pytest.raises(InputError, match=r"seg\.dcm references series .*, not the reference series .*carry it over"):
        read_dicom_seg(path, reference=read_dicom(same_frame))
    with pytest.raises(InputError, match=r"does not hold the series the SEG references .*; found: CT"):
        read_dicom_seg(path, reference=same_frame)
    other_scan = ct_series(tmp_path, grid, "other-scan")
    with pytest.raises(InputError, match=r"seg\.dcm lies in frame of reference .*drawn on another scan"):
        read_dicom_seg(path, reference=read_dicom(other_scan))


def test_reference_that_does_not_hold_the_frames_is_refused(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    path = write_dicom_seg(lesions_and_liver(grid), folder, tmp_path / "seg.dcm")
    reference = read_dicom(folder)
    small = reference.crop((0, 0, 2), grid.size)
    with pytest.raises(GeometryMismatchError, match=r"seg\.dcm .* does not lie on the voxels of the reference"):
        read_dicom_seg(path, reference=small)


def test_files_that_are_not_seg_are_refused(tmp_path, oblique_ct):
    _, folder = oblique_ct
    with pytest.raises(InputError, match=r"is not a DICOM SEG \(modality 'CT'\)"):
        read_dicom_seg(next(folder.iterdir()))
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match=r"cannot read notes\.txt as DICOM"):
        read_dicom_seg(tmp_path / "notes.txt")


def _highdicom_seg(folder, pixels: np.ndarray, segmentation_type: str, n_segments: int, path):
    headers = read_series_headers(folder)
    grid = series_grid(headers)
    affine = grid.index_to_world_matrix
    affine[:3, :3] = affine[:3, 2::-1].copy()
    volume = hd.Volume(pixels, affine, coordinate_system="PATIENT",
                       frame_of_reference_uid=headers[0].FrameOfReferenceUID,
                       channels={"SegmentNumber": list(range(1, n_segments + 1))})
    descriptions = [hd.seg.SegmentDescription(n, f"s{n}", codes.SCT.Tissue, codes.SCT.Tissue, "MANUAL")
                    for n in range(1, n_segments + 1)]
    hd.seg.Segmentation(headers, volume, segmentation_type, descriptions, generate_uid(), 1, generate_uid(), 1,
                        "test", "test", "0", "0").save_as(path)
    return path


def test_overlapping_and_fractional_segments_are_refused(tmp_path, oblique_ct):
    grid, folder = oblique_ct
    overlapping = np.zeros((*grid.shape, 2), dtype=np.uint8)
    overlapping[1:3, 1:3, 1:3, :] = 1
    path = _highdicom_seg(folder, overlapping, "BINARY", 2, tmp_path / "overlap.dcm")
    with pytest.raises(InputError, match=r"cannot read overlap\.dcm as one label map: .*overlap"):
        read_dicom_seg(path)
    fractional = np.zeros((*grid.shape, 1), dtype=np.float32)
    fractional[1:3, 1:3, 1:3, 0] = 0.7
    path = _highdicom_seg(folder, fractional, "FRACTIONAL", 1, tmp_path / "fractional.dcm")
    with pytest.raises(InputError, match=r"fractional\.dcm is a FRACTIONAL segmentation"):
        read_dicom_seg(path)


# --- real data ----------------------------------------------------------------------
def test_real_dcmqi_seg_holds_the_liver_of_the_nrrd(shared_data):
    folder = shared_data / "dcmqi"
    ct = read_dicom(folder / "ct-3slice")
    nrrd = orient_like(read_labels(folder / "liver_seg.nrrd"), ct.grid)
    on_series = read_dicom_seg(folder / "liver.dcm", reference=folder / "ct-3slice")
    assert on_series.grid.same_as(ct.grid) and on_series.labels == {1: "Liver"}
    np.testing.assert_array_equal(on_series.array, nrrd.array)
    assert np.count_nonzero(on_series.array) == 107098
    own_grid = read_dicom_seg(folder / "liver.dcm")  # frames stored top-down: same voxels in another order
    np.testing.assert_array_equal(orient_like(own_grid, ct.grid).array, nrrd.array)


def test_real_label_map_written_on_the_real_series_reads_back(shared_data, tmp_path):
    folder = shared_data / "dcmqi"
    labels = read_labels(folder / "liver_spine_seg.nrrd", labels={1: "liver", 2: "spine"})
    path = write_dicom_seg(labels, folder / "ct-3slice", tmp_path / "seg.dcm")
    back = read_dicom_seg(path, reference=read_dicom(folder / "ct-3slice"))
    np.testing.assert_array_equal(back.array, orient_like(labels, back.grid).array)
    assert back.labels == {1: "liver", 2: "spine"}
    assert str(pydicom.dcmread(path, stop_before_pixels=True).PatientID) == "99000"


def test_real_ct_with_empty_sop_class_and_uids_gets_a_seg(shared_data, tmp_path):
    folder = shared_data / "totalsegmentator" / "example_ct_dicom"
    assert pydicom.dcmread(next(folder.iterdir()), stop_before_pixels=True).SOPClassUID == ""  # the case at hand
    ct = read_dicom(folder)
    labels = orient_like(read_labels(shared_data / "totalsegmentator" / "example_seg_dicom.nii.gz"), ct.grid)
    liver = LabelVolume((labels.array == 5).astype(np.uint8), ct.grid, labels={1: "liver"})
    path = write_dicom_seg(liver, folder, tmp_path / "seg.dcm", algorithm_name="TotalSegmentator")
    references = pydicom.dcmread(path).ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert {str(r.ReferencedSOPClassUID) for r in references} == {CT_IMAGE_STORAGE}
    back = read_dicom_seg(path, reference=folder)
    assert back.labels == {1: "liver"} and back.grid.same_as(ct.grid)
    np.testing.assert_array_equal(back.array, liver.array)
