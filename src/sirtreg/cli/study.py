"""The cohort-study commands: ``sirtreg phantom-cohort`` and ``sirtreg study check|finetune-cnn|register|tune|evaluate``.

They parse options, call :mod:`sirtreg.study` and :mod:`sirtreg.report.study_figures`, and print.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from sirtreg.errors import InputError

if TYPE_CHECKING:
    from sirtreg.study import Cohort, GridSearch, Method
    from sirtreg.study.tuning import TunedWeights

from sirtreg.cli.app import (
    GuidanceOption,
    OutputFolder,
    WeightOptions,
    app,
    console,
    progress_bar,
    refusals_as_messages,
    weight_options,
)
from sirtreg.cli.study_options import (
    EngineOptions,
    Manifest,
    Results,
    engine_options,
    progress_from_first_report,
    study_app,
    write_csv,
)

log = logging.getLogger("sirtreg")


def _part(progress: Callable[[str, float], None], start: float, end: float) -> Callable[[str, float], None]:
    """A progress callback for one part of the work: its fractions 0..1 map onto ``start``..``end`` of ``progress``."""
    return lambda step, fraction: progress(step, start + fraction * (end - start))


def _rows_in(path: Path) -> int:
    """The number of rows in a results table (0 if there is none yet): a run appends one per registration."""
    if not path.is_file():
        return 0
    with path.open(encoding="utf-8") as handle:
        return max(sum(1 for line in handle if line.strip()) - 1, 0)


def _print_resumed(computed: int, total: int, path: Path) -> None:
    console.print(f"computed {computed} of {total} registrations; {total - computed} were already in {path.name}",
                  highlight=False)


def _weights(method: Method, *, named: bool = True) -> str:
    """``wI=1, wS=0.5, rigidity=1`` (or ``1, 0.5, 1`` for a table column), or "affine only"."""
    if method.affine_only:
        return "affine only"
    values = [f"{value:g}" for value in (method.image_weight, method.label_weight, method.rigidity)]
    if named:
        values = [f"{name}={value}" for name, value in zip(("wI", "wS", "rigidity"), values, strict=True)]
    return ", ".join(values)


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _summary_table(summary: Sequence[Mapping[str, Any]], *, title: str, methods: Sequence[Method] = ()) -> Table:
    """Rows of :func:`sirtreg.study.summarise`, by split and modality or, given their ``methods``, by method.

    Narrow enough for 80 columns; the results table holds the other statistics.
    """
    by_key = {method.key: method for method in methods}
    leading: list[Column | str] = ["split", "modality"]
    if methods:
        leading = [Column("method", no_wrap=True), "wI, wS, rigidity"]
    table = Table(*leading, "n", "failed", "RRMSD (mm)", "median RMSD (mm)", "median DSC", title=title)
    for row in summary:
        first = ([row["method_name"], _weights(by_key[row["method"]], named=False)] if methods
                 else [row["split"], row["modality"]])
        table.add_row(*first, str(row["n"]), str(row["failed"]), _number(row["rrmsd_mm"]),
                      _number(row["median_rmsd_mm"]), _number(row["median_dsc"], 3))
    return table


@app.command("phantom-cohort")
@refusals_as_messages
def phantom_cohort(
    outdir: Annotated[Path, typer.Argument(help="Folder to write the cohort into (new or empty).")],
    patients: Annotated[int, typer.Option(help="Number of digital patients.")],
    resolution: Annotated[str, typer.Option(help="'full' (realistic grids) or 'fast' (coarse, for tests).")] = "full",
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same cohort.")] = 0,
    train_fraction: Annotated[float, typer.Option(help="Fraction of the patients in the train split.")] = 0.5,
    cnn_masks: Annotated[bool, typer.Option(
        help="Guide registrations with CNN liver masks: the manifest says cnn_liver: compute, and studies "
             "segment each image once, beside their results table.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty folder.")] = False,
) -> None:
    """Write a cohort of digital patients (MAA CT, SPECT, contrast CT, MR and their truth) and its cohort.yaml."""
    from sirtreg.io import check_output_folder
    from sirtreg.study import COMPUTE, write_phantom_cohort

    check_output_folder(outdir, overwrite=overwrite)
    with progress_from_first_report("phantom cohort") as progress:
        path = write_phantom_cohort(outdir, patients=patients, resolution=resolution, seed=seed,
                                    train_fraction=train_fraction, cnn_masks=COMPUTE if cnn_masks else None,
                                    overwrite=overwrite, progress=progress)
    console.print(f"wrote {patients} patients (seed {seed}) to {outdir}; manifest {path}", highlight=False,
                  soft_wrap=True)


@study_app.command("check")
@refusals_as_messages
def study_check(manifest: Manifest) -> None:
    """Read and check a cohort manifest: one line per split, or one error listing every problem."""
    from sirtreg.study import SPLITS, read_manifest

    cohort = read_manifest(manifest)
    console.print(f"{manifest.name}: {cohort.name or 'cohort'}, {len(cohort.patients)} patients", highlight=False)
    for split in SPLITS:
        patients = sum(patient.split == split for patient in cohort.patients)
        counts = cohort.registration_counts(split=split)
        console.print(f"{split}: {patients} patient{'s' if patients != 1 else ''}, "
                      + ", ".join(f"{n} {modality}" for modality, n in counts.items()) + " registrations",
                      highlight=False)


@study_app.command("finetune-cnn")
@refusals_as_messages
def study_finetune_cnn(
    manifest: Manifest,
    checkpoint_dir: Annotated[Path, typer.Option("--output", "-o", help="Folder for the checkpoint (a run there "
                                                                         "is resumed).")],
    steps: Annotated[int, typer.Option(help="Optimiser steps in total, resumed steps included.")] = 300,
    batch_size: Annotated[int, typer.Option(help="Patches per step.")] = 2,
    split: Annotated[str, typer.Option(help="The split whose manual contours are learnt.")] = "train",
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")] = None,
) -> None:
    """Fine-tune the paper's liver CNN on the manual liver contours of the train split (every image of its
    patients); give the checkpoint to `study register|tune|evaluate --cnn-weights`. The test split is not seen.
    About 1 s a step on a GPU; on a CPU, minutes a step."""
    from sirtreg.study import finetune_cnn, read_manifest

    cohort = read_manifest(manifest)
    with progress_bar("fine-tune") as progress:
        result = finetune_cnn(cohort, checkpoint_dir, steps=steps, split=split, batch_size=batch_size,
                              device=device, progress=progress)
    first, last = result.losses[0], result.losses[-1]
    console.print(f"{result.steps} steps, Dice loss {first:.3f} -> {last:.3f}; weights for --cnn-weights: "
                  f"{result.checkpoint}", highlight=False, soft_wrap=True)  # a path to copy: never broken


def _method(guidance: str, weights: WeightOptions) -> Method:
    """The guidance preset with the weights given; ``affine_only`` gives the paper's affine methods."""
    from sirtreg.study import IMAGE, LIVER, LIVER_LANDMARKS

    presets = {method.guidance: method for method in (IMAGE, LIVER, LIVER_LANDMARKS)}
    if guidance not in presets:
        raise InputError(f"--guidance must be one of {', '.join(presets)}, got {guidance!r}")
    return replace(presets[guidance], **weights.nonrigid(),
                   **({"name": f"{guidance}-affine"} if weights.affine_only else {}))


