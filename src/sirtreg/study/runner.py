"""Run registration studies on a cohort: every (patient, floating image, method) on Dask, into one CSV table.

A task registers one floating image of one patient to its reference with one
:class:`~sirtreg.study.methods.Method` and evaluates the result against the manual
liver contours and the landmark maps (:func:`sirtreg.register.registration_quality`).
The task's registration (:mod:`sirtreg.study.task`) guides with the CNN liver mask
where the manifest names one, else the manual contour; the row says which
(``guidance_liver``: manual, cnn, mixed, or none for image guidance) and why a
guiding CNN mask is flagged (``liver_flag``, empty if none is).

:func:`run_study` runs the tasks on a local cluster of worker processes, or on a
running Dask scheduler, and appends every finished row to the results table at
once (flushed to disk), so an interrupted study loses nothing finished. Run it
again and it computes only what is missing: tasks with an ``ok`` row are skipped,
failed ones are retried. The table is keyed by (patient, floating, method); a
retry appends a row and the latest row of a key counts (:func:`read_results`).
One table holds the results of one set of engine settings (pyramids,
iterations, ...: ``settings_id``); its rows are never rewritten.

:func:`summarise` gives the paper's statistics per method, modality and split;
:func:`grid_search` tunes the weights on the train split (lowest RRMSD per modality).
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sirtreg.errors import InputError
from sirtreg.metrics import rrmsd_mm
from sirtreg.progress import Progress, no_progress
from sirtreg.register import RegistrationSettings, registration_quality
from sirtreg.register.config import Guidance
from sirtreg.study.cnn_masks import cnn_mask_folder, compute_cnn_masks, require_weights_file
from sirtreg.study.manifest import COMPUTE, MODALITIES, Cohort, read_manifest
from sirtreg.study.methods import Method, grid_methods
from sirtreg.study.task import Task, TaskKey, engine_settings_id, lookup, register_task, study_tasks

log = logging.getLogger(__name__)

Row = dict[str, Any]

_TEXT = ("patient", "floating", "method", "modality", "split", "method_name", "guidance", "guidance_liver",
         "liver_flag", "status", "error", "settings_id", "finished_utc")
_NUMBERS = ("image_weight", "label_weight", "rigidity", "liver_dsc", "liver_msd_mm", "mean_mcd_mm", "rmsd_mm",
            "seconds")
_INTEGERS = ("landmarks",)
#: The columns of a results table, in order.
COLUMNS = ("patient", "floating", "method", "modality", "split", "method_name", "guidance", "image_weight",
           "label_weight", "rigidity", "guidance_liver", "liver_flag", "liver_dsc", "liver_msd_mm", "mean_mcd_mm",
           "rmsd_mm", "landmarks", "seconds", "status", "error", "settings_id", "finished_utc")
_EARLIER_COLUMNS = tuple(column for column in COLUMNS if column != "liver_flag")  # before the CNN liver checks
OK = "ok"
FAILED = "failed"
_ADDRESS_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- one task ----------------------------------------------------------------------
def _new_row(cohort: Cohort, task: Task, settings: RegistrationSettings | None) -> Row:
    """A row with the task's fields and no results yet."""
    method = task.method
    row: Row = dict.fromkeys(COLUMNS)
    row.update(patient=task.patient, floating=task.floating, method=method.key, method_name=method.name,
               guidance=method.guidance, image_weight=method.image_weight, label_weight=method.label_weight,
               rigidity=method.rigidity, settings_id=engine_settings_id(settings))
    with contextlib.suppress(InputError):
        row["split"] = cohort.patient(task.patient).split
        row["modality"] = lookup(cohort, task)[1].modality
    return row


def _failed(row: Row, error: BaseException) -> Row:
    text = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return {**row, "status": FAILED, "error": f"{type(error).__name__}: {text}", "finished_utc": _now()}


def _register_and_evaluate(cohort: Cohort, task: Task, settings: RegistrationSettings | None) -> Row:
    registered = register_task(cohort, task, settings)
    livers, landmarks = registered.livers, registered.landmarks
    quality = registration_quality(registered.result.transform, reference_liver=livers[0], floating_liver=livers[1],
                                   reference_landmarks=landmarks[0], floating_landmarks=landmarks[1])
    mcd = list(quality.mcd_mm.values())
    return {"guidance_liver": registered.guidance_liver, "liver_flag": registered.liver_flag,
            "liver_dsc": float(quality.liver_dsc), "liver_msd_mm": float(quality.liver_msd_mm),
            "mean_mcd_mm": float(np.mean(mcd)) if mcd else None, "rmsd_mm": float(quality.rmsd_mm),
            "landmarks": len(mcd), "seconds": registered.seconds}


