"""The `sirtreg` command line: one module per group of commands, each adding its commands to the one app of
:mod:`sirtreg.cli.app` and sharing only its helpers (and those of :mod:`sirtreg.cli.structures` and
:mod:`sirtreg.cli.study_options`); no command module imports another's commands."""

# each command module adds its commands to the app
from sirtreg.cli import dose_study, images, patient, planning, registration, study, verification  # noqa: F401
from sirtreg.cli.app import app, console_main

__all__ = ["app", "console_main"]
