"""The methods of the registration benchmark, each run in a fresh process on a pair saved to disk.

Peers, with the settings a careful user would give them:

- ``elastix`` (itk-elastix): the default affine and B-spline parameter maps (Mattes mutual information).
- ``ants`` (ANTsPy): ``SyN`` with Mattes mutual information for the affine and the SyN stage; CT numbers
  shifted by +1024 so that every intensity is positive.

Ours: the three presets with their default settings, the same for every pair; the ``image`` preset
works on the reference liver plus its margin, as ``sirtreg register --reference-liver`` does.

Every method returns the reference->floating displacement field on the reference grid; one evaluation
code then scores them all. Time is the registration alone: modules imported and images in memory
before the clock starts, the field out when it stops.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from memory import peak_memory_mb

PEERS = ("elastix", "ants")
OURS = ("ours image", "ours liver", "ours liver+landmarks")


def _positive(volume):
    """The intensities a careful ANTs user would give it: CT numbers shifted to >= 0 (MR stays as it is)."""
    array = volume.array.astype(np.float32)
    return np.clip(array + 1024.0, 0.0, None) if volume.modality == "CT" else np.clip(array, 0.0, None)


def _itk_image(volume):
    import itk

    image = itk.image_from_array(np.ascontiguousarray(volume.array, dtype=np.float32))
    image.SetSpacing([float(s) for s in volume.grid.spacing_mm])
    image.SetOrigin([float(o) for o in volume.grid.origin_mm])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(volume.grid.direction_matrix)))
    return image


def elastix(reference, floating):
    import itk

    from sirtreg.geometry import DisplacementField

    fixed, moving = _itk_image(reference), _itk_image(floating)
    parameters = itk.ParameterObject.New()
    for kind in ("affine", "bspline"):
        parameters.AddParameterMap(parameters.GetDefaultParameterMap(kind, 3))
    # fixed = reference, moving = floating: elastix's transform maps reference points to floating points
    _, transform = itk.elastix_registration_method(fixed, moving, parameter_object=parameters,
                                                   log_to_console=False)
    with tempfile.TemporaryDirectory() as folder:  # transformix writes a copy of the field there
        field = itk.transformix_deformation_field(moving, transform, output_directory=folder)
    return DisplacementField(np.asarray(itk.array_from_image(field), dtype=np.float32), reference.grid)


def _ants_image(volume):
    import ants

    return ants.from_numpy(np.ascontiguousarray(_positive(volume).transpose(2, 1, 0)),
                           origin=[float(o) for o in volume.grid.origin_mm],
                           spacing=[float(s) for s in volume.grid.spacing_mm],
                           direction=np.asarray(volume.grid.direction_matrix))


def ants(reference, floating):
    import ants as antspy

    from sirtreg.io import read_displacement

    fixed, moving = _ants_image(reference), _ants_image(floating)
    result = antspy.registration(fixed=fixed, moving=moving, type_of_transform="SyN", aff_metric="mattes",
                                 syn_metric="mattes")
    with tempfile.TemporaryDirectory() as folder:
        # the forward transforms, composed into one field on the fixed (reference) grid: fixed -> moving points
        composed = antspy.apply_transforms(fixed=fixed, moving=moving, transformlist=result["fwdtransforms"],
                                           compose=str(Path(folder) / "composed_"))
        field = read_displacement(composed)
    field.grid.require_same(reference.grid, what="the ANTs field and the reference")
    return field


def ours(pair, guidance: str, nonrigid: dict | None = None):
    """Our preset ``guidance`` with its defaults, or with the non-rigid settings ``nonrigid`` changed (a label
    weight does not apply to the image preset)."""
    from dataclasses import replace

    from sirtreg.register import Annotated, preset, register_guided

    changes = {k: v for k, v in (nonrigid or {}).items() if not (guidance == "image" and k == "label_weight")}
    settings = preset(guidance)  # type: ignore[arg-type]
    settings = replace(settings, nonrigid=replace(settings.nonrigid, **changes))
    result = register_guided(Annotated(pair.reference, pair.reference_liver, pair.reference_landmarks),
                             Annotated(pair.floating, pair.floating_liver, pair.floating_landmarks), settings)
    return result.transform


def _run(method: str, load, threads: int, nonrigid: dict | None, queue) -> None:
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import importlib

    import torch

    torch.set_num_threads(threads)
    pair = load()
    # imports are not registration time: itk takes about 10 s, ants 2 s, sirtreg.register 0.5 s
    importlib.import_module({"elastix": "itk", "ants": "ants"}.get(method, "sirtreg.register"))
    if method == "elastix":
        import itk

        itk.ParameterObject  # noqa: B018 - itk loads its modules lazily, at first use
    start = time.perf_counter()
    try:
        if method in PEERS:
            field = {"elastix": elastix, "ants": ants}[method](pair.reference, pair.floating)
        else:
            field = ours(pair, method.removeprefix("ours "), nonrigid)
        problem = ""
    except Exception as exc:  # noqa: BLE001 - a failing method is a row in the table, not the end of the run
        field, problem = None, f"{type(exc).__name__}: {exc}"
    seconds = time.perf_counter() - start
    queue.put({"field": field, "seconds": seconds, "problem": problem, "peak_mb": peak_memory_mb()})


def run_method(method: str, load, threads: int, nonrigid: dict | None = None) -> dict:
    """Run ``method`` on the pair that ``load()`` returns, in a fresh process on ``threads`` threads
    (``nonrigid``: changes to our non-rigid settings)."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_run, args=(method, load, threads, nonrigid, queue))
    process.start()
    outcome = queue.get()
    process.join()
    return outcome
