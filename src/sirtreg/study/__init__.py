"""Cohort studies: the cohort manifest, a cohort of digital patients, and registration studies.

:mod:`.manifest` reads, checks and writes the YAML file that lists a cohort's
patients, images, annotations, activities and train/test split;
:mod:`.cohort` writes a cohort of digital patients with its manifest;
:mod:`.methods` names the registration methods compared in the paper;
:mod:`.task` registers one floating image of a patient with one method;
:mod:`.runner` runs every registration of a cohort on Dask into one resumable
results table, summarises it and tunes the weights by grid search;
:mod:`.dose` doses the lesions each method carries onto the MAA CT (the paper's dose experiment).
"""

from sirtreg.study.cnn_masks import finetune_cnn, training_cases
from sirtreg.study.cohort import COHORT_MANIFEST_NAME, write_phantom_cohort
from sirtreg.study.manifest import (
    COMPUTE,
    MODALITIES,
    SPLITS,
    Cohort,
    FloatingImage,
    Patient,
    ReferenceImage,
    SpectImage,
    read_manifest,
    write_manifest,
)
from sirtreg.study.methods import (
    IMAGE,
    IMAGE_AFFINE,
    LIVER,
    LIVER_AFFINE,
    LIVER_AFFINE_IMAGE,
    LIVER_LANDMARKS,
    PAPER_METHODS,
    Method,
    grid_methods,
)
from sirtreg.study.runner import (
    COLUMNS,
    GridSearch,
    best_methods,
    grid_search,
    read_results,
    run_registration_task,
    run_study,
    summarise,
)
from sirtreg.study.task import Task, engine_settings_id, study_tasks

__all__ = [
    "COHORT_MANIFEST_NAME",
    "COLUMNS",
    "COMPUTE",
    "IMAGE",
    "IMAGE_AFFINE",
    "LIVER",
    "LIVER_AFFINE",
    "LIVER_AFFINE_IMAGE",
    "LIVER_LANDMARKS",
    "MODALITIES",
    "PAPER_METHODS",
    "SPLITS",
    "Cohort",
    "FloatingImage",
    "GridSearch",
    "Method",
    "Patient",
    "ReferenceImage",
    "SpectImage",
    "Task",
    "best_methods",
    "engine_settings_id",
    "finetune_cnn",
    "grid_methods",
    "grid_search",
    "read_manifest",
    "read_results",
    "run_registration_task",
    "run_study",
    "study_tasks",
    "summarise",
    "training_cases",
    "write_manifest",
    "write_phantom_cohort",
]
