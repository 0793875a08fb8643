"""Liver segmentation accuracy, runtime and peak memory on the real example images.

Usage: python benchmarks/segmentation.py [--data DIR] [--overlays DIR] [--device cpu|cuda]

DIR defaults to $SIRTREG_DATA, else shared/data beside the repository. Each
case runs in a fresh process so that its peak resident memory is its own.
Prints one line per case: DSC against the reference liver label, volumes,
total and per-step wall-clock time, peak memory. Timings are indicative:
they depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
from memory import peak_memory_mb

CASES = {  # name: (image, reference labels, liver label value, modality)
    "ct": ("totalsegmentator/example_ct.nii.gz", "totalsegmentator/example_seg_fast_force_split.nii.gz", 5, "ct"),
    "mr": ("totalsegmentator/example_mr_sm.nii.gz", "totalsegmentator/example_seg_mr.nii.gz", 5, "mr"),
}


def _run(name: str, data: Path, overlays: Path | None, device: str | None, queue) -> None:
    import torch

    from sirtreg.errors import SirtregError
    from sirtreg.io import read_image, read_labels
    from sirtreg.segment.inference import segment_liver

    image_file, label_file, value, modality = CASES[name]
    image, labels = read_image(data / image_file), read_labels(data / label_file)
    reference = labels.array == value
    marks: dict[str, float] = {}
    start = time.perf_counter()

    def progress(step: str, fraction: float) -> None:
        marks.setdefault(step, time.perf_counter() - start)

    try:
        mask = segment_liver(image, modality=modality, device=device, progress=progress).array == 1
        problem = ""
    except SirtregError as exc:
        mask, problem = np.zeros_like(reference), str(exc)
    seconds = time.perf_counter() - start
    dsc = 2.0 * np.count_nonzero(mask & reference) / (np.count_nonzero(mask) + np.count_nonzero(reference))
    if overlays is not None:
        _overlay(image.array, mask, reference, overlays / f"segmentation_{name}.png")
    queue.put({
        "case": name, "dsc": dsc, "volume_ml": np.count_nonzero(mask) * image.grid.voxel_volume_ml,
        "reference_ml": np.count_nonzero(reference) * image.grid.voxel_volume_ml, "seconds": seconds,
        "preprocess_s": marks.get("network", seconds) - marks.get("preprocess", 0.0),
        "network_s": marks.get("postprocess", seconds) - marks.get("network", seconds),
        "peak_mb": peak_memory_mb(), "threads": torch.get_num_threads(),
        "image": image.describe(), "problem": problem,
    })


def _overlay(array: np.ndarray, mask: np.ndarray, reference: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = int(np.argmax(reference.sum(axis=(1, 2))))
    j = int(np.argmax(reference.sum(axis=(0, 2))))
    figure, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, image, ours, ref, title, origin in (
        (axes[0], array[k], mask[k], reference[k], f"axial slice {k}", "upper"),
        (axes[1], array[:, j], mask[:, j], reference[:, j], f"coronal row {j}", "lower"),
    ):
        ax.imshow(image, cmap="gray", origin=origin)
        if ref.any():
            ax.contour(ref, [0.5], colors="lime", linewidths=1)
        if ours.any():
            ax.contour(ours, [0.5], colors="red", linewidths=1)
        ax.set_title(f"{title}: reference green, CNN red")
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("SIRTREG_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=Path(default))
    parser.add_argument("--overlays", type=Path, default=None)
    parser.add_argument("--device", default=None)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    for name in args.cases:
        queue = context.Queue()
        worker = context.Process(target=_run, args=(name, args.data, args.overlays, args.device, queue))
        worker.start()
        result = queue.get()
        worker.join()
        line = (f"{result['case']}: DSC {result['dsc']:.3f}, volume {result['volume_ml']:.0f} mL "
                f"(reference {result['reference_ml']:.0f} mL), {result['seconds']:.1f} s "
                f"(preprocess {result['preprocess_s']:.1f} s, network {result['network_s']:.1f} s, "
                f"{result['threads']} threads), peak {result['peak_mb']:.0f} MB; {result['image']}")
        print(line + (f"; {result['problem']}" if result["problem"] else ""))


if __name__ == "__main__":
    main()
