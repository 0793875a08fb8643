"""Interrupted commands never leave an output that passes for a complete one.

`sirtreg register` and `sirtreg run` are started as real processes and interrupted (SIGINT, as by
Ctrl-C, or SIGKILL, as by the OOM killer or a cluster scheduler) at several points of their work,
found by watching the staging folder ``.<name>.partial``: as soon as it appears, once it holds the
first transform file, and once the warped image is written (while the overlay is drawn). After each
interrupt the final folder is absent or, had the command finished in the meantime, complete
(:func:`~sirtreg.output_folder.verify_folder`). After SIGINT nothing is left and the exit is quiet
(status 130, no traceback); after SIGKILL the staging folder and the lock may stay, the staging
folder is refused as incomplete, and the same command run again clears the stale lock and writes a
complete folder. The inputs are tiny synthetic images (48^3 voxels of 3 mm) and a plan with given
livers, so no CNN runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sirtreg.errors import InputError
from sirtreg.output_folder import MANIFEST_NAME, OutputFolder, verify_folder

# every case runs the command line in child processes (seconds each): all slow
pytestmark = [pytest.mark.skipif(os.name != "posix", reason="POSIX signals and process semantics"), pytest.mark.slow]

START_TIMEOUT_S = 120.0  # generous: two shared cores, other test runs beside us
EXIT_TIMEOUT_S = 60.0
POLL_S = 0.002
SIZE, SPACING_MM = 48, 3.0
SHIFT_MM = (6.0, -4.0, 3.0)  # of the floating image's blobs, (z, y, x)
BLOBS = ((70, 70, 70, 18, 100), (50, 90, 60, 8, 60), (95, 55, 85, 10, 80), (60, 60, 100, 6, 50))  # z, y, x, sigma, amp
POINTS = {"centre": [70.0, 70.0, 70.0], "blob": [60.0, 90.0, 50.0]}  # floating points (x, y, z), LPS mm
STALE_DISPLACEMENT_MM = (20.0, 0.0, 0.0)  # of the earlier non-rigid registration that --overwrite replaces
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
             "MPLBACKEND": "Agg", "COLUMNS": "200", "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1"}
"""One thread per child: a polling test beside a 2-thread OpenMP pool slows it several times on two cores."""


def _sirtreg_command() -> list[str]:
    """The console script beside this interpreter, else the same entry point through ``-c``."""
    script = shutil.which("sirtreg", path=str(Path(sys.executable).parent))
    if script:
        return [script]
    return [sys.executable, "-c", "import sys; from sirtreg.cli import app; sys.argv[0] = 'sirtreg'; sys.exit(app())"]


SIRTREG = _sirtreg_command()


def _default_sigint() -> None:
    """In the child before exec: SIGINT at its default, so Python installs its handler even when we were
    started with SIGINT ignored (a background job of a non-interactive shell)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


