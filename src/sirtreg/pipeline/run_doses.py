"""The doses of a patient run: the local-deposition dose of the liver and of every lesion (drawn on the MAA CT
or carried onto it), each carried lesion's overlap with the MAA CT's lesion of the same name, and the agreement
of the registrations of one scan (:mod:`sirtreg.pipeline.agreement`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from sirtreg.dosimetry import DoseReport, dose_report
from sirtreg.dosimetry.lung_shunt import lungs_from_ct, spect_lung_shunt
from sirtreg.errors import SirtregError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.metrics import dice
from sirtreg.pipeline.agreement import LesionAgreement, lesion_agreement, lesion_doses, row_flag
from sirtreg.pipeline.carried import REFERENCE_SOURCE, Carried, ScanImage
from sirtreg.pipeline.plan import Plan

log = logging.getLogger(__name__)


def lesion_overlap(reference: LabelVolume | None, carried: LabelVolume, names: Mapping[int, str]
                    ) -> dict[str, dict[str, float | None]]:
    """DSC and mass-centre distance (mm) of each carried lesion to the MAA CT lesion of the same name."""
    if reference is None:
        return {}
    by_name = {name: value for value, name in reference.labels.items()}
    boxes = {"carried": ndimage.find_objects(carried.array), "reference": ndimage.find_objects(reference.array)}
    overlap = {}
    for value, structure in carried.labels.items():
        name = names[value]
        if name not in by_name:
            continue
        # both lesions lie in the union of their boxes: DSC and mass centres from that box alone
        found = [box[label - 1] if label <= len(box) else None
                 for box, label in ((boxes["reference"], by_name[name]), (boxes["carried"], value))]
        found = [box for box in found if box is not None] or [(slice(0, 1),) * 3]
        start = np.array([min(box[axis].start for box in found) for axis in (2, 1, 0)])
        stop = np.array([max(box[axis].stop for box in found) for axis in (2, 1, 0)])
        window = (slice(start[2], stop[2]), slice(start[1], stop[1]), slice(start[0], stop[0]))
        mask = carried.array[window] == value
        reference_mask = reference.array[window] == by_name[name]
        grid = carried.grid.crop(start, stop)
        centres = [LabelVolume.from_mask(m, grid).mass_centre_mm() for m in (reference_mask, mask)]
        distance = float(np.linalg.norm(centres[0] - centres[1])) if all(c is not None for c in centres) else None
        overlap[structure] = {"dsc": dice(reference_mask, mask), "mcd_mm": distance}
    return overlap


def run_lung_shunt(plan: Plan, reference: ScanImage, spect: Volume) -> tuple[float, str]:
    """The run's lung shunt fraction and where it comes from: the plan's (typed from the clinic's planar study,
    with the SPECT/CT's measure beside it for comparison), else measured on the SPECT/CT (the lungs found in the
    MAA CT, its liver), else 0 with a warning when the MAA CT shows no lungs or the SPECT misses them."""
    try:
        shunt = spect_lung_shunt(spect, lungs_from_ct(reference.volume, reference.liver), reference.liver)
        measured = shunt.describe() + " (lungs found in the MAA CT)"
    except SirtregError as exc:  # no lungs in the CT, or none in the SPECT's field of view
        shunt, measured = None, f"not measured: {exc}"
    if plan.spect.lung_shunt_fraction is not None:
        return plan.spect.lung_shunt_fraction, f"given in the plan; beside it, {measured}"
    if shunt is None:
        log.warning("no lung shunt fraction in the plan and none measured (%s): 0 assumed", measured)
        return 0.0, f"not in the plan and {measured}: 0 assumed"
    return shunt.fraction, measured


def run_dose(plan: Plan, reference: ScanImage, spect: Volume, carried: Sequence[Carried]) -> DoseReport:
    lesions = [item.lesions for item in carried if item.lesions is not None]
    if reference.lesions is not None:
        named = LabelVolume(reference.lesions.array, reference.lesions.grid,
                            labels={v: f"{REFERENCE_SOURCE}/{n}" for v, n in reference.lesions.labels.items()})
        lesions.insert(0, named)
    fraction, source = run_lung_shunt(plan, reference, spect)
    return dose_report(spect, reference.liver, plan.spect.activity_gbq, isotope=plan.spect.isotope,
                       lesions=lesions, lung_shunt_fraction=fraction, lung_shunt_source=source,
                       voxel_s_values=plan.spect.voxel_s_values)


def dose_rows(report: DoseReport, carried: Sequence[Carried]) -> list[dict[str, Any]]:
    """The structure table with its source (the image it was drawn on) and the DSC to the MAA CT lesion."""
    overlap = {name: values for item in carried for name, values in item.lesion_overlap.items()}
    rows = []
    for structure, row in zip(report.structures, report.rows()):
        is_liver = structure is report.structures[0]
        source = REFERENCE_SOURCE if is_liver else structure.name.split("/", 1)[0]
        match = overlap.get(structure.name, {})
        rows.append({"source": source, "role": "liver" if is_liver else "lesion", **row,
                     "dsc_to_maa_ct_lesion": match.get("dsc"), "mcd_mm_to_maa_ct_lesion": match.get("mcd_mm")})
    return rows


def image_sources(plan: Plan) -> list[tuple[str, str | None]]:
    """(absolute path, series) of the MAA CT and of each floating image, in plan order: equal for one scan
    listed several times (e.g. to compare guidance presets)."""
    return [(os.path.abspath(entry.image), entry.series) for entry in (plan.reference, *plan.floating)]


def image_names(plan: Plan) -> dict[str, str]:
    """floating id -> the ids of every floating entry of the same scan, joined: the scan's name in tables."""
    groups: dict[tuple[str, str | None], list[str]] = {}
    for entry, source in zip(plan.floating, image_sources(plan)[1:], strict=True):
        groups.setdefault(source, []).append(entry.id)
    return {floating_id: ", ".join(ids) for ids in groups.values() for floating_id in ids}


