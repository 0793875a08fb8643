"""Registration accuracy and time on pairs with known truth: our three presets beside itk-elastix and ANTsPy.

Usage:
    python benchmarks/registration.py [--half tuning|reporting|all] [--data DIR] [--public DIR] [--work DIR]
        [--pairs NAME ...] [--methods NAME ...] [--rerun NAME ...] [--threads N] [--nonrigid KEY=VALUE ...]
    python benchmarks/registration.py --check-peers [--data DIR] [--work DIR]

Needs the peers: ``.venv/bin/pip install -e ".[benchmark]"`` (itk-elastix, antspyx).

The pairs (``registration_pairs.py``): four real CT subjects, each moved by four known motions into a
CT or an MR-like floating scan (liver sliding against the body wall, repositioning, local B-spline
deformation, field-of-view truncation, thick slices), and the digital patient's contrast CT and MR.
``--data`` is the folder of the shared test data (TotalSegmentator example CT, Auer phantom), ``--public``
the folder of the public liver CTs (3D-IRCADb; see ``registration_pairs.py`` for the files and their
terms). Missing subjects are skipped with a line saying so.

The pairs are split into a tuning half and a reporting half, fixed before any tuning. Defaults are
chosen on the tuning half only; the reporting half proves them.

Per pair the table gives RMSD (the paper's: liver MSD and landmark mass-centre distances), RMSD / truth
floor (the floor: the floating labels brought back by the exact inverse of the known motion; what
remains is the field-of-view truncation, slice thickness and the independent redrawing of the floating
contours), RMSD / best peer, time, the field error (FE: the mean distance between the method's and the true
floating point of every reference liver voxel the floating scan shows, which no contour can flatter)
and the share of liver voxels whose Jacobian is <= 0. The summary
gives, per method, the median and the worst of those ratios, the median time and the slowest pair's
time over the method's median. Every method runs in a fresh process on ``--threads`` threads; results
are kept in ``--work``/results.csv, and peer rows are reused on the next run unless ``--rerun`` names
them (ours are always run again). Run it on an idle machine.

``--nonrigid`` changes our non-rigid settings for a tuning experiment, e.g. ``--nonrigid similarity=mi
levels_mm=8,5 iterations=40,20`` (the earlier defaults) or ``--nonrigid image_weight=0.5``; the defaults
are what runs without it.

``--check-peers`` first shows that each method recovers a known pure translation and a known smooth
warp of a real CT through the same field-reading code (the error of the returned transform at the liver
voxels, in mm).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import os
from pathlib import Path

import numpy as np
import registration_pairs as pairs
from registration_methods import OURS, PEERS, run_method

from sirtreg.register.config import NonRigidSettings

METHODS = ("unregistered", "truth", *PEERS, *OURS)
FIELDS = ("pair", "half", "method", "seconds", "peak_mb", "dsc", "msd_mm", "mcd_mm", "worst_mcd_mm", "rmsd_mm",
          "field_error_mm", "folding_percent", "problem")


# --- evaluation --------------------------------------------------------------------
def evaluate(pair, transform) -> dict:
    """Liver DSC and MSD, mean and worst landmark MCD, RMSD, the field error and % of liver voxels with
    Jacobian <= 0."""
    from sirtreg.errors import InputError
    from sirtreg.geometry import DisplacementField
    from sirtreg.metrics import jacobian_statistics
    from sirtreg.register import AffineTransform, registration_quality
    from sirtreg.resample import mask_box, resample

    if transform is None:  # unregistered: the identity
        transform = DisplacementField.zeros(pair.reference.grid.with_spacing((4.0,) * 3))
    if isinstance(transform, AffineTransform):
        transform = transform.displacement_on(pair.reference.grid.with_spacing((2.0,) * 3))
    try:
        quality = registration_quality(transform, reference_liver=pair.reference_liver,
                                       floating_liver=pair.floating_liver,
                                       reference_landmarks=pair.reference_landmarks,
                                       floating_landmarks=pair.floating_landmarks)
    except InputError as exc:  # a landmark carried out of the reference image
        return {"problem": f"lost: {exc}"}
    liver_on_field = resample(pair.reference_liver, transform.grid).array > 0
    start, stop = mask_box(liver_on_field, transform.grid, margin_mm=5.0)
    box = tuple(slice(a, b) for a, b in zip(start[::-1], stop[::-1]))
    liver_field = DisplacementField(transform.array[box], transform.grid.crop(start, stop))
    jacobian = jacobian_statistics(liver_field, liver_on_field[box])
    distances = list(quality.mcd_mm.values())
    return {"dsc": quality.liver_dsc, "msd_mm": quality.liver_msd_mm, "mcd_mm": float(np.mean(distances)),
            "worst_mcd_mm": float(np.max(distances)), "rmsd_mm": quality.rmsd_mm,
            "field_error_mm": field_error_mm(pair, transform), "folding_percent": jacobian.percent_folding}


def field_error_mm(pair, transform) -> float:
    """Mean distance (mm) between the method's and the true floating point of every reference liver voxel
    the floating scan shows: the registration error itself, which no contour can flatter."""
    k, j, i = np.nonzero(pair.reference_liver.array)
    step = max(1, k.size // 50_000)
    points = pair.reference_liver.grid.index_to_world(np.stack([i[::step], j[::step], k[::step]], axis=1))
    truth = pair.truth.transform_points(points)
    index = pair.floating.grid.world_to_index(truth)
    shown = np.all((index >= -0.5) & (index <= np.asarray(pair.floating.grid.size) - 0.5), axis=1)
    return float(np.linalg.norm(transform.transform_points(points[shown]) - truth[shown], axis=1).mean())


# --- results -----------------------------------------------------------------------
def read_results(path: Path) -> dict[tuple[str, str], dict]:
    if not path.is_file():
        return {}
    with path.open() as handle:
        return {(row["pair"], row["method"]): row for row in csv.DictReader(handle)}


def write_results(path: Path, rows: dict[tuple[str, str], dict]) -> None:
    temporary = path.with_suffix(".partial")
    with temporary.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        for key in sorted(rows):
            writer.writerow({name: rows[key].get(name, "") for name in FIELDS})
    os.replace(temporary, path)


def _float(row: dict | None, name: str) -> float:
    try:
        return float(row[name]) if row is not None else float("nan")
    except (KeyError, ValueError, TypeError):
        return float("nan")


def _cell(value: float, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if not np.isfinite(value) else f"{value:{width}.{digits}f}"


def best_peer(rows: dict, pair: str) -> float:
    """The lower peer RMSD of a pair (NaN when no peer ran on it)."""
    values = np.array([_float(rows.get((pair, m)), "rmsd_mm") for m in PEERS])
    return float(np.nanmin(values)) if np.any(np.isfinite(values)) else float("nan")


def print_pair_table(rows: dict, names: list[str], methods: list[str]) -> None:
    header = (f"{'pair':<20} {'method':<21} {'RMSD mm':>8} {'/floor':>7} {'/peer':>6} {'time s':>7} {'MSD mm':>7} "
              f"{'MCD mm':>7} {'worst':>6} {'FE mm':>6} {'J<=0 %':>7}")
    print(header)
    print("-" * len(header))
    for name in names:
        floor = _float(rows.get((name, "truth")), "rmsd_mm")
        peer = best_peer(rows, name)
        for method in methods:
            row = rows.get((name, method))
            if row is None:
                continue
            if row.get("problem"):
                print(f"{name:<20} {method:<21} failed: {row['problem'][:90]}")
                continue
            rmsd = _float(row, "rmsd_mm")
            print(f"{name:<20} {method:<21} {_cell(rmsd, 8, 2)} {_cell(rmsd / floor, 7, 2)} "
                  f"{_cell(rmsd / peer if np.isfinite(peer) else np.nan, 6, 2)} {_cell(_float(row, 'seconds'), 7, 1)} "
                  f"{_cell(_float(row, 'msd_mm'), 7, 2)} {_cell(_float(row, 'mcd_mm'), 7, 2)} "
                  f"{_cell(_float(row, 'worst_mcd_mm'), 6, 2)} {_cell(_float(row, 'field_error_mm'), 6, 2)} "
                  f"{_cell(_float(row, 'folding_percent'), 7, 2)}")
        print()


def _stat(function, values: np.ndarray) -> float:
    """``function`` (a NaN-ignoring statistic) of ``values``, NaN when none is finite."""
    return float(function(values)) if np.any(np.isfinite(values)) else float("nan")


def print_summary(rows: dict, names: list[str], methods: list[str], title: str) -> None:
    """Per method: median and worst RMSD / floor and / best peer, median time, slowest / median time,
    and (ours) ANTs time / our time on the median pair."""
    print(f"Summary, {title} ({len(names)} pairs)")
    header = (f"{'method':<21} {'RMSD med':>8} {'/floor med':>10} {'worst':>6} {'/peer med':>9} {'worst':>6} "
              f"{'<=peer':>6} {'<=ants':>6} {'FE med':>6} {'time med':>8} {'max/med':>7} {'ants/us':>7}")
    print(header)
    print("-" * len(header))
    for method in methods:
        if method == "truth":
            continue
        found = [(n, rows[(n, method)]) for n in names if (n, method) in rows and not rows[(n, method)].get("problem")]
        failed = sum(1 for n in names if (n, method) in rows and rows[(n, method)].get("problem"))
        if not found:
            continue
        rmsd = np.array([_float(r, "rmsd_mm") for _, r in found])
        floor = np.array([_float(rows.get((n, "truth")), "rmsd_mm") for n, _ in found])
        peer = np.array([best_peer(rows, n) for n, _ in found])
        ants = np.array([_float(rows.get((n, "ants")), "rmsd_mm") for n, _ in found])
        seconds = np.array([_float(r, "seconds") for _, r in found])
        field_error = np.array([_float(r, "field_error_mm") for _, r in found])
        ants_seconds = np.array([_float(rows.get((n, "ants")), "seconds") for n, _ in found])
        to_floor, to_peer = rmsd / floor, rmsd / peer
        median_time = _stat(np.nanmedian, seconds)  # the unregistered row has no time
        at_or_below = lambda other: f"{int(np.sum(rmsd <= other + 1e-9))}/{len(rmsd)}"  # noqa: E731
        print(f"{method:<21} {_cell(np.median(rmsd), 8, 2)} {_cell(np.median(to_floor), 10, 2)} "
              f"{_cell(np.max(to_floor), 6, 2)} {_cell(_stat(np.nanmedian, to_peer), 9, 2)} "
              f"{_cell(_stat(np.nanmax, to_peer), 6, 2)} {at_or_below(peer):>6} {at_or_below(ants):>6} "
              f"{_cell(_stat(np.nanmedian, field_error), 6, 2)} {_cell(median_time, 8, 1)} "
              f"{_cell(_stat(np.nanmax, seconds) / median_time, 7, 2)} "
              f"{_cell(_stat(np.nanmedian, ants_seconds / seconds), 7, 1)}"
              + (f"  ({failed} failed)" if failed else ""))
    print()


# --- the run -----------------------------------------------------------------------
def benchmark(args: argparse.Namespace) -> None:
    names = args.pairs or [n for n in pairs.all_pairs() if args.half == "all" or pairs.half_of(n) == args.half]
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.csv"
    rows = read_results(results_path)
    print(f"{args.threads} thread(s) per method; results in {results_path}", flush=True)
    done = []
    for name in names:
        subject = name.split("/")[0]
        if "/" in name and not pairs.subject_available(subject, args.data, args.public):
            print(f"{name}: skipped, subject {subject} not found under {args.data} or {args.public}")
            continue
        pair = pairs.cached_pair(name, args.data, args.public, args.work)
        load = functools.partial(pairs.Pair.load, name, args.work / "pairs" / name.replace("/", "_"))
        for method in args.methods:
            key = (name, method)
            reusable = method in PEERS and method not in args.rerun and key in rows
            if reusable:
                continue
            if method in ("unregistered", "truth"):
                outcome = {"field": pair.truth if method == "truth" else None, "seconds": np.nan, "peak_mb": np.nan,
                           "problem": ""}
            else:
                outcome = run_method(method, load, args.threads, args.nonrigid)
            row = {"pair": name, "half": pairs.half_of(name), "method": method, "seconds": outcome["seconds"],
                   "peak_mb": outcome["peak_mb"], "problem": outcome["problem"]}
            if not outcome["problem"]:
                row.update(evaluate(pair, outcome["field"]))
            rows[key] = row
            write_results(results_path, rows)
            print(f"  {name:<20} {method:<21} {_cell(_float(row, 'rmsd_mm'), 6, 2)} mm "
                  f"{_cell(_float(row, 'seconds'), 6, 1)} s {row.get('problem', '')[:80]}", flush=True)
        done.append(name)
    print()
    methods = [m for m in METHODS if any((n, m) in rows for n in done)]
    print_pair_table(rows, done, methods)
    for half in ("tuning", "reporting"):
        chosen = [n for n in done if pairs.half_of(n) == half]
        if chosen:
            print_summary(rows, chosen, methods, f"{half} half")


def check_peers(args: argparse.Namespace) -> None:
    """Each method against a known pure translation and a known smooth warp of a real CT (the Auer phantom)."""
    from sirtreg.geometry import DisplacementField
    from sirtreg.phantom.known_pair import KnownMotion, draw_motion, make_known_pair

    subject = pairs.prepare_subject("auer", args.data, args.public)
    reference, liver, lesions = subject.ct, subject.liver, subject.lesions
    rng = np.random.default_rng(3)
    shift = KnownMotion(np.eye(3), np.zeros(3), np.array([9.0, -6.0, 14.0]),
                        DisplacementField.zeros(reference.grid.with_spacing((8.0,) * 3)), {"translation_mm": 17.8})
    warp = draw_motion(reference, liver.array > 0, rng, bspline_mm=(5.0, 5.0))
    print("error of the returned transform at the reference liver's voxels, mm (mean / 95th percentile)")
    for title, motion in (("translation (9, -6, 14) mm", shift), ("smooth B-spline warp, 5 mm", warp)):
        known = make_known_pair(reference, liver, lesions, motion, modality="CT", spacing_mm=(2.0, 2.0, 2.5),
                                rng=rng, contour_sd_mm=0.0, reference_box=subject.reference_box)
        pair = pairs.Pair("check", known.reference, known.floating, known.reference_liver, known.floating_liver,
                          known.reference_lesions, known.floating_lesions, known.truth, {})
        folder = args.work / "pairs" / "check"
        pair.save(folder)
        load = functools.partial(pairs.Pair.load, "check", folder)
        k, j, i = np.nonzero(known.reference_liver.array)
        points = known.reference_liver.grid.index_to_world(np.stack([i, j, k], axis=1))
        truth = motion.reference_to_floating(points)
        before = np.linalg.norm(points - truth, axis=1)
        print(f"{title:<28} {'identity':<12} {before.mean():6.2f} / {np.percentile(before, 95):6.2f}")
        for method in ("ours liver", *PEERS):
            outcome = run_method(method, load, args.threads)
            if outcome["problem"]:
                print(f"{title:<28} {method:<12} failed: {outcome['problem']}")
                continue
            error = np.linalg.norm(outcome["field"].transform_points(points) - truth, axis=1)
            print(f"{title:<28} {method:<12} {error.mean():6.2f} / {np.percentile(error, 95):6.2f}", flush=True)


def setting(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` as (key, value): numbers as numbers, comma-separated lists as tuples, else text."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)

    def parse(item: str) -> object:
        for kind in (int, float):
            try:
                return kind(item)
            except ValueError:
                pass
        return item

    return key, tuple(parse(v) for v in value.split(",")) if "," in value else parse(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    here = Path(__file__).resolve().parent
    parser.add_argument("--data", type=Path,
                        default=Path(os.environ.get("SIRTREG_DATA", here.parents[1] / "shared" / "data")))
    parser.add_argument("--public", type=Path, default=Path(os.environ.get("SIRTREG_PUBLIC_DATA", "public-data")),
                        help="folder of the public liver CTs (3D-IRCADb; default $SIRTREG_PUBLIC_DATA)")
    parser.add_argument("--work", type=Path, default=Path("benchmark-registration"),
                        help="where pairs and results are kept between runs")
    parser.add_argument("--half", choices=("tuning", "reporting", "all"), default="all")
    parser.add_argument("--pairs", nargs="+", choices=pairs.all_pairs(), default=None)
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--rerun", nargs="+", choices=PEERS, default=[], help="peers to run again")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--nonrigid", nargs="+", type=setting, default=[], metavar="KEY=VALUE",
                        help="change our non-rigid settings (a tuning experiment), e.g. similarity=mi levels_mm=8,5")
    parser.add_argument("--check-peers", action="store_true")
    args = parser.parse_args()
    defaults = {f.name: f.default for f in dataclasses.fields(NonRigidSettings)}
    if set(dict(args.nonrigid)) - set(defaults):
        parser.error(f"unknown non-rigid setting(s) {', '.join(sorted(set(dict(args.nonrigid)) - set(defaults)))}; "
                     f"known: {', '.join(sorted(defaults))}")
    # a per-level setting given one value is a one-level schedule
    args.nonrigid = {key: (value,) if isinstance(defaults[key], tuple) and not isinstance(value, tuple) else value
                     for key, value in args.nonrigid}
    (check_peers if args.check_peers else benchmark)(args)


if __name__ == "__main__":
    main()