# --- inputs ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Inputs:
    folder: Path
    register_args: tuple[str, ...]  # without -o
    plan: Path
    points: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    """Blob images (the floating one shifted), ball livers, a SPECT, a one-image plan and a points file."""
    from sirtreg.geometry import Grid, LabelVolume, Volume
    from sirtreg.io import write_image
    from sirtreg.pipeline import ContourInput, FloatingInput, Plan, ReferenceInput, SpectInput, write_plan

    folder = tmp_path_factory.mktemp("inputs")
    grid = Grid((SIZE,) * 3, (SPACING_MM,) * 3, (0.0, 0.0, 0.0))
    z, y, x = np.meshgrid(*(np.arange(SIZE) * SPACING_MM,) * 3, indexing="ij")

    def image(shift: tuple[float, float, float]) -> np.ndarray:
        array = np.zeros(grid.shape)
        for cz, cy, cx, sigma, amplitude in BLOBS:
            squared = (z - cz - shift[0]) ** 2 + (y - cy - shift[1]) ** 2 + (x - cx - shift[2]) ** 2
            array += amplitude * np.exp(-squared / (2 * sigma**2))
        return array.astype(np.float32)

    def liver(shift: tuple[float, float, float]) -> LabelVolume:
        squared = (z - 70 - shift[0]) ** 2 + (y - 70 - shift[1]) ** 2 + (x - 70 - shift[2]) ** 2
        return LabelVolume.from_mask(squared < 25**2, grid, name="liver")

    paths = {name: folder / f"{name}.nii.gz" for name in ("reference", "floating", "reference_liver",
                                                           "floating_liver", "spect")}
    write_image(Volume(image((0.0, 0.0, 0.0)), grid, "CT"), paths["reference"])
    write_image(Volume(image(SHIFT_MM), grid, "CT"), paths["floating"])
    write_image(liver((0.0, 0.0, 0.0)), paths["reference_liver"])
    write_image(liver(SHIFT_MM), paths["floating_liver"])
    write_image(Volume(10 * image((0.0, 0.0, 0.0)), grid, "NM"), paths["spect"])
    plan = Plan(reference=ReferenceInput(paths["reference"], liver=ContourInput(paths["reference_liver"])),
                spect=SpectInput(paths["spect"], activity_gbq=2.0, isotope="Y-90"),
                floating=(FloatingInput(id="ct", modality="CT", image=paths["floating"],
                                        liver=ContourInput(paths["floating_liver"]), guidance="image"),))
    points = folder / "points.json"
    points.write_text(json.dumps(POINTS))
    return Inputs(folder, ("register", "--reference", str(paths["reference"]), "--floating", str(paths["floating"]),
                           "--guidance", "image"),
                  write_plan(plan, folder / "plan.yaml"), points)


# --- running and interrupting ---------------------------------------------------------------
@dataclass(frozen=True)
class Finished:
    returncode: int
    stderr: str
    pid: int


def _staging(out: Path) -> Path:
    return out.with_name(f".{out.name}.partial")


def _lock(out: Path) -> Path:
    return out.with_name(f".{out.name}.lock")


