"""The one `sirtreg` app, and what every command module shares: the consoles, refusals as one-line
messages, progress bars, output tables, options and groups of options. The only place that prints, draws
progress and sets log levels.
"""

from __future__ import annotations

import functools
import gc
import inspect
import logging
import os
import sys
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sirtreg import __version__
from sirtreg.errors import InputError, SirtregError

app = typer.Typer(
    name="sirtreg",
    help="Multi-modality liver registration and lesion dosimetry for SIRT.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


console = Console()


error_console = Console(stderr=True)


log = logging.getLogger("sirtreg")


F = TypeVar("F", bound=Callable[..., Any])

# options that several commands take, declared once
OutputFolder = Annotated[Path, typer.Option("--output", "-o", help="Output folder (new or empty).")]
GuidanceOption = Annotated[str, typer.Option(help="image, liver or liver+landmarks.")]
DeviceOption = Annotated[str, typer.Option(help="cpu or cuda.")]


EXIT_BAD_INPUT = 2


def refusals_as_messages(command: F) -> F:
    """Turn a SirtregError into one line on stderr and exit status 2."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SirtregError as exc:
            error_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]


@contextmanager
def progress_bar(description: str) -> Iterator[Callable[[str, float], None]]:
    """A rich progress bar; yields the callback `progress(step, fraction)` that library code calls."""
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[step]}"), TimeElapsedColumn(), console=error_console, transient=False,
    ) as bar:
        task = bar.add_task(description, total=1.0, step="")

        def update(step: str, fraction: float) -> None:
            bar.update(task, completed=min(max(fraction, 0.0), 1.0), step=step)

        yield update
        bar.update(task, completed=1.0, step="done")


def _version(value: bool) -> None:
    if value:
        console.print(f"sirtreg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug messages.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show warnings and errors only.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
) -> None:
    """Multi-modality liver registration and lesion dosimetry for SIRT."""
    from sirtreg.allocator import reuse_freed_memory

    reuse_freed_memory()  # a command's large arrays from the heap, reused: far fewer page faults
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level, format="%(message)s", force=True,
        handlers=[RichHandler(console=error_console, show_path=False, show_time=False)],
    )


EXIT_INTERRUPTED = 130


def console_main() -> None:
    """The ``sirtreg`` console script: the app, then an exit without the collector's last pass over every
    object of PyTorch and SciPy (a fifth of a second of every command that registers or segments).

    Interrupted (Ctrl-C, status 130), once the command has cleaned up its output folder, the process ends
    without waiting for its threads: a worker may wait for ever on the import lock that an interrupted import
    left held (:func:`sirtreg.parallel.worker_pool`)."""
    try:
        app()
    except SystemExit as leaving:
        if leaving.code == EXIT_INTERRUPTED:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        raise
    finally:
        gc.freeze()


def print_files(title: str, files: dict[str, Any]) -> None:
    """A table of the files a command wrote: name, path."""
    table = Table("output", "file", title=title)
    for name, path in files.items():
        table.add_row(name, str(path))
    console.print(table)


def option_group(parameter: str, group: type, options: Mapping[str, Any], *,
                 leave_out: Collection[str] = ()) -> Callable[[F], F]:
    """Decorate a command that takes ``parameter: group`` (a dataclass of options several commands share).

    Typer shows the fields of ``group`` as the command's own options (annotated as in ``options``: field name ->
    ``Annotated[type, typer.Option(...)]``; placed before a last ``overwrite`` option), and the command gets them
    as one object. Fields in ``leave_out`` are no options; they keep their defaults.
    """
    defaults = {field.name: field.default for field in fields(group) if field.name not in leave_out}

    def decorate(command: F) -> F:
        signature = inspect.signature(command, eval_str=True)
        own = [option.replace(kind=inspect.Parameter.KEYWORD_ONLY) for option in signature.parameters.values()
               if option.name != parameter]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=options[name])
                 for name, default in defaults.items()]
        last = [option for option in own if option.name == "overwrite"]
        parameters = [option for option in own if option.name != "overwrite"] + added + last

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            kwargs[parameter] = group(**{name: kwargs.pop(name) for name in defaults})
            return command(**kwargs)

        wrapper.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {option.name: option.annotation for option in parameters}
        return wrapper  # type: ignore[return-value]

    return decorate


@dataclass(frozen=True)
class WeightOptions:
    """The non-rigid weights a command takes (--wi, --ws, --rigidity, --affine-only); None: the preset's."""

    image_weight: float | None = None
    label_weight: float | None = None
    rigidity: float | None = None
    affine_only: bool = False

    def nonrigid(self) -> dict[str, float]:
        """The weights given (those left out are not in the result); with ``affine_only`` none may be given and
        the result switches both terms off (wI = wS = 0)."""
        weights = {name: value for name, value in (("image_weight", self.image_weight),
                                                   ("label_weight", self.label_weight),
                                                   ("rigidity", self.rigidity)) if value is not None}
        if self.affine_only:
            if weights:
                raise InputError("--affine-only runs no non-rigid stage: leave out --wi, --ws and --rigidity")
            return {"image_weight": 0.0, "label_weight": 0.0}
        return weights


weight_options = option_group("weights", WeightOptions, {
    "image_weight": Annotated[float | None, typer.Option("--wi", help="Weight wI of the image similarity.")],
    "label_weight": Annotated[float | None, typer.Option("--ws", help="Weight wS of the label SSD.")],
    "rigidity": Annotated[float | None, typer.Option(help="Spring rigidity.")],
    "affine_only": Annotated[bool, typer.Option(help="Stop after the affine stage (wI = wS = 0).")],
})
