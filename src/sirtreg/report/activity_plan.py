"""The files of an activity plan (`sirtreg plan`): a table, a JSON document and an HTML page that state every
input, the compartments measured in each territory, the method's formula with its numbers, the doses and the
limits."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sirtreg.dosimetry.compartments import Compartments
from sirtreg.dosimetry.prescription import Prescription
from sirtreg.output_folder import OutputFolder
from sirtreg.report.html import Section, Table, Text, render_html

log = logging.getLogger(__name__)

#: the files written, by name
OUTPUT_NAMES = ("activity_plan.csv", "activity_plan.json", "activity_plan.html")

_UNITS = (("_gy_kg_per_gbq", "Gy kg/GBq"), ("_g_per_ml", "g/mL"), ("_gbq", "GBq"), ("_gy", "Gy"), ("_ml", "mL"),
          ("_kg", "kg"), ("_cm", "cm"))

_METHOD_NAMES = {"mird": "MIRD single compartment", "partition": "MIRD partition model",
                 "bsa": "body surface area (resin Y-90)"}


def _unit(name: str) -> str:
    """The unit a quantity's name ends with (``_gbq``, ``_gy``, ``_ml``, ...; the longest suffix first)."""
    return next((unit for suffix, unit in _UNITS if name.endswith(suffix)), "")


def plan_rows(prescriptions: Sequence[Prescription], territories: Sequence[Compartments]) -> list[dict[str, Any]]:
    """One row per quantity: territory ("" for the inputs every territory shares), part (input, plan,
    compartment, dose), quantity, value, unit."""
    rows = [{"territory": "", "part": "input", "quantity": name, "value": value, "unit": _unit(name)}
            for name, value in prescriptions[0].inputs.items() if value is not None and name != "target"]
    for plan, compartments in zip(prescriptions, territories, strict=True):
        where = compartments.territory
        rows += [{"territory": where, "part": "plan", "quantity": quantity, "value": value, "unit": unit}
                 for quantity, value, unit in (
                     ("method", plan.method, ""), ("target", plan.inputs["target"], ""),
                     ("activity", plan.activity_gbq, "GBq"),
                     ("activity the method asks for", plan.prescribed_activity_gbq, "GBq"),
                     ("set by", plan.binding, ""), ("formula", plan.formula, ""))]
        rows += [{"territory": where, "part": "compartment", "quantity": name, "value": value, "unit": _unit(name)}
                 for name, value in asdict(compartments).items() if value is not None and name != "territory"]
        rows += [{"territory": where, "part": "dose", "quantity": f"{name} mean dose", "value": value, "unit": "Gy"}
                 for name, value in plan.doses_gy.items()]
    return rows


def _sections(prescriptions: Sequence[Prescription], territories: Sequence[Compartments],
              facts: Sequence[str]) -> list[Section]:
    method = _METHOD_NAMES[prescriptions[0].method]
    total = sum(plan.activity_gbq for plan in prescriptions)
    lines = []
    for plan, compartments in zip(prescriptions, territories, strict=True):
        lowered = ("" if plan.binding == "prescription" else
                   f", lowered from {plan.prescribed_activity_gbq:.2f} GBq by the {plan.binding}")
        target = plan.inputs["target"]
        lines += [Text(f"{compartments.territory}: {plan.activity_gbq:.2f} GBq for {plan.inputs['target_dose_gy']:g} "
                       f"Gy to the {target}{lowered}" if plan.inputs["target_dose_gy"] is not None else
                       f"{compartments.territory}: {plan.activity_gbq:.2f} GBq{lowered}"), Text(plan.formula)]
    if len(prescriptions) > 1:
        lines.append(Text(f"In all: {total:.2f} GBq in {len(prescriptions)} injections; the lung dose is that of "
                          "all of them."))
    names = [compartments.territory for compartments in territories]
    compartment_rows = [[name, *(getattr(c, name) for c in territories), _unit(name)]
                        for name in asdict(territories[0]) if name != "territory"]
    dose_rows = [[name, *(plan.doses_gy.get(name) for plan in prescriptions), "Gy"]
                 for name in prescriptions[0].doses_gy]
    inputs = [[name, value, _unit(name)] for name, value in prescriptions[0].inputs.items()
              if value is not None and name != "target"]
    return [
        Section(f"Activity ({method})", [*lines, Text("Check every input below before treatment: this plan is a "
                                                      "calculation, not a prescription.", note=True)]),
        Section("Inputs", [Table(("input", "value", "unit"), inputs, formats={"value": ".4g"}),
                           *(Text(fact, note=True) for fact in facts)]),
        Section("Compartments measured on the MAA SPECT and the contours",
                [Table(("quantity", *names, "unit"), compartment_rows, formats=dict.fromkeys(names, ".4g"),
                       note="Masses are density x volume; the tumour-to-normal ratio is the ratio of the SPECT "
                            "count densities (counts per mL) in the tumours and in the normal liver of the "
                            "territory.")]),
        Section("Mean doses of the plan", [Table(("structure", *names, "unit"), dose_rows,
                                                 formats=dict.fromkeys(names, ".1f"),
                                                 note="Local deposition: territory D = C A (1 - L) / m; partition "
                                                      "model for tumour and normal liver; lung C A L / m_lung, "
                                                      "with A the activity of every injection.")]),
    ]


def write_activity_plan(prescriptions: Sequence[Prescription], territories: Sequence[Compartments],
                        outdir: str | os.PathLike[str], *, facts: Sequence[str] = (), overwrite: bool = False,
                        inputs: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Path]:
    """Write :data:`OUTPUT_NAMES` into ``outdir`` as a unit (:class:`~sirtreg.output_folder.OutputFolder`), for
    one prescription per territory; ``facts`` are lines about the inputs (files, segments) for the page. Returns
    the final paths by name."""
    with OutputFolder(outdir, overwrite=overwrite, inputs=inputs, command="plan") as out:
        paths = {name: out.staging / name for name in OUTPUT_NAMES}
        rows = plan_rows(prescriptions, territories)
        with open(paths["activity_plan.csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        document = {"territories": [{"prescription": asdict(plan), "compartments": asdict(compartments)}
                                    for plan, compartments in zip(prescriptions, territories, strict=True)],
                    "total_activity_gbq": sum(plan.activity_gbq for plan in prescriptions), "facts": list(facts)}
        paths["activity_plan.json"].write_text(json.dumps(document, indent=2), encoding="utf-8")
        paths["activity_plan.html"].write_text(
            render_html("Activity plan", _sections(prescriptions, territories, facts),
                        subtitle=f"{_METHOD_NAMES[prescriptions[0].method]}, {prescriptions[0].inputs['isotope']}"),
            encoding="utf-8")
        paths = out.final_paths(paths)
    log.info("wrote the activity plan to %s", out.path)
    return paths
