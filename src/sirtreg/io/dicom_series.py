"""Finding DICOM series: headers read without pixels, grouped by SeriesInstanceUID (or, without one, by
modality, number, description, study, frame of reference, date and orientation), split where one group
mixes acquisitions, and chosen by series number or description."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from sirtreg.errors import DicomSeriesError, InputError

log = logging.getLogger(__name__)

NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "RTDOSE", "SR", "PR", "KO", "REG", "DOC"})
DUPLICATE_MM = 1e-3  # mm: two slices closer than this along the normal are one position repeated
_ORIENTATION_DECIMALS = 3  # orientation cosines are rounded so when grouping files without SeriesInstanceUID
_SPLIT_KEYWORDS = ("AcquisitionNumber", "ImageType", "ConvolutionKernel", "SliceThickness", "EchoNumbers",
                   "TemporalPositionIdentifier", "Rows", "Columns", "PixelSpacing")
@dataclass(frozen=True)
class SeriesInfo:
    """One series found in a folder: non-identifying facts and its files."""

    uid: str
    modality: str
    description: str
    n_files: int
    n_slices: int
    files: tuple[Path, ...] = field(repr=False, compare=False, default=())
    number: str = ""  # SeriesNumber, "" when absent
    problem: str = field(compare=False, default="")  # why the files cannot be read as one series ("" when they can)

    def summary(self) -> str:
        """One line: modality, description, series number, slices and UID."""
        description = repr(self.description) if self.description else "(no description)"
        number = f"series number {self.number}, " if self.number else ""
        return f"{self.modality or '?'} {description}, {number}{self.n_slices} slices, uid {self.uid or '(none)'}"


def read_header(path: Path) -> Dataset | None:
    """The header of a DICOM image file, or None for other files."""
    try:
        header = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError, TypeError):
        return None
    if "Rows" not in header or "Columns" not in header:
        return None
    if str(header.get("Modality", "")).upper() in NON_IMAGE_MODALITIES:
        return None
    return header


def read_dicom_object(path: Path, *, modality: str, what: str) -> Dataset:
    """One DICOM file of ``modality`` (e.g. "SEG", "RTDOSE"), read whole; refuse anything else as ``what``."""
    try:
        dataset = pydicom.dcmread(path)
    except (InvalidDicomError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"cannot read {path.name} as DICOM: {exc}") from None
    if str(dataset.get("Modality", "")) != modality:
        raise InputError(f"{path.name} is not {what} (modality {dataset.get('Modality', 'none')!r})")
    return dataset


def frame_count(header: Dataset) -> int:
    return int(header.get("NumberOfFrames", 1) or 1)


def is_multi_frame(header: Dataset) -> bool:
    """True for NM/PT multi-frame and enhanced files; single frames that state NumberOfFrames 1 are slices."""
    return frame_count(header) > 1 or "PerFrameFunctionalGroupsSequence" in header


def scan_headers(files: Sequence[Path]) -> list[tuple[Path, Dataset]]:
    found = [(path, header) for path in files if (header := read_header(path)) is not None]
    log.debug("%d of %d files are DICOM images", len(found), len(files))
    return found


def folder_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def no_images_error(folder: Path) -> DicomSeriesError:
    subfolders = [p for p in folder.iterdir() if p.is_dir()]
    hint = f" (it has {len(subfolders)} subfolders: pass one of them)" if subfolders else ""
    return DicomSeriesError(f"no DICOM image files in {folder}{hint}")


def _text(header: Dataset, keyword: str) -> str:
    value = header.get(keyword)
    return "" if value is None else str(value).strip()


def _series_uid(header: Dataset) -> str:
    return _text(header, "SeriesInstanceUID")


def _orientation_key(header: Dataset) -> tuple[float, ...]:
    try:
        return tuple(round(float(v), _ORIENTATION_DECIMALS) + 0.0 for v in header.ImageOrientationPatient)
    except (AttributeError, TypeError, ValueError):
        return ()


def _loose_key(path: Path, header: Dataset) -> tuple[object, ...]:
    """What files without SeriesInstanceUID must share to be one series (a multi-frame file is one on its own)."""
    if is_multi_frame(header):
        return (str(path),)
    keywords = ("Modality", "SeriesNumber", "SeriesDescription", "StudyInstanceUID", "FrameOfReferenceUID",
                "SeriesDate", "SeriesTime")
    return (*(_text(header, k) for k in keywords), _orientation_key(header))


def _clash(members: list[tuple[Path, Dataset]]) -> str:
    """Why single-frame files without SeriesInstanceUID cannot be one series: repeated positions or numbers."""
    numbers, along = [], []
    for _, header in members:
        try:
            numbers.append(int(header.InstanceNumber))
        except (AttributeError, TypeError, ValueError):
            pass
        try:
            position = np.asarray([float(v) for v in header.ImagePositionPatient], dtype=float)
            cosines = np.asarray([float(v) for v in header.ImageOrientationPatient], dtype=float)
            normal = np.cross(cosines[:3], cosines[3:])
            along.append(float(position @ (normal / np.linalg.norm(normal))))
        except (AttributeError, TypeError, ValueError, IndexError):
            pass
    reasons = []
    positions = int(np.count_nonzero(np.diff(np.sort(np.asarray(along))) < DUPLICATE_MM)) if along else 0
    if positions:
        reasons.append(f"{positions} repeated slice positions")
    if len(numbers) != len(set(numbers)):
        reasons.append(f"{len(numbers) - len(set(numbers))} repeated instance numbers")
    return " and ".join(reasons)


def _split(members: list[tuple[Path, Dataset]]) -> list[tuple[list[tuple[Path, Dataset]], str]]:
    """Files without SeriesInstanceUID that share a loose key, as series (members, problem)."""
    clash = _clash(members)
    if not clash:
        return [(members, "")]
    parts: dict[tuple[str, ...], list[tuple[Path, Dataset]]] = {}
    for path, header in members:
        parts.setdefault(tuple(_text(header, k) for k in _SPLIT_KEYWORDS), []).append((path, header))
    if len(parts) > 1 and not any(_clash(part) for part in parts.values()):
        log.info("%d files without SeriesInstanceUID split into %d series by acquisition, image type and "
                 "reconstruction", len(members), len(parts))
        return [(part, "") for part in parts.values()]
    return [(members, (
        f"its {len(members)} files have no SeriesInstanceUID and show {clash}: several series with nothing in their "
        "headers to tell them apart (description, series number, orientation, acquisition); "
        "put the files of each series in a folder of its own"
    ))]


def _number_order(number: str) -> tuple[int, float]:
    try:
        return 0, float(number)
    except ValueError:
        return 1, 0.0


def group_series(scanned: list[tuple[Path, Dataset]]) -> list[SeriesInfo]:
    """Series by SeriesInstanceUID; files without one by their loose key, split where slices repeat."""
    by_uid: dict[str, list[tuple[Path, Dataset]]] = {}
    loose: dict[tuple[object, ...], list[tuple[Path, Dataset]]] = {}
    for path, header in scanned:
        uid = _series_uid(header)
        if uid:
            by_uid.setdefault(uid, []).append((path, header))
        else:
            loose.setdefault(_loose_key(path, header), []).append((path, header))
    groups = [(members, "") for members in by_uid.values()]
    for members in loose.values():
        groups += _split(members)
    if loose:
        n_loose = sum(len(m) for m in loose.values())
        log.warning("%d DICOM image files have no SeriesInstanceUID; grouped into %d series by modality, series "
                    "number, description, orientation and slice positions", n_loose, len(groups) - len(by_uid))
    infos = []
    for members, problem in groups:
        first = members[0][1]
        infos.append(SeriesInfo(
            uid=_series_uid(first),
            modality=_text(first, "Modality"),
            description=_text(first, "SeriesDescription"),
            n_files=len(members),
            n_slices=sum(frame_count(h) for _, h in members),
            files=tuple(p for p, _ in members),
            number=_text(first, "SeriesNumber"),
            problem=problem,
        ))
    return sorted(infos, key=lambda s: (s.modality, s.description, _number_order(s.number), s.uid, s.files[:1]))


def list_series(folder: str | os.PathLike[str]) -> list[SeriesInfo]:
    """The DICOM image series in a folder (not its subfolders): one record per SeriesInstanceUID, and per group of
    files without one (see the module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"no such folder: {folder}")
    return group_series(scan_headers(folder_files(folder)))