def run_registration_task(cohort: Cohort | str | os.PathLike[str], task: Task, *,
                          settings: RegistrationSettings | None = None) -> Row:
    """Register one floating image with one method and evaluate it; returns one row of the results table.

    Parameters
    ----------
    cohort : the cohort, or the path of its manifest.
    task : patient id, floating id and method.
    settings : engine settings (pyramids, iterations, device); guidance and weights come from the method.

    Returns
    -------
    The row (see :data:`COLUMNS`): liver DSC, liver MSD (mm), mean landmark MCD (mm),
    RMSD (mm), registration time (s), status "ok". Any error of the task (unreadable
    image, refused input, a failed registration) gives status "failed" and the error
    text instead of raising, so one bad image never stops a study; a bad manifest raises.
    """
    if not isinstance(cohort, Cohort):
        cohort = read_manifest(cohort)
    row = _new_row(cohort, task, settings)
    try:
        row.update(_register_and_evaluate(cohort, task, settings))
    except Exception as exc:  # noqa: BLE001 - a failed registration is a result of the study
        log.warning("%s/%s %s failed: %s", task.patient, task.floating, task.method.key, exc)
        return _failed(row, exc)
    row.update(status=OK, finished_utc=_now())
    log.info("%s/%s %s: RMSD %.2f mm in %.1f s", task.patient, task.floating, task.method.key, row["rmsd_mm"],
             row["seconds"])
    return row


def _run_on_worker(cohort: Cohort, task: Task, settings: RegistrationSettings | None) -> Row:
    """:func:`run_registration_task` with one torch thread, so that worker processes do not compete for cores."""
    torch.set_num_threads(1)
    return run_registration_task(cohort, task, settings=settings)


