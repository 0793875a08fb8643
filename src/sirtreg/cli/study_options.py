"""What the cohort-study commands share: the `study` command group, its options, the engine options of the
commands that register (:func:`engine_options`), the cluster check and the progress bar that starts at the first
report.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from sirtreg.errors import InputError

if TYPE_CHECKING:
    from sirtreg.register import RegistrationSettings

from sirtreg.cli.app import app, log, option_group, progress_bar

study_app = typer.Typer(help="Cohort studies: check a manifest, register a cohort, tune the weights, compare "
                             "the paper's methods.", no_args_is_help=True)


app.add_typer(study_app, name="study")


Manifest = Annotated[Path, typer.Argument(help="The cohort manifest (cohort.yaml).")]


Results = Annotated[Path, typer.Option("--output", "-o", help="Results table (CSV): created, or resumed.")]


Workers = Annotated[int | None, typer.Option(help="Worker processes of a local Dask cluster (default 1).")]


Scheduler = Annotated[str | None, typer.Option(help="Address of a running Dask scheduler (tcp://host:8786) "
                                                    "instead of a local cluster.")]


Quick = Annotated[bool, typer.Option(help="One coarse pyramid level and few iterations: checks in seconds that "
                                          "every registration runs. Not for reporting; its results need a table "
                                          "of their own.")]


WorkingRegion = Annotated[str, typer.Option(help="Where every registration works on the reference: liver (its "
                                                 "liver plus 20 mm, image-based methods too) or whole (the whole "
                                                 "reference image).")]


Device = Annotated[str, typer.Option(help="cpu or cuda, on every worker.")]


CnnWeights = Annotated[Path | None, typer.Option(help="Fine-tuned liver CNN weights (the checkpoint of `study "
                                                     "finetune-cnn`) for the manifest's 'compute' masks "
                                                     "(default: the published network).")]


@contextmanager
def progress_from_first_report(description: str) -> Iterator[Callable[[str, float], None]]:
    """A progress bar that appears at the first report, so a refusal before the work prints only its error."""
    with ExitStack() as stack:
        bar: list[Callable[[str, float], None]] = []

        def update(step: str, fraction: float) -> None:
            if not bar:
                bar.append(stack.enter_context(progress_bar(description)))
            bar[0](step, fraction)

        yield update


_ENGINE_OPTION_TYPES = {"workers": Workers, "scheduler": Scheduler, "quick": Quick, "working_region": WorkingRegion,
                        "device": Device, "cnn_weights": CnnWeights}


@dataclass(frozen=True)
class EngineOptions:
    """The options of the study commands that register: where they run, the engine's settings, the CNN weights."""

    workers: int | None = None
    scheduler: str | None = None
    quick: bool = False
    working_region: str = "liver"
    device: str = "cpu"
    cnn_weights: Path | None = None

    def settings(self) -> RegistrationSettings:
        """The engine's settings, or the quick ones (:func:`~sirtreg.register.quick_settings`)."""
        from sirtreg.register import RegistrationSettings, quick_settings

        settings = RegistrationSettings(device=self.device, working_region=self.working_region)
        return quick_settings(settings) if self.quick else settings

    def prepare(self) -> None:
        """Refuse --workers with --scheduler and --cnn-weights that is no file, before the manifest is read; leave
        Dask's messages (cluster start and stop) to --verbose."""
        if self.workers is not None and self.scheduler is not None:
            raise InputError("give --workers (a local cluster) or --scheduler (a running one), not both")
        if self.cnn_weights is not None:
            from sirtreg.study.cnn_masks import require_weights_file

            require_weights_file(self.cnn_weights)
        import distributed  # noqa: F401  (sets the level of its loggers on import, so after it is imported)

        if not log.isEnabledFor(logging.DEBUG):
            logging.getLogger("distributed").setLevel(logging.WARNING)


def engine_options(*, cnn_weights: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a study command that takes ``engine: EngineOptions`` (see :func:`~sirtreg.cli.app.option_group`);
    ``--cnn-weights`` only if ``cnn_weights``."""
    return option_group("engine", EngineOptions, _ENGINE_OPTION_TYPES,
                        leave_out=() if cnn_weights else ("cnn_weights",))


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path, *, overwrite: bool) -> Path:
    """Write rows (dicts with the same keys) as a CSV table with a header; empty fields for None."""
    from sirtreg.io import prepare_output

    path = prepare_output(path, overwrite=overwrite)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path
