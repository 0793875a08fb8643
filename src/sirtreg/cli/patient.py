"""Commands on one patient: `sirtreg demo`, `run`, `dose`, `review` and `review-summary`.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from sirtreg.cli.app import (
    DeviceOption,
    OutputFolder,
    app,
    console,
    print_files,
    progress_bar,
    refusals_as_messages,
)
from sirtreg.cli.structures import ContourImage, one_structure, read_structures, segment_names
from sirtreg.errors import InputError
from sirtreg.output_folder import refuse_overwriting_inputs


@app.command()
@refusals_as_messages
def demo(
    outdir: Annotated[Path, typer.Argument(help="Output folder (new or empty).")] = Path("sirtreg-demo"),
    seed: Annotated[int, typer.Option(help="Seed of the digital patient.")] = 0,
    resolution: Annotated[str, typer.Option(
        help="full: realistic grids; fast: twice the voxel size, for a quick look.")] = "full",
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty folder.")] = False,
    device: DeviceOption = "cpu",
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
    print_files(f"sirtreg demo (seed {seed})", summary)
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


@app.command("run")
@refusals_as_messages
def run_command(
    plan: Annotated[Path, typer.Argument(help="The patient's plan (YAML): MAA CT, SPECT and floating images.")],
    output: OutputFolder,
    overwrite: Annotated[bool, typer.Option(
        help="Replace a non-empty output folder, once the run is complete.")] = False,
    device: DeviceOption = "cpu",
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
    output: OutputFolder,
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

    refuse_overwriting_inputs(output, runs)
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
    print_files("review summary", written)


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


@app.command()
@refusals_as_messages
def dose(
    spect: Annotated[Path, typer.Option(help="The 99mTc-MAA SPECT (counts): NIfTI, NRRD, MHA or DICOM.")],
    liver: Annotated[Path, typer.Option(help="Liver contour: label map, Slicer .seg.nrrd, DICOM SEG or RTSTRUCT "
                                              "(any grid).")],
    activity_gbq: Annotated[float, typer.Option("--activity-gbq", help="Administered activity in GBq.")],
    output: OutputFolder,
    isotope: Annotated[str, typer.Option(help="y90 or ho166.")] = "y90",
    liver_segment: Annotated[str | None, typer.Option(
        help="Segment name or label value of the liver in its file (needed when it holds several).")] = None,
    lesions: Annotated[list[Path] | None, typer.Option(help="Lesion contours, as the liver's (repeatable).")] = None,
    lesion_segments: Annotated[str | None, typer.Option(
        help="Comma-separated lesion segment names or label values.")] = None,
    perfused: Annotated[Path | None, typer.Option(help="Perfused-volume contour: spread the activity in it.")] = None,
    perfused_segment: Annotated[str | None, typer.Option(help="Segment name/value of the perfused volume.")] = None,
    lung_shunt_fraction: Annotated[float | None, typer.Option(help="Lung shunt fraction in [0, 1) (default: 0, "
                                                                   "said so).")] = None,
    lung_mass_kg: Annotated[float, typer.Option(help="Lung mass for the lung dose (kg).")] = 1.0,
    density_g_per_ml: Annotated[float, typer.Option(help="Tissue density (g/mL).")] = 1.05,
    calibration_time: Annotated[datetime | None, typer.Option(
        help="When the activity was measured (ISO 8601); with --injection-time it is decay corrected.")] = None,
    injection_time: Annotated[datetime | None, typer.Option(help="When it was injected (ISO 8601).")] = None,
    contour_image: ContourImage = None,
    voxel_s_values: Annotated[bool, typer.Option(
        "--voxel-s-values", help="Also the dose by voxel S values (the nuclide's electron kernel spread over the "
                                 "neighbouring voxels), beside local deposition.")] = False,
    density_ct: Annotated[Path | None, typer.Option(
        help="The SPECT's own CT (same frame of reference): voxel S values with each voxel's mass from its "
             "density (implies --voxel-s-values).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Write into a non-empty folder.")] = False,
) -> None:
    """Absorbed dose by local deposition: dose map, per-structure table (mean, V70, V100, Dx) and DVHs; an RT
    Dose file too when the SPECT is DICOM. With --voxel-s-values or --density-ct, the voxel-S-value dose
    beside it."""
    from sirtreg.dosimetry import dose_report, write_dose_outputs
    from sirtreg.io import read_image
    from sirtreg.output_folder import OutputFolder

    inputs = [path for path in (spect, liver, *(lesions or []), perfused, contour_image, density_ct)
              if path is not None]
    OutputFolder(output, overwrite=overwrite, inputs=inputs, command="dose").check()
    spect_volume = read_image(spect, modality="NM")
    image = read_image(contour_image) if contour_image is not None else None
    liver_labels = one_structure(liver, liver_segment, "liver", image)
    lesion_labels = [item for path in lesions or []
                     for item in read_structures(path, segment_names(lesion_segments), image)]
    perfused_labels = one_structure(perfused, perfused_segment, "perfused", image) if perfused else None
    density = None
    if density_ct is not None:
        from sirtreg.dosimetry.kernel_dose import density_from_ct

        density = density_from_ct(read_image(density_ct, modality="CT"), spect_volume.grid,
                                  outside_g_per_ml=density_g_per_ml)
    report = dose_report(
        spect_volume, liver_labels, activity_gbq, isotope=isotope, lesions=lesion_labels, perfused=perfused_labels,
        lung_shunt_fraction=lung_shunt_fraction or 0.0, lung_mass_kg=lung_mass_kg, density_g_per_ml=density_g_per_ml,
        lung_shunt_source="given" if lung_shunt_fraction is not None else "not given: 0 assumed",
        calibration_time=calibration_time, injection_time=injection_time, voxel_s_values=voxel_s_values,
        density=density,
    )
    series = str(spect_volume.meta.get("SeriesInstanceUID", ""))
    dicom = ((spect if spect.is_dir() else spect.parent), series) if series else None
    outputs = write_dose_outputs(report, output, overwrite=overwrite, inputs=inputs, dicom_reference=dicom)
    kernel = report.kernel_dose is not None
    table = Table("structure", "volume (mL)", "mean (Gy)", "mean inside (Gy)", "inside (%)", "V70 (%)", "V100 (%)",
                  *(["VSV mean (Gy)", "VSV V70 (%)", "VSV V100 (%)"] if kernel else []), "note", title="absorbed dose")
    kernel_keys = ("vsv_mean_gy", "vsv_V70_percent", "vsv_V100_percent") if kernel else ()
    for row in report.rows():
        inside = row.get("counts_inside_fraction")
        table.add_row(*(_cell(row.get(key)) for key in ("structure", "volume_ml", "mean_gy", "inside_mean_gy")),
                      _cell(None if inside is None else 100 * inside),
                      *(_cell(row.get(key)) for key in ("V70_percent", "V100_percent", *kernel_keys, "error")))
    console.print(table)
    summary = report.summary()
    console.print(f"counts inside the {summary['normalised_within']}: {100 * summary['counts_inside_fraction']:.1f} %; "
                  f"lung dose {summary['lung_dose_gy']:.1f} Gy. mean and Vx follow the dose map (counts outside the "
                  f"{summary['normalised_within']} at its calibration); mean inside counts only the activity delivered "
                  f"inside it, and inside is the share of a structure's counts there.", highlight=False)
    console.print(f"wrote {', '.join(str(path) for path in outputs.values())}", highlight=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)
