"""One patient end to end: the plan that names every input of ``sirtreg run``, and its checks.

:mod:`.plan` reads, checks and writes the YAML plan of one patient: the MAA CT
(the reference), the MAA SPECT with the activity to administer, and the
floating CT/MR images with their contours and guidance.
"""

from sirtreg.pipeline.plan import (
    FORMAT,
    VERSION,
    ContourInput,
    FloatingInput,
    Plan,
    ReferenceInput,
    SpectInput,
    check_plan,
    read_plan,
    write_plan,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "ContourInput",
    "FloatingInput",
    "Plan",
    "ReferenceInput",
    "SpectInput",
    "check_plan",
    "read_plan",
    "write_plan",
]
