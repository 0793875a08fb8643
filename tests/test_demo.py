"""`sirtreg demo` end to end on the digital patient (what the README's first command runs), at the fast
resolution: the CNN, six registrations, doses and the report."""

import csv
import json
import re

import pytest
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.pipeline import read_plan


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_refuses_to_overwrite(tmp_path, trained_models):
    runner = CliRunner()
    out = tmp_path / "demo"
    result = runner.invoke(app, ["demo", str(out), "--resolution", "fast"])
    assert result.exit_code == 0, result.output
    assert "open the report" in result.output

    plan = read_plan(out / "plan.yaml")  # the written plan is a valid example
    assert plan.reference.liver is None and all(entry.liver is None for entry in plan.floating)  # CNN livers
    guidances = {(entry.modality, plan.guidance(entry)) for entry in plan.floating}
    assert guidances == {(m, g) for m in ("CT", "MR") for g in ("image", "liver", "liver+landmarks")}

    results = json.loads((out / "run" / "results.json").read_text())
    assert results["reference"]["liver"] == "CNN"
    assert len(results["registrations"]) == 6 and {r["liver"] for r in results["registrations"]} == {"CNN"}
    assert sum(key.startswith("segment") for key in results["timings_s"]) == 3  # each scan segmented once
    assert plan.weights and {r["weights_from"] for r in results["registrations"]} == {"the plan"}

    with open(out / "run" / "doses.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    liver = next(row for row in rows if row["role"] == "liver")
    lesions = [row for row in rows if row["role"] == "lesion"]
    assert len({row["source"] for row in lesions}) == 7  # the MAA CT's lesions and those of each registration
    # lesions take up 3-8 times the normal-liver concentration of MAA: hotter than the liver on average
    drawn = [row for row in lesions if row["source"] == "MAA CT"]
    assert drawn and all(float(row["mean_gy"]) > float(liver["mean_gy"]) for row in drawn)
    # carried with landmarks, the lesions land on those drawn on the MAA CT
    carried = [float(row["dsc_to_maa_ct_lesion"]) for row in lesions if row["source"].endswith("landmarks")]
    assert carried and min(carried) > 0.5

    report = (out / "run" / "report.html").read_text()
    assert len(re.findall(r'<img src="data:image/png;base64,', report)) >= 13  # overlays, checkerboards, DVHs

    again = runner.invoke(app, ["demo", str(out)])
    assert again.exit_code == 2 and "not empty" in again.stderr


def test_demo_refuses_an_unknown_resolution(tmp_path):
    result = CliRunner().invoke(app, ["demo", str(tmp_path / "demo"), "--resolution", "huge"])
    assert result.exit_code == 2 and "--resolution must be one of full, fast" in result.stderr
    assert not (tmp_path / "demo").exists()
