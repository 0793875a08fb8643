"""What a registration returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sirtreg.geometry import DisplacementField, Transform
from sirtreg.register.transforms import AffineTransform


@dataclass(frozen=True, eq=False)
class LevelRecord:
    """One pyramid level of one stage: loss terms per iteration, the time spent and why it stopped."""

    stage: str  # "affine" or "non-rigid"
    spacing_mm: float
    iterations: int
    seconds: float
    losses: dict[str, list[float]]
    stopped: str = ""  # "converged" or "iteration limit"


@dataclass(frozen=True, eq=False)
class RegistrationResult:
    """The affine, the dense transform (None for affine only), per-level history and settings.

    ``transform`` maps reference points to floating points. The displacement
    field covers the whole reference at the finest non-rigid spacing and
    includes the affine part; the non-rigid part, optimised in the working
    region (reference liver + margin), is extended at constant value beyond it.
    """

    affine: AffineTransform
    displacement: DisplacementField | None
    levels: tuple[LevelRecord, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def transform(self) -> Transform:
        return self.displacement if self.displacement is not None else self.affine

    @property
    def seconds(self) -> float:
        return sum(level.seconds for level in self.levels)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready summary: settings, affine parameters, final losses and timings."""
        return {
            "settings": self.settings,
            "affine": {"matrix": self.affine.matrix.tolist(), "translation_mm": self.affine.translation_mm.tolist(),
                       "centre_mm": self.affine.centre_mm.tolist()},
            "nonrigid": self.displacement is not None,
            "levels": [
                {"stage": level.stage, "spacing_mm": level.spacing_mm, "iterations": level.iterations,
                 "stopped": level.stopped, "seconds": round(level.seconds, 3),
                 "final_losses": {name: values[-1] for name, values in level.losses.items() if values}}
                for level in self.levels
            ],
            "seconds": round(self.seconds, 3),
        }
