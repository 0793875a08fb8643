"""Named points in LPS mm (lesion centres, clips, vessel knots), paired across images by name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume


@dataclass(frozen=True)
class Landmarks:
    """Named points in LPS mm, shape (N, 3); paired across images by name."""

    names: tuple[str, ...]
    points_mm: np.ndarray

    def __post_init__(self) -> None:
        points = np.asarray(self.points_mm, dtype=float).reshape(-1, 3) if len(self.names) else np.zeros((0, 3))
        if points.shape[0] != len(self.names):
            raise InputError(f"{len(self.names)} landmark names but {points.shape[0]} points")
        if not np.all(np.isfinite(points)):
            raise InputError("landmark coordinates must be finite")
        if len(set(self.names)) != len(self.names):
            raise InputError("landmark names must be unique")
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        object.__setattr__(self, "points_mm", points)

    def __len__(self) -> int:
        return len(self.names)

    def point(self, name: str) -> np.ndarray:
        try:
            return self.points_mm[self.names.index(name)]
        except ValueError:
            raise InputError(f"no landmark named {name!r}") from None

    @classmethod
    def from_label_centroids(cls, labels: LabelVolume) -> Landmarks:
        """Mass centre (LPS mm) of every present label, named by the label names."""
        names, points = [], []
        for value in labels.present_labels():
            k, j, i = np.nonzero(labels.array == value)
            index = np.array([i.mean(), j.mean(), k.mean()])
            names.append(labels.labels.get(value, f"label {value}"))
            points.append(labels.grid.index_to_world(index))
        return cls(tuple(names), np.asarray(points).reshape(-1, 3))

    def to_dict(self) -> dict[str, list[float]]:
        return {n: [float(c) for c in p] for n, p in zip(self.names, self.points_mm)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Landmarks:
        """Points from ``{name: [x, y, z]}`` (LPS mm); refuses anything else."""
        if not isinstance(data, Mapping) or not data:
            raise InputError("points must be a non-empty mapping {name: [x, y, z]} (LPS mm)")
        for name, value in data.items():
            if (not isinstance(value, (list, tuple)) or len(value) != 3
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
                raise InputError(f"point {str(name)[:40]!r} must be three numbers [x, y, z] in mm, got "
                                 f"{str(value)[:60]}")
        return cls(tuple(str(name) for name in data), np.asarray(list(data.values()), dtype=float).reshape(-1, 3))
