"""RTSTRUCT: write/read round trips on axial, oblique and sagittal series, holes, known rasters, and refusals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from scipy.spatial.transform import Rotation

from sirtreg.errors import GeometryMismatchError, InputError, OutputExistsError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import Segmentation, orient_like, read_dicom, read_labels, write_dicom_series
from sirtreg.io.dicom_seg import read_series_headers
from sirtreg.io.rtstruct import read_rtstruct, write_rtstruct
from sirtreg.metrics import dice

AXIAL = Grid((20, 18, 6), (1.0, 1.0, 2.0), (-10.0, 20.0, -40.0))
LARGE = Grid((48, 44, 14), (0.9, 0.8, 2.5), (-30.0, 12.0, 80.0))  # holds the whole phantom
SAGITTAL = (0.0, 0.0, -1.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0)  # rows along y, columns down z, slices along x


def ct_series(tmp_path: Path, grid: Grid, name: str = "ct", **kwargs) -> Path:
    volume = Volume(np.zeros(grid.shape, dtype=np.int16), grid, "CT")
    return write_dicom_series(volume, tmp_path / name, patient_name="Doe^Jane", patient_id="P042", **kwargs)


def phantom(grid: Grid) -> LabelVolume:
    """Three ROIs placed in mm about the grid centre: a hollow ball with an island, a box and a small ball."""
    points = grid.world_coordinates(np.float64) - grid.center_mm
    radius = np.linalg.norm(points, axis=-1)
    array = np.zeros(grid.shape, dtype=np.uint8)
    array[radius < 9.0] = 4
    array[radius < 4.0] = 0  # a hole
    array[radius < 1.5] = 4  # an island in the hole
    array[np.all(np.abs(points - (0.0, -12.0, 0.0)) < (6.0, 2.0, 5.0), axis=-1)] = 7
    array[np.linalg.norm(points - np.array([12.0, 6.0, 0.0]), axis=-1) < 3.0] = 9
    return LabelVolume(array, grid, labels={4: "liver", 7: "Lesion 1", 9: "Lesion 2"})


def as_rois(labels: LabelVolume) -> np.ndarray:
    """Label values renumbered 1..N in ascending order, as the ROIs are written."""
    out = np.zeros(labels.shape, dtype=np.uint8)
    for number, value in enumerate(labels.present_labels(), start=1):
        out[labels.array == value] = number
    return out


@pytest.fixture
def axial(tmp_path) -> tuple[Path, Path]:
    """An axial CT series and an RTSTRUCT of two ROIs on it: 'liver' on slices 1-4, 'Lesion 1' on slices 2-3."""
    folder = ct_series(tmp_path, AXIAL)
    array = np.zeros(AXIAL.shape, dtype=np.uint8)
    array[1:5, 3:13, 3:15] = 1
    array[2:4, 14:17, 5:9] = 2
    labels = LabelVolume(array, AXIAL, labels={1: "liver", 2: "Lesion 1"})
    return folder, write_rtstruct(labels, folder, tmp_path / "rs.dcm")


def edited(path: Path, change: Callable[[Dataset], object], name: str = "edited.dcm") -> Path:
    """A copy of the RTSTRUCT at ``path`` changed by ``change``."""
    dataset = pydicom.dcmread(path)
    change(dataset)
    out = path.with_name(name)
    dataset.save_as(out)
    return out


def contour(points_mm: np.ndarray, kind: str = "CLOSED_PLANAR") -> Dataset:
    item = Dataset()
    item.ContourGeometricType = kind
    item.NumberOfContourPoints = len(points_mm)
    item.ContourData = [f"{v:.6f}" for v in np.asarray(points_mm, dtype=float).reshape(-1)]
    return item


def on_slice(grid: Grid, k: float, corners: list[tuple[float, float]]) -> np.ndarray:
    """LPS mm of polygon corners given as (i, j) indices on slice k of ``grid``."""
    return grid.index_to_world(np.array([(i, j, k) for i, j in corners], dtype=float))


def replace_contours(number: int, *items: Dataset) -> Callable[[Dataset], None]:
    def change(dataset: Dataset) -> None:
        roi = next(r for r in dataset.ROIContourSequence if r.ReferencedROINumber == number)
        roi.ContourSequence = list(items)
    return change


def square(lo: tuple[float, float], hi: tuple[float, float]) -> list[tuple[float, float]]:
    return [lo, (hi[0], lo[1]), hi, (lo[0], hi[1])]


# --- round trips ----------------------------------------------------------------------
def test_round_trip_of_several_rois_on_an_axial_series(tmp_path):
    grid = LARGE
    folder = ct_series(tmp_path, grid)
    labels = phantom(grid)
    path = write_rtstruct(labels, folder, tmp_path / "rs.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct", "rs.dcm"]  # no temporary left behind
    for reference in (folder, read_dicom(folder)):
        back = read_rtstruct(path, reference)
        assert back.grid.same_as(grid, tolerance_mm=1e-4)
        assert back.labels == {1: "liver", 2: "Lesion 1", 3: "Lesion 2"}
        np.testing.assert_array_equal(back.array, as_rois(labels))


@pytest.mark.parametrize("orientation", ["oblique", "sagittal"])
def test_round_trip_on_oblique_and_sagittal_series(tmp_path, oblique_grid, orientation):
    if orientation == "oblique":
        grid = oblique_grid(7, (36, 34, 30))
        grid = Grid(grid.size, (1.1, 0.9, 1.3), grid.origin_mm, grid.direction)
    else:
        grid = Grid((30, 36, 40), (2.0, 0.9, 1.0), (40.0, -30.0, 60.0), SAGITTAL)
    folder = ct_series(tmp_path, grid)
    labels = phantom(grid)
    back = read_rtstruct(write_rtstruct(labels, folder, tmp_path / "rs.dcm"), read_dicom(folder))
    np.testing.assert_array_equal(orient_like(back, labels.grid).array, as_rois(labels))


def test_a_sphere_reads_back_voxel_for_voxel_with_its_analytic_volume(tmp_path):
    grid = Grid((30, 34, 22), (1.5, 1.2, 2.0), (5.0, -60.0, 100.0))
    folder = ct_series(tmp_path, grid)
    points = grid.world_coordinates(np.float64) - grid.center_mm
    sphere = LabelVolume.from_mask(np.linalg.norm(points, axis=-1) <= 15.0, grid, name="sphere")
    back = read_rtstruct(write_rtstruct(sphere, folder, tmp_path / "rs.dcm"), folder)
    assert dice(back.array > 0, sphere.array > 0) == 1.0  # exact, not only close: centres lie 0.35 voxel off lines
    assert back.volume_ml("sphere") == pytest.approx(4 / 3 * np.pi * 15.0**3 / 1000, rel=0.03)


def test_same_voxels_stored_in_another_axis_order(tmp_path, axial):
    """Contours are placed by the planes they lie on, whichever index axis those are normal to."""
    folder, path = axial
    reference = read_dicom(folder)
    direction = reference.grid.direction_matrix
    permuted = Grid(reference.grid.size[::-1], reference.grid.spacing_mm[::-1],  # i <-> k: slices along i
                    reference.grid.origin_mm, tuple(direction[:, ::-1].reshape(-1)))
    other_order = Volume(reference.array.transpose(2, 1, 0), permuted, "CT", dict(reference.meta))
    back = read_rtstruct(path, other_order)
    assert back.grid == permuted
    np.testing.assert_array_equal(orient_like(back, reference.grid).array, read_rtstruct(path, reference).array)


def test_rings_cut_holes_and_islands_by_even_odd(tmp_path, axial):
    folder, path = axial
    outer, hole = square((2.5, 2.5), (14.5, 12.5)), square((5.5, 5.5), (9.5, 8.5))
    island = square((7.5, 6.5), (8.5, 7.5))
    ring = edited(path, replace_contours(1, *(contour(on_slice(AXIAL, 2, c)) for c in (outer, hole))))
    mask = read_rtstruct(ring, folder, rois=["liver"]).array[2] > 0
    assert np.count_nonzero(mask) == 12 * 10 - 4 * 3
    assert mask[4, 4] and not mask[7, 7]
    nested = edited(path, replace_contours(1, *(contour(on_slice(AXIAL, 2, c)) for c in (outer, hole, island))))
    mask = read_rtstruct(nested, folder, rois=["liver"]).array[2] > 0
    assert np.count_nonzero(mask) == 12 * 10 - 4 * 3 + 1 and mask[7, 8]
    written = LabelVolume.from_mask(read_rtstruct(nested, folder, rois=["liver"]).array > 0, AXIAL, name="ring")
    again = read_rtstruct(write_rtstruct(written, folder, tmp_path / "ring.dcm"), folder)
    np.testing.assert_array_equal(again.array, written.array)  # the writer traces the hole and the island too


def test_voxel_centres_on_a_contour_line_are_inside(axial):
    """Files that trace the centres of the boundary voxels (as some tools write them) keep those voxels."""
    folder, path = axial
    box = contour(on_slice(AXIAL, 2, square((2, 2), (6, 5))))
    triangle = contour(on_slice(AXIAL, 2, [(10, 2), (14, 2), (10, 6)]))  # its long edge runs through centres
    mask = read_rtstruct(edited(path, replace_contours(1, box, triangle)), folder, rois=["liver"]).array[2] > 0
    expected = np.zeros(mask.shape, bool)
    expected[2:6, 2:7] = True
    for j in range(2, 7):
        expected[j, 10:10 + 7 - j] = True
    np.testing.assert_array_equal(mask, expected)


def test_rois_are_chosen_by_name_in_the_order_asked(axial):
    folder, path = axial
    everything = read_rtstruct(path, folder)
    chosen = read_rtstruct(path, folder, rois=["Lesion 1", "liver"])
    assert chosen.labels == {1: "Lesion 1", 2: "liver"}
    np.testing.assert_array_equal(chosen.array == 1, everything.array == 2)
    np.testing.assert_array_equal(chosen.array == 2, everything.array == 1)


def test_overlapping_rois_are_refused_unless_allowed(tmp_path, axial):
    folder, _ = axial
    liver, lesion = np.zeros(AXIAL.shape, bool), np.zeros(AXIAL.shape, bool)
    liver[1:5, 3:13, 3:15] = True
    lesion[2:4, 5:8, 5:9] = True  # inside the liver, as real lesions are
    path = write_rtstruct(Segmentation.from_masks(AXIAL, {"liver": liver, "Lesion 1": lesion}), folder,
                          tmp_path / "overlap.dcm")
    with pytest.raises(InputError, match=r"overlap\.dcm: ROIs 'liver' and 'Lesion 1' overlap \(24 voxels\)"):
        read_rtstruct(path, folder)
    both = read_rtstruct(path, folder, allow_overlap=True)
    np.testing.assert_array_equal(both.array, np.where(lesion, 2, np.where(liver, 1, 0)))  # the later ROI wins
    np.testing.assert_array_equal(read_rtstruct(path, folder, rois=["Lesion 1"]).array > 0, lesion)


def test_a_series_of_the_same_frame_of_reference_is_accepted(tmp_path, axial):
    folder, path = axial
    frame = read_dicom(folder).meta["FrameOfReferenceUID"]
    same_frame = read_dicom(ct_series(tmp_path, AXIAL, "same-frame", frame_of_reference_uid=frame))
    np.testing.assert_array_equal(read_rtstruct(path, same_frame).array, read_rtstruct(path, folder).array)


def test_point_contours_are_skipped_with_a_warning(axial, caplog):
    folder, path = axial

    def add_point(dataset: Dataset) -> None:
        dataset.ROIContourSequence[1].ContourSequence.append(contour(on_slice(AXIAL, 2, [(6, 15)]), "POINT"))

    with caplog.at_level(logging.WARNING, logger="sirtreg.io.rtstruct"):
        back = read_rtstruct(edited(path, add_point), folder)
    assert "ROI 'Lesion 1': 1 POINT contour(s) skipped" in caplog.text
    np.testing.assert_array_equal(back.array, read_rtstruct(path, folder).array)


def test_contours_between_slice_planes_go_to_the_nearest_with_a_warning(axial, caplog):
    folder, path = axial

    def shift(dataset: Dataset) -> None:  # 0.3 slice towards the head
        for roi in dataset.ROIContourSequence:
            for item in roi.ContourSequence:
                points = np.asarray(item.ContourData, dtype=float).reshape(-1, 3) + (0.0, 0.0, 0.6)
                item.ContourData = [f"{v:.6f}" for v in points.reshape(-1)]

    with caplog.at_level(logging.WARNING, logger="sirtreg.io.rtstruct"):
        back = read_rtstruct(edited(path, shift), folder)
    assert "contours lie up to 0.6 mm off the slice planes" in caplog.text
    np.testing.assert_array_equal(back.array, read_rtstruct(path, folder).array)


def test_contours_beyond_the_image_are_clipped_with_a_warning(tmp_path, axial, caplog):
    folder, path = axial
    half_out = contour(on_slice(AXIAL, 2, square((15.5, 2.5), (25.5, 6.5))))
    with caplog.at_level(logging.WARNING, logger="sirtreg.io.rtstruct"):
        mask = read_rtstruct(edited(path, replace_contours(1, half_out)), folder, rois=["liver"]).array[2] > 0
    assert "ROI 'liver' reaches beyond the reference image" in caplog.text
    assert np.count_nonzero(mask) == 4 * 4 and mask[3:7, 16:20].all()
    caplog.clear()
    border = LabelVolume.from_mask(np.ones(AXIAL.shape, bool), AXIAL, name="all")  # traced along the outer edges
    with caplog.at_level(logging.WARNING, logger="sirtreg.io.rtstruct"):
        assert read_rtstruct(write_rtstruct(border, folder, tmp_path / "all.dcm"), folder).array.all()
    assert caplog.text == ""


# --- the written file -----------------------------------------------------------------
def test_written_rtstruct_references_its_series_slice_by_slice(tmp_path):
    folder = ct_series(tmp_path, LARGE)
    path = write_rtstruct(phantom(LARGE), folder, tmp_path / "named.dcm", roi_names={9: "Tumour B"},
                          algorithm_name="liver U-Net", patient_id="ANON7")
    dataset = pydicom.dcmread(path)
    headers = read_series_headers(folder)
    assert dataset.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3" and dataset.Modality == "RTSTRUCT"
    assert dataset.StudyInstanceUID == headers[0].StudyInstanceUID
    assert str(dataset.PatientName) == "Doe^Jane" and dataset.PatientID == "ANON7"
    frame = dataset.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == headers[0].FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == headers[0].SeriesInstanceUID
    assert len(series.ContourImageSequence) == len(headers)
    assert [r.ROIName for r in dataset.StructureSetROISequence] == ["liver", "Lesion 1", "Tumour B"]
    assert {r.ROIGenerationAlgorithm for r in dataset.StructureSetROISequence} == {"AUTOMATIC"}
    assert [o.RTROIInterpretedType for o in dataset.RTROIObservationsSequence] == ["ORGAN", "GTV", "GTV"]
    by_position = {round(float(h.ImagePositionPatient[2]), 3): h.SOPInstanceUID for h in headers}
    for roi in dataset.ROIContourSequence:
        for item in roi.ContourSequence:
            points = np.asarray(item.ContourData, dtype=float).reshape(-1, 3)
            assert item.NumberOfContourPoints == len(points) and np.ptp(points[:, 2]) < 1e-6
            assert item.ContourImageSequence[0].ReferencedSOPInstanceUID == by_position[round(points[0, 2], 3)]


# --- refusals when writing --------------------------------------------------------------
def test_label_map_off_the_series_grid_is_refused(tmp_path, axial):
    folder, _ = axial
    shifted = Grid(AXIAL.size, AXIAL.spacing_mm, tuple(AXIAL.index_to_world([0.5, 0, 0])), AXIAL.direction)
    with pytest.raises(GeometryMismatchError, match=r"is not on the grid of the referenced series .*resample it"):
        write_rtstruct(LabelVolume(read_rtstruct(axial[1], folder).array, shifted), folder, tmp_path / "off.dcm")
    assert not (tmp_path / "off.dcm").exists()


def test_empty_label_map_is_refused(tmp_path, axial):
    folder, _ = axial
    with pytest.raises(InputError, match="the label map is empty"):
        write_rtstruct(LabelVolume(np.zeros(AXIAL.shape, np.uint8), AXIAL), folder, tmp_path / "empty.dcm")


def test_existing_output_is_kept_unless_overwrite(axial):
    folder, path = axial
    labels = read_rtstruct(path, folder)
    with pytest.raises(OutputExistsError, match=r"rs\.dcm exists; choose another name or pass overwrite"):
        write_rtstruct(labels, folder, path)
    write_rtstruct(labels, folder, path, roi_names={2: "Tumour A"}, overwrite=True)
    assert read_rtstruct(path, folder).labels == {1: "liver", 2: "Tumour A"}


# --- refusals when reading --------------------------------------------------------------
def _tilted(points_mm: np.ndarray) -> np.ndarray:
    centre = points_mm.mean(axis=0)
    return (points_mm - centre) @ Rotation.from_euler("x", 20, degrees=True).as_matrix().T + centre


def _wavy(points_mm: np.ndarray) -> np.ndarray:
    return points_mm + np.array([[0.0, 0.0, 0.8 * (-1) ** n] for n in range(len(points_mm))])


EIGHT = [(3, 3), (8, 3), (14, 3), (14, 8), (14, 12), (8, 12), (3, 12), (3, 8)]


@pytest.mark.parametrize(("change", "rois", "expected"), [
    pytest.param(None, ["Spleen"], r"edited\.dcm holds no ROI 'Spleen'; it holds 'liver', 'Lesion 1'", id="unknown"),
    pytest.param(None, ["liver", "liver"], r"ROI 'liver' is asked for more than once", id="asked twice"),
    pytest.param(lambda ds: setattr(ds.StructureSetROISequence[1], "ROIName", "liver"), ["liver"],
                 r"holds several ROIs named 'liver'", id="ambiguous name"),
    pytest.param(lambda ds: delattr(ds, "StructureSetROISequence"), [], r"an RTSTRUCT without ROIs", id="no ROIs"),
    pytest.param(lambda ds: setattr(ds.ROIContourSequence[1], "ContourSequence", []), [],
                 r"ROI 'Lesion 1' holds no contour; choose the ROIs to read by name", id="no contour"),
    pytest.param(lambda ds: delattr(ds, "ROIContourSequence"), ["liver"], r"ROI 'liver' holds no contour",
                 id="no contour sequence"),
    pytest.param(replace_contours(2, contour(on_slice(AXIAL, 2, [(6, 15)]), "POINT")), [],
                 r"ROI 'Lesion 1' holds only 1 POINT contour\(s\) \(markers\), no closed one", id="points only"),
    pytest.param(replace_contours(2, contour(on_slice(AXIAL, 2, [(3, 3), (9, 3), (9, 9)]), "OPEN_PLANAR")), [],
                 r"ROI 'Lesion 1' holds OPEN_PLANAR contours; only CLOSED_PLANAR contours enclose a region",
                 id="open contour"),
    pytest.param(replace_contours(1, contour(_wavy(on_slice(AXIAL, 2, EIGHT)))), [],
                 r"a contour of ROI 'liver' is not planar \(points up to 0\.[6-9]\d* mm off its plane\)",
                 id="non-planar"),
    pytest.param(replace_contours(1, contour(_tilted(on_slice(AXIAL, 2, EIGHT)))), [],
                 r"a contour of ROI 'liver' crosses the slice planes of the reference \(tilted by 20 degrees",
                 id="tilted"),
    pytest.param(replace_contours(1, contour(on_slice(AXIAL, 6.6, EIGHT))), [],
                 r"a contour of ROI 'liver' lies 3\.2 mm beyond the outermost slice of the reference .*off every "
                 r"slice plane", id="beyond the last slice"),
    pytest.param(replace_contours(1, contour(on_slice(AXIAL, -0.7, EIGHT))), [],
                 r"lies 1\.4 mm beyond the outermost slice", id="before the first slice"),
    pytest.param(replace_contours(1, contour(on_slice(AXIAL, 2, square((3.2, 3.2), (3.8, 3.8))))), [],
                 r"ROI 'liver' encloses no voxel centre of the reference", id="smaller than a voxel"),
    pytest.param(replace_contours(1, contour(on_slice(AXIAL, 2, square((30, 30), (40, 40))))), [],
                 r"ROI 'liver' encloses no voxel centre of the reference", id="outside the image"),
    pytest.param(lambda ds: setattr(ds.ROIContourSequence[0].ContourSequence[0], "ContourData", ["1.0"] * 7), [],
                 r"a contour of ROI 'liver' holds 7 numbers in ContourData, not \(x, y, z\) triples", id="bad data"),
])
def test_bad_structure_sets_are_refused(axial, change, rois, expected):
    folder, path = axial
    path = edited(path, change or (lambda ds: None))
    with pytest.raises(InputError, match=expected):
        read_rtstruct(path, folder, rois=rois)


def test_rtstruct_of_another_scan_is_refused(tmp_path, axial):
    _, path = axial
    other_scan = ct_series(tmp_path, AXIAL, "other-scan")
    with pytest.raises(InputError, match=r"rs\.dcm: ROI 'liver' lies in frame of reference .* drawn on another scan"):
        read_rtstruct(path, read_dicom(other_scan))
    with pytest.raises(InputError, match=r"does not hold the series rs\.dcm references .*; found: CT"):
        read_rtstruct(path, other_scan)


def test_reference_without_the_slices_of_the_contours_is_refused(axial):
    folder, path = axial
    first_slices = read_dicom(folder).crop((0, 0, 0), (*AXIAL.size[:2], 3))
    with pytest.raises(InputError, match=r"ROI 'liver' lies 2 mm beyond the outermost slice"):
        read_rtstruct(path, first_slices)


def test_files_that_are_not_rtstruct_are_refused(tmp_path, axial):
    folder, _ = axial
    with pytest.raises(InputError, match=r"is not an RTSTRUCT \(modality 'CT'\)"):
        read_rtstruct(next(folder.iterdir()), folder)
    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match=r"cannot read notes\.txt as DICOM"):
        read_rtstruct(tmp_path / "notes.txt", folder)


# --- real data ------------------------------------------------------------------------
def test_real_label_map_written_on_the_real_series_reads_back(shared_data, tmp_path):
    """No real RTSTRUCT is in the data folder: the real liver and spine go through one, on the real CT slices."""
    folder = shared_data / "dcmqi"
    labels = read_labels(folder / "liver_spine_seg.nrrd", labels={1: "liver", 2: "spine"})
    path = write_rtstruct(labels, folder / "ct-3slice", tmp_path / "rs.dcm")
    back = read_rtstruct(path, read_dicom(folder / "ct-3slice"))
    np.testing.assert_array_equal(back.array, orient_like(labels, back.grid).array)
    assert back.labels == {1: "liver", 2: "spine"}
    assert str(pydicom.dcmread(path, stop_before_pixels=True).PatientID) == "99000"
