"""The non-rigid weights of a patient run, per floating modality and guidance: from the plan or a grid search.

A plan may set them under ``weights`` (see :mod:`sirtreg.pipeline.plan`)::

    weights:                        # optional; default: the engine's weights (wI = wS = rigidity = 1)
      MR:                           # CT | MR: the floating image's modality
        liver: {affine_only: true}  # the paper's optimum for CNN-guided MR to CT: no non-rigid stage
        liver+landmarks: {wI: 1, wS: 2, rigidity: 1}

Keys: ``wI`` (image similarity), ``wS`` (label SSD; 0 for image guidance, which has no
label term), ``rigidity`` (springs), each a finite number >= 0, and ``affine_only: true``
(wI = wS = 0; then neither is given). A weight left out keeps the engine's default.
``sirtreg run --weights-from TABLE`` takes them from a ``sirtreg study tune`` table
instead (:func:`with_tuned_weights`). Each registration of the run states the weights
it used and where they came from (:attr:`RunWeights.source`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sirtreg.errors import InputError
from sirtreg.register.config import GUIDANCES, RegistrationSettings, preset
from sirtreg.yaml_input import MODALITIES, Reader, refusal

if TYPE_CHECKING:
    from sirtreg.pipeline.plan import Plan
    from sirtreg.study.tuning import TunedWeights

log = logging.getLogger(__name__)

#: Keys of one (modality, guidance) entry of the plan's ``weights``, and the settings they set.
WEIGHT_KEYS = {"wI": "image_weight", "wS": "label_weight", "rigidity": "rigidity"}
PLAN_SOURCE = "the plan"
DEFAULT_SOURCE = "the engine's defaults"


@dataclass(frozen=True)
class RunWeights:
    """wI (``image_weight``), wS (``label_weight``) and spring ``rigidity`` of one registration, and their
    ``source`` (the plan, a grid-search table, the engine's defaults)."""

    image_weight: float
    label_weight: float
    rigidity: float
    source: str = PLAN_SOURCE

    def preset_weights(self) -> dict[str, float]:
        """The keyword arguments of :func:`~sirtreg.register.preset` that set these weights."""
        return {"image_weight": self.image_weight, "label_weight": self.label_weight, "rigidity": self.rigidity}

    def settings(self, guidance: str) -> RegistrationSettings:
        """The engine's preset of ``guidance`` with these weights (InputError for wS > 0 with image guidance)."""
        return preset(guidance, **self.preset_weights())  # type: ignore[arg-type]

    @property
    def affine_only(self) -> bool:
        return self.image_weight == 0 and self.label_weight == 0

    def describe(self) -> str:
        """E.g. "wI 1, wS 0.5, rigidity 2 (from the plan)"; "affine only" when both terms are off."""
        numbers = f"wI {self.image_weight:g}, wS {self.label_weight:g}, rigidity {self.rigidity:g}"
        return f"{'affine only: ' if self.affine_only else ''}{numbers} (from {self.source})"

    def to_yaml(self) -> dict[str, float]:
        return {"wI": self.image_weight, "wS": self.label_weight, "rigidity": self.rigidity}


def default_weights(guidance: str) -> RunWeights:
    """The engine's weights for ``guidance`` (wS = 0 for image guidance)."""
    nonrigid = preset(guidance).nonrigid  # type: ignore[arg-type]
    return RunWeights(nonrigid.image_weight, nonrigid.label_weight, nonrigid.rigidity, source=DEFAULT_SOURCE)


WeightTable = Mapping[tuple[str, str], RunWeights]  # (modality, guidance) -> weights


def read_plan_weights(reader: Reader, value: Any) -> dict[tuple[str, str], RunWeights]:
    """The plan's ``weights`` mapping (module docstring); every problem goes to ``reader``."""
    where = "plan, weights"
    table: dict[tuple[str, str], RunWeights] = {}
    modalities = reader.fields(where, value, dict.fromkeys(MODALITIES, False)) or {}
    for modality, entries in modalities.items():
        guidances = reader.fields(f"{where}, {modality}", entries, dict.fromkeys(GUIDANCES, False)) or {}
        for guidance, entry in guidances.items():
            weights = _read_entry(reader, f"{where}, {modality}, {guidance}", guidance, entry)
            if weights is not None:
                table[(modality, guidance)] = weights
    return table


def _read_entry(reader: Reader, where: str, guidance: str, entry: Any) -> RunWeights | None:
    start = len(reader.problems)
    fields = reader.fields(where, entry, {**dict.fromkeys(WEIGHT_KEYS, False), "affine_only": False})
    if fields is None:
        return None
    numbers = {name: reader.get(where, fields, key, reader.number) for key, name in WEIGHT_KEYS.items()}
    for key, name in WEIGHT_KEYS.items():
        if numbers[name] is not None and numbers[name] < 0:
            reader.problem(f"{where}, {key}", f"must be >= 0, got {numbers[name]:g}")
    affine_only = fields.get("affine_only", False)
    if not isinstance(affine_only, bool):
        reader.problem(f"{where}, affine_only", f"must be true or false, got {affine_only!r}")
    elif affine_only:
        given = [key for key in ("wI", "wS") if key in fields]
        if given:
            reader.problem(where, f"affine_only runs no non-rigid stage: leave out {' and '.join(given)}")
        numbers.update(image_weight=0.0, label_weight=0.0)
    if len(reader.problems) > start:
        return None
    defaults = default_weights(guidance)
    weights = RunWeights(**{name: getattr(defaults, name) if value is None else value
                            for name, value in numbers.items()})
    try:
        weights.settings(guidance)
    except InputError as exc:
        reader.problem(where, str(exc))
        return None
    return weights


def plan_weights_document(table: WeightTable) -> dict[str, dict[str, dict[str, float]]]:
    """The ``weights`` mapping of a plan file for ``table`` (weights as numbers; affine only as wI = wS = 0)."""
    document: dict[str, dict[str, dict[str, float]]] = {}
    for (modality, guidance), weights in table.items():
        document.setdefault(modality, {})[guidance] = weights.to_yaml()
    return document


def with_tuned_weights(plan: Plan, tables: Sequence[TunedWeights]) -> Plan:
    """``plan`` with the weights that grid searches chose, for each floating image whose guidance a table tunes.

    Refuses (InputError) two tables of one guidance; a floating image whose modality a table that tunes its
    guidance chose no weights for; and weights the plan already sets for the same modality and guidance (one
    source each, nothing replaced unseen). A table whose guidance no floating image uses is logged and unused.
    """
    by_guidance: dict[str, TunedWeights] = {}
    for table in tables:
        if table.guidance in by_guidance:
            raise InputError(f"{by_guidance[table.guidance].path.name} and {table.path.name} both tune "
                             f"{table.guidance} guidance; give one")
        by_guidance[table.guidance] = table
    weights = dict(plan.weights)
    problems = []
    for entry in plan.floating:
        guidance, modality = plan.guidance(entry), entry.modality
        table = by_guidance.get(guidance)
        if table is None:
            continue
        if (modality, guidance) in plan.weights:
            problems.append(f"floating {entry.id}: the plan sets {modality} weights for {guidance} guidance and "
                            f"{table.path.name} tunes them too; remove them from the plan or leave out the table")
        elif modality not in table.best:
            tuned = ", ".join(table.best) or "none"
            problems.append(f"floating {entry.id}: {table.path.name} chose no {modality} weights for {guidance} "
                            f"guidance (modalities it tuned: {tuned}); tune {modality} too, or set the weights in "
                            f"the plan")
        else:
            method = table.best[modality]
            weights[(modality, guidance)] = RunWeights(method.image_weight, method.label_weight, method.rigidity,
                                                       source=table.source(modality))
    if problems:
        raise refusal(problems, what="weights of --weights-from")
    used = {plan.guidance(entry) for entry in plan.floating}
    for guidance, table in by_guidance.items():
        if guidance not in used:
            log.warning("%s tunes %s guidance, which no floating image of the plan uses", table.path.name, guidance)
    return replace(plan, weights=weights)
