"""Which lesion numbers to trust: each lesion's spread across the registrations of its floating image, and
its distance to the same lesion drawn on the MAA CT.

A lesion drawn on one floating image and carried onto the MAA CT by several
registrations (e.g. the three guidance presets) should land in one place and get
one dose. It is flagged when its mass centres lie more than
:data:`CENTRE_SPREAD_MM` apart, when its mean doses differ by more than
:data:`MEAN_DOSE_SPREAD_PERCENT` of their mean, or when its V70 or V100 differ by
more than :data:`VOLUME_SPREAD_POINTS` percentage points. Where the MAA CT has a
lesion of the same name, each registration is also held to that lesion with the
same limits (mass-centre distance, mean dose relative to the drawn lesion's).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from sirtreg.geometry import LabelVolume
from sirtreg.named_points import Landmarks
from sirtreg.report.html import Section, Table, Text

CENTRE_SPREAD_MM = 5.0
MEAN_DOSE_SPREAD_PERCENT = 10.0
VOLUME_SPREAD_POINTS = 10.0


@dataclass(frozen=True)
class LesionDose:
    """One lesion on the MAA CT: drawn there, or carried by one registration.

    Parameters
    ----------
    name : the lesion's name where it was drawn, e.g. "lesion 4".
    source : "MAA CT" or the registration (floating id) that carried it.
    image : the image it was drawn on; the registrations of one floating image share it.
    centre_mm : mass centre (x, y, z), LPS mm; None when the lesion is empty on the MAA CT grid.
    mean_gy, v70_percent, v100_percent : its dose statistics; None where not evaluated.
    """

    name: str
    source: str
    image: str
    centre_mm: tuple[float, float, float] | None
    mean_gy: float | None
    v70_percent: float | None
    v100_percent: float | None


@dataclass(frozen=True)
class LesionAgreement:
    """How one lesion of one floating image agrees across the registrations that carried it.

    Spreads are None with fewer than two registrations holding the lesion. ``reasons`` says why the lesion is
    flagged (empty: it is not).
    """

    name: str
    image: str
    registrations: tuple[str, ...]
    centre_spread_mm: float | None
    mean_dose_spread_percent: float | None
    v70_spread_points: float | None
    v100_spread_points: float | None
    reasons: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


def _spread(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) - min(known) if len(known) > 1 else None


def _percent_spread(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    mean = float(np.mean(known)) if known else 0.0
    return 100 * (max(known) - min(known)) / mean if len(known) > 1 and mean > 0 else None


def _centre_spread(centres: Sequence[tuple[float, float, float] | None]) -> float | None:
    known = [np.asarray(c) for c in centres if c is not None]
    if len(known) < 2:
        return None
    return max(float(np.linalg.norm(a - b)) for a, b in itertools.combinations(known, 2))


def _across(carried: Sequence[LesionDose]) -> tuple[tuple[float | None, ...], list[str]]:
    """The four spreads across registrations of one lesion, and the reasons to flag it."""
    spreads = (_centre_spread([c.centre_mm for c in carried]), _percent_spread([c.mean_gy for c in carried]),
               _spread([c.v70_percent for c in carried]), _spread([c.v100_percent for c in carried]))
    centre, mean, v70, v100 = spreads
    reasons = []
    if centre is not None and centre > CENTRE_SPREAD_MM:
        reasons.append(f"mass centres up to {centre:.1f} mm apart")
    if mean is not None and mean > MEAN_DOSE_SPREAD_PERCENT:
        doses = [c.mean_gy for c in carried if c.mean_gy is not None]
        reasons.append(f"mean dose {min(doses):.1f}-{max(doses):.1f} Gy ({mean:.0f} % of their mean)")
    for label, spread, values in (("V70", v70, [c.v70_percent for c in carried]),
                                  ("V100", v100, [c.v100_percent for c in carried])):
        if spread is not None and spread > VOLUME_SPREAD_POINTS:
            known = [v for v in values if v is not None]
            reasons.append(f"{label} {min(known):.0f}-{max(known):.0f} %")
    return spreads, reasons


def _against_drawn(lesion: LesionDose, drawn: LesionDose) -> list[str]:
    """The reasons to flag a carried lesion against the same lesion drawn on the MAA CT."""
    reasons = []
    if lesion.centre_mm is not None and drawn.centre_mm is not None:
        distance = float(np.linalg.norm(np.subtract(lesion.centre_mm, drawn.centre_mm)))
        if distance > CENTRE_SPREAD_MM:
            reasons.append(f"{lesion.source}: {distance:.1f} mm from the lesion drawn on the MAA CT")
    if lesion.mean_gy is not None and drawn.mean_gy:
        if 100 * abs(lesion.mean_gy - drawn.mean_gy) / drawn.mean_gy > MEAN_DOSE_SPREAD_PERCENT:
            reasons.append(f"{lesion.source}: mean dose {lesion.mean_gy:.1f} Gy against {drawn.mean_gy:.1f} Gy "
                           f"drawn on the MAA CT")
    for label, mine, theirs in (("V70", lesion.v70_percent, drawn.v70_percent),
                                ("V100", lesion.v100_percent, drawn.v100_percent)):
        if mine is not None and theirs is not None and abs(mine - theirs) > VOLUME_SPREAD_POINTS:
            reasons.append(f"{lesion.source}: {label} {mine:.0f} % against {theirs:.0f} % drawn on the MAA CT")
    return reasons


def lesion_agreement(carried: Sequence[LesionDose], drawn: Mapping[str, LesionDose] | None = None
                     ) -> list[LesionAgreement]:
    """One :class:`LesionAgreement` per (floating image, lesion name) of ``carried``, in order of first appearance.

    ``drawn`` maps lesion names to the lesions drawn on the MAA CT (optional). A carried lesion that is empty on
    the MAA CT grid (carried outside it) is flagged too.
    """
    drawn = drawn or {}
    groups: dict[tuple[str, str], list[LesionDose]] = {}
    for lesion in carried:
        groups.setdefault((lesion.image, lesion.name), []).append(lesion)
    result = []
    for (image, name), lesions in groups.items():
        spreads, reasons = _across(lesions)
        reasons += [f"{lesion.source}: the carried lesion is empty on the MAA CT grid" for lesion in lesions
                    if lesion.centre_mm is None]
        if name in drawn:
            reasons += [reason for lesion in lesions for reason in _against_drawn(lesion, drawn[name])]
        result.append(LesionAgreement(name, image, tuple(lesion.source for lesion in lesions), *spreads,
                                      reasons=tuple(reasons)))
    return result


def lesion_doses(lesions: LabelVolume, names: Mapping[int, str], doses: Mapping[int, Mapping[str, object]], *,
                 source: str, image: str) -> list[LesionDose]:
    """The lesions of a label map on the MAA CT grid, with their mass centres and dose statistics.

    ``names`` maps label values to lesion names, ``doses`` label values to rows of the dose table (with
    ``mean_gy``, ``V70_percent`` and ``V100_percent``); ``source`` and ``image`` as in :class:`LesionDose`.
    """
    present = Landmarks.from_label_centroids(lesions)  # named by the label names of ``lesions``
    centres = {name: tuple(float(c) for c in point) for name, point in zip(present.names, present.points_mm)}
    result = []
    for value in names:
        world = centres.get(lesions.labels.get(value, f"label {value}"))
        row = doses.get(value, {})
        result.append(LesionDose(names[value], source, image, world, *(
            None if row.get(key) in (None, "") else float(row[key])  # type: ignore[arg-type]
            for key in ("mean_gy", "V70_percent", "V100_percent"))))
    return result


def row_flag(agreement: LesionAgreement | None, source: str) -> str:
    """The reasons that flag one registration's row of a lesion: the spread across registrations, and its own
    differences to the lesion drawn on the MAA CT (not those of the other registrations); "" when none."""
    if agreement is None:
        return ""
    others = [f"{other}: " for other in agreement.registrations if other != source]
    return "; ".join(reason for reason in agreement.reasons if not reason.startswith(tuple(others)))


def agreement_section(agreements: Sequence[LesionAgreement], livers: Sequence[Text | Table] = ()) -> Section:
    """The report's first section: the flagged lesions and why, ``livers`` (what the checks of the CNN livers
    found), then every lesion's spreads."""
    flagged = [a for a in agreements if a.flagged]
    limits = (f"mass centres more than {CENTRE_SPREAD_MM:g} mm apart, mean doses differing by more than "
              f"{MEAN_DOSE_SPREAD_PERCENT:g} %, V70 or V100 by more than {VOLUME_SPREAD_POINTS:g} points")
    if not agreements:
        return Section("Which numbers to trust", [Text("No lesion was carried onto the MAA CT."), *livers])
    lead = (f"{len(flagged)} of {len(agreements)} carried lesions flagged: check them before using their doses. "
            if flagged else f"None of the {len(agreements)} carried lesions is flagged. ")
    items: list[Text | Table] = [Text(lead + f"A lesion is flagged when the registrations of its image disagree "
                                      f"({limits}), or when one of them differs as much from the lesion of the same "
                                      f"name drawn on the MAA CT.")]
    if flagged:
        items.append(Table(["lesion", "floating image", "why"], [[a.name, a.image, "; ".join(a.reasons)]
                                                                for a in flagged], title="flagged lesions"))
    items += livers
    items.append(Table(
        ["lesion", "floating image", "mass centres (mm)", "mean dose (%)", "V70 (points)", "V100 (points)", "flagged"],
        [[a.name, a.image, a.centre_spread_mm, a.mean_dose_spread_percent, a.v70_spread_points,
          a.v100_spread_points, "yes" if a.flagged else ""] for a in agreements],
        title="spread across the registrations of each floating image",
        formats={"mass centres (mm)": ".1f", "mean dose (%)": ".0f", "V70 (points)": ".0f", "V100 (points)": ".0f"},
        note="Largest distance between the mass centres, and range of mean dose (in % of their mean), V70 and V100, "
             "over the registrations that carried the lesion; a dash with one registration."))
    return Section("Which numbers to trust", items)