def lesion_agreements(plan: Plan, reference: ScanImage, carried: Sequence[Carried], rows: list[dict[str, Any]]
               ) -> list[LesionAgreement]:
    """Each carried lesion's agreement across the registrations of its scan and with the MAA CT's lesion; sets
    the ``flag`` of every dose row (the reasons, "" if none)."""
    doses = {row["structure"]: row for row in rows if row["role"] == "lesion"}
    images = image_names(plan)
    carried_doses = []
    for item in carried:
        if item.lesions is not None:  # labels "<id>/<name>"; ids hold no "/"
            labels = item.lesions.labels
            carried_doses += lesion_doses(item.lesions, {v: n.split("/", 1)[1] for v, n in labels.items()},
                                          {v: doses.get(n, {}) for v, n in labels.items()}, source=item.entry.id,
                                          image=images[item.entry.id])
    drawn = {} if reference.lesions is None else {lesion.name: lesion for lesion in lesion_doses(
        reference.lesions, reference.lesions.labels,
        {v: doses.get(f"{REFERENCE_SOURCE}/{n}", {}) for v, n in reference.lesions.labels.items()},
        source=REFERENCE_SOURCE, image=REFERENCE_SOURCE)}
    agreements = lesion_agreement(carried_doses, drawn)
    by_key = {(a.image, a.name): a for a in agreements}
    for row in rows:
        carried_row = row["role"] == "lesion" and row["source"] != REFERENCE_SOURCE
        row["flag"] = row_flag(by_key.get((images[row["source"]], row["structure"].split("/", 1)[1])),
                               row["source"]) if carried_row else ""
    return agreements


def by_lesion(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The liver first, then the rows of each lesion name together (the MAA CT's first), in order of appearance."""
    def name(row: Mapping[str, Any]) -> str:
        return row["structure"].split("/", 1)[1]

    lesions = [row for row in rows if row["role"] == "lesion"]
    order = list(dict.fromkeys(name(row) for row in lesions))
    return [*(row for row in rows if row["role"] != "lesion"),
            *sorted(lesions, key=lambda row: (order.index(name(row)), row["source"] != REFERENCE_SOURCE))]
