"""Commands on single images and on the networks: `sirtreg info`, `convert`, `phantom`, `segment`,
`train-segmenter` and `models`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sirtreg.cli.app import app, console, log, progress_bar, refusals_as_messages
from sirtreg.errors import SirtregError
from sirtreg.output_folder import refuse_overwriting_inputs


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

    refuse_overwriting_inputs(output, [source])
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
    refuse_overwriting_inputs(output, [image, *([liver] if liver else [])])
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
