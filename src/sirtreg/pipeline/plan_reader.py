"""Reading a plan file (:func:`read_plan`): the YAML document parsed into a :class:`~sirtreg.pipeline.plan.Plan`,
every problem of the document and of its files collected and refused at once (see :mod:`sirtreg.pipeline.plan`)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sirtreg.dosimetry.isotopes import read_activity_gbq, read_isotope
from sirtreg.errors import describe
from sirtreg.pipeline.plan import (
    ACTIVITY_KEYS,
    CONTOUR_ROLES,
    FLAGGED_LIVER_ACTIONS,
    FORMAT,
    VERSION,
    ContourInput,
    FloatingInput,
    Plan,
    ReferenceInput,
    SpectInput,
    is_segment,
)
from sirtreg.pipeline.plan_checks import FileChecker, Scan
from sirtreg.pipeline.weights import read_plan_weights
from sirtreg.register.config import GUIDANCES
from sirtreg.yaml_input import MODALITIES, Reader, entry_label, load_yaml, refusal

log = logging.getLogger(__name__)


# Keys of each mapping: True if required.
_TOP_KEYS = {"format": False, "version": False, "reference": True, "spect": True, "floating": False,
             "weights": False, "flagged_cnn_liver": False}
_REFERENCE_KEYS = {"image": True, "series": False, "liver": False, "lesions": False, "landmarks": False}
_SPECT_KEYS = {"image": True, "series": False, "activity_gbq": False, "activity_mbq": False, "isotope": True,
               "lung_shunt_fraction": False, "voxel_s_values": False}
_FLOATING_KEYS = {"id": True, "modality": True, "role": False, "image": True, "series": False, "liver": False,
                  "lesions": False, "landmarks": False, "guidance": False}
_CONTOUR_KEYS = {"path": True, "segments": False}


# --- reading ----------------------------------------------------------------------------
class _PlanReader(Reader):
    """Parses a plan document, collecting every problem; keeps what the file checks need of each image."""

    def file(self, where: str, value: Any) -> Path | None:
        """An absolute path (a relative one against the plan's folder); whether it exists is checked later."""
        if not isinstance(value, str) or not value.strip():
            self.problem(where, f"must be a path, got {describe(value)}")
            return None
        return Path(os.path.abspath(self.folder / Path(value).expanduser()))

    def series(self, where: str, value: Any) -> str | None:
        if isinstance(value, str) and value.strip():
            return value
        self.problem(where, f"must be a SeriesInstanceUID or SeriesDescription as text (quote it), "
                     f"got {describe(value)}")
        return None

    def contour(self, where: str, value: Any) -> ContourInput | None:
        if not isinstance(value, dict):
            path = self.file(where, value)
            return None if path is None else ContourInput(path)
        fields = self.fields(where, value, _CONTOUR_KEYS) or {}
        path = self.get(where, fields, "path", self.file)
        segments = self.get(where, fields, "segments", self.segments, default=())
        return None if path is None or segments is None else ContourInput(path, segments)

    def segments(self, where: str, value: Any) -> tuple[str, ...] | None:
        """Segment names, or label values (whole numbers > 0, or their digits as text) of a plain label map."""
        if isinstance(value, list) and value and all(is_segment(segment) for segment in value):
            return tuple(str(segment) for segment in value)
        self.problem(where, f"must be a non-empty list of segment names or label values (whole numbers > 0), "
                     f"got {describe(value)}")
        return None

    def contours(self, where: str, fields: dict[str, Any]) -> dict[str, ContourInput]:
        parsed = {role: self.get(where, fields, role, self.contour) for role in CONTOUR_ROLES}
        return {role: contour for role, contour in parsed.items() if contour is not None}

    def plan(self, document: Any) -> tuple[Plan | None, tuple[Scan | None, Scan | None, list[Scan]]]:
        """The plan if the document has no problem, and what the file checks need in any case."""
        top = self.fields("plan", document, _TOP_KEYS)
        if top is None:
            return None, (None, None, [])
        if "format" in top and top["format"] != FORMAT:
            self.problem("plan, format", f"must be {FORMAT!r}, got {describe(top['format'])}")
        if "version" in top and top["version"] != VERSION:
            self.problem("plan, version", f"must be {VERSION}, got {describe(top['version'])}")
        reference, reference_scan = self.reference(top["reference"]) if "reference" in top else (None, None)
        spect, spect_scan = self.spect(top["spect"]) if "spect" in top else (None, None)
        floating, floating_scans = self.floating_list(top.get("floating", []))
        weights = read_plan_weights(self, top["weights"]) if "weights" in top else {}
        flagged = self.get("plan", top, "flagged_cnn_liver",
                           lambda at, value: self.choice(at, value, FLAGGED_LIVER_ACTIONS), default="report")
        scans = (reference_scan, spect_scan, floating_scans)
        if self.problems or reference is None or spect is None or floating is None or flagged is None:
            return None, scans
        return Plan(reference=reference, spect=spect, floating=floating, weights=weights,
                    flagged_cnn_liver=flagged), scans

    def reference(self, entry: Any) -> tuple[ReferenceInput | None, Scan | None]:
        start, where = len(self.problems), "reference"
        fields = self.fields(where, entry, _REFERENCE_KEYS)
        if fields is None:
            return None, None
        image = self.get(where, fields, "image", self.file)
        series = self.get(where, fields, "series", self.series)
        contours = self.contours(where, fields)
        scan = None if image is None else Scan(where, image, series, contours)
        if len(self.problems) > start:
            return None, scan
        return ReferenceInput(image=image, series=series, **contours), scan

    def spect(self, entry: Any) -> tuple[SpectInput | None, Scan | None]:
        start, where = len(self.problems), "spect"
        unitless = [key for key in entry if isinstance(key, str) and key.startswith("activity")
                    and key not in ACTIVITY_KEYS] if isinstance(entry, dict) else []
        for key in unitless:
            self.problem(f"{where}, {key}", "an activity needs its unit in the key: write activity_gbq (GBq) or "
                         "activity_mbq (MBq)")
        fields = self.fields(where, {k: v for k, v in entry.items() if k not in unitless}
                             if isinstance(entry, dict) else entry, _SPECT_KEYS)
        if fields is None:
            return None, None
        image = self.get(where, fields, "image", self.file)
        series = self.get(where, fields, "series", self.series)
        scan = None if image is None else Scan(where, image, series)
        given = [key for key in ACTIVITY_KEYS if key in fields]
        activity_gbq = None
        if len(given) > 1:
            self.problem(where, f"give the activity once, not as {' and '.join(given)}")
        elif given:
            unit, gbq_per_unit = ACTIVITY_KEYS[given[0]]
            activity_gbq = self.get(where, fields, given[0], lambda at, value: self.parsed(
                at, value, lambda typed: read_activity_gbq(typed, unit=unit, gbq_per_unit=gbq_per_unit)))
        elif not unitless:
            self.problem(where, f"missing the activity: {' or '.join(map(repr, ACTIVITY_KEYS))}")
        isotope = self.get(where, fields, "isotope", lambda at, value: self.parsed(at, value, read_isotope))
        fraction = self.get(where, fields, "lung_shunt_fraction", self.fraction)
        voxel_s_values = self.get(where, fields, "voxel_s_values", self.boolean, default=False)
        if len(self.problems) > start:
            return None, scan
        return SpectInput(image=image, activity_gbq=activity_gbq, isotope=isotope, series=series,
                          lung_shunt_fraction=fraction, voxel_s_values=voxel_s_values), scan

    def floating_list(self, entries: Any) -> tuple[tuple[FloatingInput, ...] | None, list[Scan]]:
        if not isinstance(entries, list):
            self.problem("plan, floating", f"must be a list of images, got {describe(entries)}")
            return None, []
        parsed = [self.floating(number, entry) for number, entry in enumerate(entries, start=1)]
        ids = [entry.get("id") for entry in entries if isinstance(entry, dict) and isinstance(entry.get("id"), str)]
        for repeated in sorted({i for i in ids if ids.count(i) > 1}):
            self.problem(f"floating {repeated}", "this id is used more than once")
        images = tuple(image for image, _ in parsed if image is not None)
        scans = [scan for _, scan in parsed if scan is not None]
        return (images if len(images) == len(entries) else None), scans

    def floating(self, number: int, entry: Any) -> tuple[FloatingInput | None, Scan | None]:
        start = len(self.problems)
        where = entry_label("floating", entry, number)
        fields = self.fields(where, entry, _FLOATING_KEYS)
        if fields is None:
            return None, None
        image_id = self.get(where, fields, "id", self.identifier)
        modality = self.get(where, fields, "modality", lambda at, value: self.choice(at, value, MODALITIES))
        role = self.get(where, fields, "role", self.text, default="")
        image = self.get(where, fields, "image", self.file)
        series = self.get(where, fields, "series", self.series)
        contours = self.contours(where, fields)
        guidance = self.get(where, fields, "guidance", lambda at, value: self.choice(at, value, GUIDANCES))
        scan = None if image is None else Scan(where, image, series, contours, guidance)
        if len(self.problems) > start:
            return None, scan
        return FloatingInput(id=image_id, modality=modality, image=image, series=series, role=role,
                             guidance=guidance, **contours), scan


def read_plan(path: str | os.PathLike[str]) -> Plan:
    """Read a patient plan (format in the module docstring) and check its inputs.

    Parameters
    ----------
    path : the YAML plan; relative paths in it resolve against its folder.

    Returns
    -------
    The plan, with absolute paths.

    Raises one :class:`~sirtreg.errors.InputError` listing every problem of the document and of
    its files (the checks of :func:`check_plan`), one per line, each naming the input and the field.
    """
    path = Path(os.path.abspath(path))
    document, repeated = load_yaml(path, what="plan")
    reader = _PlanReader(path.parent)
    reader.problems.extend(repeated)
    plan, scans = reader.plan(document)
    FileChecker(reader.problems).check(*scans)
    if reader.problems or plan is None:
        raise refusal(reader.problems, what="plan", prefix=f"{path.name}: ")
    for floating in plan.floating:
        how = "chosen" if floating.guidance is not None else "by default"
        log.info("floating %s: %s guidance (%s), %s", floating.id, plan.guidance(floating), how,
                 plan.weights_for(floating).describe())
    log.info("plan %s: %s %.4g GBq, %d floating images", path.name, plan.spect.isotope, plan.spect.activity_gbq,
             len(plan.floating))
    return plan


