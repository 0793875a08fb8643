"""`sirtreg demo` end to end on the digital patient (what the README's first command runs)."""

import csv

from typer.testing import CliRunner

from sirtreg.cli import app


def test_demo_writes_patient_picture_and_doses_and_refuses_to_overwrite(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "demo"
    assert (out / "patient" / "patient.json").is_file() and (out / "overview.png").stat().st_size > 10_000
    with open(out / "dose" / "structures.csv", newline="") as handle:
        rows = {row["structure"]: row for row in csv.DictReader(handle)}
    assert "liver" in rows and sum(name.startswith("lesion") for name in rows) >= 3
    # lesions take up 3-8 times the normal-liver concentration of MAA: hotter than the liver on average
    assert all(float(rows[name]["mean_gy"]) > float(rows["liver"]["mean_gy"]) for name in rows if name != "liver")
    again = runner.invoke(app, ["demo", str(out)])
    assert again.exit_code == 2 and "not empty" in again.stderr
