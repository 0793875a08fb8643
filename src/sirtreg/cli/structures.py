"""Contours named on the command line: a label map, a Slicer segmentation, DICOM SEG or RTSTRUCT, and the
segment or label value that picks one structure out of it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Any

import typer

from sirtreg.errors import InputError, SirtregError

ContourImage = Annotated[Path | None, typer.Option(help="The series the DICOM SEG or RTSTRUCT contours were drawn on "
                                                        "(e.g. the MAA CT folder).")]


@functools.lru_cache(maxsize=1)
def _segmentation(path: Path, modified_ns: int) -> Any:
    """A Slicer segmentation, read once when several options name segments of the same file (the file's
    modification time in the key)."""
    from sirtreg.io import read_segmentation

    return read_segmentation(path)


def read_structures(path: Path, segments: list[str], image: Any = None) -> list[Any]:
    """Label maps from a file: the segments of a Slicer segmentation, DICOM SEG or RTSTRUCT (those two on the
    voxels of ``image``, the series they were drawn on), or labels (name or value) of a label map."""
    from sirtreg.geometry import LabelVolume
    from sirtreg.io import has_image_suffix, is_segmentation_file, read_labels

    if is_segmentation_file(path):
        segmentation = _segmentation(path.resolve(), path.stat().st_mtime_ns)
        return [segmentation.label_volume(name) for name in (segments or segmentation.names)]
    if path.is_file() and not has_image_suffix(path):
        return _dicom_structures(path, segments, image)
    labels = read_labels(path)
    if not segments:
        return [labels]
    chosen = []
    for segment in segments:
        value = labels.value_of(segment)
        if value not in labels.present_labels():
            raise InputError(f"{path.name} holds no label {segment!r}; it holds {_label_list(labels)}")
        chosen.append(LabelVolume.from_mask(labels.array == value, labels.grid,
                                            name=labels.labels.get(value, f"{path.name.split('.')[0]} {value}")))
    return chosen


def _dicom_structures(path: Path, segments: list[str], image: Any) -> list[Any]:
    """The segments (DICOM SEG) or ROIs (RTSTRUCT) of a DICOM file, one label map each, on ``image``'s voxels."""
    from sirtreg.geometry import LabelVolume
    from sirtreg.io.contours import read_contour

    if image is None:
        raise InputError(f"{path.name} is no image or label map: a DICOM SEG or RTSTRUCT needs the series it was "
                         "drawn on (--contour-image)")
    labels = read_contour(path, segments, image, "lesions")  # several at once must not overlap
    return [LabelVolume.from_mask(labels.array == value, labels.grid, name=name)
            for value, name in labels.labels.items()]


def _label_list(labels: Any, most: int = 12) -> str:
    """'1 (liver), 2, 5 (spleen)': the values present in a label map with their names."""
    present = labels.present_labels()
    items = [f"{v} ({labels.labels[v]})" if labels.labels.get(v, f"label {v}") != f"label {v}" else str(v)
             for v in present[:most]]
    return ", ".join(items) + (f" and {len(present) - most} more" if len(present) > most else "") or "no label"


def one_structure(path: Path, segment: str | None, what: str, image: Any = None) -> Any:
    """The one structure (liver, perfused volume) of a file (see :func:`read_structures`); a file of several is
    refused unless one is chosen."""
    structures = read_structures(path, [segment] if segment else [], image)
    if len(structures) != 1:
        raise SirtregError(f"{path.name} holds several segments; name the {what} with --{what}-segment")
    if len(structures[0].present_labels()) > 1:
        raise InputError(f"{path.name} holds several labels ({_label_list(structures[0])}); choose the {what} with "
                         f"--{what}-segment NAME or VALUE")
    return structures[0]


def segment_names(text: str | None) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()] if text else []
