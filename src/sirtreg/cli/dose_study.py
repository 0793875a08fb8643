"""`sirtreg study dose`: the paper's dose experiment on a cohort (see :mod:`sirtreg.study.dose`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sirtreg.cli.app import OutputFolder, console, refusals_as_messages
from sirtreg.cli.study_options import (
    EngineOptions,
    Manifest,
    engine_options,
    progress_from_first_report,
    study_app,
    write_csv,
)
from sirtreg.errors import InputError


def _methods_of(results: Path, settings_id: str) -> tuple:
    """The methods of a study's results table (its test-split rows), refusing a table of other engine settings."""
    from sirtreg.study import read_results
    from sirtreg.study.runner import methods_of_rows, refuse_other_settings

    rows = [row for row in read_results(results) if row["split"] == "test"]
    if not rows:
        raise InputError(f"{results.name} holds no registration of the test split: run `sirtreg study evaluate` "
                         "first")
    refuse_other_settings(rows, settings_id, table=results.name,
                          remedy="give --quick and --working-region as study evaluate had them")
    return methods_of_rows(rows)


@study_app.command("dose")
@refusals_as_messages
@engine_options(cnn_weights=False)
def study_dose(
    manifest: Manifest,
    results: Annotated[Path, typer.Option(help="Results table of `sirtreg study evaluate` (CSV): its methods are "
                                               "dosed; the dose tasks are cached beside it.")],
    output: OutputFolder,
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty folder.")] = False,
    *,
    engine: EngineOptions,
) -> None:
    """The paper's dose experiment: for every test-split lesion and method, the mean dose, V70, V100 and D70 of
    the registered lesion against the lesion drawn on the MAA CT; box plots, Passing-Bablok plots and DVHs
    (Figs. 9-13) and an HTML report. Resumable: finished tasks are kept beside the results table."""
    from sirtreg.io import check_output_folder
    from sirtreg.report.dose_study import write_dose_study_report
    from sirtreg.study import MODALITIES, engine_settings_id, read_manifest
    from sirtreg.study.dose import DOSE_COLUMNS, dose_comparisons, dose_summary, run_dose_study

    engine.prepare()
    check_output_folder(output, overwrite=overwrite)
    if not results.is_file():
        raise InputError(f"no such results table: {results}; run `sirtreg study evaluate` first")
    settings = engine.settings()
    methods = _methods_of(results, engine_settings_id(settings))
    cohort = read_manifest(manifest)
    with progress_from_first_report("study dose") as progress:
        rows, dvh = run_dose_study(cohort, methods, results, settings=settings, workers=engine.workers,
                                   scheduler=engine.scheduler, progress=progress)
    modalities = [m for m in MODALITIES if any(row["modality"] == m for row in rows)]
    comparisons = {modality: dose_comparisons(rows, modality) for modality in modalities}
    summary = dose_summary(comparisons)
    output.mkdir(parents=True, exist_ok=True)
    table = write_csv([{column: row[column] for column in DOSE_COLUMNS} for row in rows],
                       output / "lesion_doses.csv", overwrite=overwrite)
    if summary:
        write_csv(summary, output / "dose_summary.csv", overwrite=overwrite)
    facts = [f"{cohort.name or manifest.name}: {len({row['patient'] for row in rows})} test patients, "
             f"{len(rows)} lesion rows over {len(methods)} methods; engine settings {engine_settings_id(settings)}"
             + (" (quick: not for reporting)" if engine.quick else ""),
             "Dose: local deposition of each patient's activity, distributed by the MAA SPECT counts inside the "
             "manual MAA CT liver; lesions pair by label value."]
    files = write_dose_study_report(output, rows, dvh, comparisons, summary, facts=facts, overwrite=overwrite)
    for row in summary:
        console.print(f"{row['modality']} {row['method_name']}: {row['lesions']} lesions, median |mean dose "
                      f"difference| {row['median_abs_mean_dose_difference']:.1f} %, median |V70 difference| "
                      f"{row['median_abs_v70_difference']:.1f} points", highlight=False, soft_wrap=True)
    failed = sum(row["error"] is not None for row in rows)
    if failed:
        console.print(f"[bold]check[/] {failed} lesion row(s) not dosed: see the error column of {table}",
                      highlight=False, soft_wrap=True)
    console.print(f"wrote {table} and {files['report']}", highlight=False, soft_wrap=True)
