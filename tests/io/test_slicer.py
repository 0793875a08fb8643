"""3D Slicer .seg.nrrd: round trips with overlapping segments, RAS files, label maps and refusals."""

from __future__ import annotations

import nrrd
import numpy as np
import pytest

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.geometry import Grid
from sirtreg.io import (
    Segmentation,
    read_image,
    read_labels,
    read_segmentation,
    write_segmentation,
)


def ball(grid: Grid, centre_ijk, radius: float) -> np.ndarray:
    k, j, i = np.indices(grid.shape)
    return (i - centre_ijk[0]) ** 2 + (j - centre_ijk[1]) ** 2 + (k - centre_ijk[2]) ** 2 <= radius**2


@pytest.fixture
def overlapping(oblique_grid) -> Segmentation:
    grid = oblique_grid(40, size=(20, 16, 12))
    return Segmentation.from_masks(grid, {
        "liver": ball(grid, (10, 8, 6), 5),
        "Tumor 1": ball(grid, (12, 8, 6), 2),
        "perfused volume": ball(grid, (8, 8, 6), 4),
        "spleen": ball(grid, (2, 2, 2), 1.5),
    }, colors={"liver": (0.86, 0.5, 0.4)})


def test_overlapping_segments_round_trip_in_layers(tmp_path, overlapping, corner_distance_mm):
    assert overlapping.layers.shape[0] == 3  # liver + spleen, Tumor 1, perfused volume
    path = write_segmentation(overlapping, tmp_path / "lesions.seg.nrrd")
    header = nrrd.read_header(str(path))
    assert header["kinds"][0] == "list" and header["Segment1_Name"] == "Tumor 1"
    back = read_segmentation(path)
    assert back.names == ["liver", "Tumor 1", "perfused volume", "spleen"]
    assert corner_distance_mm(back.grid, overlapping.grid) < 1e-4
    for name in back.names:
        np.testing.assert_array_equal(back.mask(name), overlapping.mask(name))
    assert back.segment("liver").color == (0.86, 0.5, 0.4)
    assert back.volume_ml("Tumor 1") == pytest.approx(np.count_nonzero(overlapping.mask("Tumor 1"))
                                                      * overlapping.grid.voxel_volume_ml)
    assert back.label_volume("tumor 1").labels == {1: "Tumor 1"}


def test_overlapping_segmentation_is_refused_as_one_label_map(tmp_path, overlapping):
    path = write_segmentation(overlapping, tmp_path / "lesions.seg.nrrd")
    with pytest.raises(InputError, match=r"lesions\.seg\.nrrd: segments 'liver' and 'Tumor 1' overlap, so one label "
                                         r"map cannot hold them; read the file with read_segmentation"):
        read_labels(path)


def test_separate_segments_read_as_named_label_map(tmp_path, oblique_grid):
    grid = oblique_grid(41, size=(20, 16, 12))
    segmentation = Segmentation.from_masks(grid, {"liver": ball(grid, (6, 8, 6), 4), "spleen": ball(grid, (15, 8, 6), 3)})
    path = write_segmentation(segmentation, tmp_path / "organs.seg.nrrd")
    assert nrrd.read_header(str(path))["dimension"] == 3
    labels = read_labels(path)
    assert labels.labels == {1: "liver", 2: "spleen"}
    np.testing.assert_array_equal(labels.mask("spleen"), segmentation.mask("spleen"))
    with pytest.raises(InputError, match=r"organs\.seg\.nrrd is a segmentation, not an image; read it with read_labels"):
        read_image(path)


def test_ras_file_is_converted_to_lps(tmp_path):
    data = np.zeros((5, 4, 3), np.uint8)  # (x, y, z)
    data[1, 2, 0] = 1
    header = {
        "space": "right-anterior-superior", "kinds": ["domain"] * 3, "encoding": "raw",
        "space directions": np.diag([-0.5, -0.7, 2.0]), "space origin": np.array([10.0, 20.0, -30.0]),
        "Segment0_ID": "Segment_1", "Segment0_Name": "liver", "Segment0_LabelValue": "1", "Segment0_Layer": "0",
    }
    nrrd.write(str(tmp_path / "ras.seg.nrrd"), data, header, index_order="F")
    segmentation = read_segmentation(tmp_path / "ras.seg.nrrd")
    grid = segmentation.grid
    np.testing.assert_allclose(grid.origin_mm, (-10.0, -20.0, -30.0))
    np.testing.assert_allclose(grid.spacing_mm, (0.5, 0.7, 2.0))
    np.testing.assert_allclose(grid.direction, np.eye(3).ravel(), atol=1e-12)
    assert segmentation.mask("liver")[0, 2, 1]


def test_legacy_file_with_one_layer_per_segment(tmp_path):
    data = np.zeros((2, 3, 4, 5), np.uint8)  # (segment, x, y, z), no layer keys
    data[0, 0] = 1
    data[1, :2] = 1
    header = {
        "space": "LPS", "kinds": ["list", "domain", "domain", "domain"], "encoding": "raw",
        "space directions": np.vstack([np.full((1, 3), np.nan), np.eye(3)]), "space origin": np.zeros(3),
        "Segment0_ID": "a", "Segment0_Name": "liver", "Segment1_ID": "b", "Segment1_Name": "tumour",
    }
    nrrd.write(str(tmp_path / "old.seg.nrrd"), data, header, index_order="F")
    segmentation = read_segmentation(tmp_path / "old.seg.nrrd")
    assert np.count_nonzero(segmentation.mask("liver")) == 20
    assert np.count_nonzero(segmentation.mask("tumour")) == 40


def test_unknown_segment_and_overwrite_are_refused(tmp_path, overlapping):
    with pytest.raises(InputError, match=r"no segment named 'kidney'; known: liver, Tumor 1, perfused volume, spleen"):
        overlapping.mask("kidney")
    path = write_segmentation(overlapping, tmp_path / "s.seg.nrrd")
    with pytest.raises(OutputExistsError, match=r"s\.seg\.nrrd exists; choose another name or pass overwrite"):
        write_segmentation(overlapping, path)


@pytest.mark.slow
def test_real_slicer_segmentation(shared_data):
    segmentation = read_segmentation(shared_data / "taranis" / "patient_2_Segmentation.seg.nrrd")
    assert segmentation.grid.size == (512, 512, 161)
    assert {"liver", "Tumor 1", "Tumor 2", "perfused volume"} <= set(segmentation.names)
    assert segmentation.segment("liver").layer == 1 and segmentation.segment("Tumor 1").label_value == 6
    assert segmentation.volume_ml("liver") == pytest.approx(1726.4, rel=0.005)
    assert segmentation.volume_ml("Tumor 1") == pytest.approx(112.8, rel=0.005)
    assert segmentation.volume_ml("Tumor 2") == pytest.approx(128.5, rel=0.005)
