"""`sirtreg demo` end to end on the digital patient (what the README's first command runs), at the fast
resolution: the CNN, six registrations, doses and the report, which opens on the lesions to check."""

import csv
import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.pipeline import read_plan


@pytest.fixture(scope="module")
def demo(tmp_path_factory, trained_models):
    """The demo's output folder and the command's result."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    return out, CliRunner().invoke(app, ["demo", str(out), "--resolution", "fast"])


@pytest.mark.slow(seconds=130)
def test_demo_runs_the_whole_pipeline_and_refuses_to_overwrite(demo):
    out, result = demo
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
    # one agreement per lesion of each floating scan; a flagged one has its reasons in its rows
    agreements = results["lesion_agreement"]
    assert {a["image"] for a in agreements} == {"ct-image, ct-liver, ct-landmarks", "mr-image, mr-liver, mr-landmarks"}
    assert len(agreements) == 2 * len(drawn)
    for agreement in agreements:
        flags = [row["flag"] for row in lesions if row["structure"].endswith("/" + agreement["name"])
                 and row["source"] in agreement["registrations"]]
        assert len(flags) == 3 and any(flags) == agreement["flagged"]

    report = (out / "run" / "report.html").read_text()
    assert len(re.findall(r'<img src="data:image/png;base64,', report)) >= 13  # overlays, checkerboards, DVHs

    again = CliRunner().invoke(app, ["demo", str(out)])
    assert again.exit_code == 2 and "not empty" in again.stderr


@pytest.mark.slow(seconds=130)  # beside the test above: one worker builds the demo fixture, once
def test_demo_report_opens_on_the_lesions_to_check(demo, browser, tmp_path):
    """In headless Chromium, the report's first section names every lesion that results.json flags, and why."""
    from selenium.webdriver.common.by import By

    out, result = demo
    assert result.exit_code == 0, result.output
    page = shutil.copy(out / "run" / "report.html", tmp_path / "report.html")  # the browser's profile is here
    browser.get(page.as_uri())
    first = browser.find_elements(By.TAG_NAME, "section")[0]
    assert first.find_element(By.TAG_NAME, "h2").text == "Which numbers to trust"
    flagged = [a for a in json.loads((out / "run" / "results.json").read_text())["lesion_agreement"] if a["flagged"]]
    shown = first.text
    assert f"{len(flagged)} of " in shown.splitlines()[1]
    livers = json.loads((out / "run" / "results.json").read_text())["cnn_livers"]  # each checked, and said so
    flagged_livers = [check for check in livers["scans"] if check["flagged"]]
    assert len(livers["scans"]) == 3 and (f"{len(flagged_livers)} of 3 CNN liver(s) flagged" in shown
                                          if flagged_livers else "No CNN liver is flagged (3 checked)" in shown)
    for agreement in flagged:
        assert all(reason in shown for reason in agreement["reasons"]), agreement


def test_demo_refuses_an_unknown_resolution(tmp_path):
    result = CliRunner().invoke(app, ["demo", str(tmp_path / "demo"), "--resolution", "huge"])
    assert result.exit_code == 2 and "--resolution must be one of full, fast" in result.stderr
    assert not (tmp_path / "demo").exists()