def series_of_file(path: str | os.PathLike[str]) -> SeriesInfo:
    """The series, among those in its folder, that one DICOM slice file belongs to."""
    path = Path(path)
    for info in list_series(path.parent):
        if path.name in {p.name for p in info.files}:
            return info
    raise InputError(f"{path.name} is not a DICOM image file")


def _how_to_choose(candidates: Sequence[SeriesInfo]) -> str:
    """How to tell ``candidates`` apart, for messages."""
    keys = [(s.description, s.number) for s in candidates if not s.uid]
    if len(keys) != len(set(keys)):
        return ("choose one by UID, description or series number; series without UID that share description and "
                "series number cannot be chosen: put the files of each series in a folder of its own")
    if any(not s.uid for s in candidates):
        return "choose one by UID, or by description or series number (series without UID)"
    return "choose one by UID or description"


def _checked(info: SeriesInfo, where: str) -> SeriesInfo:
    if info.problem:
        raise DicomSeriesError(f"{info.summary()} in {where}: {info.problem}")
    return info


def _same_number(number: str, series: str) -> bool:
    try:
        return bool(number) and float(number) == float(series)
    except ValueError:
        return False


def select_series(found: Sequence[SeriesInfo], series: str | None, *, where: str) -> SeriesInfo:
    """The one series named by UID, description (exact), series number, else description (case-insensitive
    substring); refuses none, several, and files that cannot be one series."""
    if not found:
        raise DicomSeriesError(f"no DICOM image files in {where}")
    listing = "; ".join(s.summary() for s in found)
    if series is None:
        if len(found) == 1:
            return _checked(found[0], where)
        raise DicomSeriesError(f"{where} holds {len(found)} series; {_how_to_choose(found)}: {listing}")
    for matches in (
        [s for s in found if s.uid == series],
        [s for s in found if s.description == series],
        [s for s in found if _same_number(s.number, series.strip())],
        [s for s in found if series.lower() in s.description.lower()],
    ):
        if len(matches) == 1:
            return _checked(matches[0], where)
        if len(matches) > 1:
            candidates = "; ".join(s.summary() for s in matches)
            raise DicomSeriesError(
                f"{series!r} matches {len(matches)} series in {where}; {_how_to_choose(matches)}: {candidates}"
            )
    raise DicomSeriesError(f"no series matches {series!r} in {where}; found: {listing}")


