"""Dosimetry for SIRT: uptake from the MAA SPECT, local-deposition and voxel-S-value dose, dose-volume
statistics, the MIRD partition model, activity planning and cohort comparison statistics.

Modules: :mod:`.isotopes` (dose factors, decay), :mod:`.occupancy` (contours on the
SPECT grid as voxel fractions), :mod:`.uptake` (counts inside contours), :mod:`.deposition` (dose map),
:mod:`.kernel_dose` (dose by voxel S values, from :mod:`.voxel_kernel`, :mod:`.point_kernel`,
:mod:`.electron_transport` and :mod:`.decay_data`), :mod:`.dvh` and :mod:`.structures` (DVH, Vx, Dx per
structure), :mod:`.partition` (partition model), :mod:`.compartments` and :mod:`.prescription` (activity planning),
:mod:`.passing_bablok` and :mod:`.compare` (cohort statistics), :mod:`.plots`
(figures) and :mod:`.report` (one patient's report and its files).
"""

from sirtreg.dosimetry.compare import (
    CohortComparison,
    MetricComparison,
    PearsonResult,
    compare_metric,
    compare_structure_doses,
    pearson_r,
    quartiles,
    relative_difference_percent,
)
from sirtreg.dosimetry.compartments import Compartments, measure_compartments
from sirtreg.dosimetry.deposition import (
    DoseMap,
    Territory,
    local_deposition_dose,
    mean_dose_gy,
)
from sirtreg.dosimetry.dvh import (
    DoseVolumeHistogram,
    d_gy,
    dose_volume_histogram,
    v_percent,
)
from sirtreg.dosimetry.isotopes import (
    HO166,
    ISOTOPES,
    Y90,
    Isotope,
    decay_corrected_activity_gbq,
    get_isotope,
)
from sirtreg.dosimetry.occupancy import occupancy_on_grid
from sirtreg.dosimetry.partition import PartitionDoses, partition_model, tumour_to_normal_ratio
from sirtreg.dosimetry.passing_bablok import PassingBablokResult, passing_bablok
from sirtreg.dosimetry.plots import plot_difference_boxes, plot_dvh, plot_passing_bablok
from sirtreg.dosimetry.prescription import Limits, Prescription, prescribe
from sirtreg.dosimetry.report import DoseReport, dose_report, write_dose_outputs
from sirtreg.dosimetry.structures import StructureDose, structure_dose, structure_doses
from sirtreg.dosimetry.uptake import Uptake, fractional_uptake_map, measure_uptake

__all__ = [
    "HO166",
    "ISOTOPES",
    "Y90",
    "CohortComparison",
    "Compartments",
    "DoseMap",
    "DoseReport",
    "DoseVolumeHistogram",
    "Isotope",
    "Limits",
    "MetricComparison",
    "PartitionDoses",
    "PassingBablokResult",
    "PearsonResult",
    "Prescription",
    "StructureDose",
    "Territory",
    "Uptake",
    "compare_metric",
    "compare_structure_doses",
    "d_gy",
    "decay_corrected_activity_gbq",
    "dose_report",
    "dose_volume_histogram",
    "fractional_uptake_map",
    "get_isotope",
    "local_deposition_dose",
    "mean_dose_gy",
    "measure_compartments",
    "measure_uptake",
    "occupancy_on_grid",
    "partition_model",
    "passing_bablok",
    "pearson_r",
    "plot_difference_boxes",
    "plot_dvh",
    "plot_passing_bablok",
    "prescribe",
    "quartiles",
    "relative_difference_percent",
    "structure_dose",
    "structure_doses",
    "tumour_to_normal_ratio",
    "v_percent",
    "write_dose_outputs",
]
