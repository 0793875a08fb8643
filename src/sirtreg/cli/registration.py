"""`sirtreg register` and `sirtreg warp`: one pair registered through :func:`sirtreg.register.register_guided`,
and a registration's transform applied to images, label maps or points.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sirtreg.errors import InputError, SirtregError
from sirtreg.output_folder import refuse_overwriting_inputs

if TYPE_CHECKING:
    from sirtreg.geometry import LabelVolume, Volume
    from sirtreg.register import Annotated as RegisterAnnotated
    from sirtreg.register import GuidedReference, RegistrationSettings

from sirtreg.cli.app import (
    DeviceOption,
    GuidanceOption,
    OutputFolder,
    WeightOptions,
    app,
    console,
    print_files,
    progress_bar,
    refusals_as_messages,
    weight_options,
)
from sirtreg.cli.structures import one_structure


@app.command("register")
@refusals_as_messages
@weight_options
def register_command(
    reference: Annotated[Path, typer.Option(help="Reference image: the MAA CT.")],
    floating: Annotated[Path, typer.Option(help="Floating image: a diagnostic CT or MR.")],
    output: OutputFolder,
    guidance: GuidanceOption = "liver",
    reference_liver: Annotated[Path | None, typer.Option(help="Liver mask of the reference.")] = None,
    floating_liver: Annotated[Path | None, typer.Option(help="Liver mask of the floating image.")] = None,
    reference_landmarks: Annotated[Path | None, typer.Option(help="Landmark map of the reference.")] = None,
    floating_landmarks: Annotated[Path | None, typer.Option(help="Landmark map of the floating image.")] = None,
    floating_lesions: Annotated[Path | None, typer.Option(help="Lesion map to carry onto the reference.")] = None,
    folding_weight: Annotated[float | None, typer.Option(help="Weight of the folding penalty (0: off).")] = None,
    similarity: Annotated[str | None, typer.Option(
        help="Image similarity of the non-rigid stage: mind (MIND-SSC, robust across modalities) or mi "
             "(mutual information, the paper's).")] = None,
    landmark_channels: Annotated[str | None, typer.Option(
        help="each (one label channel per landmark) or paper (all landmarks one class, as in the paper).")] = None,
    liver_segment: Annotated[str | None, typer.Option(
        help="Segment name or label value of the liver in both liver files (needed when they hold several).")] = None,
    working_region: Annotated[str | None, typer.Option(
        help="liver (the reference liver plus 20 mm; for image guidance too, where the liver sets nothing else) "
             "or whole (the whole reference image). Default: liver when --reference-liver is given.")] = None,
    device: DeviceOption = "cpu",
    overwrite: Annotated[bool, typer.Option(
        help="Replace an earlier output of sirtreg in that folder, once the new one is complete.")] = False,
    *,
    weights: WeightOptions,
) -> None:
    """Register a floating CT/MR to the reference MAA CT; write transforms, warped images and an overlay PNG."""
    from dataclasses import replace
    from importlib import import_module

    from sirtreg.io import read_image, read_labels, write_image
    from sirtreg.output_folder import OutputFolder
    from sirtreg.parallel import worker_pool
    from sirtreg.register import preset

    inputs = [p for p in (reference, floating, reference_liver, floating_liver, reference_landmarks,
                          floating_landmarks, floating_lesions) if p is not None]
    nonrigid = weights.nonrigid()
    if folding_weight is not None:
        nonrigid["folding_weight"] = folding_weight
    settings = preset(guidance, **nonrigid)  # type: ignore[arg-type]
    settings = replace(settings, device=device, landmark_channels=landmark_channels or settings.landmark_channels,
                       working_region=working_region or ("liver" if reference_liver is not None else "whole"),
                       nonrigid=replace(settings.nonrigid, similarity=similarity or settings.nonrigid.similarity))
    if guidance == "liver+landmarks" and None in (reference_landmarks, floating_landmarks):
        raise SirtregError("liver+landmarks guidance needs --reference-landmarks and --floating-landmarks")
    if guidance != "image" and None in (reference_liver, floating_liver):
        raise SirtregError(f"{guidance} guidance needs --reference-liver and --floating-liver")
    if settings.working_region == "liver" and reference_liver is None:
        raise SirtregError("--working-region liver needs --reference-liver (the region is that liver plus 20 mm)")
    with worker_pool(2) as pool:
        images = [pool.submit(read_image, path) for path in (reference, floating)]
        livers = [pool.submit(one_structure, path, liver_segment, "liver") if path is not None else None
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
            worker_pool(2) as pool:
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
    print_files(f"registration ({guidance}), {result.seconds:.1f} s", written)


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


MAX_POINTS_FILE_BYTES = 1 << 20


"""A points file larger than this is not a list of landmarks."""


def _read_points(path: Path) -> Any:
    """Named points (LPS mm) from a JSON file, refusing what cannot be one."""
    from sirtreg.io import require_file
    from sirtreg.named_points import Landmarks

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

    refuse_overwriting_inputs(output, [registration, source, *([reference] if reference else [])])
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
