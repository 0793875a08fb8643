"""Checks on a NIfTI file before its voxels are trusted.

SimpleITK reads a truncated ``.nii.gz`` without complaint (the missing voxels are
zero), turns NaN and infinite voxels into 0, and, when a header's ``pixdim``,
qform and sform disagree, silently picks one of them. Each of these turns a scan
into a wrong dose without a word, so a NIfTI file is read to its end here first:
the gzip stream with its CRC, the voxel bytes the header promises, the voxels
that are not finite, and the header's geometry against the one SimpleITK built.
"""

from __future__ import annotations

import gzip
import itertools
import logging
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sirtreg.errors import InputError

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 24
_FLOAT_DTYPES = {16: "f4", 64: "f8"}
"""NIfTI datatype codes of float voxels (the only ones that can hold NaN)."""


@dataclass(frozen=True)
class NiftiHeader:
    """What a NIfTI-1 or NIfTI-2 header says about its voxels and geometry.

    Attributes
    ----------
    shape_xyz : voxels along i, j, k (the first three dims).
    voxels : voxels in the data block (all dims).
    bitpix : bits per voxel.
    datatype : NIfTI datatype code.
    vox_offset : byte offset of the voxels.
    pixdim : voxel sizes along i, j, k as stored (mm, may be negative in a bad file).
    sform_code, qform_code : how the sform and qform are meant.
    sform_ras : (3, 4) sform, RAS mm.
    qform_ras : (3, 4) affine of the qform (quaternion, pixdim and qfac), RAS mm.
    byte_order : "<" or ">".
    """

    shape_xyz: tuple[int, int, int]
    voxels: int
    bitpix: int
    datatype: int
    vox_offset: int
    pixdim: tuple[float, float, float]
    sform_code: int
    qform_code: int
    sform_ras: np.ndarray
    qform_ras: np.ndarray
    byte_order: str

    @property
    def data_bytes(self) -> int:
        return self.voxels * self.bitpix // 8


def parse_header(head: bytes, name: str) -> NiftiHeader:
    """Parse the first 540 bytes (or fewer) of a NIfTI file; refuse what is not NIfTI-1 or NIfTI-2."""
    for order in ("<", ">"):
        if len(head) >= 4 and struct.unpack_from(order + "i", head, 0)[0] in (348, 540):
            break
    else:
        raise InputError(f"{name} is not a NIfTI file (no NIfTI header)")
    size = struct.unpack_from(order + "i", head, 0)[0]
    if size == 348:
        if len(head) < 348:
            raise InputError(f"{name} is truncated inside its NIfTI header")
        dim = struct.unpack_from(order + "8h", head, 40)
        datatype, bitpix = struct.unpack_from(order + "2h", head, 70)
        pixdim = struct.unpack_from(order + "8f", head, 76)
        vox_offset = int(struct.unpack_from(order + "f", head, 108)[0])
        qform_code, sform_code = struct.unpack_from(order + "2h", head, 252)
        quatern = struct.unpack_from(order + "6f", head, 256)
        srow = struct.unpack_from(order + "12f", head, 280)
    else:
        if len(head) < 540:
            raise InputError(f"{name} is truncated inside its NIfTI header")
        datatype, bitpix = struct.unpack_from(order + "2h", head, 12)
        dim = struct.unpack_from(order + "8q", head, 16)
        pixdim = struct.unpack_from(order + "8d", head, 104)
        vox_offset = struct.unpack_from(order + "q", head, 168)[0]
        qform_code, sform_code = struct.unpack_from(order + "2i", head, 344)
        quatern = struct.unpack_from(order + "6d", head, 352)
        srow = struct.unpack_from(order + "12d", head, 400)
    ndim = int(dim[0])
    if not 1 <= ndim <= 7 or any(n < 1 for n in dim[1:ndim + 1]) or bitpix <= 0 or bitpix % 8:
        raise InputError(f"{name} has a damaged NIfTI header (dim {list(dim[:ndim + 1])}, bitpix {bitpix})")
    shape = tuple(int(dim[i]) if i <= ndim else 1 for i in (1, 2, 3))
    return NiftiHeader(
        shape_xyz=shape,  # type: ignore[arg-type]
        voxels=int(np.prod([int(n) for n in dim[1:ndim + 1]], dtype=np.int64)),
        bitpix=int(bitpix), datatype=int(datatype), vox_offset=max(vox_offset, size + 4),
        pixdim=(float(pixdim[1]), float(pixdim[2]), float(pixdim[3])), sform_code=int(sform_code),
        qform_code=int(qform_code), sform_ras=np.array(srow, dtype=np.float64).reshape(3, 4),
        qform_ras=_qform_affine(quatern, pixdim), byte_order=order,
    )


def _qform_affine(quatern: tuple[float, ...], pixdim: tuple[float, ...]) -> np.ndarray:
    """The (3, 4) RAS affine of a qform: quaternion (b, c, d), offsets, |pixdim| and qfac (NIfTI-1 method 2)."""
    b, c, d, *offset = (float(v) for v in quatern)
    a = np.sqrt(max(1.0 - (b * b + c * c + d * d), 0.0))
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    scales = np.abs([pixdim[1], pixdim[2], pixdim[3] * qfac]) * [1.0, 1.0, qfac]
    return np.column_stack([rotation * scales, offset])


