"""The `sirtreg` command line. The only place that prints, draws progress and sets log levels."""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sirtreg import __version__
from sirtreg.errors import InputError, OutputExistsError, SirtregError

if TYPE_CHECKING:
    from sirtreg.geometry import LabelVolume, Volume
    from sirtreg.register import Annotated as RegisterAnnotated
    from sirtreg.register import GuidedReference, RegistrationSettings

app = typer.Typer(
    name="sirtreg",
    help="Multi-modality liver registration and lesion dosimetry for SIRT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
error_console = Console(stderr=True)
log = logging.getLogger("sirtreg")

F = TypeVar("F", bound=Callable[..., Any])
EXIT_BAD_INPUT = 2


def refusals_as_messages(command: F) -> F:
    """Turn a SirtregError into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SirtregError as exc:
            error_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar; yields the callback `progress(step, fraction)` that library code calls."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[step]}"), TimeElapsedColumn(), console=error_console, transient=False,
    ) as bar:
        task = bar.add_task(description, total=1.0, step="")

        def update(step: str, fraction: float) -> None:
            bar.update(task, completed=min(max(fraction, 0.0), 1.0), step=step)

        yield update
        bar.update(task, completed=1.0, step="done")


def _version(value: bool) -> None:
    if value:
        console.print(f"sirtreg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show warnings and errors only.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Multi-modality liver registration and lesion dosimetry for SIRT."""
    from sirtreg.allocator import reuse_freed_memory

    reuse_freed_memory()  # a command's large arrays from the heap, reused: far fewer page faults
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(message)s", force=True,
        handlers=[RichHandler(console=error_console, show_path=False, show_time=False)],
    )


def console_main() -> None:
    """The ``sirtreg`` console script: the app, then an exit without the collector's last pass over every
    object of PyTorch and SciPy (a fifth of a second of every command that registers or segments)."""
    try:
        app()
    finally:
        gc.freeze()


def _refuse_overwriting_inputs(output: Path, inputs: list[Path]) -> None:
    for item in inputs:
        if output.resolve() == item.resolve():
            raise OutputExistsError(f"output {output} would overwrite the input {item}")
        if item.is_dir() and item.resolve() in output.resolve().parents:
            raise OutputExistsError(f"output {output} would be written inside the input folder {item}")


@app.command()
@refusals_as_messages
def info(
    images: Annotated[list[Path], typer.Argument(help="Images: NIfTI, NRRD, MHA, a DICOM folder or file.")],
    labels: Annotated[Path | None, typer.Option(help="A label map on the grid of the (single) image: list its labels.")] = None,
) -> None:
    """Describe images in one line each (modality, size, spacing, orientation)."""
    from sirtreg.io import orient_like, read_image, read_labels

    volumes = [read_image(path) for path in images]
    for path, volume in zip(images, volumes):
        console.print(f"{path.name}: {volume.describe()}", highlight=False)
    if labels is None:
        return
    label_volume = read_labels(labels)
    for path, volume in zip(images, volumes):
        try:  # the same voxels stored in another axis order are accepted, anything else refused
            label_volume = orient_like(label_volume, volume.grid)
        except SirtregError:
            volume.grid.require_same(label_volume.grid, what=f"label map {labels.name} and image {path.name}")
    table = Table("value", "name", "voxels", "volume (mL)", title=labels.name)
    for value in label_volume.present_labels():
        voxels = int((label_volume.array == value).sum())
        table.add_row(str(value), label_volume.labels.get(value, ""), str(voxels),
                      f"{voxels * label_volume.grid.voxel_volume_ml:.1f}")
    console.print(table)


