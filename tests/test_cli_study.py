"""The cohort-study commands: phantom-cohort, study check, register (and its resume), tune, evaluate, refusals.

Every study runs with --quick (one 8 mm level, few iterations) on a two-patient phantom cohort at fast
resolution (one train and one test patient, each with a CT and an MR), on one shared local Dask worker.
"""

from __future__ import annotations

import csv
import shutil

import pytest
from PIL import Image
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.study import read_results, summarise

runner = CliRunner()


def assert_refused(result, message: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert message in lines[0]


def assert_png(path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 400 and image.height >= 300
        image.verify()


@pytest.fixture(scope="module")
def manifest(phantom_cohort):
    return phantom_cohort[0]


@pytest.fixture(scope="module")
def scheduler(dask_scheduler):
    """The address of the one-worker local Dask cluster shared by the study tests."""
    return dask_scheduler


def study(*arguments):
    return runner.invoke(app, ["study", *map(str, arguments)])


@pytest.fixture(scope="module")
def registered(manifest, scheduler, tmp_path_factory):
    """`study register` run twice into one table: both results and the table after each run."""
    path = tmp_path_factory.mktemp("register") / "results.csv"
    arguments = ("register", manifest, "--guidance", "liver", "--affine-only", "--quick", "--scheduler", scheduler,
                 "-o", path)
    first = study(*arguments)
    after_first = path.read_bytes()
    second = study(*arguments)
    return {"path": path, "first": first, "second": second, "after_first": after_first,
            "after_second": path.read_bytes()}


@pytest.fixture(scope="module")
def tuned(manifest, scheduler, tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "tune.csv"
    result = study("tune", manifest, "--guidance", "liver", "--grid", "wI=0,1", "--grid", "wS=0,1", "--quick",
                   "--scheduler", scheduler, "-o", path)
    return {"path": path, "result": result}


@pytest.fixture(scope="module")
def evaluated(manifest, scheduler, tuned, tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    result = study("evaluate", manifest, "--results", folder / "registrations.csv", "--weights-from",
                   tuned["path"], "--quick", "--scheduler", scheduler, "-o", folder / "out")
    return {"results": folder / "registrations.csv", "out": folder / "out", "result": result}


# --- phantom-cohort and study check --------------------------------------------------------------
@pytest.mark.slow
def test_phantom_cohort_writes_a_cohort_and_names_its_manifest(tmp_path):
    result = runner.invoke(app, ["phantom-cohort", str(tmp_path / "cohort"), "--patients", "1", "--resolution",
                                 "fast", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cohort" / "cohort.yaml").is_file()
    assert str(tmp_path / "cohort" / "cohort.yaml") in result.stdout.replace("\n", "")
    assert (tmp_path / "cohort" / "P01" / "patient.json").is_file()


def test_phantom_cohort_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    assert_refused(runner.invoke(app, ["phantom-cohort", str(tmp_path), "--patients", "2"]), "not empty")
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_phantom_cohort_refuses_no_patients_before_any_progress(tmp_path):
    result = runner.invoke(app, ["phantom-cohort", str(tmp_path / "cohort"), "--patients", "0"])
    assert_refused(result, "patients must be a whole number >= 1")


def test_check_prints_one_line_per_split(manifest):
    result = study("check", manifest)
    assert result.exit_code == 0, result.output
    assert "cohort.yaml: phantom cohort (seed 0), 2 patients" in result.stdout
    assert "train: 1 patient, 1 CT, 1 MR registrations" in result.stdout
    assert "test: 1 patient, 1 CT, 1 MR registrations" in result.stdout


def test_check_lists_every_problem_in_one_error(manifest, tmp_path):
    for path in (p for p in manifest.parent.rglob("*") if p.is_file()):  # a copy: the shared cohort is read-only
        copy = tmp_path / "cohort" / path.relative_to(manifest.parent)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    broken = tmp_path / "cohort" / "broken.yaml"
    broken.write_text(manifest.read_text().replace("split: train", "split: validation")
                      .replace("modality: MR", "modality: PET", 1))
    result = study("check", broken)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: broken.yaml: 2 problems in the cohort manifest:"), result.stderr
    assert any("split" in line and "validation" in line for line in lines[1:])
    assert any("modality" in line and "PET" in line for line in lines[1:])


# --- study register ------------------------------------------------------------------------------
@pytest.mark.slow
def test_register_prints_the_rrmsd_per_modality(registered):
    result = registered["first"]
    assert result.exit_code == 0, result.output
    rows = read_results(registered["path"])
    assert len(rows) == 4 and {row["status"] for row in rows} == {"ok"}
    assert {row["method"] for row in rows} == {"liver-affine[wI=0.0,wS=0.0,rigidity=1.0]"}
    summary = summarise(rows)
    assert sorted((row["modality"], row["split"]) for row in summary) == [
        ("CT", "test"), ("CT", "train"), ("MR", "test"), ("MR", "train")]
    for row in summary:
        assert f"{row['rrmsd_mm']:.2f}" in result.stdout
    assert "computed 4 of 4 registrations; 0 were already in results.csv" in result.stdout


@pytest.mark.slow
def test_register_again_computes_nothing(registered):
    result = registered["second"]
    assert result.exit_code == 0, result.output
    assert "computed 0 of 4 registrations; 4 were already in results.csv" in result.stdout
    assert registered["after_second"] == registered["after_first"]


@pytest.mark.slow
def test_register_refuses_a_table_of_other_engine_settings(registered, manifest):
    before = registered["path"].read_bytes()
    result = runner.invoke(app, ["-q", "study", "register", str(manifest), "--affine-only", "-o",
                                 str(registered["path"])])  # without --quick
    assert_refused(result, "holds results of other engine settings")
    assert registered["path"].read_bytes() == before


# --- study tune ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_tune_prints_rrmsd_per_grid_point_and_the_chosen_weights(tuned):
    result = tuned["result"]
    assert result.exit_code == 0, result.output
    rows = read_results(tuned["path"])
    assert len(rows) == 8 and {row["split"] for row in rows} == {"train"}  # 4 grid points x (CT, MR)
    assert {(row["image_weight"], row["label_weight"]) for row in rows} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    for row in summarise(rows):
        assert f"{row['rrmsd_mm']:.2f}" in result.stdout
    assert "chosen for CT: " in result.stdout and "chosen for MR: " in result.stdout
    assert "computed 8 of 8 registrations" in result.stdout


@pytest.mark.slow
def test_tune_writes_a_heat_map_beside_the_table(tuned):
    assert tuned["result"].exit_code == 0, tuned["result"].output
    assert_png(tuned["path"].with_name("tune_rrmsd.png"))


# --- study evaluate --------------------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_writes_a_table_and_box_plots_of_the_paper_methods(evaluated):
    result = evaluated["result"]
    assert result.exit_code == 0, result.output
    with (evaluated["out"] / "evaluation.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    names = ["image-affine", "liver-affine", "image", "liver-affine+image", "liver", "liver+landmarks"]
    assert [(row["modality"], row["method_name"]) for row in table] == [(m, n) for m in ("CT", "MR") for n in names]
    assert {row["split"] for row in table} == {"test"} and {row["n"] for row in table} == {"1"}
    for row in table:
        assert f"{float(row['rrmsd_mm']):.2f}" in result.stdout
    assert "computed 12 of 12 registrations" in result.stdout
    assert_png(evaluated["out"] / "rmsd_boxplot.png")
    assert_png(evaluated["out"] / "tuning_liver.png")  # the heat map of the --weights-from grid search
    report = (evaluated["out"] / "report.html").read_text(encoding="utf-8")
    assert report.count('<img src="data:image/png;base64,') == 2 and "Weights tuned on the train split" in report
    assert all(f"{float(row['rrmsd_mm']):.2f}" in report for row in table)  # every RRMSD of the table


@pytest.mark.slow
def test_dose_doses_every_test_lesion_of_every_evaluated_method_and_resumes(evaluated, manifest, scheduler, tmp_path):
    """`study dose` on the evaluation's table (two of its methods): a row per test-split lesion and method, the
    paper's figures in a report; run again, it computes nothing (no cluster is reachable) and writes the same
    table."""
    with evaluated["results"].open(newline="") as handle:
        header, *table = list(csv.reader(handle))
    kept = [line for line in table if line[header.index("method_name")] in ("image-affine", "liver+landmarks")]
    results = tmp_path / "registrations.csv"
    with results.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows([header, *kept])
    first = study("dose", manifest, "--results", results, "--quick", "--scheduler", scheduler,
                  "-o", tmp_path / "dose")
    assert first.exit_code == 0, first.output
    with (tmp_path / "dose" / "lesion_doses.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    methods = {row["method"] for row in read_results(results)}
    assert len(methods) == 2
    assert {row["method"] for row in rows} == methods and {row["patient"] for row in rows} == {"P02"}
    assert {row["error"] for row in rows} == {""} and len(rows) == len(methods) * len({r["lesion"] for r in rows}) * 2
    for row in rows:  # the differences are those of the values beside them
        assert float(row["v70_difference"]) == pytest.approx(float(row["v70_percent"]) -
                                                             float(row["reference_v70_percent"]))
        reference = float(row["reference_mean_gy"])
        assert float(row["mean_dose_difference_percent"]) == pytest.approx(
            100 * (float(row["mean_gy"]) - reference) / reference)
    for name in ("dose_differences_ct", "passing_bablok_ct", "dvh_ct", "dose_differences_mr", "passing_bablok_mr",
                 "dvh_mr"):
        assert_png(tmp_path / "dose" / f"{name}.png")
    report = (tmp_path / "dose" / "report.html").read_text(encoding="utf-8")
    assert report.count('<img src="data:image/png;base64,') == 6 and "Figs. 9, 11" in report
    assert "CT liver+landmarks: " in first.stdout and "median |mean dose difference|" in first.stdout

    again = study("dose", manifest, "--results", results, "--quick", "--scheduler", "tcp://127.0.0.1:1",
                  "-o", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "again" / "lesion_doses.csv").read_bytes() == (tmp_path / "dose" / "lesion_doses.csv"
                                                                      ).read_bytes()


@pytest.mark.slow
def test_dose_refuses_a_table_of_other_engine_settings(evaluated, manifest, tmp_path):
    result = study("dose", manifest, "--results", evaluated["results"], "-o", tmp_path / "dose")  # not --quick
    assert_refused(result, "holds results of other engine settings")
    assert not (tmp_path / "dose").exists()


def test_dose_refuses_a_missing_results_table(manifest, tmp_path):
    result = study("dose", manifest, "--results", tmp_path / "none.csv", "-o", tmp_path / "dose")
    assert_refused(result, "no such results table")


@pytest.mark.slow
def test_evaluate_uses_the_tuned_weights_per_modality(evaluated, tuned):
    assert evaluated["result"].exit_code == 0, evaluated["result"].output
    chosen = {line.split(":")[0].removeprefix("chosen for "): line.split(": ")[1].split(" (")[0]
              for line in tuned["result"].stdout.splitlines() if line.startswith("chosen for ")}
    with (evaluated["out"] / "evaluation.csv").open(newline="") as handle:
        liver = {row["modality"]: row for row in csv.DictReader(handle) if row["method_name"] == "liver"}
    for modality, row in liver.items():
        weights = (float(row["image_weight"]), float(row["label_weight"]))
        assert chosen[modality] == ("affine only" if weights == (0, 0) else
                                    f"wI={weights[0]:g}, wS={weights[1]:g}, rigidity=1")


# --- refusals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("grid", "message"), [
    (["wI=a"], "'a' is not a number"),
    (["wI=0,,1"], "'' is not a number"),
    (["wX=1"], "unknown grid weight 'wX'"),
    (["wI"], "--grid takes WEIGHT=V1,V2"),
    (["wI=0", "wi=1"], "given twice"),
    (["wI=-1"], ">= 0"),
])
def test_tune_refuses_a_bad_grid(manifest, tmp_path, grid, message):
    arguments = [item for value in grid for item in ("--grid", value)]
    assert_refused(study("tune", manifest, *arguments, "-o", tmp_path / "tune.csv"), message)
    assert not (tmp_path / "tune.csv").exists()


@pytest.mark.parametrize(("options", "message"), [
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
    (["--affine-only", "--wi", "1"], "--affine-only runs no non-rigid stage"),
    (["--guidance", "landmarks"], "--guidance must be one of image, liver, liver+landmarks"),
    (["--guidance", "image", "--ws", "1"], "no label term"),
    (["--working-region", "body"], "working_region must be one of liver, whole"),
])
def test_register_refuses_bad_options(manifest, tmp_path, options, message):
    assert_refused(study("register", manifest, *options, "-o", tmp_path / "results.csv"), message)
    assert not (tmp_path / "results.csv").exists()


@pytest.mark.parametrize(("command", "required"), [
    ("register", ["-o", "results.csv"]),
    ("tune", ["--grid", "wS=1", "-o", "tune.csv"]),
    ("evaluate", ["--results", "results.csv", "-o", "out"]),
    ("dose", ["--results", "results.csv", "-o", "out"]),
])
def test_every_registering_command_takes_and_checks_the_engine_options(manifest, tmp_path, command, required):
    help_text = study(command, "--help").output
    for option in ("--workers", "--scheduler", "--quick", "--working-region", "--device"):
        assert option in help_text
    assert ("--cnn-weights" in help_text) == (command != "dose")
    paths = [str(tmp_path / value) if value.endswith((".csv", "out")) else value for value in required]
    result = study(command, manifest, *paths, "--workers", "2", "--scheduler", "tcp://127.0.0.1:8786")
    assert_refused(result, "not both")
    assert list(tmp_path.iterdir()) == []


def test_a_missing_manifest_is_refused(tmp_path):
    result = study("register", tmp_path / "cohort.yaml", "--affine-only", "-o", tmp_path / "results.csv")
    assert_refused(result, "no such cohort manifest")


def test_evaluate_refuses_a_non_empty_output_folder(manifest, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("keep me")
    result = study("evaluate", manifest, "--results", tmp_path / "results.csv", "-o", tmp_path / "out")
    assert_refused(result, "not empty")


@pytest.mark.slow
def test_evaluate_refuses_a_results_table_of_other_methods(manifest, tuned, tmp_path):
    before = tuned["path"].read_bytes()
    result = study("evaluate", manifest, "--results", tuned["path"], "-o", tmp_path / "out")
    assert_refused(result, "tune.csv holds results of methods this evaluation does not run")
    assert tuned["path"].read_bytes() == before


@pytest.mark.slow
def test_evaluate_refuses_weights_from_a_table_that_is_not_a_grid_search(manifest, registered, evaluated, tmp_path):
    result = study("evaluate", manifest, "--results", tmp_path / "results.csv", "--weights-from",
                   evaluated["results"], "-o", tmp_path / "out")
    assert_refused(result, "registrations.csv is not the table of one grid search")
    result = study("evaluate", manifest, "--results", tmp_path / "results.csv", "--weights-from",
                   registered["path"], "-o", tmp_path / "out")
    assert_refused(result, "results.csv tunes liver-affine (liver guidance), not one of the paper's non-rigid")


def test_finetune_cnn_trains_on_the_train_split_and_names_the_weights(manifest, tmp_path, monkeypatch):
    import sirtreg.segment
    from sirtreg.segment import TrainingResult

    seen = {}

    def fake_train(cases, *, steps, checkpoint_dir, batch_size, device, progress):
        seen.update(cases=len(cases), steps=steps, device=device)
        progress("train", 1.0)
        return TrainingResult(losses=(0.4, 0.1), steps=steps, checkpoint=checkpoint_dir / "checkpoint.pt")

    monkeypatch.setattr(sirtreg.segment, "train", fake_train)
    result = study("finetune-cnn", manifest, "-o", tmp_path / "cnn", "--steps", 5, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert seen == {"cases": 3, "steps": 5, "device": "cpu"}  # the train patient's MAA CT, CT and MR
    assert "Dice loss 0.400 -> 0.100" in result.output and "checkpoint.pt" in result.output


def test_study_commands_refuse_missing_cnn_weights(manifest, tmp_path):
    result = study("register", manifest, "-o", tmp_path / "results.csv", "--cnn-weights", tmp_path / "none.pt",
                   "--quick")
    assert_refused(result, "none.pt: no such file")
    weights = tmp_path / "tuned.pt"
    weights.write_bytes(b"weights")
    result = study("register", manifest, "-o", tmp_path / "results.csv", "--cnn-weights", weights, "--quick")
    assert result.exit_code == 2 and "error: CNN weights" in result.stderr
    assert "the manifest asks for no CNN mask (cnn_liver: compute)" in result.stderr
    assert not (tmp_path / "results.csv").exists()