@study_app.command("register")
@refusals_as_messages
@engine_options()
@weight_options
def study_register(
    manifest: Manifest,
    output: Results,
    guidance: GuidanceOption = "liver",
    split: Annotated[str | None, typer.Option(help="train or test (default: every patient).")] = None,
    *,
    engine: EngineOptions,
    weights: WeightOptions,
) -> None:
    """Register every floating image of the cohort with one method; rerun to resume. Prints RRMSD per modality."""
    from sirtreg.study import read_manifest, run_study, summarise

    method = _method(guidance, weights)
    settings = engine.settings()
    engine.prepare()
    cohort = read_manifest(manifest)
    before = _rows_in(output)
    with progress_from_first_report(f"study register ({method.name})") as progress:
        rows = run_study(cohort, [method], output, split=split, settings=settings, workers=engine.workers,
                         scheduler=engine.scheduler, cnn_weights=engine.cnn_weights, progress=progress)
    console.print(_summary_table(summarise(rows), title=escape(method.key)))
    _print_resumed(_rows_in(output) - before, len(rows), output)


def _grid_table(search: GridSearch, *, title: str) -> Table:
    """RRMSD per grid point (rows) and modality (columns); the chosen point of each modality is starred."""
    modalities = list(dict.fromkeys(row["modality"] for row in search.summary))
    cells = {(row["method"], row["modality"]): row for row in search.summary}
    table = Table("wI", "wS", "rigidity", *(f"{modality} RRMSD (mm)" for modality in modalities), title=title)
    for method in search.methods:
        values = []
        for modality in modalities:
            row = cells.get((method.key, modality))
            text = "-" if row is None else _number(row["rrmsd_mm"])
            if row is not None and row["failed"]:
                text += f" ({row['failed']} failed)"
            values.append(text + (" *" if search.best.get(modality) == method else ""))
        table.add_row(f"{method.image_weight:g}", f"{method.label_weight:g}", f"{method.rigidity:g}", *values)
    return table