@app.command()
@refusals_as_messages
def convert(
    source: Annotated[Path, typer.Argument(help="Input image (NIfTI, NRRD, MHA, DICOM folder or file).")],
    output: Annotated[Path, typer.Argument(help="Output file; the format follows the suffix.")],
    as_labels: Annotated[bool, typer.Option("--labels", help="Treat the input as a label map.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Convert an image or label map between formats, keeping its geometry."""
    from sirtreg.io import read_image, read_labels, write_image

    _refuse_overwriting_inputs(output, [source])
    volume = read_labels(source) if as_labels else read_image(source)
    write_image(volume, output, overwrite=overwrite)
    console.print(f"wrote {output}: {volume.describe()}", highlight=False)


@app.command()
@refusals_as_messages
def phantom(
    outdir: Annotated[Path, typer.Argument(help="Folder to write the digital patient into (new or empty).")],
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same patient.")] = 0,
    resolution: Annotated[str, typer.Option(help="'full' (realistic grids) or 'fast' (coarse, for tests).")] = "full",
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty folder.")] = False,
) -> None:
    """Write a digital SIRT patient: MAA CT, contrast CT, MR, MAA SPECT and their truth."""
    from sirtreg.output_folder import OutputFolder
    from sirtreg.phantom import write_patient

    OutputFolder(outdir, overwrite=overwrite, command="phantom").check()  # refused before the progress bar
    with progress_bar("phantom") as progress:
        manifest = write_patient(outdir, seed=seed, resolution=resolution, overwrite=overwrite, progress=progress)
    console.print(f"wrote patient (seed {seed}) to {outdir}; manifest {outdir / 'patient.json'}", highlight=False)
    log.debug("manifest: %s", json.dumps(manifest)[:2000])


@app.command()
@refusals_as_messages
def demo(
    outdir: Annotated[Path, typer.Argument(help="Output folder (new or empty).")] = Path("sirtreg-demo"),
    seed: Annotated[int, typer.Option(help="Seed of the digital patient.")] = 0,
    resolution: Annotated[str, typer.Option(
        help="full: realistic grids; fast: twice the voxel size, for a quick look.")] = "full",
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty folder.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """The whole pipeline on the built-in digital patient: CNN livers, CT and MR registered with each
    guidance preset, lesions carried onto the MAA CT, doses and the HTML report."""
    from sirtreg.demo import run_demo
    from sirtreg.io import check_output_folder
    from sirtreg.phantom.patient import RESOLUTIONS

    if resolution not in RESOLUTIONS:
        raise InputError(f"--resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    check_output_folder(outdir, overwrite=overwrite)
    with progress_bar("demo") as progress:
        summary = run_demo(outdir, seed=seed, resolution=resolution, overwrite=overwrite, device=device,
                           progress=progress)
    _print_files(f"sirtreg demo (seed {seed})", summary)
    _print_flagged(json.loads(summary["results"].read_text(encoding="utf-8")))
    console.print(f"open the report: {summary['report']}", highlight=False, soft_wrap=True)


def _print_flagged(results: dict[str, Any]) -> None:
    """One line per CNN liver and per lesion that a run flagged (its results.json): which, and why."""
    livers = results["cnn_livers"]
    flagged = [(f"the CNN liver of {check['image']}", check["reasons"]) for check in livers["scans"]]
    flagged += [(f"the registration of {check['floating']}" + (
        f" (image guidance instead of {check['planned_guidance']})"
        if check["guidance"] != check["planned_guidance"] else ""), check["reasons"])
        for check in livers["registrations"]]
    flagged += [(f"{lesion['name']} of {lesion['image']}", lesion["reasons"]) for lesion in results["lesion_agreement"]]
    for where, reasons in flagged:
        if reasons:
            console.print(f"[bold]check {escape(where)}[/]: {escape('; '.join(reasons))}", highlight=False,
                          soft_wrap=True)


def _print_files(title: str, files: dict[str, Any]) -> None:
    """A table of the files a command wrote: name, path."""
    table = Table("output", "file", title=title)
    for name, path in files.items():
        table.add_row(name, str(path))
    console.print(table)


@app.command("run")
@refusals_as_messages
def run_command(
    plan: Annotated[Path, typer.Argument(help="The patient's plan (YAML): MAA CT, SPECT and floating images.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (new or empty).")],
    overwrite: Annotated[bool, typer.Option(
        help="Replace a non-empty output folder, once the run is complete.")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    deidentify: Annotated[bool, typer.Option(
        "--deidentify", help="Strip patient identifiers from every output: DICOM (basic confidentiality profile, "
                             "UIDs kept), results, tables and report (no input paths, no dates).")] = False,
    pseudonym: Annotated[str | None, typer.Option(
        help="With --deidentify: PatientName and PatientID of the DICOM outputs (default ANONYMOUS).")] = None,
    weights_from: Annotated[list[Path] | None, typer.Option(
        help="Table of a `sirtreg study tune` grid search: the floating images of its guidance get the weights it "
             "chose for their modality (repeatable, one table per guidance).")] = None,
) -> None:
    """Run a patient's plan: segment, register, carry lesions onto the MAA CT, dose; tables, DICOM, HTML report."""
    from sirtreg.io import check_output_folder, deidentification_for
    from sirtreg.pipeline import read_plan, run_plan, with_tuned_weights

    deidentification_for(deidentify, pseudonym)  # a lone or bad pseudonym is refused before the plan is read
    check_output_folder(output, overwrite=overwrite)
    patient = read_plan(plan)
    if weights_from:
        from sirtreg.study.tuning import read_tuned_weights

        patient = with_tuned_weights(patient, [read_tuned_weights(path) for path in weights_from])
    for entry in patient.floating:
        console.print(f"{entry.id}: {patient.guidance(entry)} guidance, {patient.weights_for(entry).describe()}",
                      highlight=False, soft_wrap=True)
    with progress_bar("run") as progress:
        result = run_plan(patient, output, overwrite=overwrite, device=device, progress=progress,
                          deidentify=deidentify, pseudonym=pseudonym)
    table = Table("image", "structure", "volume (mL)", "mean (Gy)", "V70 (%)", "V100 (%)", "note",
                  title="absorbed dose")
    for row in result.doses:
        table.add_row(*(_cell(row.get(key)) for key in
                        ("source", "structure", "volume_ml", "mean_gy", "V70_percent", "V100_percent", "error")))
    console.print(table)
    _print_flagged(result.results)
    console.print(f"wrote {result.out_dir} in {result.seconds:.0f} s; report: {result.report}", highlight=False,
                  soft_wrap=True)


@app.command()
@refusals_as_messages
def review(
    outdir: Annotated[Path, typer.Argument(help="Output folder of `sirtreg run` (results.json, report.html).")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 0,
    reviewer: Annotated[str, typer.Option(help="Your name, filled in on the page.")] = "",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Only print the address.")] = False,
    export: Annotated[Path | None, typer.Option(
        help="Write the scores to this CSV file (new) and exit, without serving.")] = None,
) -> None:
    """Score each carried landmark (Likert 1-5, the paper's Table 2) in the report; scores go to review.sqlite."""
    from sirtreg.review import ScoreStore, export_csv, make_server, read_review_folder

    if export is not None:
        folder = read_review_folder(outdir)
        path, count = export_csv(ScoreStore(folder.store_path), export)
        console.print(f"wrote {count} score(s) to {path}", highlight=False)
        return
    server = make_server(outdir, port=port, reviewer=reviewer)
    console.print(f"review of {server.folder.describe()}: {server.url}\n"
                  f"scores are saved to {server.folder.store_path}; press Ctrl-C to stop", highlight=False,
                  soft_wrap=True)
    launcher = None if no_browser else _open_privately(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if launcher is not None:
            launcher.unlink(missing_ok=True)
    console.print(f"stopped; {len(server.store.scores())} score(s) in {server.folder.store_path}", highlight=False)


@app.command("review-summary")
@refusals_as_messages
def review_summary(
    runs: Annotated[list[Path], typer.Argument(
        help="Output folders of `sirtreg run`, each scored with `sirtreg review`.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (new or empty).")],
    overwrite: Annotated[bool, typer.Option(
        help="Replace an earlier output of sirtreg in that folder, once the new one is complete.")] = False,
) -> None:
    """Count the Likert scores of several runs and reviewers per modality and guidance (the paper's Fig. 8)."""
    from sirtreg.output_folder import OutputFolder
    from sirtreg.review.summary import (
        likert_counts,
        plot_likert,
        read_rated_landmarks,
        write_counts_csv,
        write_rated_csv,
    )

    _refuse_overwriting_inputs(output, runs)
    rated = read_rated_landmarks(runs)
    counts = likert_counts(rated)
    with OutputFolder(output, overwrite=overwrite, inputs=runs, command="review-summary") as out:
        written = out.final_paths({"counts": write_counts_csv(counts, out.staging / "likert_counts.csv"),
                                   "scores": write_rated_csv(rated, out.staging / "likert_scores.csv"),
                                   "chart": plot_likert(counts, out.staging / "likert.png")})
    table = Table("modality", "guidance", *(f"{value}" for value in range(1, 6)), "scores",
                  title=f"Likert scores of {len(runs)} run(s), {len({r.reviewer for r in rated})} reviewer(s)")
    for group in dict.fromkeys((row["modality"], row["guidance"]) for row in counts):
        rows = [row for row in counts if (row["modality"], row["guidance"]) == group]
        table.add_row(*map(escape, group), *(f"{row['count']} ({row['percent']:.0f} %)" for row in rows),
                      str(rows[0]["total"]))
    console.print(table)
    _print_files("review summary", written)


def _open_privately(url: str) -> Path:
    """Open ``url`` in the browser through a page only this user can read, so that the token in the
    address never appears on a command line other users can list; returns that page (delete it after)."""
    import html
    import tempfile
    import webbrowser

    descriptor, name = tempfile.mkstemp(prefix="sirtreg-review-", suffix=".html")  # mode 0600
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(f'<!doctype html><meta http-equiv="refresh" content="0; url={html.escape(url)}">'
                     f'<a href="{html.escape(url)}">open the review</a>')
    webbrowser.open(Path(name).as_uri())
    return Path(name)


def _read_structures(path: Path, segments: list[str]) -> list[Any]:
    """Label maps from a file: the segments of a Slicer segmentation, or labels (name or value) of a label map."""
    from sirtreg.geometry import LabelVolume
    from sirtreg.io import is_segmentation_file, read_labels, read_segmentation

    if is_segmentation_file(path):
        segmentation = read_segmentation(path)
        return [segmentation.label_volume(name) for name in (segments or segmentation.names)]
    labels = read_labels(path)
    if not segments:
        return [labels]
    chosen = []
    for segment in segments:
        value = labels.value_of(segment)
        if value not in labels.present_labels():
            raise InputError(f"{path.name} holds no label {segment!r}; it holds {_label_list(labels)}")
        chosen.append(LabelVolume.from_mask(labels.array == value, labels.grid,
                                            name=labels.labels.get(value, f"{path.name.split('.')[0]} {value}")))
    return chosen


def _label_list(labels: Any, most: int = 12) -> str:
    """'1 (liver), 2, 5 (spleen)': the values present in a label map with their names."""
    present = labels.present_labels()
    items = [f"{v} ({labels.labels[v]})" if labels.labels.get(v, f"label {v}") != f"label {v}" else str(v)
             for v in present[:most]]
    return ", ".join(items) + (f" and {len(present) - most} more" if len(present) > most else "") or "no label"


def _one_structure(path: Path, segment: str | None, what: str) -> Any:
    """The one structure (liver, perfused volume) of a file; a file of several is refused unless one is chosen."""
    structures = _read_structures(path, [segment] if segment else [])
    if len(structures) != 1:
        raise SirtregError(f"{path.name} holds several segments; name the {what} with --{what}-segment")
    if len(structures[0].present_labels()) > 1:
        raise InputError(f"{path.name} holds several labels ({_label_list(structures[0])}); choose the {what} with "
                         f"--{what}-segment NAME or VALUE")
    return structures[0]


def _names(text: str | None) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()] if text else []


@app.command()
@refusals_as_messages
def dose(
    spect: Annotated[Path, typer.Option(help="The 99mTc-MAA SPECT (counts): NIfTI, NRRD, MHA or DICOM.")],
    liver: Annotated[Path, typer.Option(help="Liver contour: label map or Slicer .seg.nrrd (any grid).")],
    activity_gbq: Annotated[float, typer.Option("--activity-gbq", help="Administered activity in GBq.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (new or empty).")],
    isotope: Annotated[str, typer.Option(help="y90 or ho166.")] = "y90",
    liver_segment: Annotated[str | None, typer.Option(
        help="Segment name or label value of the liver in its file (needed when it holds several).")] = None,
    lesions: Annotated[list[Path] | None, typer.Option(help="Lesion label maps or .seg.nrrd (repeatable).")] = None,
    lesion_segments: Annotated[str | None, typer.Option(
        help="Comma-separated lesion segment names or label values.")] = None,
    perfused: Annotated[Path | None, typer.Option(help="Perfused-volume contour: spread the activity in it.")] = None,
    perfused_segment: Annotated[str | None, typer.Option(help="Segment name/value of the perfused volume.")] = None,
    lung_shunt_fraction: Annotated[float, typer.Option(help="Lung shunt fraction in [0, 1).")] = 0.0,
    lung_mass_kg: Annotated[float, typer.Option(help="Lung mass for the lung dose (kg).")] = 1.0,
    density_g_per_ml: Annotated[float, typer.Option(help="Tissue density (g/mL).")] = 1.05,
    calibration_time: Annotated[datetime | None, typer.Option(
        help="When the activity was measured (ISO 8601); with --injection-time it is decay corrected.")] = None,
    injection_time: Annotated[datetime | None, typer.Option(help="When it was injected (ISO 8601).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty folder.")] = False,
) -> None:
    """Absorbed dose by local deposition: dose map, per-structure table (mean, V70, V100, Dx) and DVHs."""
    from sirtreg.dosimetry import dose_report, write_dose_outputs
    from sirtreg.io import read_image
    from sirtreg.output_folder import OutputFolder

    inputs = [spect, liver, *(lesions or []), *([perfused] if perfused else [])]
    OutputFolder(output, overwrite=overwrite, inputs=inputs, command="dose").check()
    spect_volume = read_image(spect, modality="NM")
    liver_labels = _one_structure(liver, liver_segment, "liver")
    lesion_labels = [item for path in lesions or [] for item in _read_structures(path, _names(lesion_segments))]
    perfused_labels = _one_structure(perfused, perfused_segment, "perfused") if perfused else None
    report = dose_report(
        spect_volume, liver_labels, activity_gbq, isotope=isotope, lesions=lesion_labels, perfused=perfused_labels,
        lung_shunt_fraction=lung_shunt_fraction, lung_mass_kg=lung_mass_kg, density_g_per_ml=density_g_per_ml,
        calibration_time=calibration_time, injection_time=injection_time,
    )
    outputs = write_dose_outputs(report, output, overwrite=overwrite, inputs=inputs)
    table = Table("structure", "volume (mL)", "mean (Gy)", "V70 (%)", "V100 (%)", "note", title="absorbed dose")
    for row in report.rows():
        table.add_row(*(_cell(row.get(key)) for key in
                        ("structure", "volume_ml", "mean_gy", "V70_percent", "V100_percent", "error")))
    console.print(table)
    summary = report.summary()
    console.print(f"counts inside the contour: {100 * summary['counts_inside_fraction']:.1f} %; "
                  f"lung dose {summary['lung_dose_gy']:.1f} Gy", highlight=False)
    console.print(f"wrote {', '.join(str(path) for path in outputs.values())}", highlight=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


models_app = typer.Typer(help="The trained networks: list, fetch or clear the cached weights.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
@refusals_as_messages
def models_list() -> None:
    """List the cached networks and whether their checksums match (exit 1 if any is not ready)."""
    from sirtreg.segment import list_models

    records = list_models()
    table = Table("model", "description", "size (MB)", "sha256", "status", title="sirtreg models")
    for record in records:
        table.add_row(record.name, record.description, f"{record.size_bytes / 1e6:.1f}" if record.size_bytes else "-",
                      record.sha256[:12] if record.sha256 else "-", "ok" if record.ok else record.problem)
    console.print(table)
    if not all(record.ok for record in records):
        raise typer.Exit(1)


@models_app.command("fetch")
@refusals_as_messages
def models_fetch(
    force: Annotated[bool, typer.Option(help="Download and convert again even if cached.")] = False,
    wheel: Annotated[Path | None, typer.Option(help="Use this downloaded pyliverlesionseg-0.3 wheel.")] = None,
) -> None:
    """Download the authors' wheel from PyPI, verify it, convert and cache the weights."""
    from sirtreg.segment import fetch_models

    with progress_bar("models") as progress:
        fetch_models(force=force, wheel=wheel, progress=progress)
    models_list()


@models_app.command("clear")
@refusals_as_messages
def models_clear() -> None:
    """Delete the cached weights and the downloaded wheel."""
    from sirtreg.segment import models_dir, remove_models

    remove_models()
    console.print(f"removed {models_dir()}", highlight=False)


@app.command()
@refusals_as_messages
def segment(
    image: Annotated[Path, typer.Argument(help="CT or MR image (NIfTI, NRRD, MHA, DICOM).")],
    modality: Annotated[str, typer.Option(help="ct or mr.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output label map (e.g. liver.nii.gz).")],
    target: Annotated[str, typer.Option(help="liver, or lesions (needs --liver).")] = "liver",
    liver: Annotated[Path | None, typer.Option(help="Liver mask for --target lesions (else it is segmented).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Segment the liver (or liver lesions) with the paper's U-Net; the mask is on the image's own grid."""
    from sirtreg.io import prepare_output, read_image, read_labels, write_image
    from sirtreg.segment import segment_lesions, segment_liver

    if target not in ("liver", "lesions"):
        raise SirtregError(f"--target must be liver or lesions, got {target!r}")
    if modality.lower() not in ("ct", "mr"):
        raise SirtregError(f"--modality must be ct or mr, got {modality!r}")
    _refuse_overwriting_inputs(output, [image, *([liver] if liver else [])])
    prepare_output(output, overwrite=overwrite)
    volume = read_image(image)
    with progress_bar(f"segment {target}") as progress:
        if target == "liver":
            mask = segment_liver(volume, modality=modality.lower(), device=device, progress=progress)
        else:
            liver_mask = read_labels(liver) if liver else segment_liver(
                volume, modality=modality.lower(), device=device,
                progress=lambda step, fraction: progress(f"liver: {step}", 0.5 * fraction))
            mask = segment_lesions(volume, liver=liver_mask, modality=modality.lower(), device=device,
                                   progress=lambda step, fraction: progress(step, 0.5 + 0.5 * fraction))
    write_image(mask, output, overwrite=overwrite)
    console.print(f"wrote {output}: {mask.volume_ml(1):.1f} mL of {target}", highlight=False)


@app.command("register")
@refusals_as_messages
def register_command(
    reference: Annotated[Path, typer.Option(help="Reference image: the MAA CT.")],
    floating: Annotated[Path, typer.Option(help="Floating image: a diagnostic CT or MR.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output folder (new or empty).")],
    guidance: Annotated[str, typer.Option(help="image, liver or liver+landmarks.")] = "liver",
    reference_liver: Annotated[Path | None, typer.Option(help="Liver mask of the reference.")] = None,
    floating_liver: Annotated[Path | None, typer.Option(help="Liver mask of the floating image.")] = None,
    reference_landmarks: Annotated[Path | None, typer.Option(help="Landmark map of the reference.")] = None,
    floating_landmarks: Annotated[Path | None, typer.Option(help="Landmark map of the floating image.")] = None,
    floating_lesions: Annotated[Path | None, typer.Option(help="Lesion map to carry onto the reference.")] = None,
    image_weight: Annotated[float | None, typer.Option("--wi", help="Weight wI of the image similarity.")] = None,
    label_weight: Annotated[float | None, typer.Option("--ws", help="Weight wS of the label SSD.")] = None,
    rigidity: Annotated[float | None, typer.Option(help="Spring rigidity.")] = None,
    folding_weight: Annotated[float | None, typer.Option(help="Weight of the folding penalty (0: off).")] = None,
    similarity: Annotated[str | None, typer.Option(
        help="Image similarity of the non-rigid stage: mind (MIND-SSC, robust across modalities) or mi "
             "(mutual information, the paper's).")] = None,
    landmark_channels: Annotated[str | None, typer.Option(
        help="each (one label channel per landmark) or paper (all landmarks one class, as in the paper).")] = None,
    affine_only: Annotated[bool, typer.Option(help="Stop after the affine stage (wI = wS = 0).")] = False,
    liver_segment: Annotated[str | None, typer.Option(
        help="Segment name or label value of the liver in both liver files (needed when they hold several).")] = None,
    working_region: Annotated[str | None, typer.Option(
        help="liver (the reference liver plus 20 mm; for image guidance too, where the liver sets nothing else) "
             "or whole (the whole reference image). Default: liver when --reference-liver is given.")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    overwrite: Annotated[bool, typer.Option(
        help="Replace an earlier output of sirtreg in that folder, once the new one is complete.")] = False,
) -> None:
    """Register a floating CT/MR to the reference MAA CT; write transforms, warped images and an overlay PNG."""
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace
    from importlib import import_module

    from sirtreg.io import read_image, read_labels, write_image
    from sirtreg.output_folder import OutputFolder
    from sirtreg.register import preset

    inputs = [p for p in (reference, floating, reference_liver, floating_liver, reference_landmarks,
                          floating_landmarks, floating_lesions) if p is not None]
    weights = nonrigid_weights(image_weight, label_weight, rigidity, affine_only=affine_only)
    if folding_weight is not None:
        weights["folding_weight"] = folding_weight
    settings = preset(guidance, **weights)  # type: ignore[arg-type]
    settings = replace(settings, device=device, landmark_channels=landmark_channels or settings.landmark_channels,
                       working_region=working_region or ("liver" if reference_liver is not None else "whole"),
                       nonrigid=replace(settings.nonrigid, similarity=similarity or settings.nonrigid.similarity))
    if guidance == "liver+landmarks" and None in (reference_landmarks, floating_landmarks):
        raise SirtregError("liver+landmarks guidance needs --reference-landmarks and --floating-landmarks")
    if guidance != "image" and None in (reference_liver, floating_liver):
        raise SirtregError(f"{guidance} guidance needs --reference-liver and --floating-liver")
    if settings.working_region == "liver" and reference_liver is None:
        raise SirtregError("--working-region liver needs --reference-liver (the region is that liver plus 20 mm)")
    with ThreadPoolExecutor(2) as pool:
        images = [pool.submit(read_image, path) for path in (reference, floating)]
        livers = [pool.submit(_one_structure, path, liver_segment, "liver") if path is not None else None
                  for path in (reference_liver, floating_liver)]
        landmarks = [pool.submit(read_labels, path) if path is not None else None
                     for path in (reference_landmarks, floating_landmarks)]
        lesions = pool.submit(read_labels, floating_lesions) if floating_lesions is not None else None
        # read before PyTorch's import, behind which each step of a read would wait for the GIL; then the inputs
        # checked and the reference's pyramid smoothed (SimpleITK, without the GIL) while PyTorch is imported
        reference_image, floating_image = (future.result() for future in images)
        livers = [future.result() if future is not None else None for future in livers]
        landmarks = [future.result() if future is not None else None for future in landmarks]
        sides = pool.submit(_checked_and_prepared, reference_image, floating_image, livers, landmarks, settings)
        from sirtreg.register import mapped_points, register_guided, warp, write_registration
    reference_side, floating_side = sides.result()
    # the pool inside the output folder: every file written, or every writer stopped, before the folder is settled
    with OutputFolder(output, overwrite=overwrite, inputs=inputs, command="register") as out, \
            ThreadPoolExecutor(2) as pool:
        views = pool.submit(import_module, "sirtreg.report.views")  # matplotlib, while the engine computes
        with progress_bar(f"register ({guidance})") as progress:
            result = register_guided(reference_side, floating_side, settings, progress=progress)
        written = write_registration(result, out.staging, extra={
            "reference": reference_image.describe(), "floating": floating_image.describe()})
        grid = reference_image.grid
        points = mapped_points(result.transform, grid)  # T(x) once for every warp
        files, carried = {}, {}

        def carry(name: str, item: Any) -> None:  # each file compressed (without the GIL) while the next is warped
            carried[name] = warp(item, result.transform, grid, label_mode="one-hot", points=points,
                                 fill_value=float(item.array.min()) if name == "floating" else 0.0)
            files["warped" if name == "floating" else f"warped {name}"] = pool.submit(
                write_image, carried[name], out.staging / f"warped_{name}.nii.gz")

        carry("floating", floating_image)
        if livers[1] is not None:
            carry("liver", livers[1])
        overlay = pool.submit(views.result().save_registration_views, reference_image, carried["floating"],
                              out.staging / "overlay.png", reference_labels=livers[0],
                              warped_labels=carried.get("liver"))
        for name, item in (("landmarks", landmarks[1]), ("lesions", lesions.result() if lesions else None)):
            if item is not None:
                carry(name, item)
        written["overlay"] = overlay.result()
        written.update({name: future.result() for name, future in files.items()})
        written = out.final_paths(written)
    _print_files(f"registration ({guidance}), {result.seconds:.1f} s", written)


def _checked_and_prepared(reference: Volume, floating: Volume, livers: list[LabelVolume | None],
                          landmarks: list[LabelVolume | None], settings: RegistrationSettings
                          ) -> tuple[GuidedReference, RegisterAnnotated]:
    """The two sides of the registration, once the inputs pass the engine's checks, with the reference's pyramid
    channels computed."""
    from sirtreg.register import Annotated as RegisterAnnotated
    from sirtreg.register import GuidedReference, guided_labels
    from sirtreg.register.guidance import check_inputs

    reference_side = GuidedReference(RegisterAnnotated(reference, livers[0], landmarks[0]))
    floating_side = RegisterAnnotated(floating, livers[1], landmarks[1])
    check_inputs(reference, floating, settings, *guided_labels(reference_side, floating_side, settings))
    reference_side.prepare(settings)
    return reference_side, floating_side


def nonrigid_weights(image_weight: float | None, label_weight: float | None, rigidity: float | None, *,
                     affine_only: bool) -> dict[str, float]:
    """The non-rigid weights given as --wi, --ws and --rigidity (those left out are not in the result);
    with ``affine_only`` none may be given and the result switches both terms off (wI = wS = 0)."""
    weights = {name: value for name, value in (("image_weight", image_weight), ("label_weight", label_weight),
                                               ("rigidity", rigidity)) if value is not None}
    if affine_only:
        if weights:
            raise InputError("--affine-only runs no non-rigid stage: leave out --wi, --ws and --rigidity")
        return {"image_weight": 0.0, "label_weight": 0.0}
    return weights


MAX_POINTS_FILE_BYTES = 1 << 20
"""A points file larger than this is not a list of landmarks."""


def _read_points(path: Path) -> Any:
    """Named points (LPS mm) from a JSON file, refusing what cannot be one."""
    from sirtreg.named_points import Landmarks
    from sirtreg.io import require_file

    require_file(path)
    if path.stat().st_size > MAX_POINTS_FILE_BYTES:
        raise InputError(f"{path.name} is {path.stat().st_size} bytes, too large for a points file")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise InputError(f"{path.name} is not valid JSON: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    try:
        return Landmarks.from_dict(document)
    except InputError as exc:
        raise InputError(f"{path.name}: {exc}") from None


@app.command("warp")
@refusals_as_messages
def warp_command(
    registration: Annotated[Path, typer.Argument(help="Folder written by `sirtreg register`.")],
    source: Annotated[Path, typer.Argument(help="Floating image, label map, or JSON of named points (mm).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output file (.nii.gz, ... or .json).")],
    reference: Annotated[Path | None, typer.Option(help="Reference image (grid of the output).")] = None,
    as_labels: Annotated[bool, typer.Option("--labels", help="The source is a label map (one-hot warp).")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output file.")] = False,
) -> None:
    """Apply a saved transform: images and label maps onto the reference grid; floating points to the reference."""
    from sirtreg.io import prepare_output, read_image, read_labels, write_image
    from sirtreg.output_folder import write_atomically
    from sirtreg.register import map_floating_points, read_transform, warp

    _refuse_overwriting_inputs(output, [registration, source, *([reference] if reference else [])])
    prepare_output(output, overwrite=overwrite)
    if source.suffix.lower() != ".json" and reference is None:
        raise SirtregError("warping an image needs --reference (the grid to warp onto)")
    points = _read_points(source) if source.suffix.lower() == ".json" else None
    transform = read_transform(registration)
    if points is not None:
        from sirtreg.named_points import Landmarks

        mapped = Landmarks(points.names, map_floating_points(transform, points.points_mm))
        write_atomically(output, json.dumps(mapped.to_dict(), indent=2) + "\n", overwrite=overwrite)
        console.print(f"wrote {len(mapped)} points in reference space to {output}", highlight=False)
        return
    assert reference is not None
    grid = read_image(reference).grid
    volume = read_labels(source) if as_labels else read_image(source)
    warped = warp(volume, transform, grid, **({"label_mode": "one-hot"} if as_labels else
                                              {"fill_value": float(volume.array.min())}))
    write_image(warped, output, overwrite=overwrite)
    console.print(f"wrote {output}: {warped.describe()}", highlight=False)


@app.command("train-segmenter")
@refusals_as_messages
def train_segmenter(
    manifest: Annotated[Path, typer.Argument(help="YAML list of {image, labels, modality: ct|mr, liver_label}.")],
    checkpoint_dir: Annotated[Path, typer.Option(help="Folder for checkpoints (a run there is resumed).")],
    steps: Annotated[int, typer.Option(help="Optimiser steps in total, resumed steps included.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Patches per step.")] = 2,
    learning_rate: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-4,
    from_scratch: Annotated[bool, typer.Option(help="Start from random weights, not the paper's.")] = False,
    no_resume: Annotated[bool, typer.Option(help="Ignore checkpoints already in the folder.")] = False,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cuda when available).")] = None,
) -> None:
    """Fine-tune (or train) the liver U-Net on your own CT/MR scans with liver labels (Dice loss, augmentation)."""
    from sirtreg.segment import train

    if not manifest.is_file():
        raise SirtregError(f"no such file: {manifest}")
    with progress_bar("train") as progress:
        result = train(manifest, steps=steps, checkpoint_dir=checkpoint_dir, resume=not no_resume,
                       batch_size=batch_size, learning_rate=learning_rate, pretrained=not from_scratch,
                       device=device, progress=progress)
    first, last = result.losses[0], result.losses[-1]
    console.print(f"{result.steps} steps, Dice loss {first:.3f} -> {last:.3f}; checkpoint {result.checkpoint}",
                  highlight=False)


# The cohort-study commands (`phantom-cohort`, `study ...`) live in their own module, which adds them to `app`.
import sirtreg.cli_study  # noqa: F401
import sirtreg.cli_dose  # noqa: E402, F401 - `study dose`, in its own module