@dataclass(frozen=True)
class NiftiContents:
    """A NIfTI file read to its end: its header and the flat indices (file order) of non-finite voxels."""

    header: NiftiHeader
    nonfinite_indices: np.ndarray


def _stream(path: Path) -> Iterator[bytes]:
    """The file's bytes in chunks (the first one 540 bytes), decompressed if gzip; a cut or damaged stream is
    refused."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            yield stream.read(540)
            while chunk := stream.read(_CHUNK_BYTES):
                yield chunk
    except EOFError:
        raise InputError(f"{path.name} is truncated: its compressed data end before the end of the file") from None
    except (gzip.BadGzipFile, zlib.error, OSError) as exc:
        raise InputError(f"{path.name} is damaged: {exc}") from None


def read_to_end(path: Path) -> NiftiContents:
    """Read a ``.nii`` or ``.nii.gz`` to its end: refuse a cut or damaged file, find non-finite voxels.

    The gzip CRC and length are checked by the stream; the voxel block must hold
    at least the bytes the header's dims and bitpix promise.
    """
    chunks = _stream(path)
    head = next(chunks)
    header = parse_header(head, path.name)
    code = _FLOAT_DTYPES.get(header.datatype)
    dtype = np.dtype(header.byte_order + code) if code else None
    skip = header.vox_offset - len(head)  # bytes still to skip before the voxels (negative: voxels in head)
    carry = b""
    position = 0  # bytes of the voxel block seen so far
    nonfinite: list[np.ndarray] = []
    for chunk in itertools.chain([head[header.vox_offset:] if skip < 0 else b""], chunks):
        if skip > 0:
            chunk, skip = chunk[skip:], max(skip - len(chunk), 0)
        end = min(len(chunk), header.data_bytes - position)
        if dtype is not None and end > 0:
            data = carry + chunk[:end]
            usable = len(data) - len(data) % dtype.itemsize
            bad = np.flatnonzero(~np.isfinite(np.frombuffer(data[:usable], dtype=dtype)))
            if bad.size:
                nonfinite.append(bad + (position - len(carry)) // dtype.itemsize)
            carry = data[usable:]
        position += max(end, 0)
    if position < header.data_bytes:
        raise InputError(f"{path.name} is truncated: it holds {position} of the {header.data_bytes} voxel bytes "
                         f"its header promises ({100 * position / header.data_bytes:.0f} %)")
    indices = np.concatenate(nonfinite) if nonfinite else np.zeros(0, dtype=np.int64)
    return NiftiContents(header, indices)


def check_geometry(header: NiftiHeader, name: str, *, spacing_mm: tuple[float, ...], origin_mm: tuple[float, ...],
                   direction: tuple[float, ...]) -> None:
    """Refuse a header whose pixdim is not positive, or whose sform disagrees with the geometry read.

    ``spacing_mm``, ``origin_mm`` and ``direction`` are the LPS geometry SimpleITK built.
    """
    used = [size for size, n in zip(header.pixdim, header.shape_xyz) if n > 1]
    if any(not np.isfinite(size) or size <= 0 for size in used):
        raise InputError(f"{name} has a non-positive voxel size in its header (pixdim "
                         f"{', '.join(f'{v:g}' for v in header.pixdim)} mm): its axis directions are ambiguous; "
                         "write it again with positive pixdim and the flip in the sform/qform")
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    columns = lps_to_ras @ np.asarray(direction, dtype=np.float64).reshape(3, 3) @ np.diag(spacing_mm)
    read = np.column_stack([columns, lps_to_ras @ np.asarray(origin_mm, dtype=np.float64)])
    stored = [(kind, affine) for kind, code, affine in (("sform", header.sform_code, header.sform_ras),
                                                         ("qform", header.qform_code, header.qform_ras)) if code > 0]
    if len(stored) == 2 and not _same_affine(header.sform_ras, header.qform_ras):
        raise InputError(
            f"{name}: the sform and the qform of its header disagree (RAS columns {np.round(header.sform_ras, 3).tolist()}"
            f" and {np.round(header.qform_ras, 3).tolist()}); the file's position or orientation is ambiguous: write it "
            "again with one consistent geometry")
    for kind, affine in stored:
        if not _same_affine(affine, read):
            raise InputError(f"{name}: the {kind} of its header ({np.round(affine, 3).tolist()}) cannot be read as a "
                             f"voxel grid (read {np.round(read, 3).tolist()}); write it again with a rigid {kind}")


def _same_affine(first: np.ndarray, second: np.ndarray) -> bool:
    """Equal within 0.1 % of the voxel size on the axes and 0.01 mm on the offsets."""
    if not (np.all(np.isfinite(first)) and np.all(np.isfinite(second))):
        return False
    tolerance = 1e-3 * max(1.0, float(np.abs(second[:, :3]).max()))
    return bool(np.abs(first[:, :3] - second[:, :3]).max() <= tolerance
                and np.abs(first[:, 3] - second[:, 3]).max() <= max(tolerance, 1e-2))