# --- the results table ---------------------------------------------------------------
def _csv_line(values: Sequence[Any]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(["" if v is None else repr(float(v)) if isinstance(v, float)
                                                      else v for v in values])
    return buffer.getvalue()


def _parse(fields: list[str], columns: Sequence[str], where: str) -> Row:
    row: Row = dict.fromkeys(COLUMNS, "") | dict(zip(columns, fields, strict=True))
    for column in (*_NUMBERS, *_INTEGERS):
        text = row[column]
        try:
            row[column] = None if text == "" else int(text) if column in _INTEGERS else float(text)
        except ValueError:
            raise InputError(f"{where}: {column} is {text!r}, not a number") from None
    for column in _TEXT:
        row[column] = row[column] or None
    return row


def read_results(path: str | os.PathLike[str]) -> list[Row]:
    """The rows of a results table, the latest per (patient, floating, method), in order of first appearance.

    Numbers are floats (``landmarks`` an int), empty fields None. A last line cut
    short by an interrupted run is ignored with a warning. A table written before
    the CNN liver checks is read with ``liver_flag`` None. Refuses a file that is
    not a results table (InputError).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} is a folder, not a results table" if path.is_dir() else
                         f"no such results table: {path}")
    latest: dict[TaskKey, Row] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        lines = handle.read().split("\n")  # one row per line: no field holds a line break
    header = tuple(next(csv.reader(lines[:1]), []))
    if header not in (COLUMNS, _EARLIER_COLUMNS):
        raise InputError(f"{path.name} is not a sirtreg study table: its header is {','.join(header) or 'empty'}"
                         f"; expected {','.join(COLUMNS)}. Write the results to a new file")
    for number, line in enumerate(lines[1:], start=2):
        fields = next(csv.reader([line]), [])
        if not fields:
            continue
        where = f"{path.name}, line {number}"
        if len(fields) != len(header):
            log.warning("%s: %d fields, expected %d (cut short by an interrupted run?); ignored", where, len(fields),
                        len(header))
            continue
        row = _parse(fields, header, where)
        latest[(row["patient"], row["floating"], row["method"])] = row
    return list(latest.values())


def refuse_other_settings(rows: Sequence[Mapping[str, Any]], settings_id: str, *, table: str, remedy: str) -> None:
    """Refuse ``rows`` of a results table (named ``table``) computed with engine settings other than
    ``settings_id`` (a table holds one); the message ends with ``remedy``."""
    others = sorted({str(row["settings_id"]) for row in rows} - {settings_id})
    if others:
        raise InputError(f"{table} holds results of other engine settings (settings_id {', '.join(others)}, "
                         f"now {settings_id}): {remedy}")


def _prepare_table(path: Path, settings_id: str) -> list[Row]:
    """The rows already in the table; a new table is created with its header (atomically)."""
    if path.exists():
        rows = read_results(path)
        with path.open(newline="", encoding="utf-8") as handle:
            if tuple(next(csv.reader(handle), [])) != COLUMNS:
                raise InputError(f"{path.name} was written before the CNN liver checks (it has no liver_flag "
                                 "column): its rows can be read, but write new results to a new file")
        refuse_other_settings(rows, settings_id, table=path.name, remedy="write these results to a new file")
        return rows
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        temporary.write_text(_csv_line(COLUMNS), encoding="utf-8")
        os.link(temporary, path)  # never replaces a table that appeared meanwhile
    finally:
        temporary.unlink(missing_ok=True)
    log.info("created results table %s", path)
    return []


@contextlib.contextmanager
def _appending(path: Path) -> Iterator[Callable[[Row], None]]:
    """A function that appends one row to the table and flushes it to disk."""
    with path.open("rb") as handle:
        handle.seek(-1, os.SEEK_END)
        complete = handle.read(1) == b"\n"
    with path.open("a", newline="", encoding="utf-8") as handle:
        if not complete:
            handle.write("\n")  # end a line cut short by an interrupted run

        def append(row: Row) -> None:
            handle.write(_csv_line([row[column] for column in COLUMNS]))
            handle.flush()
            os.fsync(handle.fileno())

        yield append


# --- running on Dask -------------------------------------------------------------------
def check_cluster(workers: int | None, scheduler: str | None) -> None:
    if scheduler is not None:
        if workers is not None:
            raise InputError("give workers (a local cluster) or scheduler (a running one), not both")
        if not isinstance(scheduler, str) or not scheduler.startswith(_ADDRESS_SCHEMES):
            raise InputError(f"scheduler must be a Dask scheduler address such as tcp://127.0.0.1:8786, "
                             f"got {scheduler!r}")
    elif workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise InputError(f"workers must be a whole number >= 1, got {workers!r}")


@contextlib.contextmanager
def dask_client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """A Dask client of the scheduler at ``scheduler``, or of a new local cluster of worker processes."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler) as client:
            yield client
        return
    with (LocalCluster(n_workers=workers or 1, threads_per_worker=1, processes=True) as cluster,
          Client(cluster) as client):
        yield client


def _check_cnn_weights(cohort: Cohort, cnn_weights: str | os.PathLike[str] | None) -> None:
    """Refuse fine-tuned weights that are not a file, or that no ``compute`` mask of the cohort would use."""
    if cnn_weights is None:
        return
    require_weights_file(cnn_weights)
    if not any(image.cnn_liver == COMPUTE for patient in cohort.patients
               for image in (patient.reference, *patient.floating)):
        raise InputError(f"CNN weights {cnn_weights} given, but the manifest asks for no CNN mask "
                         "(cnn_liver: compute)")


def run_study(
    cohort: Cohort | str | os.PathLike[str],
    methods: Sequence[Method],
    results_path: str | os.PathLike[str],
    *,
    split: str | None = None,
    settings: RegistrationSettings | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    cnn_weights: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> list[Row]:
    """Register every floating image of a cohort (or of one split) with every method; rows in a CSV table.

    Parameters
    ----------
    cohort : the cohort, or the path of its manifest.
    methods : the methods to compare (distinct keys).
    results_path : the CSV table; created if absent, else resumed: tasks with an ``ok``
        row are skipped, failed ones retried. Every finished row is appended and flushed at once.
    split : "train", "test" or None (all patients).
    settings : engine settings (pyramids, iterations, device); guidance and weights come from each method.
    workers : worker processes of a new local Dask cluster (default 1, one thread each).
    scheduler : the address of a running Dask scheduler (e.g. ``tcp://127.0.0.1:8786``) instead.
    cnn_weights : fine-tuned liver CNN weights for the ``compute`` masks (default: the published network).
    progress : called as ``progress(step, fraction)`` as rows finish.

    Returns
    -------
    The latest row of every task of this study (see :data:`COLUMNS`), in task order.

    Images whose CNN mask is ``compute`` are segmented first, on the same workers, into a cache
    folder beside the table (:mod:`sirtreg.study.cnn_masks`); where that fails, the patient's
    registrations are recorded as failed with the error.

    Refuses (InputError) an empty or repeated method list, a table with another header or of
    other engine settings, bad workers or scheduler values, and ``cnn_weights`` that are no file or
    that no ``compute`` mask would use.
    """
    check_cluster(workers, scheduler)
    if not isinstance(cohort, Cohort):
        cohort = read_manifest(cohort)
    _check_cnn_weights(cohort, cnn_weights)
    tasks = study_tasks(cohort, methods, split=split)
    path = Path(os.path.abspath(results_path))
    done = {(r["patient"], r["floating"], r["method"]) for r in _prepare_table(path, engine_settings_id(settings))
            if r["status"] == OK}
    pending = [task for task in tasks if task.key not in done]
    report = progress or no_progress
    finished = len(tasks) - len(pending)
    report(f"{finished} of {len(tasks)} registrations already in {path.name}", finished / len(tasks))
    log.info("study of %d registrations: %d to run, %d already in %s", len(tasks), len(pending), finished, path)
    if pending:
        from distributed import as_completed, wait

        def gather(futures: list[Any]) -> list[Any]:
            wait(futures)
            return [future.exception() if future.status == "error" else future.result() for future in futures]

        with dask_client(workers, scheduler) as client, _appending(path) as append:
            cohort, failures = compute_cnn_masks(
                cohort, {task.patient for task in pending}, cnn_mask_folder(path), client.submit, gather,
                device=(settings or RegistrationSettings()).device,
                weights=Path(cnn_weights) if cnn_weights is not None else None,
                progress=lambda step, fraction: report(step, finished / len(tasks)))
            for task in [task for task in pending if task.patient in failures]:
                append(_failed(_new_row(cohort, task, settings), RuntimeError(failures[task.patient])))
                finished += 1
            pending = [task for task in pending if task.patient not in failures]
            futures = {client.submit(_run_on_worker, cohort, task, settings, pure=False): task for task in pending}
            try:
                for future in as_completed(futures):
                    task = futures[future]
                    try:
                        row = future.result()
                    except Exception as exc:  # noqa: BLE001 - a lost worker fails its task, not the study
                        row = _failed(_new_row(cohort, task, settings), exc)
                    append(row)
                    finished += 1
                    report(f"{task.patient}/{task.floating} {task.method.key}: {row['status']}",
                           finished / len(tasks))
            finally:
                client.cancel(list(futures))
    latest = {(r["patient"], r["floating"], r["method"]): r for r in read_results(path)}
    report("done", 1.0)
    return [latest[task.key] for task in tasks]


# --- statistics and tuning -------------------------------------------------------------
def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def methods_of_rows(rows: Sequence[Mapping[str, Any]]) -> tuple[Method, ...]:
    """The distinct methods of result rows (name, guidance and weights), in order of first appearance."""
    return tuple(dict.fromkeys(Method(name=row["method_name"], guidance=row["guidance"],
                                      image_weight=row["image_weight"], label_weight=row["label_weight"],
                                      rigidity=row["rigidity"]) for row in rows))


def summarise(table: Sequence[Mapping[str, Any]] | str | os.PathLike[str]) -> list[Row]:
    """The paper's statistics per method, modality and split, in order of first appearance.

    ``table`` is a list of rows (:func:`run_study`, :func:`read_results`) or the path
    of a results table. Each summary row has the method's fields, ``modality``,
    ``split``, ``n`` (registrations that finished ``ok``), ``failed``, ``flagged_livers``
    (those of the ``ok`` ones with a flagged CNN liver, ``liver_flag``), ``rrmsd_mm``
    (root mean square of the RMSDs, :func:`~sirtreg.metrics.rrmsd_mm`),
    ``median_rmsd_mm``, ``median_dsc``, ``median_msd_mm``, ``mean_mcd_mm`` (over
    registrations with landmarks) and ``median_seconds``; statistics are None where n is 0.
    """
    rows = read_results(table) if isinstance(table, (str, os.PathLike)) else table
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["modality"], row["split"]), []).append(row)
    summary = []
    for (method, modality, split), members in groups.items():
        ok = [row for row in members if row["status"] == OK]
        first = members[0]
        mcd = [row["mean_mcd_mm"] for row in ok if row["mean_mcd_mm"] is not None]
        summary.append({
            "method": method, "method_name": first["method_name"], "guidance": first["guidance"],
            "image_weight": first["image_weight"], "label_weight": first["label_weight"],
            "rigidity": first["rigidity"], "modality": modality, "split": split, "n": len(ok),
            "failed": len(members) - len(ok), "flagged_livers": sum(bool(row.get("liver_flag")) for row in ok),
            "rrmsd_mm": rrmsd_mm([row["rmsd_mm"] for row in ok]) if ok else None,
            "median_rmsd_mm": _median([row["rmsd_mm"] for row in ok]),
            "median_dsc": _median([row["liver_dsc"] for row in ok]),
            "median_msd_mm": _median([row["liver_msd_mm"] for row in ok]),
            "mean_mcd_mm": float(np.mean(mcd)) if mcd else None,
            "median_seconds": _median([row["seconds"] for row in ok]),
        })
    return summary


