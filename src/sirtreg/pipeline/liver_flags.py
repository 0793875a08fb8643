"""A run's CNN livers: each checked once (:mod:`sirtreg.segment.liver_check`), and what the plan says to do
with a flagged one (``flagged_cnn_liver``): register as planned and report it, register with image guidance
instead, or stop.

A scan's volume and pieces are checked right after the CNN, before any registration; the DSC with the
other scan's liver after the affine stage is checked after each registration that a CNN liver guided.
With ``image``, a registration whose CNN livers are flagged before it starts is registered with image
guidance; one flagged after its affine stage is registered again with image guidance. The report's first
section lists every flagged CNN liver and what was done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sirtreg.errors import FlaggedLiverError
from sirtreg.geometry import LabelVolume
from sirtreg.report.html import Table, Text
from sirtreg.segment.liver_check import LiverCheck, affine_dsc_reason, check_liver, describe_checks

_DONE = {"report": "registered as planned", "image": "registered with image guidance instead",
         "stop": "the run stopped"}


@dataclass(frozen=True)
class GuidanceCheck:
    """The CNN livers behind one floating image's registration, and the guidance it was registered with.

    ``reasons`` name each flagged CNN liver and why ("<scan> CNN liver: <reason>"); ``affine_dsc`` is the
    DSC of the two livers after the affine stage of the planned guided registration (None: not measured).
    """

    floating: str
    planned: str
    used: str
    reasons: tuple[str, ...] = ()
    affine_dsc: float | None = None

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return {"floating": self.floating, "planned_guidance": self.planned, "guidance": self.used,
                "affine_liver_dsc": self.affine_dsc, "flagged": self.flagged, "reasons": list(self.reasons)}


class CnnLivers:
    """The checks of one run's CNN livers (by scan name) and the plan's action for a flagged one."""

    def __init__(self, action: str) -> None:
        self.action = action
        self.scans: dict[str, LiverCheck] = {}
        self.registrations: list[GuidanceCheck] = []

    def check(self, scan: str, liver: LabelVolume) -> LiverCheck:
        """Check the CNN liver of ``scan`` (once per scan); stop if it is flagged and the plan says so."""
        if scan not in self.scans:
            self.scans[scan] = check_liver(liver, scan)
        found = self.scans[scan]
        if found.flagged and self.action == "stop":
            raise FlaggedLiverError(f"{scan}: the CNN liver is flagged ({'; '.join(found.reasons)}) and the plan "
                                    "says flagged_cnn_liver: stop; give a liver contour in the plan, or choose "
                                    "image (image guidance) or report")
        return found

    def reasons(self, scans: Sequence[str]) -> tuple[str, ...]:
        """Why the CNN livers of ``scans`` (checked before) are flagged, each reason with its scan."""
        return tuple(f"{scan} CNN liver: {reason}" for scan in scans for reason in self.scans[scan].reasons)

    def guidance(self, planned: str, scans: Sequence[str]) -> str:
        """The guidance to register with, given the planned one and the CNN livers (``scans``) it uses."""
        if planned != "image" and self.action == "image" and self.reasons(scans):
            return "image"
        return planned

    def after_affine(self, floating: str, planned: str, scans: Sequence[str], dsc: float) -> str:
        """Record the DSC after the affine stage of a registration guided by CNN livers; the guidance to keep
        (``planned``, or "image" when it is flagged and the plan says so). Stops if the plan says so."""
        reasons = self.reasons(scans)
        low = affine_dsc_reason(dsc)
        if low is not None:
            reasons = (*reasons, f"{' and '.join(scans)} CNN liver: {low}")
            if self.action == "stop":
                raise FlaggedLiverError(f"floating {floating}: {reasons[-1]}, and the plan says flagged_cnn_liver: "
                                        "stop; give liver contours in the plan, or choose image or report")
        used = "image" if reasons and self.action == "image" else planned
        self.registrations.append(GuidanceCheck(floating, planned, used, reasons, float(dsc)))
        return used

    def unmeasured(self, floating: str, planned: str, used: str, scans: Sequence[str]) -> None:
        """Record a registration whose affine stage was not guided by CNN livers (or was not run with them)."""
        self.registrations.append(GuidanceCheck(floating, planned, used, self.reasons(scans)))

    def of(self, floating: str) -> GuidanceCheck | None:
        return next((check for check in self.registrations if check.floating == floating), None)

    def as_dict(self) -> dict[str, Any]:
        return {"action": self.action, "scans": [check.as_dict() for check in self.scans.values()],
                "registrations": [check.as_dict() for check in self.registrations]}

    def summary(self) -> list[Text | Table]:
        """The report's paragraph on the CNN livers (and a table of the flagged ones), or nothing without any."""
        if not self.scans:
            return []
        rule = f"{describe_checks()} The plan says what a run does then (flagged_cnn_liver: {self.action})."
        flagged = [check for check in self.registrations if check.flagged]
        flagged_scans = [check for check in self.scans.values() if check.flagged]
        if not flagged and not flagged_scans:
            return [Text(f"No CNN liver is flagged ({len(self.scans)} checked). {rule}")]
        rows = [[check.image, "; ".join(check.reasons), f"its guided registrations: {_DONE[self.action]}"]
                for check in flagged_scans]
        rows += [[check.floating, "; ".join(check.reasons),
                  _DONE["image"] if check.used != check.planned else f"{_DONE['report']} ({check.planned})"]
                 for check in flagged]
        return [Text(f"{len(flagged_scans)} of {len(self.scans)} CNN liver(s) flagged"
                     f"{f', and {len(flagged)} registrations they guided' if flagged else ''}: check them before "
                     f"using the registrations and doses that rest on them. {rule}"),
                Table(["CNN liver or registration", "why", "what the run did"], rows, title="flagged CNN livers")]

