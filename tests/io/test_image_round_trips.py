"""NIfTI, NRRD and MHA: write then read keeps geometry and voxel values under oblique geometry."""

from __future__ import annotations

import numpy as np
import pytest

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.io import read_image, read_labels, write_image

SUFFIXES = [".nii.gz", ".nrrd", ".mha"]


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_volume_round_trip(tmp_path, suffix, dtype, oblique_grid, corner_distance_mm):
    grid = oblique_grid(1)
    rng = np.random.default_rng(2)
    array = (rng.normal(0, 500, grid.shape)).astype(dtype)
    path = write_image(Volume(array, grid, "CT"), tmp_path / f"image{suffix}")
    volume = read_image(path)
    assert volume.grid.size == grid.size
    assert corner_distance_mm(volume.grid, grid) < 1e-4
    assert volume.array.dtype == dtype
    np.testing.assert_array_equal(volume.array, array)


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_label_volume_round_trip(tmp_path, suffix, oblique_grid, corner_distance_mm):
    grid = oblique_grid(3, left_handed=True)
    array = np.random.default_rng(4).integers(0, 7, grid.shape).astype(np.uint8)
    path = write_image(LabelVolume(array, grid), tmp_path / f"labels{suffix}")
    labels = read_labels(path, labels={5: "liver"})
    assert corner_distance_mm(labels.grid, grid) < 1e-4
    np.testing.assert_array_equal(labels.array, array)
    assert labels.volume_ml("liver") == pytest.approx(np.count_nonzero(array == 5) * grid.voxel_volume_ml)


def test_existing_output_is_not_overwritten(tmp_path, oblique_grid):
    volume = Volume(np.zeros(oblique_grid(5).shape, np.float32), oblique_grid(5))
    path = write_image(volume, tmp_path / "image.nrrd")
    with pytest.raises(OutputExistsError, match="image.nrrd exists; choose another name or pass overwrite"):
        write_image(volume, path)
    write_image(volume, path, overwrite=True)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(InputError, match=r"no such file or folder: .*absent\.nii\.gz"):
        read_image(tmp_path / "absent.nii.gz")
    with pytest.raises(InputError, match=r"no such file or folder: .*absent\.seg\.nrrd"):
        read_labels(tmp_path / "absent.seg.nrrd")


def test_2d_image_is_refused(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(sitk.Image(16, 12, sitk.sitkInt16), str(tmp_path / "slice.nrrd"))
    with pytest.raises(InputError, match=r"slice\.nrrd is a 2D image \(16x12\); a 3D volume is needed"):
        read_image(tmp_path / "slice.nrrd")


def test_unreadable_file_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(InputError, match=r"cannot read notes\.txt: not a DICOM image file"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "broken.nii.gz").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"broken\.nii\.gz is damaged: Not a gzipped file"):
        read_image(tmp_path / "broken.nii.gz")


def test_volume_description_is_one_line(oblique_grid):
    grid = oblique_grid(6)
    line = Volume(np.zeros(grid.shape, np.float32), grid, "MR").describe()
    assert line.startswith("MR 9x7x6 voxels, ") and "(oblique)" in line and "\n" not in line
