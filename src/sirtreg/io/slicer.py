"""3D Slicer segmentations (``.seg.nrrd``): named, possibly overlapping binary segments.

A Slicer segmentation stores one or more label layers on a common grid (a 4D
NRRD whose first axis has kind "list" when there are several layers); each
segment is one label value in one layer, described by the header keys
``SegmentN_ID/_Name/_Layer/_LabelValue/_Color``. NRRD axes are (x, y, z), our
arrays are (z, y, x); RAS files are converted to LPS.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any

import nrrd
import numpy as np

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, LabelVolume
from sirtreg.io.images import prepare_output, require_file
from sirtreg.output_folder import replacing

log = logging.getLogger(__name__)

# sign flips from a file's space to LPS, per world axis
_TO_LPS = {
    "left-posterior-superior": (1.0, 1.0, 1.0),
    "right-anterior-superior": (-1.0, -1.0, 1.0),
    "left-anterior-superior": (1.0, -1.0, 1.0),
}
_SPACE_ALIASES = {"LPS": "left-posterior-superior", "RAS": "right-anterior-superior", "LAS": "left-anterior-superior"}
_DEFAULT_COLOR = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Segment:
    """One segment: voxels equal to ``label_value`` in layer ``layer``; colour is RGB in 0..1."""

    name: str
    id: str
    layer: int = 0
    label_value: int = 1
    color: tuple[float, float, float] = _DEFAULT_COLOR
    tags: str = ""  # Slicer terminology and status, kept as read


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Named binary segments on one grid; ``layers`` is (n_layers, z, y, x) integer."""

    grid: Grid
    layers: np.ndarray
    segments: tuple[Segment, ...]

    def __post_init__(self) -> None:
        layers = np.asarray(self.layers)
        if layers.ndim == 3:
            layers = layers[None]
        if layers.ndim != 4 or layers.shape[1:] != self.grid.shape or not np.issubdtype(layers.dtype, np.integer):
            raise InputError(f"segmentation layers of shape {layers.shape} do not fit {self.grid.describe()}")
        segments = tuple(self.segments)
        if len({s.id for s in segments}) != len(segments):
            raise InputError("segment IDs must be unique")
        bad = [s.name for s in segments if not 0 <= s.layer < layers.shape[0] or s.label_value < 1]
        if bad:
            raise InputError(f"segments {bad} point to a layer or label value that is not there")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "segments", segments)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.segments]

    def segment(self, name: str) -> Segment:
        """A segment by name, else by ID, else by case-insensitive name."""
        for matches in ([s for s in self.segments if s.name == name], [s for s in self.segments if s.id == name],
                        [s for s in self.segments if s.name.lower() == name.lower()]):
            if len(matches) == 1:
                return matches[0]
            if matches:
                raise InputError(f"{len(matches)} segments are named {name!r}; use a segment ID")
        raise InputError(f"no segment named {name!r}; known: {', '.join(self.names) or 'none'}")

    def mask(self, name: str) -> np.ndarray:
        """Boolean array (z, y, x) of one segment."""
        segment = self.segment(name)
        return self.layers[segment.layer] == segment.label_value

    def volume_ml(self, name: str) -> float:
        """Volume of one segment in mL."""
        return float(np.count_nonzero(self.mask(name))) * self.grid.voxel_volume_ml

    def label_volume(self, name: str) -> LabelVolume:
        """One segment as a binary LabelVolume (value 1, named)."""
        segment = self.segment(name)
        return LabelVolume.from_mask(self.mask(name), self.grid, name=segment.name)

    def overlapping(self) -> tuple[str, str] | None:
        """Names of the first two segments that share a voxel, or None."""
        masks = {s.id: self.layers[s.layer] == s.label_value for s in self.segments}
        for a, b in combinations(self.segments, 2):
            if a.layer != b.layer and np.any(masks[a.id] & masks[b.id]):
                return a.name, b.name
        return None

    def to_label_volume(self) -> LabelVolume:
        """All segments in one label map; refused when segments overlap.

        Label values are kept when they are distinct across segments,
        otherwise segments are numbered 1, 2, ... in their order.
        """
        pair = self.overlapping()
        if pair is not None:
            raise InputError(
                f"segments {pair[0]!r} and {pair[1]!r} overlap, so one label map cannot hold them; "
                "read the file with read_segmentation and take masks by name"
            )
        values = [s.label_value for s in self.segments]
        if len(set(values)) != len(values):
            values = list(range(1, len(self.segments) + 1))
        dtype = np.uint8 if max(values, default=0) < 256 else np.int32
        array = np.zeros(self.grid.shape, dtype=dtype)
        for segment, value in zip(self.segments, values):
            array[self.layers[segment.layer] == segment.label_value] = value
        return LabelVolume(array, self.grid, labels={v: s.name for s, v in zip(self.segments, values)})

    @classmethod
    def from_masks(cls, grid: Grid, masks: Mapping[str, np.ndarray], *,
                   colors: Mapping[str, Sequence[float]] | None = None) -> Segmentation:
        """Segments from named boolean arrays (z, y, x); overlapping ones go to separate layers."""
        layers: list[np.ndarray] = []
        segments = []
        for index, (name, mask) in enumerate(masks.items()):
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != grid.shape:
                raise InputError(f"mask {name!r} has shape {mask.shape}, the grid {grid.shape} (z, y, x)")
            layer = next((i for i, a in enumerate(layers) if not np.any(a[mask])), len(layers))
            if layer == len(layers):
                layers.append(np.zeros(grid.shape, dtype=np.uint8))
            value = 1 + max((s.label_value for s in segments if s.layer == layer), default=0)
            if value > 255:
                layers[layer] = layers[layer].astype(np.uint16)
            layers[layer][mask] = value
            color = tuple(float(c) for c in (colors or {}).get(name, _DEFAULT_COLOR))
            segments.append(Segment(name, f"Segment_{index + 1}", layer, value, color))  # type: ignore[arg-type]
        stacked = np.stack(layers) if layers else np.zeros((1, *grid.shape), dtype=np.uint8)
        return cls(grid, stacked, tuple(segments))