@study_app.command("tune")
@refusals_as_messages
@engine_options()
def study_tune(
    manifest: Manifest,
    output: Results,
    grid: Annotated[list[str], typer.Option(help="A weight and its values, e.g. wI=0,0.5,1 (repeat for wS, "
                                                 "rigidity; a weight left out is 0, rigidity its default).")],
    guidance: GuidanceOption = "liver",
    name: Annotated[str | None, typer.Option(help="Name of the grid's method (default: the guidance); the paper "
                                                  "method it tunes for `study evaluate`.")] = None,
    split: Annotated[str, typer.Option(help="The split to tune on.")] = "train",
    *,
    engine: EngineOptions,
) -> None:
    """The paper's grid search: the weights with the lowest RRMSD per modality.

    Writes a heat map of RRMSD over (wI, wS) beside the results table (RESULTS_rrmsd.png, replaced at every run).
    """
    from sirtreg.report.study_figures import plot_grid_rrmsd
    from sirtreg.study import grid_methods, grid_search, read_manifest
    from sirtreg.study.methods import parse_grid
    from sirtreg.study.runner import best_rrmsd_mm

    weights = parse_grid(grid)
    grid_methods(weights, guidance=guidance, name=name)  # refuses a bad grid before the manifest is read
    settings = engine.settings()
    engine.prepare()
    cohort = read_manifest(manifest)
    before = _rows_in(output)
    with progress_from_first_report(f"study tune ({name or guidance})") as progress:
        search = grid_search(cohort, weights, output, guidance=guidance, name=name, split=split,
                             settings=settings, workers=engine.workers, scheduler=engine.scheduler,
                             cnn_weights=engine.cnn_weights, progress=progress)
    figure = plot_grid_rrmsd(search.summary, output.with_name(f"{output.stem}_rrmsd.png"),
                             best={modality: method.key for modality, method in search.best.items()}, overwrite=True)
    console.print(_grid_table(search, title=f"RRMSD on the {split} split ({name or guidance}; * chosen)"))
    for modality, rrmsd in best_rrmsd_mm(search.summary, search.best, split=search.split).items():
        console.print(f"chosen for {modality}: {_weights(search.best[modality])} (RRMSD {rrmsd:.2f} mm)",
                      highlight=False)
    _print_resumed(_rows_in(output) - before, len(search.methods) * len(cohort.registrations(split=split)), output)
    console.print(f"wrote {figure}", highlight=False, soft_wrap=True)


