"""One patient end to end: the plan that names every input of ``sirtreg run``, its checks, and the run.

:mod:`.plan` reads, checks and writes the YAML plan of one patient: the MAA CT
(the reference), the MAA SPECT with the activity to administer, and the
floating CT/MR images with their contours and guidance. :mod:`.run` runs a
plan: liver segmentation where needed, registration, lesions carried onto the
MAA CT, dose, and one output folder with tables, DICOM and an HTML report.
:mod:`.weights` holds the non-rigid weights per floating modality and guidance, from the plan or a grid search.
The run's parts: :mod:`.run_inputs` (reading), :mod:`.carried` (what is carried), :mod:`.liver_flags` (the CNN
livers' checks), :mod:`.run_doses` and :mod:`.agreement` (doses, and which to trust), :mod:`.run_outputs`
(the files); the report's sections are in :mod:`sirtreg.report.run_report`.
"""

from sirtreg.pipeline.plan import ContourInput, FloatingInput, Plan, ReferenceInput, SpectInput, write_plan
from sirtreg.pipeline.plan_checks import check_plan
from sirtreg.pipeline.plan_reader import read_plan
from sirtreg.pipeline.run import RunResult, RunTools, check_run, preset_settings, run_plan
from sirtreg.pipeline.weights import RunWeights, with_tuned_weights

__all__ = [
    "ContourInput",
    "FloatingInput",
    "Plan",
    "ReferenceInput",
    "RunResult",
    "RunTools",
    "RunWeights",
    "SpectInput",
    "check_plan",
    "check_run",
    "read_plan",
    "preset_settings",
    "run_plan",
    "with_tuned_weights",
    "write_plan",
]
