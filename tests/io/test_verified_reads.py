"""Verified reads: a cut, damaged or ambiguous NIfTI file is refused; NaN voxels are kept, not zeroed."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, Volume
from sirtreg.io import read_image, read_labels, write_image


@pytest.fixture()
def scan(tmp_path):
    """A 40x32x24 float CT written as .nii.gz and .nii; returns (volume, gz path, nii path)."""
    rng = np.random.default_rng(3)
    grid = Grid((24, 32, 40), (1.5, 1.5, 2.5), (-10.0, 4.0, 30.0))
    volume = Volume((rng.random(grid.shape) * 1000).astype(np.float32), grid, "CT")
    return volume, write_image(volume, tmp_path / "ct.nii.gz"), write_image(volume, tmp_path / "ct.nii")


@pytest.mark.parametrize("kept", [0.5, 0.6, 0.99])
def test_a_cut_compressed_file_is_refused(scan, tmp_path, kept):
    _, path, _ = scan
    data = path.read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: int(len(data) * kept)])
    assert np.count_nonzero(sitk.GetArrayFromImage(sitk.ReadImage(str(cut))) == 0) > 0  # SimpleITK alone: zeros
    with pytest.raises(InputError, match="cut.nii.gz is truncated"):
        read_image(cut)


def test_a_corrupted_compressed_file_is_refused(scan, tmp_path):
    _, path, _ = scan
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # the gzip CRC/length trailer no longer matches the data
    bad = tmp_path / "crc.nii.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(InputError, match="crc.nii.gz is damaged"):
        read_image(bad)


def test_an_uncompressed_file_shorter_than_its_header_says_is_refused(scan, tmp_path):
    _, _, path = scan
    cut = tmp_path / "cut.nii"
    cut.write_bytes(path.read_bytes()[: 352 + 24 * 32 * 40 * 2])  # half of the float32 voxels
    with pytest.raises(InputError, match=r"cut.nii is truncated: it holds 61440 of the 122880 voxel bytes .*50 %"):
        read_image(cut)


def test_a_compressed_file_with_fewer_voxels_than_its_header_is_refused(scan, tmp_path):
    _, _, path = scan
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(path.read_bytes()[:-4]))  # a complete gzip stream, one voxel short
    with pytest.raises(InputError, match="short.nii.gz is truncated: it holds 122876 of the 122880 voxel bytes"):
        read_image(short)


def test_nan_and_infinite_voxels_are_kept_as_nan_not_zeroed(scan, tmp_path):
    volume, _, _ = scan
    array = volume.array.copy()
    array[3, 4, 5], array[10, 20, 7] = np.nan, np.inf
    path = write_image(volume.with_array(array), tmp_path / "nan.nii.gz")
    assert np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).all()  # SimpleITK alone turns them into 0
    read = read_image(path)
    assert [tuple(i) for i in np.argwhere(~np.isfinite(read.array))] == [(3, 4, 5), (10, 20, 7)]
    np.testing.assert_array_equal(read.array[np.isfinite(read.array)], array[np.isfinite(array)])


def test_nan_in_a_label_map_is_refused(scan, tmp_path):
    volume, _, _ = scan
    array = np.zeros(volume.grid.shape, np.float32)
    array[2, 2, 2] = np.nan
    path = write_image(volume.with_array(array), tmp_path / "labels.nii.gz")
    with pytest.raises(InputError, match="labels.nii.gz holds NaN or infinite values"):
        read_labels(path)


def _patched_header(source, target, *, pixdim_x=None, sform_x_scale=None, sform_shift=None):
    """Copy a NIfTI-1 file, changing pixdim[1], the sform's first column and/or its offsets."""
    header = bytearray(source.read_bytes())
    if pixdim_x is not None:
        struct.pack_into("<f", header, 80, pixdim_x)
    srow = np.array(struct.unpack_from("<12f", header, 280)).reshape(3, 4)
    if sform_x_scale is not None:
        srow[:, 0] *= sform_x_scale
    if sform_shift is not None:
        srow[:, 3] += sform_shift
    struct.pack_into("<12f", header, 280, *srow.ravel())
    target.write_bytes(bytes(header))
    return target


def test_negative_pixdim_with_a_negated_sform_is_refused(scan, tmp_path):
    _, _, path = scan
    flipped = _patched_header(path, tmp_path / "flipped.nii", pixdim_x=-1.5, sform_x_scale=-1.0)
    with pytest.raises(InputError, match="non-positive voxel size in its header .*ambiguous"):
        read_image(flipped)


def test_an_sform_that_disagrees_with_the_qform_is_refused(scan, tmp_path):
    _, _, path = scan
    shifted = _patched_header(path, tmp_path / "shifted.nii", sform_shift=np.array([0.0, 0.0, 25.0]))
    with pytest.raises(InputError, match="the sform and the qform of its header disagree"):
        read_image(shifted)


def test_a_consistent_header_reads_the_geometry_written(scan):
    volume, gz, nii = scan
    for path in (gz, nii):
        read = read_image(path)
        assert read.grid.same_as(volume.grid)
        np.testing.assert_array_equal(read.array, volume.array)


@pytest.mark.parametrize("spacing", [(1000.0, 1000.0, 1000.0), (0.001, 0.001, 0.002)])
def test_a_voxel_size_no_scan_has_is_refused(tmp_path, spacing):
    image = sitk.GetImageFromArray(np.zeros((8, 8, 8), np.int16))
    image.SetSpacing(spacing)
    path = tmp_path / "units.nrrd"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputError, match="units.nrrd has voxels of .* mm, outside the 0.05-50 mm of any scan"):
        read_image(path)