def _tuned(path: Path) -> tuple[Method, TunedWeights]:
    """The paper method that a grid-search table tunes, and what it chose per modality."""
    from sirtreg.study import PAPER_METHODS
    from sirtreg.study.tuning import read_tuned_weights

    tunable = {method.name: method for method in PAPER_METHODS if not method.affine_only}
    tuned = read_tuned_weights(path)
    paper = tunable.get(tuned.name)
    if paper is None or paper.guidance != tuned.guidance:
        raise InputError(f"{path.name} tunes {tuned.name} ({tuned.guidance} guidance), not one of the paper's "
                         f"non-rigid methods ({', '.join(tunable)}); name the grid search with `sirtreg study tune "
                         f"--name`")
    return paper, tuned


def _evaluated_methods(tune_tables: Sequence[Path]) -> dict[str, tuple[Method, ...]]:
    """Per modality, the paper's methods, with the weights chosen in the grid-search tables where given."""
    from sirtreg.study import MODALITIES, PAPER_METHODS

    tuned: dict[str, dict[str, Method]] = {}
    for path in tune_tables:
        paper, chosen = _tuned(path)
        if paper.name in tuned:
            raise InputError(f"two --weights-from tables tune {paper.name}; give one")
        best = {modality: replace(paper, image_weight=method.image_weight, label_weight=method.label_weight,
                                  rigidity=method.rigidity) for modality, method in chosen.best.items()}
        tuned[paper.name] = best
        for modality in MODALITIES:
            if modality not in best:
                log.warning("%s chose no %s weights for %s: its default weights are used", path.name, modality,
                            paper.name)
    return {modality: tuple(tuned.get(method.name, {}).get(modality, method) for method in PAPER_METHODS)
            for modality in MODALITIES}


def _refuse_other_methods(path: Path, methods: Sequence[Method]) -> None:
    """Refuse a results table that holds rows of methods other than ``methods`` (one table, one evaluation)."""
    from sirtreg.study import read_results

    if not path.exists():
        return
    keys = {method.key for method in methods}
    others = list(dict.fromkeys(row["method"] for row in read_results(path) if row["method"] not in keys))
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise InputError(f"{path.name} holds results of methods this evaluation does not run ({shown}); "
                         f"write the evaluation to a new table")


def _with_modalities(cohort: Cohort, modalities: Sequence[str]) -> Cohort:
    """The cohort with only its floating images of these modalities; patients left with none are left out."""
    patients = tuple(replace(patient, floating=kept) for patient in cohort.patients
                     if (kept := tuple(image for image in patient.floating if image.modality in modalities)))
    return replace(cohort, patients=patients)


