"""The paper's dose experiment on a cohort (section II.E, Figs. 9-13): how registration changes lesion doses.

For every test-split patient, every floating image with lesions and every method, the
floating lesions are carried onto the MAA CT by the task's registration
(:func:`sirtreg.study.task.register_task`, the same registration a study evaluates) and
get their absorbed dose from the patient's MAA SPECT: local deposition of the manifest's
activity, distributed by the SPECT counts inside the manual MAA CT liver, as in the
paper (:func:`sirtreg.dosimetry.dose_report`). Beside them the lesions drawn on the MAA
CT (the reference lesions) get theirs; lesions pair by label value, as landmarks do.

Each lesion's row (:data:`DOSE_COLUMNS`) holds the mean dose, V70, V100 and D70 of both,
the differences registered - reference (mean dose relative, in %; V70 and V100 in
percentage points; D70 in Gy), the mean absolute difference of the two cumulative DVHs
over the dose axis (percentage points: the voxel-level difference of the whole DVH) and
the DSC of the two contours. The DVHs themselves travel with the rows (``dvh``) for the
paper's Fig. 13.

The tasks run on Dask workers. Each finished task is cached as JSON in a folder beside
the study's results table (``<table stem>_dose_tasks/<patient>/<floating>/<id>.json``,
written under a temporary name, then renamed; the id hashes the method and the engine
settings), so an interrupted or repeated dose study computes only what is missing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sirtreg.dosimetry import dose_report
from sirtreg.dosimetry.compare import CohortComparison, compare_metric
from sirtreg.errors import InputError
from sirtreg.geometry import LabelVolume
from sirtreg.io import read_image, read_labels
from sirtreg.metrics import dice
from sirtreg.output_folder import write_atomically
from sirtreg.progress import Progress, no_progress
from sirtreg.register import RegistrationSettings, warp
from sirtreg.study.cnn_masks import cnn_mask_folder, compute_cnn_masks
from sirtreg.study.manifest import Cohort
from sirtreg.study.methods import Method
from sirtreg.study.runner import check_cluster, dask_client
from sirtreg.study.task import Task, engine_settings_id, lookup, register_task, study_tasks

log = logging.getLogger(__name__)

Row = dict[str, Any]
DOSE_COLUMNS = ("patient", "floating", "modality", "method", "method_name", "guidance", "lesion",
                "reference_volume_ml", "volume_ml", "dsc", "reference_mean_gy", "mean_gy",
                "mean_dose_difference_percent", "reference_v70_percent", "v70_percent", "v70_difference",
                "reference_v100_percent", "v100_percent", "v100_difference", "reference_d70_gy", "d70_gy",
                "d70_difference_gy", "dvh_difference_points", "error")
#: the metrics compared per method (Figs. 9-12): name -> (reference column, registered column, relative)
METRICS = {"mean dose": ("reference_mean_gy", "mean_gy", True), "V70": ("reference_v70_percent", "v70_percent", False),
           "V100": ("reference_v100_percent", "v100_percent", False)}


def dose_task_folder(results_path: str | os.PathLike[str]) -> Path:
    """Where the dose tasks of the study writing ``results_path`` are cached."""
    path = Path(os.path.abspath(results_path))
    return path.with_name(f"{path.stem}_dose_tasks")


def dose_study_tasks(cohort: Cohort, methods: Sequence[Method]) -> tuple[Task, ...]:
    """The test-split tasks whose floating image has lesions (InputError if there is none)."""
    tasks = tuple(task for task in study_tasks(cohort, methods, split="test")
                  if lookup(cohort, task)[1].lesions is not None)
    if not tasks:
        raise InputError("no floating image of the test split has lesions: a dose study needs lesions on both "
                         "the floating images and the MAA CT")
    return tasks


def _cumulative_difference_points(reference: np.ndarray, registered: np.ndarray) -> float:
    """Mean absolute difference of two cumulative DVHs on the same 1 Gy bins from 0 (the shorter one is 0 beyond
    its end), percentage points."""
    length = max(reference.size, registered.size)
    padded = [np.pad(values, (0, length - values.size)) for values in (reference, registered)]
    return float(np.mean(np.abs(padded[1] - padded[0])))


def _only(labels: LabelVolume, values: Sequence[int], prefix: str) -> LabelVolume:
    """The label map with only ``values``, each named "<prefix>/lesion <value>"."""
    array = np.where(np.isin(labels.array, values), labels.array, 0)
    return LabelVolume(array, labels.grid, labels={v: f"{prefix}/lesion {v}" for v in values})


def lesion_dose_rows(cohort: Cohort, task: Task, settings: RegistrationSettings | None = None) -> dict[str, Any]:
    """Register one task and dose its lesions (see the module docstring): ``{"rows": [...], "dvh": {...}}``.

    ``dvh`` maps each lesion name to ``{"dose_gy", "reference_percent", "registered_percent"}`` (lists;
    the cumulative DVHs on 1 Gy bins from 0).
    """
    patient = cohort.patient(task.patient)
    reference, floating = lookup(cohort, task)
    if floating.lesions is None:
        raise InputError(f"patient {task.patient}, floating {floating.id}: no lesions to dose")
    registered = register_task(cohort, task, settings)
    drawn, floating_lesions = read_labels(reference.lesions), read_labels(floating.lesions)
    values = sorted(set(drawn.present_labels()) & set(floating_lesions.present_labels()))
    if not values:
        raise InputError(f"patient {task.patient}, floating {floating.id}: no lesion label is on both the MAA CT "
                         "and the floating image")
    carried = warp(floating_lesions, registered.result.transform, drawn.grid, label_mode="one-hot")
    spect = patient.spect
    report = dose_report(read_image(spect.image), registered.livers[0], spect.activity_gbq, isotope=spect.isotope,
                         lesions=[_only(drawn, values, "reference"), _only(carried, values, "registered")],
                         lung_shunt_fraction=spect.lung_shunt_fraction or 0.0, dx_percent=(70.0,))
    doses = {structure.name: structure for structure in report.structures}
    method = task.method
    rows, dvh = [], {}
    for value in values:
        name = f"lesion {value}"
        ref, reg = doses[f"reference/{name}"], doses[f"registered/{name}"]
        row: Row = dict.fromkeys(DOSE_COLUMNS) | {
            "patient": task.patient, "floating": task.floating, "modality": floating.modality, "method": method.key,
            "method_name": method.name, "guidance": method.guidance, "lesion": name,
            "reference_volume_ml": ref.volume_ml, "volume_ml": reg.volume_ml,
            "dsc": dice(drawn.array == value, carried.array == value),  # the drawn lesion is never empty
            "error": "; ".join(f"{which}: {s.error}" for which, s in (("reference", ref), ("registered", reg))
                               if not s.ok) or None}
        if ref.ok and reg.ok:
            row |= {"reference_mean_gy": ref.mean_gy, "mean_gy": reg.mean_gy,
                    "mean_dose_difference_percent": 100.0 * (reg.mean_gy - ref.mean_gy) / ref.mean_gy,
                    "reference_v70_percent": ref.v_percent[70.0], "v70_percent": reg.v_percent[70.0],
                    "v70_difference": reg.v_percent[70.0] - ref.v_percent[70.0],
                    "reference_v100_percent": ref.v_percent[100.0], "v100_percent": reg.v_percent[100.0],
                    "v100_difference": reg.v_percent[100.0] - ref.v_percent[100.0],
                    "reference_d70_gy": ref.d_gy[70.0], "d70_gy": reg.d_gy[70.0],
                    "d70_difference_gy": reg.d_gy[70.0] - ref.d_gy[70.0],
                    "dvh_difference_points": _cumulative_difference_points(ref.dvh.cumulative_percent,
                                                                           reg.dvh.cumulative_percent)}
            longer = ref.dvh if ref.dvh.dose_gy.size >= reg.dvh.dose_gy.size else reg.dvh
            dvh[name] = {"dose_gy": longer.dose_gy.tolist(),
                         "reference_percent": ref.dvh.cumulative_percent.tolist(),
                         "registered_percent": reg.dvh.cumulative_percent.tolist()}
        rows.append(row)
    log.info("%s/%s %s: %d lesion(s) dosed", task.patient, task.floating, method.key, len(rows))
    return {"rows": rows, "dvh": dvh}


def _on_worker(cohort: Cohort, task: Task, settings: RegistrationSettings | None) -> dict[str, Any]:
    """:func:`lesion_dose_rows` with one torch thread, so that worker processes do not compete for cores."""
    torch.set_num_threads(1)
    return lesion_dose_rows(cohort, task, settings)


def _cache_path(folder: Path, task: Task, settings_id: str) -> Path:
    digest = hashlib.sha256(f"{task.method.key}|{settings_id}".encode()).hexdigest()[:12]
    return folder / task.patient / task.floating / f"{digest}.json"


def _failed_row(cohort: Cohort, task: Task, error: BaseException) -> Row:
    text = " | ".join(line.strip() for line in str(error).splitlines() if line.strip())
    return dict.fromkeys(DOSE_COLUMNS) | {
        "patient": task.patient, "floating": task.floating, "modality": lookup(cohort, task)[1].modality,
        "method": task.method.key, "method_name": task.method.name, "guidance": task.method.guidance,
        "error": f"{type(error).__name__}: {text}"}


def run_dose_study(cohort: Cohort, methods: Sequence[Method], results_path: str | os.PathLike[str], *,
                   settings: RegistrationSettings | None = None, workers: int | None = None,
                   scheduler: str | None = None, progress: Progress | None = None
                   ) -> tuple[list[Row], dict[tuple[str, str, str], dict[str, Any]]]:
    """Dose the lesions of every test-split task (see the module docstring) on Dask; returns (rows, DVHs).

    Parameters
    ----------
    cohort : the cohort (its SPECTs, activities and lesions).
    methods : the methods (e.g. those of the study's results table).
    results_path : the study's results table: the task cache and the CNN masks live beside it.
    settings : engine settings, as for the study.
    workers, scheduler : a new local Dask cluster of ``workers`` processes, or a running scheduler.
    progress : called as ``progress(step, fraction)`` as tasks finish.

    Returns
    -------
    One row per lesion and task (:data:`DOSE_COLUMNS`; a failed task gives one row with its error and no
    lesion, and is computed again next time), in task order; and per task key the lesions' DVHs.
    """
    check_cluster(workers, scheduler)
    tasks = dose_study_tasks(cohort, methods)
    settings_id = engine_settings_id(settings)
    folder = dose_task_folder(results_path)
    report = progress or no_progress
    outcomes: dict[tuple[str, str, str], dict[str, Any]] = {}
    for task in tasks:
        cached = _cache_path(folder, task, settings_id)
        if cached.is_file():
            outcomes[task.key] = json.loads(cached.read_text(encoding="utf-8"))
    pending = [task for task in tasks if task.key not in outcomes]
    report(f"{len(outcomes)} of {len(tasks)} dose tasks already done", len(outcomes) / len(tasks))
    if pending:
        from distributed import as_completed, wait

        def gather(futures: list[Any]) -> list[Any]:
            wait(futures)
            return [future.exception() if future.status == "error" else future.result() for future in futures]

        with dask_client(workers, scheduler) as client:
            cohort, failures = compute_cnn_masks(
                cohort, {task.patient for task in pending}, cnn_mask_folder(Path(os.path.abspath(results_path))),
                client.submit, gather, device=(settings or RegistrationSettings()).device)
            for task in [task for task in pending if task.patient in failures]:
                outcomes[task.key] = {"rows": [_failed_row(cohort, task, RuntimeError(failures[task.patient]))]}
            futures = {client.submit(_on_worker, cohort, task, settings, pure=False): task
                       for task in pending if task.patient not in failures}
            try:
                for future in as_completed(futures):
                    task = futures[future]
                    try:
                        outcome = future.result()
                        write_atomically(_cache_path(folder, task, settings_id), json.dumps(outcome) + "\n",
                                         overwrite=True)
                    except Exception as exc:  # noqa: BLE001 - a failed task is a result of the study
                        log.warning("%s/%s %s: dose task failed: %s", task.patient, task.floating, task.method.key,
                                    exc)
                        outcome = {"rows": [_failed_row(cohort, task, exc)]}
                    outcomes[task.key] = outcome
                    report(f"{task.patient}/{task.floating} {task.method.name}: "
                           f"{'failed' if outcome['rows'][0]['lesion'] is None else 'done'}",
                           len(outcomes) / len(tasks))
            finally:
                client.cancel(list(futures))
    report("done", 1.0)
    rows = [row for task in tasks for row in outcomes[task.key]["rows"]]
    return rows, {task.key: outcomes[task.key].get("dvh", {}) for task in tasks}


def dose_comparisons(rows: Sequence[Mapping[str, Any]], modality: str) -> dict[str, CohortComparison]:
    """Per method name (in order of appearance), the comparison of the registered with the reference lesions of
    one modality: relative mean-dose difference (%), V70 and V100 differences (points), quartiles, Pearson's r
    and Passing-Bablok (Figs. 9-12). Lesions that could not be dosed are listed as skipped."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row["modality"] == modality:
            groups.setdefault(row["method_name"], []).append(row)
    comparisons = {}
    for name, members in groups.items():
        ok = [row for row in members if row["error"] is None]
        skipped = tuple(" ".join(filter(None, (f"{row['patient']}/{row['floating']}", row["lesion"])))
                        + f": {row['error']}" for row in members if row["error"] is not None)
        if not ok:
            log.warning("%s, %s: no lesion could be dosed", modality, name)
            continue
        comparisons[name] = CohortComparison(
            {metric: compare_metric(metric, [row[reference] for row in ok], [row[registered] for row in ok],
                                    relative=relative)
             for metric, (reference, registered, relative) in METRICS.items()}, skipped)
    return comparisons


def dose_summary(comparisons: Mapping[str, Mapping[str, CohortComparison]]) -> list[Row]:
    """Per modality and method (``comparisons``: modality -> :func:`dose_comparisons`): lesions dosed and failed,
    the median absolute difference of mean dose (%), V70 and V100 (points), the quartiles of each difference,
    the share of lesions within 10, Pearson's r and the Passing-Bablok slope and intercept of registered on
    reference."""
    summary = []
    for modality, groups in comparisons.items():
        for name, comparison in groups.items():
            row: Row = {"modality": modality, "method_name": name,
                        "lesions": len(next(iter(comparison.metrics.values())).difference),
                        "skipped": len(comparison.skipped)}
            for metric, result in comparison.metrics.items():
                key = metric.replace(" ", "_").lower()
                row[f"median_abs_{key}_difference"] = float(np.median(np.abs(result.difference)))
                row[f"{key}_difference_quartiles"] = "/".join(f"{q:.2f}" for q in result.quartiles)
                row[f"{key}_within_10"] = result.small_difference_fraction
                row[f"{key}_pearson_r"] = result.pearson.r if result.pearson is not None else None
                fit = result.passing_bablok
                row[f"{key}_pb_slope"] = fit.slope if fit is not None else None
                row[f"{key}_pb_intercept"] = fit.intercept if fit is not None else None
            summary.append(row)
    return summary
