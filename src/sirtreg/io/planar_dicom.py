"""Planar scintigraphy views (the MAA lung shunt study) from DICOM NM files.

A static planar file holds one frame per detector: one view, or the anterior and posterior views together (a
dual-head camera). The frame of a view is found through its detector: the Detector Vector (0054,0020) gives
each frame's detector, whose View Code Sequence (0054,0220) in the Detector Information Sequence (0054,0022)
names the view (a code meaning of exactly "anterior" or "posterior"); a one-frame file that names the other view
is refused. The counts are the stored values rescaled (Rescale Slope and Intercept, when present). A planar
view has no place in the patient's frame: its grid is its pixels (Pixel Spacing, origin 0, no orientation), one
slice thick.
"""

from __future__ import annotations

import os

import numpy as np

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, Volume

VIEWS = ("anterior", "posterior")


def _view_of_detector(dataset, detector: int) -> str | None:
    """'anterior', 'posterior' or None, from the View Code Sequence of a detector (1-based)."""
    detectors = getattr(dataset, "DetectorInformationSequence", None) or []
    if not 1 <= detector <= len(detectors):
        return None
    codes = getattr(detectors[detector - 1], "ViewCodeSequence", None) or []
    meanings = {str(getattr(code, "CodeMeaning", "")).strip().lower() for code in codes}
    found = [view for view in VIEWS if view in meanings]  # the whole meaning: "left anterior oblique" is neither
    return found[0] if len(found) == 1 else None


def read_planar_dicom(path: str | os.PathLike[str], view: str) -> Volume:
    """The ``view`` ("anterior" or "posterior") of a DICOM NM planar file, as a one-slice volume of counts."""
    import pydicom

    if view not in VIEWS:
        raise InputError(f"a planar view is anterior or posterior, got {view!r}")
    name = os.path.basename(os.fspath(path))
    try:
        dataset = pydicom.dcmread(path)
        frames = np.asarray(dataset.pixel_array, dtype=np.float64)
    except Exception as exc:  # pydicom raises many kinds for files that are not (image) DICOM
        raise InputError(f"cannot read {name} as a DICOM image: {exc}") from None
    if str(getattr(dataset, "Modality", "")) != "NM":
        raise InputError(f"{name} is {getattr(dataset, 'Modality', 'no modality')}, not a planar NM view")
    frames = frames.reshape(-1, *frames.shape[-2:])
    vector = [int(d) for d in np.atleast_1d(getattr(dataset, "DetectorVector", None) or [])]  # one value: an int
    views = [_view_of_detector(dataset, d) for d in vector] if len(vector) == len(frames) else [None] * len(frames)
    if len(frames) == 1:
        if views[0] not in (None, view):
            raise InputError(f"{name} is the {views[0]} view, given as the {view} one")
        chosen = frames[0]
    else:
        matches = [index for index, found in enumerate(views) if found == view]
        if len(matches) != 1:
            raise InputError(f"{name} holds {len(frames)} frames and its detectors do not name one {view} view: "
                             "give each view in a file of its own")
        chosen = frames[matches[0]]
    # stored values to counts (NaN pixels are refused with the counts)
    counts = chosen * float(getattr(dataset, "RescaleSlope", 1) or 1) + float(getattr(dataset, "RescaleIntercept", 0)
                                                                             or 0)
    row_mm, column_mm = (float(s) for s in (getattr(dataset, "PixelSpacing", None) or (1.0, 1.0)))
    grid = Grid((counts.shape[1], counts.shape[0], 1), (column_mm, row_mm, 1.0))
    return Volume(counts[None].astype(np.float32), grid, "NM", {"view": view})