# --- reading ------------------------------------------------------------------------
def _grid_from_header(header: Mapping[str, Any], domain_axes: list[int], path: Path) -> Grid:
    space = _SPACE_ALIASES.get(str(header.get("space", "")), str(header.get("space", "")))
    if space not in _TO_LPS or "space directions" not in header:
        raise InputError(f"{path.name} has no supported space ({header.get('space', 'none')!r}); need LPS or RAS")
    flip = np.asarray(_TO_LPS[space])
    vectors = np.asarray(header["space directions"], dtype=float)[domain_axes] * flip  # one row per x, y, z axis
    spacing = np.linalg.norm(vectors, axis=1)
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float) * flip
    sizes = np.asarray(header["sizes"])[domain_axes]
    return Grid(tuple(sizes), tuple(spacing), tuple(origin), tuple((vectors / spacing[:, None]).T.reshape(-1)))


def _segments_from_header(header: Mapping[str, Any], n_layers: int) -> list[Segment]:
    segments = []
    index = 0
    while f"Segment{index}_ID" in header or f"Segment{index}_Name" in header:
        key = f"Segment{index}_"
        color = header.get(key + "Color")
        segments.append(Segment(
            name=str(header.get(key + "Name", header.get(key + "ID"))),
            id=str(header.get(key + "ID", f"Segment_{index + 1}")),
            # files from before Slicer 4.11 hold one binary layer per segment and no layer keys
            layer=int(header.get(key + "Layer", index if n_layers > 1 else 0)),
            label_value=int(header.get(key + "LabelValue", 1)),
            color=tuple(float(c) for c in str(color).split()) if color else _DEFAULT_COLOR,  # type: ignore[arg-type]
            tags=str(header.get(key + "Tags", "")),
        ))
        index += 1
    return segments


def is_segmentation_file(path: Path) -> bool:
    """True for a ``.seg.nrrd`` file, or an NRRD file whose header lists Slicer segments."""
    name = path.name.lower()
    if name.endswith(".seg.nrrd"):
        return True
    if not name.endswith(".nrrd") or not path.is_file():
        return False
    try:
        return "Segment0_ID" in nrrd.read_header(str(path))
    except nrrd.NRRDError:
        return False


