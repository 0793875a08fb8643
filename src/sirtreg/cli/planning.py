"""`sirtreg plan`: the activity to administer, planned from the MAA SPECT and its contours (see
:mod:`sirtreg.dosimetry.prescription`)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from sirtreg.cli.app import OutputFolder, app, console, log, refusals_as_messages
from sirtreg.cli.structures import ContourImage, one_structure, read_structures, segment_names
from sirtreg.errors import InputError

if TYPE_CHECKING:
    from sirtreg.dosimetry.lung_shunt import LungShunt
    from sirtreg.geometry import LabelVolume


@app.command("plan")
@refusals_as_messages
def plan_command(
    spect: Annotated[Path, typer.Option(help="The 99mTc-MAA SPECT (counts): NIfTI, NRRD, MHA or DICOM.")],
    liver: Annotated[Path, typer.Option(help="Whole-liver contour (tumours included): label map, Slicer "
                                              ".seg.nrrd, DICOM SEG or RTSTRUCT.")],
    output: OutputFolder,
    method: Annotated[str, typer.Option(help="mird (single compartment), partition (MIRD partition model) or bsa "
                                             "(body surface area, resin Y-90).")] = "partition",
    dose_gy: Annotated[float | None, typer.Option("--dose-gy", help="Target mean dose (Gy): of the territory for "
                                                                     "mird, of the --target for partition.")] = None,
    target: Annotated[str, typer.Option(help="The partition model's target: tumour or normal.")] = "tumour",
    isotope: Annotated[str, typer.Option(help="y90 or ho166.")] = "y90",
    microspheres: Annotated[str, typer.Option(help="glass or resin (Y-90).")] = "glass",
    liver_segment: Annotated[str | None, typer.Option(help="Segment name or label value of the liver in its "
                                                           "file (needed when it holds several).")] = None,
    tumours: Annotated[list[Path] | None, typer.Option("--tumours", help="Tumour contours (repeatable).")] = None,
    tumour_segments: Annotated[str | None, typer.Option(help="Comma-separated tumour segment names or label "
                                                             "values.")] = None,
    perfused: Annotated[list[Path] | None, typer.Option(help="Perfused-volume contour: a treated territory with "
                                                             "its own injection (repeatable; default: the whole "
                                                             "liver, one injection).")] = None,
    perfused_segment: Annotated[str | None, typer.Option(help="Comma-separated segment names or values of the "
                                                              "perfused volumes (one territory each).")] = None,
    contour_image: ContourImage = None,
    lung_shunt_fraction: Annotated[float | None, typer.Option(help="Lung shunt fraction in [0, 1), if not "
                                                                   "measured on the images below.")] = None,
    lung: Annotated[Path | None, typer.Option(help="Lung contour (any grid): the lung shunt fraction is measured "
                                                   "on the SPECT/CT.")] = None,
    lung_segment: Annotated[str | None, typer.Option(help="Comma-separated segment names or values of the lungs in "
                                                          "their file (their union is the lung).")] = None,
    ct: Annotated[Path | None, typer.Option(help="The MAA CT (HU): without --lung, the lungs are found in it "
                                                 "(air inside the body above the liver).")] = None,
    planar_anterior: Annotated[Path | None, typer.Option(help="Anterior planar MAA view (one 2D image: NIfTI, "
                                                              "NRRD, MHA, or a DICOM NM planar file, which may hold "
                                                              "both views): the lung shunt by geometric mean.")] = None,
    planar_posterior: Annotated[Path | None, typer.Option(help="Posterior planar MAA view (the same DICOM file "
                                                               "when it holds both).")] = None,
    planar_anterior_regions: Annotated[Path | None, typer.Option(help="Lung and liver regions on the anterior "
                                                                      "view (a label map of the view).")] = None,
    planar_posterior_regions: Annotated[Path | None, typer.Option(help="Lung and liver regions on the posterior "
                                                                       "view.")] = None,
    planar_labels: Annotated[str, typer.Option(help="Label values of the lung and the liver in the planar "
                                                    "regions, comma-separated.")] = "1,2",
    lung_mass_kg: Annotated[float, typer.Option(help="Lung mass (kg).")] = 1.0,
    previous_lung_dose_gy: Annotated[float, typer.Option(help="Lung dose of earlier treatments (Gy), for the "
                                                              "50 Gy cumulative limit.")] = 0.0,
    normal_liver_limit_gy: Annotated[float | None, typer.Option(help="Largest mean normal-liver dose allowed "
                                                                     "(Gy).")] = None,
    within_limits: Annotated[bool, typer.Option(help="Plan the largest activity within the limits instead of "
                                                     "refusing a plan that breaks one.")] = False,
    height_cm: Annotated[float | None, typer.Option(help="Patient height (cm), for bsa.")] = None,
    weight_kg: Annotated[float | None, typer.Option(help="Patient weight (kg), for bsa.")] = None,
    density_g_per_ml: Annotated[float, typer.Option(help="Tissue density (g/mL).")] = 1.05,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier plan of sirtreg in that folder.")] = False,
) -> None:
    """Plan the activity to administer from the MAA SPECT: MIRD single compartment, partition model or BSA, within
    the lung limits (30 Gy per treatment, 50 Gy cumulative); writes a table, a JSON file and an HTML page that
    state every input and formula."""
    import numpy as np

    from sirtreg.dosimetry.compartments import measure_compartments
    from sirtreg.dosimetry.lung_shunt import lungs_from_ct, spect_lung_shunt
    from sirtreg.dosimetry.prescription import Limits, prescribe_territories
    from sirtreg.geometry import LabelVolume
    from sirtreg.io import read_image
    from sirtreg.output_folder import OutputFolder as Folder
    from sirtreg.report.activity_plan import write_activity_plan

    planar = (planar_anterior, planar_posterior, planar_anterior_regions, planar_posterior_regions)
    ways = [way for way, given in (("--lung", lung), ("--ct", ct), ("planar views", any(planar))) if given]
    if lung_shunt_fraction is not None and ways:
        raise InputError(f"give --lung-shunt-fraction or the images to measure it on ({ways[0]}), not both")
    if len(ways) > 1:
        raise InputError(f"measure the lung shunt fraction one way: {' or '.join(ways)}, not both")
    if any(planar) and not all(planar):
        raise InputError("planar views need --planar-anterior, --planar-posterior and the regions of each "
                         "(--planar-anterior-regions, --planar-posterior-regions)")
    if perfused_segment and not perfused:
        raise InputError("--perfused-segment names segments of --perfused: give the perfused-volume file too")
    inputs = [path for path in (spect, liver, *(tumours or []), *(perfused or []), lung, ct, contour_image, *planar)
              if path is not None]
    Folder(output, overwrite=overwrite, inputs=inputs, command="plan").check()
    limits = Limits(previous_lung_gy=previous_lung_dose_gy, normal_liver_gy=normal_liver_limit_gy)
    spect_volume = read_image(spect, modality="NM")
    image = read_image(contour_image) if contour_image is not None else None
    liver_labels = one_structure(liver, liver_segment, "liver", image)
    tumour_labels = [item for path in tumours or []
                     for item in read_structures(path, segment_names(tumour_segments), image)]
    segments = segment_names(perfused_segment)
    territories = [(_territory_name(label, path, segments[index] if segments else None), label)
                   for path in perfused or [] for index, label in enumerate(read_structures(path, segments, image))]
    names = [name for name, _ in territories]
    if len(set(names)) < len(names):
        raise InputError(f"two territories are both named {next(n for n in names if names.count(n) > 1)!r}: "
                         "give each its own segment name or file")
    for (first, one), (second, other) in itertools.combinations(territories, 2):
        if one.grid.same_as(other.grid) and np.any((one.array > 0) & (other.array > 0)):
            raise InputError(f"the territories {first!r} and {second!r} overlap: each voxel is fed by one "
                             "injection")
    shunt = None
    if lung is not None:
        lungs = read_structures(lung, segment_names(lung_segment), image)  # one file: one grid
        union = LabelVolume.from_mask(np.any([part.array > 0 for part in lungs], axis=0), lungs[0].grid,
                                      name="lungs")
        shunt = spect_lung_shunt(spect_volume, union, liver_labels)
    elif ct is not None:
        shunt = spect_lung_shunt(spect_volume, lungs_from_ct(read_image(ct, modality="CT"), liver_labels),
                                 liver_labels)
    elif all(planar):
        shunt = _planar_shunt(*planar, labels=planar_labels)
    if shunt is None and lung_shunt_fraction is None:
        log.warning("no lung shunt fraction given or measured: 0 assumed (give --lung-shunt-fraction, --lung or --ct)")
    source = shunt.describe() if shunt is not None else ("given" if lung_shunt_fraction is not None else
                                                           "none given or measured: 0 assumed")
    measured = [measure_compartments(spect_volume, liver_labels, tumours=tumour_labels, perfused=label,
                                     density_g_per_ml=density_g_per_ml, territory_name=name)
                for name, label in territories or [(None, None)]]
    prescriptions = prescribe_territories(
        method, measured, dose_gy=dose_gy, target=target,
        lung_shunt_fraction=shunt.fraction if shunt else lung_shunt_fraction or 0.0, lung_mass_kg=lung_mass_kg,
        isotope=isotope, microspheres=microspheres, height_cm=height_cm, weight_kg=weight_kg, limits=limits,
        within_limits=within_limits, lung_shunt_source=source)
    facts = [f"SPECT {spect.name}; liver {liver.name}" + (f" ({liver_segment})" if liver_segment else ""),
             f"tumours: {', '.join(name for label in tumour_labels for name in label.labels.values()) or 'none'}",
             "territories: " + (", ".join(name for name, _ in territories) or "the whole liver, one injection")]
    files = write_activity_plan(prescriptions, measured, output, facts=facts, overwrite=overwrite, inputs=inputs)
    table = Table("", *(compartments.territory for compartments in measured), title=f"activity plan ({method})")
    table.add_row("activity", *(f"{plan.activity_gbq:.2f} GBq" for plan in prescriptions))
    if any(plan.binding != "prescription" for plan in prescriptions):
        table.add_row("set by", *(f"{plan.binding} (the method asks for {plan.prescribed_activity_gbq:.2f} GBq)"
                                  for plan in prescriptions))
    table.add_row("tumour-to-normal ratio", *(f"{c.tumour_to_normal_ratio:.2f}" if c.tumour_to_normal_ratio
                                              is not None else "-" for c in measured))
    for name in prescriptions[0].doses_gy:
        table.add_row(f"{name} mean dose", *(f"{plan.doses_gy[name]:.1f} Gy" for plan in prescriptions))
    console.print(table)
    console.print(f"lung shunt fraction {100 * prescriptions[0].inputs['lung_shunt_fraction']:.2f} % ({source}); "
                  f"total activity {sum(plan.activity_gbq for plan in prescriptions):.2f} GBq", highlight=False)
    console.print(f"wrote {files['activity_plan.html']}", highlight=False, soft_wrap=True)


def _territory_name(label: LabelVolume, path: Path, segment: str | None) -> str:
    """A territory's name: its segment's, or the file's and the label value given (a plain label map names its
    labels "label N")."""
    name = " + ".join(label.labels.values())
    if name and not name.startswith(("label ", "mask")):
        return name
    return path.name.split(".")[0] + (f" {segment}" if segment else "")


def _planar_shunt(anterior: Path, posterior: Path, anterior_regions: Path, posterior_regions: Path, *,
                  labels: str) -> LungShunt:
    """The lung shunt fraction of planar views, the lung and liver regions picked by their label values."""
    from sirtreg.dosimetry.lung_shunt import planar_lung_shunt
    from sirtreg.geometry import LabelVolume
    from sirtreg.io import read_planar_regions, read_planar_view

    values = segment_names(labels)
    if len(values) != 2 or not all(value.isdigit() for value in values):
        raise InputError(f"--planar-labels takes the label values of the lung and the liver, e.g. 1,2; got {labels!r}")
    regions = []
    for path in (anterior_regions, posterior_regions):
        label_map = read_planar_regions(path)
        for value in values:
            if int(value) not in label_map.present_labels():
                raise InputError(f"{path.name} holds no region of label {value}")
        regions.append([LabelVolume.from_mask(label_map.array == int(value), label_map.grid) for value in values])
    views = [read_planar_view(path, view=view) for path, view in ((anterior, "anterior"), (posterior, "posterior"))]
    return planar_lung_shunt(*views, lung_anterior=regions[0][0],
                             liver_anterior=regions[0][1], lung_posterior=regions[1][0],
                             liver_posterior=regions[1][1])
