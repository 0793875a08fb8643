"""The registration methods that a study compares, as named configurations of one engine.

A :class:`Method` is a guidance preset (``image``, ``liver``, ``liver+landmarks``)
with its weights wI (mutual information), wS (label SSD) and the spring
rigidity; ``wI = wS = 0`` stops after the affine stage. Its :attr:`Method.key`
names it in results tables. The paper's methods are the module constants
(weights: the engine defaults, see :class:`~sirtreg.register.NonRigidSettings`;
tune them with :func:`sirtreg.study.grid_search` and set the optimum with
:func:`dataclasses.replace`). :func:`grid_methods` turns a weight grid into methods,
:func:`parse_grid` reads one from ``--grid`` texts. The image-based methods see no
segmentation in a study, as in the paper: their working region is the whole
reference (the study runner gives them no labels).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from sirtreg.errors import InputError
from sirtreg.register.config import GUIDANCES, Guidance, NonRigidSettings, RegistrationSettings

_NAME_PATTERN = re.compile(r"[A-Za-z0-9+._-]+")
WEIGHTS = ("image_weight", "label_weight", "rigidity")
#: ``--grid`` names of the weights, as in the paper (any case), and the method fields they set.
GRID_WEIGHTS = {"wi": "image_weight", "ws": "label_weight", "rigidity": "rigidity"}


@dataclass(frozen=True, kw_only=True)
class Method:
    """A registration method: guidance, wI (``image_weight``), wS (``label_weight``) and spring ``rigidity``.

    ``name`` (letters, digits, '+', '.', '_', '-') names the method in tables and
    figures. Weights are stored as floats; ``image`` guidance has no label term (wS = 0).
    """

    name: str
    guidance: Guidance
    image_weight: float
    label_weight: float
    rigidity: float = NonRigidSettings.rigidity

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_PATTERN.fullmatch(self.name):
            raise InputError(f"a method name may hold only letters, digits, '+', '.', '_' and '-', got {self.name!r}")
        if self.guidance not in GUIDANCES:
            raise InputError(f"method {self.name}: guidance must be one of {', '.join(GUIDANCES)}, "
                             f"got {self.guidance!r}")
        for weight in WEIGHTS:
            value = getattr(self, weight)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InputError(f"method {self.name}: {weight} must be a finite number, got {value!r}")
            object.__setattr__(self, weight, float(value) + 0.0)  # 1 -> 1.0 and -0.0 -> 0.0: a stable key
        self.settings()  # the engine refuses negative weights and wS > 0 with image guidance

    @property
    def key(self) -> str:
        """The method's name in results tables, e.g. ``liver[wI=1.0,wS=0.5,rigidity=1.0]``."""
        return f"{self.name}[wI={self.image_weight!r},wS={self.label_weight!r},rigidity={self.rigidity!r}]"

    @property
    def affine_only(self) -> bool:
        return self.image_weight == 0 and self.label_weight == 0

    def settings(self, base: RegistrationSettings | None = None) -> RegistrationSettings:
        """The engine settings: ``base`` (pyramids, iterations, device; default the engine's) with this
        method's guidance and weights."""
        base = base or RegistrationSettings()
        nonrigid = replace(base.nonrigid, image_weight=self.image_weight, label_weight=self.label_weight,
                           rigidity=self.rigidity)
        try:
            return replace(base, guidance=self.guidance, nonrigid=nonrigid)
        except InputError as exc:
            raise InputError(f"method {self.name}: {exc}") from None


_DEFAULT = NonRigidSettings()
#: Image-based affine registration (mutual information).
IMAGE_AFFINE = Method(name="image-affine", guidance="image", image_weight=0.0, label_weight=0.0)
#: CNN-based affine registration (the liver masks).
LIVER_AFFINE = Method(name="liver-affine", guidance="liver", image_weight=0.0, label_weight=0.0)
#: Image-based affine and non-rigid registration.
IMAGE = Method(name="image", guidance="image", image_weight=_DEFAULT.image_weight, label_weight=0.0)
#: CNN-based affine, then image-based non-rigid registration (wS = 0).
LIVER_AFFINE_IMAGE = Method(name="liver-affine+image", guidance="liver", image_weight=_DEFAULT.image_weight,
                            label_weight=0.0)
#: CNN-guided: CNN-based affine, then wI * MI + wS * SSD(liver) + spring.
LIVER = Method(name="liver", guidance="liver", image_weight=_DEFAULT.image_weight,
               label_weight=_DEFAULT.label_weight)
#: CNN&LM-guided: as CNN-guided with the label map liver = 1, landmarks = 2.
LIVER_LANDMARKS = Method(name="liver+landmarks", guidance="liver+landmarks", image_weight=_DEFAULT.image_weight,
                         label_weight=_DEFAULT.label_weight)
PAPER_METHODS = (IMAGE_AFFINE, LIVER_AFFINE, IMAGE, LIVER_AFFINE_IMAGE, LIVER, LIVER_LANDMARKS)


def grid_methods(grid: Mapping[str, Sequence[float]], *, guidance: Guidance, name: str | None = None
                 ) -> tuple[Method, ...]:
    """One method per point of a weight grid: the product of the values of ``grid``, in its order.

    ``grid`` maps ``image_weight`` (wI), ``label_weight`` (wS) and ``rigidity`` to
    lists of values; a weight left out is 0 (wI, wS: the term is off) or the engine's
    default rigidity. The paper's 1D search is ``{"image_weight": [...]}`` (wS = 0), its
    2D search ``{"image_weight": [...], "label_weight": [...]}``. ``name`` defaults to the guidance.
    """
    unknown = sorted(set(grid) - set(WEIGHTS))
    if unknown:
        raise InputError(f"unknown grid weight(s) {', '.join(map(repr, unknown))}; use {', '.join(WEIGHTS)}")
    for weight, values in grid.items():
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            raise InputError(f"grid {weight} must be a non-empty list of numbers, got {values!r}")
    defaults = {"image_weight": [0.0], "label_weight": [0.0], "rigidity": [_DEFAULT.rigidity]}
    axes = [list(grid.get(weight, defaults[weight])) for weight in WEIGHTS]
    return tuple(Method(name=name or guidance, guidance=guidance, image_weight=wi, label_weight=ws, rigidity=r)
                 for wi, ws, r in itertools.product(*axes))


def parse_grid(items: Sequence[str]) -> dict[str, list[float]]:
    """``--grid`` texts to a weight grid for :func:`grid_methods`:
    ``["wI=0,0.5,1", "wS=0,1"]`` -> ``{"image_weight": [0, 0.5, 1], "label_weight": [0, 1]}``."""
    grid: dict[str, list[float]] = {}
    for item in items:
        name, equals, text = item.partition("=")
        weight = GRID_WEIGHTS.get(name.strip().lower())
        if not equals:
            raise InputError(f"--grid takes WEIGHT=V1,V2,... (e.g. wI=0,0.5,1), got {item!r}")
        if weight is None:
            raise InputError(f"unknown grid weight {name.strip()!r} in --grid {item}; use wI, wS or rigidity")
        if weight in grid:
            raise InputError(f"--grid {name.strip()} is given twice; list all its values in one --grid")
        values = []
        for value in text.split(","):
            try:
                values.append(float(value))
            except ValueError:
                raise InputError(f"--grid {item}: {value.strip()!r} is not a number") from None
        grid[weight] = values
    return grid
