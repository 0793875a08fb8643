"""`sirtreg verify`: the dose a Y-90 PET (or a post-treatment SPECT calibrated by the administered activity)
shows delivered against the dose the MAA SPECT predicted (see :mod:`sirtreg.dosimetry.verification`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sirtreg.cli.app import DeviceOption, OutputFolder, app, console, progress_bar, refusals_as_messages
from sirtreg.cli.structures import ContourImage, one_structure, read_structures, segment_names
from sirtreg.errors import InputError

#: the share of the liver a post-treatment SPECT must cover to be calibrated by the administered activity
MIN_POST_SPECT_LIVER_COVERAGE = 0.99


@app.command("verify")
@refusals_as_messages
def verify_command(
    spect: Annotated[Path, typer.Option(help="The 99mTc-MAA SPECT (counts): the predicted dose.")],
    liver: Annotated[Path, typer.Option(help="Liver contour on the MAA CT (label map, .seg.nrrd, DICOM SEG or "
                                              "RTSTRUCT).")],
    activity_gbq: Annotated[float, typer.Option("--activity-gbq", help="Administered activity in GBq.")],
    output: OutputFolder,
    pet: Annotated[Path | None, typer.Option(help="The post-treatment Y-90 PET, activity concentration in "
                                                  "Bq/mL.")] = None,
    post_spect: Annotated[Path | None, typer.Option(
        help="Or a post-treatment SPECT (Y-90 bremsstrahlung, Ho-166), counts: its counts in the liver carry the "
             "administered activity after the lung shunt, as the MAA's do.")] = None,
    maa_ct: Annotated[Path | None, typer.Option(help="The MAA CT: the PET's CT is registered to it.")] = None,
    pet_ct: Annotated[Path | None, typer.Option(help="The CT of the Y-90 PET (its frame of reference).")] = None,
    lesions: Annotated[list[Path] | None, typer.Option(help="Lesion contours on the MAA CT (repeatable).")] = None,
    lesion_segments: Annotated[str | None, typer.Option(help="Comma-separated lesion segment names or label "
                                                             "values.")] = None,
    liver_segment: Annotated[str | None, typer.Option(help="Segment name or label value of the liver.")] = None,
    contour_image: ContourImage = None,
    isotope: Annotated[str, typer.Option(help="y90 or ho166 (for Ho-166, give its post-treatment SPECT with "
                                               "--post-spect).")] = "y90",
    lung_shunt_fraction: Annotated[float | None, typer.Option(help="Lung shunt fraction of the prediction "
                                                                   "(default: 0, said so).")] = None,
    scan_time: Annotated[datetime | None, typer.Option(help="When the PET was acquired (ISO 8601), to decay "
                                                            "correct it to the injection (default: a DICOM PET's "
                                                            "header).")] = None,
    injection_time: Annotated[datetime | None, typer.Option(help="When the Y-90 was injected (ISO 8601).")] = None,
    affine_only: Annotated[bool, typer.Option(help="Register with the affine stage only (faster).")] = False,
    device: DeviceOption = "cpu",
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier output of sirtreg in that folder.")] = False,
) -> None:
    """Predicted (MAA) against delivered (Y-90 PET or post-treatment SPECT) dose per structure: mean, V70, V100,
    DVHs and a Bland-Altman plot over the lesions; the post-treatment image's CT is registered to the MAA CT (image
    guidance) and the image carried over."""
    import numpy as np

    from sirtreg.dosimetry import Territory, dose_report, local_deposition_dose, structure_doses
    from sirtreg.dosimetry.verification import bland_altman, compared_rows, covered_only, pet_dose
    from sirtreg.geometry import LabelVolume
    from sirtreg.io import read_image
    from sirtreg.output_folder import OutputFolder as Folder
    from sirtreg.report.verification import write_verification

    if (pet is None) == (post_spect is None):
        raise InputError("give one post-treatment image: --pet (a Y-90 PET in Bq/mL) or --post-spect (a SPECT, "
                         "calibrated by the administered activity)")
    if post_spect is not None and (scan_time is not None or injection_time is not None):
        raise InputError("--scan-time and --injection-time decay correct a PET; a post-treatment SPECT is "
                         "calibrated by the administered activity and needs neither")
    if (maa_ct is None) != (pet_ct is None):
        raise InputError("give both --maa-ct and --pet-ct (the post-treatment image's CT is registered to the MAA "
                         "CT), or neither (the image is then taken as lying on the MAA CT as it is)")
    inputs = [path for path in (spect, liver, pet, post_spect, maa_ct, pet_ct, contour_image, *(lesions or []))
              if path]
    Folder(output, overwrite=overwrite, inputs=inputs, command="verify").check()
    spect_volume = read_image(spect, modality="NM")
    image = read_image(contour_image) if contour_image is not None else None
    liver_labels = one_structure(liver, liver_segment, "liver", image)
    structures = [LabelVolume.from_mask(liver_labels.array > 0, liver_labels.grid, name="liver"),
                  *(item for path in lesions or [] for item in read_structures(path, segment_names(lesion_segments),
                                                                                image))]
    if pet is not None:
        post_volume = read_image(pet, modality="PT")
        delivered_source = pet_dose(post_volume, isotope=isotope, scan_time=scan_time, injection_time=injection_time)
        source = f"PET: {delivered_source.meta['decay']}"
    else:
        post_volume = read_image(post_spect, modality="NM")
        delivered_source = post_volume.with_array(np.clip(post_volume.array.astype(np.float32), 0.0, None))
        source = ("post-treatment SPECT: its counts in the liver carry the administered activity after the lung "
                  "shunt, deposited locally")
    field_of_view = post_volume.with_array(np.ones(post_volume.shape, np.float32))
    shunt_given = lung_shunt_fraction is not None
    predicted = dose_report(spect_volume, structures[0], activity_gbq, isotope=isotope, lesions=structures[1:],
                            lung_shunt_fraction=lung_shunt_fraction or 0.0,
                            lung_shunt_source="given" if shunt_given else "not given: 0 assumed")
    facts = [source,
             f"predicted: {predicted.dose_map.isotope.name}, {activity_gbq:g} GBq, lung shunt "
             f"{100 * (lung_shunt_fraction or 0.0):.1f} %{'' if shunt_given else ' (not given: 0 assumed)'}, "
             "distributed by the MAA SPECT counts in the liver"]
    if maa_ct is not None and pet_ct is not None:
        from sirtreg.register import Annotated as Side
        from sirtreg.register import preset, register_guided, warp

        settings = replace(preset("image", **({"image_weight": 0.0, "label_weight": 0.0} if affine_only else {})),
                           device=device, working_region="whole")
        with progress_bar("register the post-treatment CT to the MAA CT") as progress:
            result = register_guided(Side(read_image(maa_ct)), Side(read_image(pet_ct)), settings,
                                     progress=progress)
        delivered_dose = warp(delivered_source, result.transform, structures[0].grid)
        covered = warp(field_of_view, result.transform, structures[0].grid)
        facts.append(f"delivered: the post-treatment image's CT registered to the MAA CT ("
                     f"{'affine' if affine_only else 'image'} guidance, {result.seconds:.0f} s); the image carried "
                     "onto the liver contour's grid")
    else:
        from sirtreg.resample import resample

        delivered_dose = resample(delivered_source, structures[0].grid)
        covered = resample(field_of_view, structures[0].grid)
        facts.append("delivered: the post-treatment image taken as lying on the MAA CT as it is (no "
                     "registration), resampled onto the liver contour's grid")
    if post_spect is not None:
        liver_covered = float(covered.array[structures[0].array > 0].mean())
        if liver_covered < MIN_POST_SPECT_LIVER_COVERAGE:
            raise InputError(f"the post-treatment SPECT covers {100 * liver_covered:.0f} % of the liver: the "
                             "administered activity cannot calibrate its counts (the whole liver must lie in it)")
        dose_map = local_deposition_dose(delivered_dose, [Territory(structures[0], activity_gbq)], isotope=isotope,
                                         lung_shunt_fraction=lung_shunt_fraction or 0.0)
        delivered_dose = dose_map.dose
        facts.extend(f"post-treatment SPECT: {warning}" for warning in dose_map.warnings)
    before = predicted.structures  # the liver and the lesions, in the order of ``structures``
    after = covered_only(structure_doses(delivered_dose, structures), structure_doses(covered, structures))
    rows = compared_rows(before, after)
    statistics = bland_altman([row["predicted_mean_gy"] for row in rows[1:]],
                              [row["delivered_mean_gy"] for row in rows[1:]])
    files = write_verification(rows, before, after, statistics,
                               {"predicted_dose": predicted.dose, "delivered_dose": delivered_dose}, output,
                               facts=facts, overwrite=overwrite, inputs=inputs)
    table = Table("structure", "predicted (Gy)", "delivered (Gy)", "difference (Gy)", title="mean dose")
    for row in rows:
        table.add_row(row["structure"], *(f"{row[key]:.1f}" if row[key] is not None else "-"
                                          for key in ("predicted_mean_gy", "delivered_mean_gy",
                                                      "difference_mean_gy")))
    console.print(table)
    console.print(f"wrote {files['verification.html']}", highlight=False, soft_wrap=True)