def best_methods(summary: Sequence[Mapping[str, Any]], methods: Sequence[Method], *, split: str = "train"
                 ) -> dict[str, Method]:
    """Per modality, the method with the lowest RRMSD on ``split`` (ties: the first in ``methods``).

    Only methods whose every registration of that modality finished ``ok`` take
    part; a modality where none did is left out, with a warning.
    """
    by_key = {method.key: method for method in methods}
    best: dict[str, Method] = {}
    for modality in MODALITIES:
        rows = {row["method"]: row for row in summary
                if row["modality"] == modality and row["split"] == split and row["method"] in by_key}
        if not rows:
            continue
        eligible = [key for key in by_key if key in rows and rows[key]["failed"] == 0 and rows[key]["n"] > 0]
        if not eligible:
            log.warning("no method finished every %s registration of the %s split: no weights chosen", modality,
                        split)
            continue
        best[modality] = by_key[min(eligible, key=lambda key: rows[key]["rrmsd_mm"])]
    return best


def best_rrmsd_mm(summary: Sequence[Mapping[str, Any]], best: Mapping[str, Method], *, split: str = "train"
                  ) -> dict[str, float]:
    """Per modality, the RRMSD (mm) on ``split`` of the method :func:`best_methods` chose."""
    return {modality: next(row["rrmsd_mm"] for row in summary if row["method"] == method.key
                           and row["modality"] == modality and row["split"] == split)
            for modality, method in best.items()}