@study_app.command("evaluate")
@refusals_as_messages
@engine_options()
def study_evaluate(
    manifest: Manifest,
    results: Annotated[Path, typer.Option(help="Results table of the registrations (CSV): created, or resumed.")],
    output: OutputFolder,
    weights_from: Annotated[list[Path] | None, typer.Option(help="Table of a `study tune` grid search: its method "
                                                                 "(image, liver, ...) gets the chosen weights per "
                                                                 "modality (repeatable).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty folder.")] = False,
    *,
    engine: EngineOptions,
) -> None:
    """Compare the paper's methods on the test split: RMSD/RRMSD per method and modality, box plots (Figs. 6-7),
    the DSC of the CNN liver masks (Fig. 5), the tuning heat maps and an HTML report of them all."""
    from sirtreg.io import check_output_folder
    from sirtreg.report.study_figures import plot_cnn_dsc, plot_grid_rrmsd, plot_rmsd_boxes
    from sirtreg.report.study_report import write_study_report
    from sirtreg.study import (
        MODALITIES,
        PAPER_METHODS,
        engine_settings_id,
        read_manifest,
        run_study,
        study_tasks,
        summarise,
    )
    from sirtreg.study.cnn_masks import cnn_mask_dsc, cnn_mask_folder

    engine.prepare()
    check_output_folder(output, overwrite=overwrite)
    settings = engine.settings()
    by_modality = _evaluated_methods(weights_from or [])
    every_method = [method for group in by_modality.values() for method in group]
    _refuse_other_methods(results, every_method)
    cohort = read_manifest(manifest)
    counts = cohort.registration_counts(split="test")
    groups: dict[tuple[Method, ...], list[str]] = {}  # modalities evaluated with the same methods run together
    for modality in MODALITIES:
        if counts[modality]:
            groups.setdefault(by_modality[modality], []).append(modality)
    if not groups:
        raise InputError("the cohort has no registrations in the test split")
    runs = [(_with_modalities(cohort, modalities), group) for group, modalities in groups.items()]
    sizes = [len(study_tasks(part, group, split="test")) for part, group in runs]
    total = sum(sizes)
    before = _rows_in(results)
    rows = []
    with progress_from_first_report("study evaluate") as progress:
        for (part, group), start, size in zip(runs, itertools.accumulate(sizes, initial=0), sizes):
            rows += run_study(part, group, results, split="test", settings=settings, workers=engine.workers,
                              scheduler=engine.scheduler, cnn_weights=engine.cnn_weights,
                              progress=_part(progress, start / total, (start + size) / total))
    names = [method.name for method in PAPER_METHODS]
    summary = sorted(summarise(rows), key=lambda row: (MODALITIES.index(row["modality"]),
                                                       names.index(row["method_name"])))
    # the masks are read before anything is written: a bad mask leaves no half-written folder
    dsc_rows: dict[tuple[str, str], dict[str, Any]] = {}
    for folder in [cnn_mask_folder(results), *(cnn_mask_folder(path) for path in weights_from or [])]:
        dsc_rows.update({(row["patient"], row["image"]): row for row in cnn_mask_dsc(cohort, folder)})
    table = write_csv(summary, output / "evaluation.csv", overwrite=overwrite)
    figure = plot_rmsd_boxes(rows, output / "rmsd_boxplot.png", methods=names, overwrite=overwrite)
    heat_maps = {}
    for tune_table in weights_from or []:
        paper, chosen = _tuned(tune_table)
        heat_maps[paper.name] = plot_grid_rrmsd(
            chosen.summary, output / f"tuning_{paper.name}.png",
            best={modality: method.key for modality, method in chosen.best.items()}, overwrite=overwrite)
    cnn_figure = None
    if dsc_rows:
        write_csv(list(dsc_rows.values()), output / "cnn_dsc.csv", overwrite=overwrite)
        cnn_figure = plot_cnn_dsc(list(dsc_rows.values()), output / "cnn_dsc.png", overwrite=overwrite)
    tuned_by = ", ".join(path.name for path in weights_from or [])
    facts = [f"{cohort.name or manifest.name}: {sum(p.split == 'test' for p in cohort.patients)} test patients, "
             f"{total} registrations; engine settings {engine_settings_id(settings)}"
             + (" (quick: not for reporting)" if engine.quick else ""),
             f"Weights tuned on the train split: {tuned_by}." if tuned_by else "Default weights (no --weights-from)."]
    flagged = [row for row in rows if row["status"] == "ok" and row["liver_flag"]]
    report = write_study_report(output / "report.html", summary, boxplot=figure, heat_maps=heat_maps,
                                cnn_dsc=cnn_figure, flagged=flagged, facts=facts, overwrite=overwrite)
    for modality in MODALITIES:
        rows_of_modality = [row for row in summary if row["modality"] == modality]
        if rows_of_modality:
            console.print(_summary_table(rows_of_modality, title=f"{modality}, test split", methods=every_method))
    _print_resumed(_rows_in(results) - before, len(rows), results)
    if flagged:
        console.print(f"[bold]check[/] {len(flagged)} registration(s) guided by a flagged CNN liver: see the "
                      "report's section on CNN liver masks", highlight=False, soft_wrap=True)
    console.print(f"wrote {table}, {figure} and {report}", highlight=False, soft_wrap=True)
