"""Study benchmark: wall time of a weight grid search on a phantom cohort, run four ways in one run.

Usage: python benchmarks/study.py [--patients 20] [--resolution fast] [--guidance liver]
                                  [--grid wI=0,0.25,0.5,1,2 --grid wS=0,0.5,1,2,4] [--workers 2]

The same grid search (every grid point on every floating image of the train split,
the paper's tuning) is run

- ``loop``: one process calling :func:`sirtreg.study.run_registration_task` task
  after task, PyTorch on every core: what a user without Dask would write;
- ``local, 1 worker`` and ``local, N workers``: :func:`sirtreg.study.grid_search`
  on a new local Dask cluster of worker processes (one thread each);
- ``external scheduler, N workers``: the same on a ``dask scheduler`` and
  ``dask worker`` processes started here on 127.0.0.1, as on a cluster.

Each Dask run writes its own results table; the output shows wall time (cohort writing
and process start-up of the external cluster excluded, Dask's own start-up
included), registrations per minute, the speed-up over the loop and the weights
each run chose (they must agree: the registrations are deterministic). Timings
depend on the machine and on what else runs on it: run it on an idle one.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

DEFAULT_GRID = ("wI=0,0.25,0.5,1,2", "wS=0,0.5,1,2,4")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def external_cluster(workers: int):
    """A ``dask scheduler`` and ``workers`` single-threaded ``dask worker`` processes on 127.0.0.1; yields
    the scheduler address once every worker has joined."""
    from distributed import Client

    dask = shutil.which("dask", path=os.path.dirname(sys.executable)) or "dask"
    address = f"tcp://127.0.0.1:{_free_port()}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    processes = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
                                   "--no-dashboard"], **quiet)]
    try:
        processes.append(subprocess.Popen([dask, "worker", address, "--nworkers", str(workers), "--nthreads", "1",
                                           "--no-dashboard"], **quiet))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(workers, timeout=120)
        yield address
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait(timeout=30)


def run_loop(manifest: Path, grid, guidance: str):
    """The grid search as a plain loop in this process; returns the chosen method per modality and the count."""
    from sirtreg.study import best_methods, grid_methods, read_manifest, run_registration_task, study_tasks, summarise

    cohort = read_manifest(manifest)
    methods = grid_methods(grid, guidance=guidance)
    rows = [run_registration_task(cohort, task) for task in study_tasks(cohort, methods, split="train")]
    return best_methods(summarise(rows), methods), len(rows)


def run_dask(manifest: Path, grid, guidance: str, table: Path, *, workers=None, scheduler=None):
    from sirtreg.study import grid_search

    search = grid_search(manifest, grid, table, guidance=guidance, workers=workers, scheduler=scheduler)
    return search.best, sum(row["n"] + row["failed"] for row in search.summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--resolution", choices=("full", "fast"), default="fast")
    parser.add_argument("--guidance", default="liver")
    parser.add_argument("--grid", action="append", help="e.g. wI=0,0.5,1 (repeat); default: a 5 x 5 wI x wS grid")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", nargs="+", default=["loop", "local-1", "local-n", "external"],
                        choices=["loop", "local-1", "local-n", "external"])
    args = parser.parse_args()
    from sirtreg.study.methods import parse_grid

    grid = parse_grid(args.grid or list(DEFAULT_GRID))

    from sirtreg.study import write_phantom_cohort

    with tempfile.TemporaryDirectory(prefix="sirtreg-study-bench-") as folder:
        folder = Path(folder)
        manifest = write_phantom_cohort(folder / "cohort", patients=args.patients, resolution=args.resolution)
        points = 1
        for values in grid.values():
            points *= len(values)
        print(f"{args.patients} phantom patients ({args.resolution} resolution), {args.guidance} guidance, "
              f"grid of {points} weight sets on the train split; {os.cpu_count()} cores")
        header = f"{'run':<32} {'registrations':>13} {'wall s':>8} {'per min':>8} {'x loop':>7}  chosen (CT; MR)"
        print(header)
        print("-" * len(header))
        loop_seconds = float("nan")
        for run in args.runs:
            table = folder / f"{run}.csv"
            if run == "external":
                label = f"external scheduler, {args.workers} workers"
                with external_cluster(args.workers) as address:
                    start = time.perf_counter()
                    best, count = run_dask(manifest, grid, args.guidance, table, scheduler=address)
                    seconds = time.perf_counter() - start
            else:
                start = time.perf_counter()
                if run == "loop":
                    label = "loop (no Dask, one process)"
                    best, count = run_loop(manifest, grid, args.guidance)
                else:
                    workers = 1 if run == "local-1" else args.workers
                    label = f"local, {workers} worker{'s' if workers > 1 else ''}"
                    best, count = run_dask(manifest, grid, args.guidance, table, workers=workers)
                seconds = time.perf_counter() - start
            if run == "loop":
                loop_seconds = seconds
            chosen = "; ".join(f"wI {m.image_weight:g} wS {m.label_weight:g}" for m in best.values())
            print(f"{label:<32} {count:>13} {seconds:>8.1f} {60 * count / seconds:>8.1f} "
                  f"{loop_seconds / seconds:>7.2f}  {chosen}", flush=True)


if __name__ == "__main__":
    main()