@dataclass(frozen=True)
class GridSearch:
    """A grid search: its methods (grid points), the summary per grid point and modality, the best per modality,
    and the split it tuned on."""

    methods: tuple[Method, ...]
    summary: list[Row]
    best: dict[str, Method]
    split: str = "train"


def grid_search(
    cohort: Cohort | str | os.PathLike[str],
    grid: Mapping[str, Sequence[float]],
    results_path: str | os.PathLike[str],
    *,
    guidance: Guidance,
    name: str | None = None,
    split: str = "train",
    settings: RegistrationSettings | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    cnn_weights: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> GridSearch:
    """The paper's 1D/2D grid search: the weights with the lowest RRMSD on ``split``, per modality (CT, MR).

    ``grid`` maps ``image_weight`` (wI), ``label_weight`` (wS) and ``rigidity`` to
    values (see :func:`~sirtreg.study.methods.grid_methods`); every grid point is a
    method named ``name`` (default: the guidance) run by :func:`run_study` into
    ``results_path`` (resumable, like any study).
    """
    methods = grid_methods(grid, guidance=guidance, name=name)
    rows = run_study(cohort, methods, results_path, split=split, settings=settings, workers=workers,
                     scheduler=scheduler, cnn_weights=cnn_weights, progress=progress)
    summary = summarise(rows)
    best = best_methods(summary, methods, split=split)
    for modality, rrmsd in best_rrmsd_mm(summary, best, split=split).items():
        log.info("grid search, %s: best %s (RRMSD %.2f mm)", modality, best[modality].key, rrmsd)
    return GridSearch(methods=methods, summary=summary, best=best, split=split)

