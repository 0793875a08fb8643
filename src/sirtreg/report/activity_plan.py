"""The files of an activity plan (`sirtreg plan`): a table, a JSON document and an HTML page that state every
input, the compartments measured, the method's formula with its numbers, the doses and the limits."""

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


def plan_rows(prescription: Prescription, compartments: Compartments) -> list[dict[str, Any]]:
    """One row per quantity of the plan: part (input, compartment, plan, dose), quantity, value, unit."""
    rows = [{"part": "plan", "quantity": "method", "value": prescription.method, "unit": ""},
            {"part": "plan", "quantity": "activity", "value": prescription.activity_gbq, "unit": "GBq"},
            {"part": "plan", "quantity": "activity the method asks for", "value":
             prescription.prescribed_activity_gbq, "unit": "GBq"},
            {"part": "plan", "quantity": "set by", "value": prescription.binding, "unit": ""},
            {"part": "plan", "quantity": "formula", "value": prescription.formula, "unit": ""}]
    rows += [{"part": "input", "quantity": name, **_value_and_unit(name, value)}
             for name, value in prescription.inputs.items() if value is not None]
    rows += [{"part": "compartment", "quantity": name, **_value_and_unit(name, value)}
             for name, value in asdict(compartments).items() if value is not None]
    rows += [{"part": "dose", "quantity": f"{name} mean dose", "value": value, "unit": "Gy"}
             for name, value in prescription.doses_gy.items()]
    return rows


def _value_and_unit(name: str, value: Any) -> dict[str, Any]:
    """The value and the unit its name ends with (``_gbq``, ``_gy``, ``_ml``, ...; the longest suffix first)."""
    return {"value": value, "unit": next((unit for suffix, unit in _UNITS if name.endswith(suffix)), "")}


def _sections(prescription: Prescription, compartments: Compartments, facts: Sequence[str]) -> list[Section]:
    rows = plan_rows(prescription, compartments)
    parts = {part: [(row["quantity"], row["value"], row["unit"]) for row in rows if row["part"] == part]
             for part in ("input", "compartment", "dose")}
    verdict = (f"{prescription.activity_gbq:.2f} GBq by the {_METHOD_NAMES[prescription.method]}"
               + ("" if prescription.binding == "prescription" else
                  f", lowered from {prescription.prescribed_activity_gbq:.2f} GBq by the {prescription.binding}"))
    return [
        Section("Activity", [Text(verdict), Text(prescription.formula),
                             Text("Check every input below before treatment: this plan is a calculation, not a "
                                  "prescription.", note=True)]),
        Section("Inputs", [Table(("input", "value", "unit"), parts["input"], formats={"value": ".4g"}),
                           *(Text(fact, note=True) for fact in facts)]),
        Section("Compartments measured on the MAA SPECT and the contours",
                [Table(("quantity", "value", "unit"), parts["compartment"], formats={"value": ".4g"},
                       note="Masses are density x volume; the tumour-to-normal ratio is the ratio of the SPECT "
                            "count densities (counts per mL) in the tumours and in the normal liver of the "
                            "territory.")]),
        Section("Mean doses of the plan", [Table(("structure", "dose", "unit"), parts["dose"],
                                                 formats={"dose": ".1f"},
                                                 note="Local deposition: territory D = C A (1 - L) / m; partition "
                                                      "model for tumour and normal liver; lung C A L / m_lung.")]),
    ]


def write_activity_plan(prescription: Prescription, compartments: Compartments, outdir: str | os.PathLike[str], *,
                        facts: Sequence[str] = (), overwrite: bool = False,
                        inputs: Sequence[str | os.PathLike[str]] = ()) -> dict[str, Path]:
    """Write :data:`OUTPUT_NAMES` into ``outdir`` as a unit (:class:`~sirtreg.output_folder.OutputFolder`);
    ``facts`` are lines about the inputs (files, segments) for the page. Returns the final paths by name."""
    with OutputFolder(outdir, overwrite=overwrite, inputs=inputs, command="plan") as out:
        paths = {name: out.staging / name for name in OUTPUT_NAMES}
        rows = plan_rows(prescription, compartments)
        with open(paths["activity_plan.csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        document = {"prescription": asdict(prescription), "compartments": asdict(compartments), "facts": list(facts)}
        paths["activity_plan.json"].write_text(json.dumps(document, indent=2), encoding="utf-8")
        paths["activity_plan.html"].write_text(
            render_html("Activity plan", _sections(prescription, compartments, facts),
                        subtitle=f"{_METHOD_NAMES[prescription.method]}, {prescription.inputs['isotope']}"),
            encoding="utf-8")
        paths = out.final_paths(paths)
    log.info("wrote the activity plan to %s", out.path)
    return paths
