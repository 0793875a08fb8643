"""One patient's dose report: dose map, structure table, warnings, and the files written for it."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sirtreg.dosimetry.deposition import (
    DEFAULT_DENSITY_G_PER_ML,
    DEFAULT_LUNG_MASS_KG,
    DoseMap,
    Territory,
    local_deposition_dose,
)
from sirtreg.dosimetry.isotopes import (
    Isotope,
    activity_warnings,
    decay_corrected_activity_gbq,
    require_activity_gbq,
)
from sirtreg.dosimetry.plots import plot_dvh
from sirtreg.dosimetry.structures import (
    DEFAULT_DX_PERCENT,
    DEFAULT_VX_GY,
    StructureDose,
    structure_doses,
)
from sirtreg.dosimetry.uptake import MAX_OUTSIDE_FRACTION
from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume, Volume
from sirtreg.io import write_image
from sirtreg.output_folder import OutputFolder

log = logging.getLogger(__name__)

OUTPUT_NAMES = ("dose.nii.gz", "structures.csv", "structures.json", "dvh.png")


@dataclass(frozen=True, eq=False)
class DoseReport:
    """Result of :func:`dose_report`.

    Attributes
    ----------
    dose_map : the local-deposition dose map and its inputs (``dose_map.dose`` is the Gy Volume).
    structures : statistics per structure (liver, perfused volume, lesions), error rows included.
    vx_gy, dx_percent : the thresholds tabulated.
    normalised_within : name of the contour whose counts distribute the activity.
    warnings : uptake warnings and structure errors, one line each.
    lung_shunt_source : where the lung shunt fraction comes from ("given", or how it was measured).
    kernel_dose : the voxel-S-value dose map (:mod:`.kernel_dose`) beside the local-deposition one, or None;
        ``kernel_structures`` its statistics, structure by structure as ``structures``.
    """

    dose_map: DoseMap
    structures: list[StructureDose]
    vx_gy: tuple[float, ...]
    dx_percent: tuple[float, ...]
    normalised_within: str
    warnings: tuple[str, ...]
    lung_shunt_source: str = "given"
    kernel_dose: Volume | None = None
    kernel_structures: list[StructureDose] | None = None

    @property
    def dose(self) -> Volume:
        return self.dose_map.dose

    @property
    def counts_inside_fraction(self) -> float:
        """Fraction of all SPECT counts inside the normalising contour."""
        return self.dose_map.counts_inside_fraction

    def rows(self) -> list[dict[str, Any]]:
        """The structure table, one flat dict per structure (same keys in every row); with a voxel-S-value map,
        its mean, Vx and Dx too, as ``vsv_mean_gy``, ``vsv_V70_percent``, ..."""
        rows = [s.row(vx_gy=self.vx_gy, dx_percent=self.dx_percent) for s in self.structures]
        for row, kernel in zip(rows, self.kernel_structures or ()):
            kernel_row = kernel.row(vx_gy=self.vx_gy, dx_percent=self.dx_percent)
            row.update({f"vsv_{key}": kernel_row[key] for key in kernel_row
                        if key.endswith(("_gy", "_percent")) and not key.startswith("inside")})
        return rows

    def plot_dvh(self, structures: Sequence[StructureDose], path: Path, *, title_prefix: str = "") -> Path:
        """The cumulative DVHs of ``structures`` by local deposition, and by voxel S values (dashed, the same
        colours) where the report has that map too."""
        title = f"{title_prefix}{self.dose_map.isotope.name} local deposition"
        method = self.kernel_dose.meta["method"] if self.kernel_dose is not None else ""
        if method:
            title += f" (solid) and {method} (dashed)"
        return plot_dvh(structures, path, title=title, thresholds_gy=self.vx_gy,
                        dashed=self.kernel_structures or (), dashed_name=method)

    def summary(self) -> dict[str, Any]:
        """Patient-level numbers: isotope, activities (GBq), lung dose (Gy), counts inside, warnings."""
        dose_map = self.dose_map
        return {
            "isotope": dose_map.isotope.name,
            "dose_factor_gy_kg_per_gbq": dose_map.isotope.dose_factor_gy_kg_per_gbq,
            "administered_activity_gbq": dose_map.administered_activity_gbq,
            "lung_shunt_fraction": dose_map.lung_shunt_fraction,
            "lung_shunt_source": self.lung_shunt_source,
            "liver_activity_gbq": dose_map.liver_activity_gbq,
            "lung_activity_gbq": dose_map.lung_activity_gbq,
            "lung_mass_kg": dose_map.lung_mass_kg,
            "lung_dose_gy": dose_map.lung_dose_gy,
            "density_g_per_ml": dose_map.density_g_per_ml,
            "normalised_within": self.normalised_within,
            "counts_inside_fraction": self.counts_inside_fraction,
            "absorbed_energy_j": dose_map.absorbed_energy_j(),
            "dose_methods": ["local deposition"] + ([self.kernel_dose.meta["method"]] if self.kernel_dose else []),
            "warnings": list(self.warnings),
        }


def dose_report(
    spect: Volume,
    liver: LabelVolume,
    activity_gbq: float,
    *,
    isotope: str | Isotope = "y90",
    liver_label: int | str | None = None,
    perfused: LabelVolume | None = None,
    perfused_label: int | str | None = None,
    lesions: Sequence[LabelVolume] = (),
    lung_shunt_fraction: float = 0.0,
    lung_mass_kg: float = DEFAULT_LUNG_MASS_KG,
    density_g_per_ml: float = DEFAULT_DENSITY_G_PER_ML,
    calibration_time: datetime | None = None,
    injection_time: datetime | None = None,
    vx_gy: Sequence[float] = DEFAULT_VX_GY,
    dx_percent: Sequence[float] = DEFAULT_DX_PERCENT,
    bin_gy: float = 1.0,
    max_outside_fraction: float = MAX_OUTSIDE_FRACTION,
    lung_shunt_source: str = "given",
    voxel_s_values: bool = False,
    density: Volume | None = None,
) -> DoseReport:
    """Local-deposition dose of one patient and the dose statistics of the liver, perfused volume and lesions.

    Parameters
    ----------
    spect : MAA SPECT counts.
    liver : liver contour on any grid overlapping the SPECT (``liver_label``: None = all non-zero).
    activity_gbq : administered activity (GBq), at injection time, or at ``calibration_time``
        when both ``calibration_time`` and ``injection_time`` are given (then decay corrected).
    perfused : perfused-volume contour; when given, the activity is distributed within it
        instead of the whole liver.
    lesions : label maps on any grid (e.g. the CT); each named or present label is one lesion.
    lung_shunt_source : where ``lung_shunt_fraction`` comes from, for the report.
    voxel_s_values : also the dose by voxel S values (:func:`~sirtreg.dosimetry.kernel_dose.kernel_dose`).
    density : tissue density (g/mL) on the SPECT grid for the voxel-S-value dose (implies ``voxel_s_values``).
    Other parameters: see :func:`~sirtreg.dosimetry.deposition.local_deposition_dose` and
    :func:`~sirtreg.dosimetry.structures.structure_doses`.
    """
    if (calibration_time is None) != (injection_time is None):
        raise InputError("decay correction needs both the calibration time and the injection time")
    activity = require_activity_gbq(activity_gbq)
    for warning in activity_warnings(activity):
        log.warning(warning)
    if calibration_time is not None:
        activity = decay_corrected_activity_gbq(activity, isotope=isotope, calibration_time=calibration_time,
                                                injection_time=injection_time)
        log.info("activity at injection: %.4g GBq (%.4g GBq at calibration)", activity, activity_gbq)
    territory = Territory(perfused, activity, perfused_label) if perfused is not None else Territory(
        liver, activity, liver_label)
    dose_map = local_deposition_dose(
        spect,
        [territory],
        isotope=isotope,
        density_g_per_ml=density_g_per_ml,
        lung_shunt_fraction=lung_shunt_fraction,
        lung_mass_kg=lung_mass_kg,
        max_outside_fraction=max_outside_fraction,
    )
    contours = [_selected(liver, liver_label, "liver")]
    if perfused is not None:
        contours.append(_selected(perfused, perfused_label, "perfused volume"))
    structures = structure_doses(dose_map.dose, [*contours, *lesions], vx_gy=vx_gy, dx_percent=dx_percent,
                                 bin_gy=bin_gy, delivered=dose_map.delivered)
    errors = [f"{s.name}: {s.error}" for s in structures if not s.ok]
    spread, spread_structures = None, None
    if voxel_s_values or density is not None:
        from sirtreg.dosimetry.kernel_dose import kernel_dose

        spread = kernel_dose(dose_map, density=density)
        spread_structures = structure_doses(spread, [*contours, *lesions], vx_gy=vx_gy, dx_percent=dx_percent,
                                            bin_gy=bin_gy)
    return DoseReport(
        dose_map=dose_map,
        structures=structures,
        vx_gy=tuple(float(v) for v in vx_gy),
        dx_percent=tuple(float(d) for d in dx_percent),
        normalised_within=dose_map.uptake.names[0],
        warnings=(*dose_map.warnings, *errors),
        lung_shunt_source=lung_shunt_source,
        kernel_dose=spread,
        kernel_structures=spread_structures,
    )


def _selected(contour: LabelVolume, label: int | str | None, default_name: str) -> LabelVolume:
    """A binary label map of ``label`` (None: every non-zero voxel) named after it."""
    if label is None:
        names = list(contour.labels.values())
        name = names[0] if len(names) == 1 else default_name
        return LabelVolume.from_mask(contour.array != 0, contour.grid, name=name)
    value = contour.value_of(label)
    return LabelVolume.from_mask(contour.array == value, contour.grid, name=contour.labels.get(value, default_name))


def write_dose_outputs(report: DoseReport, outdir: str | os.PathLike[str], *, overwrite: bool = False,
                       inputs: Sequence[str | os.PathLike[str]] = (),
                       dicom_reference: tuple[Path, str] | None = None) -> dict[str, Path]:
    """Write ``dose.nii.gz`` (Gy), ``structures.csv``, ``structures.json`` and ``dvh.png`` into ``outdir``
    (with a voxel-S-value map, ``dose_vsv.nii.gz`` too, and its DVHs dashed in ``dvh.png``), as a unit (:class:`~sirtreg.output_folder.OutputFolder`); with ``dicom_reference`` (the folder of the DICOM
    SPECT and its SeriesInstanceUID) ``rt_dose.dcm`` too, in the SPECT's frame of reference and study.

    Refuses (:class:`~sirtreg.errors.OutputExistsError`) before writing anything a non-empty ``outdir``
    unless ``overwrite`` (then only an earlier sirtreg output, replaced once the new one is complete), and
    an ``outdir`` that holds one of the ``inputs``. Returns the final paths by file name.
    """
    with OutputFolder(outdir, overwrite=overwrite, inputs=inputs, command="dose") as out:
        paths = {name: out.staging / name for name in OUTPUT_NAMES}
        write_image(report.dose, paths["dose.nii.gz"])
        rows = report.rows()
        with open(paths["structures.csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)
        document = {
            "summary": report.summary(),
            "structures": rows,
            "dvh": [
                {"structure": s.name, "dose_gy": s.dvh.dose_gy.tolist(),
                 "cumulative_percent": s.dvh.cumulative_percent.tolist()}
                for s in report.structures if s.dvh is not None
            ],
        }
        paths["structures.json"].write_text(json.dumps(document, indent=2), encoding="utf-8")
        if report.kernel_dose is not None:
            paths["dose_vsv.nii.gz"] = out.staging / "dose_vsv.nii.gz"
            write_image(report.kernel_dose, paths["dose_vsv.nii.gz"])
        report.plot_dvh(report.structures, paths["dvh.png"])
        if dicom_reference is not None:
            from sirtreg.io import write_rt_dose  # pydicom, only when DICOM is written

            folder, series = dicom_reference
            paths["rt_dose.dcm"] = write_rt_dose(report.dose, out.staging / "rt_dose.dcm", reference=folder,
                                                 series=series,
                                                 series_description="sirtreg MAA dose (local deposition)")
        paths = out.final_paths(paths)
    log.info("wrote dose outputs to %s", out.path)
    return paths
