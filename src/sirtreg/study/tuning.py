"""The weights a grid search chose, read back from its results table (``sirtreg study tune``).

Both ``sirtreg study evaluate --weights-from`` and ``sirtreg run --weights-from`` read a
grid search this way: one method name and guidance per table, and per modality the grid
point of lowest RRMSD among those that finished every registration of the train split
(:func:`~sirtreg.study.runner.best_methods`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sirtreg.errors import InputError
from sirtreg.study.methods import Method
from sirtreg.study.runner import Row, best_methods, best_rrmsd_mm, methods_of_rows, read_results, summarise

TUNING_SPLIT = "train"


@dataclass(frozen=True)
class TunedWeights:
    """A grid search read back: its table, method name and guidance, and per modality (CT, MR) the chosen grid
    point and its RRMSD (mm) on the train split; ``summary`` is :func:`~sirtreg.study.runner.summarise` of it."""

    path: Path
    name: str
    guidance: str
    best: dict[str, Method]
    rrmsd_mm: dict[str, float]
    summary: list[Row]

    def source(self, modality: str) -> str:
        """Where the weights of ``modality`` come from, for reports: file, grid and RRMSD."""
        return (f"{self.path.name} (grid search '{self.name}', RRMSD {self.rrmsd_mm[modality]:.2f} mm on its "
                f"{TUNING_SPLIT} split)")


def read_tuned_weights(path: str | os.PathLike[str]) -> TunedWeights:
    """The weights chosen by the grid search whose results table is ``path``.

    Refuses (InputError) a file that is not a study table, and a table of several methods or guidances (not
    the table of one grid search). A modality with no complete grid point has no entry in ``best`` (a warning
    is logged by :func:`~sirtreg.study.runner.best_methods`).
    """
    path = Path(path)
    rows = read_results(path)
    names = sorted({(row["method_name"], row["guidance"]) for row in rows})
    if len(names) != 1:
        found = ", ".join(f"{name} ({guidance})" for name, guidance in names) or "none"
        raise InputError(f"{path.name} is not the table of one grid search (`sirtreg study tune`): its methods are "
                         f"{found}")
    [(name, guidance)] = names
    grid = methods_of_rows(rows)
    summary = summarise(rows)
    best = best_methods(summary, grid, split=TUNING_SPLIT)
    return TunedWeights(path=path, name=name, guidance=guidance, best=best,
                        rrmsd_mm=best_rrmsd_mm(summary, best, split=TUNING_SPLIT), summary=summary)