def _start(args: list[str] | tuple[str, ...]) -> subprocess.Popen[str]:
    return subprocess.Popen([*SIRTREG, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=CHILD_ENV, preexec_fn=_default_sigint)


@contextmanager
def _started(args: list[str] | tuple[str, ...]) -> Iterator[subprocess.Popen[str]]:
    """The command, started; killed on the way out if it still runs."""
    process = _start(args)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _run(args: list[str] | tuple[str, ...]) -> Finished:
    with _started(args) as process:
        _, stderr = process.communicate(timeout=START_TIMEOUT_S)
    return Finished(process.returncode, stderr, process.pid)


def _interrupt(args: list[str] | tuple[str, ...], out: Path, when: str, how: signal.Signals) -> Finished:
    """Start the command; send ``how`` once ``when`` (relative to the staging folder; "" for the folder itself)
    exists there. Fails if the command ends first or the file never appears; never leaves the process running."""
    target = _staging(out) / when if when else _staging(out)
    with _started(args) as process:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not target.exists():
            if process.poll() is not None:
                pytest.fail(f"sirtreg ended (status {process.returncode}) before {when or 'the staging folder'} "
                            f"appeared:\n{process.communicate()[1][-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{target} did not appear within {START_TIMEOUT_S:.0f} s")
            time.sleep(POLL_S)
        process.send_signal(how)
        try:
            _, stderr = process.communicate(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:  # a hang: faulthandler shows where each thread waits
            process.send_signal(signal.SIGABRT)
            pytest.fail(f"sirtreg still ran {EXIT_TIMEOUT_S:.0f} s after {how.name}:\n"
                        f"{process.communicate(timeout=START_TIMEOUT_S)[1][-6000:]}")
    return Finished(process.returncode, stderr, process.pid)


def _never_mistaken(out: Path, what: str) -> bool:
    """The final folder is absent (False) or complete (True): never a partial one."""
    if not out.exists():
        return False
    verify_folder(out, what=what)
    return True


def _assert_refused_as_incomplete(folder: Path, what: str) -> None:
    with pytest.raises(InputError, match=f"not a complete {what}: it has no {MANIFEST_NAME}"):
        verify_folder(folder, what=what)


def _assert_cleaned_up_after_sigint(out: Path, finished: Finished) -> None:
    assert finished.returncode == 130, finished.stderr[-3000:]
    assert "Traceback" not in finished.stderr and "KeyboardInterrupt" not in finished.stderr, finished.stderr
    assert not _staging(out).exists() and not _lock(out).exists()


def _assert_left_by_sigkill(out: Path, finished: Finished) -> None:
    """The killed command's lock (naming it) and its staging folder, without a manifest, stay."""
    assert finished.returncode == -signal.SIGKILL
    assert json.loads(_lock(out).read_text())["pid"] == finished.pid
    assert _staging(out).is_dir() and not (_staging(out) / MANIFEST_NAME).exists()


def _beside(out: Path) -> set[str]:
    return {p.name for p in out.parent.iterdir()}


# --- SIGINT: nothing is left ----------------------------------------------------------------
@pytest.mark.parametrize(("command", "when"), [
    pytest.param("register", "", id="register-staging-appears"),
    pytest.param("register", "warped_floating.nii.gz", id="register-writing-overlay"),
    pytest.param("run", "floating/ct/transform/affine.tfm", id="run-files-under-floating"),
])
def test_sigint_leaves_no_output_and_no_traceback(inputs, tmp_path, command, when):
    out = tmp_path / "out"
    if command == "register":
        args = [*inputs.register_args, "-o", str(out)]
    else:
        args = ["run", str(inputs.plan), "-o", str(out)]
    finished = _interrupt(args, out, when, signal.SIGINT)
    what = "registration folder" if command == "register" else "run folder"
    if _never_mistaken(out, what):  # finished just before the signal: complete, and nothing else beside it
        assert _beside(out) == {"out"}
        return
    _assert_cleaned_up_after_sigint(out, finished)
    assert not any(tmp_path.iterdir())


# --- SIGKILL: a staging folder that is refused, then a rerun that completes ------------------
def test_register_killed_at_each_point_is_refused_then_rerun_completes(inputs, tmp_path):
    from sirtreg.register import read_transform

    out = tmp_path / "out"
    args = [*inputs.register_args, "-o", str(out)]
    # each command after the first finds the stale lock of the one killed before it, and must clear it
    for when in ("", "affine.tfm", "warped_floating.nii.gz"):
        finished = _interrupt(args, out, when, signal.SIGKILL)
        if _never_mistaken(out, "registration folder"):
            pytest.fail(f"register finished before the kill at {when or 'staging'}; cannot test the kill")
        _assert_left_by_sigkill(out, finished)
        assert _beside(out) == {".out.partial", ".out.lock"}
        _assert_refused_as_incomplete(_staging(out), "registration folder")
        with pytest.raises(InputError, match="not a complete registration folder"):
            read_transform(_staging(out))
        if when == "affine.tfm":  # the transform is there, but warp refuses the folder
            warp = _run(["warp", str(_staging(out)), str(inputs.points), "-o", str(tmp_path / "x.json")])
            assert warp.returncode == 2 and "not a complete registration folder" in " ".join(warp.stderr.split())
            assert not (tmp_path / "x.json").exists()
    assert (_staging(out) / "warped_floating.nii.gz").is_file()  # the last kill came late in the work

    rerun = _run(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "interrupted command" in " ".join(rerun.stderr.split())  # the stale lock was cleared, and said so
    verify_folder(out, what="registration folder")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["affine.tfm", "displacement.nii.gz", "registration.json", "warped_floating.nii.gz", "overlay.png",
         MANIFEST_NAME])
    assert _beside(out) == {"out"}
    read_transform(out)


def test_run_killed_is_refused_then_rerun_completes(inputs, tmp_path):
    from sirtreg.geometry import DisplacementField
    from sirtreg.register import read_transform

    out = tmp_path / "out"
    args = ["run", str(inputs.plan), "-o", str(out)]
    finished = _interrupt(args, out, "floating/ct/transform/affine.tfm", signal.SIGKILL)
    if _never_mistaken(out, "run folder"):
        pytest.fail("run finished before the kill; cannot test the kill")
    _assert_left_by_sigkill(out, finished)
    _assert_refused_as_incomplete(_staging(out), "run folder")
    transform = _staging(out) / "floating" / "ct" / "transform"  # a part of the unit: no manifest above it either
    with pytest.raises(InputError, match="not a complete registration folder"):
        read_transform(transform)

    rerun = _run(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    verify_folder(out, what="run folder")
    assert (out / "results.json").is_file() and (out / "report.html").is_file()
    assert isinstance(read_transform(out / "floating" / "ct" / "transform"), DisplacementField)
    assert _beside(out) == {"out"}


# --- --overwrite --affine-only over a non-rigid registration ----------------------------------
def _earlier_nonrigid_registration(out: Path, reference: Path) -> None:
    """A registration folder as sirtreg writes it, whose displacement field moves every point by 20 mm."""
    from sirtreg.geometry import DisplacementField
    from sirtreg.io import read_image, write_displacement
    from sirtreg.register.transforms import AffineTransform, write_affine

    grid = read_image(reference).grid
    field = DisplacementField(np.broadcast_to(np.asarray(STALE_DISPLACEMENT_MM, np.float32), (*grid.shape, 3)), grid)
    with OutputFolder(out, command="register") as folder:
        write_affine(AffineTransform.identity(), folder.staging / "affine.tfm")
        write_displacement(field, folder.staging / "displacement.nii.gz")
        (folder.staging / "registration.json").write_text(json.dumps({"note": "earlier non-rigid registration"}))


def test_overwrite_affine_only_replaces_a_nonrigid_registration_whole(inputs, tmp_path):
    from sirtreg.register import map_floating_points, read_transform
    from sirtreg.register.transforms import AffineTransform, read_affine

    out = tmp_path / "out"
    _earlier_nonrigid_registration(out, inputs.folder / "reference.nii.gz")
    earlier = (out / MANIFEST_NAME).read_bytes()
    stale = map_floating_points(read_transform(out), np.asarray(list(POINTS.values())))
    args = [*inputs.register_args, "-o", str(out), "--overwrite", "--affine-only"]

    # killed half-way: the earlier registration stays, whole
    finished = _interrupt(args, out, "affine.tfm", signal.SIGKILL)
    _assert_left_by_sigkill(out, finished)
    verify_folder(out, what="registration folder")
    assert (out / MANIFEST_NAME).read_bytes() == earlier

    rerun = _run(args)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    verify_folder(out, what="registration folder")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["affine.tfm", "registration.json", "warped_floating.nii.gz", "overlay.png", MANIFEST_NAME])
    assert _beside(out) == {"out"}  # no staging, lock or .old folder beside it
    assert isinstance(read_transform(out), AffineTransform)

    warp = _run(["warp", str(out), str(inputs.points), "-o", str(tmp_path / "mapped.json")])
    assert warp.returncode == 0, warp.stderr[-3000:]
    mapped = json.loads((tmp_path / "mapped.json").read_text())
    assert list(mapped) == list(POINTS)
    expected = map_floating_points(read_affine(out / "affine.tfm"), np.asarray(list(POINTS.values())))
    np.testing.assert_allclose(np.asarray(list(mapped.values())), expected, atol=1e-3)  # written with 6+ digits
    assert np.all(np.linalg.norm(expected - stale, axis=1) > 10.0)  # far from what the stale field would give