def read_segmentation(path: str | os.PathLike[str]) -> Segmentation:
    """Read a 3D Slicer segmentation (3D, or 4D with a "list" axis of layers)."""
    path = require_file(path)
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except (nrrd.NRRDError, OSError, ValueError) as exc:
        raise InputError(f"cannot read {path.name} as a segmentation: {exc}") from None
    kinds = [str(k) for k in header.get("kinds", ["domain"] * data.ndim)]
    list_axes = [i for i, k in enumerate(kinds) if k == "list"]
    domain_axes = [i for i in range(data.ndim) if i not in list_axes]
    if len(domain_axes) != 3 or len(list_axes) > 1:
        raise InputError(f"{path.name} has axes {kinds}; a segmentation needs 3 spatial axes and at most one list axis")
    if not np.issubdtype(data.dtype, np.integer):
        raise InputError(f"{path.name} holds {data.dtype} voxels; a segmentation holds integers")
    layers = np.transpose(data, list_axes + domain_axes[::-1]) if list_axes else data.transpose(2, 1, 0)[None]
    grid = _grid_from_header(header, domain_axes, path)
    segments = _segments_from_header(header, layers.shape[0])
    if not segments:
        raise InputError(f"{path.name} names no segments (no Segment0_ID in its header); read it as a label map")
    segmentation = Segmentation(grid, np.ascontiguousarray(layers), tuple(segments))
    log.info("read %d segments in %d layers on %s", len(segments), layers.shape[0], grid.describe())
    return segmentation


# --- writing ------------------------------------------------------------------------
def _extent(mask: np.ndarray) -> str:
    """Slicer's segment extent: first and last (i, j, k) index of the segment, or empty."""
    if not mask.any():
        return "0 -1 0 -1 0 -1"
    bounds = []
    for axis in (2, 1, 0):  # x, y, z from the (z, y, x) array
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        bounds += [int(hit[0]), int(hit[-1])]
    return " ".join(str(b) for b in bounds)


def write_segmentation(segmentation: Segmentation, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Write a ``.seg.nrrd`` that 3D Slicer loads (one layer as 3D, several as 4D with a list axis)."""
    path = prepare_output(path, overwrite=overwrite)
    grid, layers = segmentation.grid, segmentation.layers
    vectors = grid.direction_matrix.T * np.asarray(grid.spacing_mm)[:, None]  # one row per x, y, z axis
    multi = layers.shape[0] > 1
    dtype = np.uint8 if layers.max(initial=0) < 256 else np.uint16
    header: dict[str, Any] = {
        "type": np.dtype(dtype).name,
        "dimension": 4 if multi else 3,
        "space": "left-posterior-superior",
        "space directions": np.vstack([np.full((1, 3), np.nan), vectors]) if multi else vectors,
        "kinds": ["list", "domain", "domain", "domain"] if multi else ["domain"] * 3,
        "space origin": np.asarray(grid.origin_mm),
        "encoding": "gzip",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    for index, segment in enumerate(segmentation.segments):
        key = f"Segment{index}_"
        header[key + "ID"] = segment.id
        header[key + "Name"] = segment.name
        header[key + "NameAutoGenerated"] = "0"
        header[key + "Color"] = " ".join(f"{c:.6g}" for c in segment.color)
        header[key + "ColorAutoGenerated"] = "0"
        header[key + "Layer"] = str(segment.layer)
        header[key + "LabelValue"] = str(segment.label_value)
        header[key + "Extent"] = _extent(layers[segment.layer] == segment.label_value)
        if segment.tags:
            header[key + "Tags"] = segment.tags
    data = layers.astype(dtype).transpose(0, 3, 2, 1) if multi else layers[0].astype(dtype).transpose(2, 1, 0)
    with replacing(path, overwrite=True, suffix=".nrrd") as temporary:
        nrrd.write(str(temporary), data, header, index_order="F")
    log.info("wrote %d segments in %d layers", len(segmentation.segments), layers.shape[0])
    return path
