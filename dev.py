#!/usr/bin/env python3
"""Set up the project's virtual environment and run the demo or the tests.

    python3 dev.py demo     # installs what is needed, then runs `sirtreg demo`
    python3 dev.py test     # installs what is needed, then runs the test suite

Needs only Python >= 3.11. The environment lives in `.venv/` in the repository
and is reinstalled when pyproject.toml changes. PyTorch is pinned to the CPU
release 2.13.0 by a constraints file of the install, so that no dependency can
pull a newer or a CUDA build (on a machine without a local CPU wheel, point
PIP_EXTRA_INDEX_URL at PyTorch's CPU wheel index). pip installs without
compiling; the bytecode is then compiled on every core at once (pip compiles on
one, which took a quarter of the install). Compiled ahead, not at first import:
where PYTHONDONTWRITEBYTECODE is set, every process would compile PyTorch again
(its import: 3 s from bytecode, 8 s from source).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
TORCH = "torch==2.13.0"
STAMP = VENV / ".sirtreg-installed"
NO_TESTS_COLLECTED = 5
# Debian packages some tests use, and the programs each provides
TEST_TOOLS = {"chromium": ("chromium",), "chromium-driver": ("chromedriver",), "dicom3tools": ("dciodvfy",)}
TOOLS_INSTALL_S = 600  # at most, for apt-get update and install together
# installed packages left uncompiled: PyTorch's symbolic-maths and graph dependencies (for torch.compile, which
# sirtreg does not use) and setuptools: seconds of the install saved
NOT_COMPILED = ("sympy", "networkx", "setuptools")
TEST_WORKERS = 4  # test processes at most: each builds the session's shared inputs (patient, cohort) once


def _fingerprint() -> str:
    text = (ROOT / "pyproject.toml").read_bytes() + TORCH.encode()
    return hashlib.sha256(text).hexdigest()


def _pip(*args: str) -> None:
    subprocess.run([str(PYTHON), "-m", "pip", "install", "--disable-pip-version-check", *args], check=True)


def ensure_environment() -> None:
    """Create .venv and install the project (with test extras) unless already up to date."""
    if sys.version_info < (3, 11):
        sys.exit(f"sirtreg needs Python >= 3.11, this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    constraints = VENV / "constraints.txt"
    constraints.write_text(TORCH + "\n")
    print(f"installing {TORCH} (CPU) and sirtreg into {VENV}", flush=True)
    _pip("--quiet", "--no-compile", "-c", str(constraints), TORCH, "-e", f"{ROOT}[test]")
    _compile_installed()
    STAMP.write_text(_fingerprint())


def _compile_installed() -> None:
    """Byte-compile the installed packages on every core (a file that does not compile is left, as pip does),
    but for :data:`NOT_COMPILED`, which sirtreg and its tests never import (they would compile at first use)."""
    folders = subprocess.run([str(PYTHON), "-c", "import sysconfig; print(sysconfig.get_path('purelib')); "
                              "print(sysconfig.get_path('platlib'))"], check=True, capture_output=True,
                             text=True).stdout.split("\n")
    skipped = r"[/\\](" + "|".join(NOT_COMPILED) + r")[/\\]"
    for folder in dict.fromkeys(f for f in folders if f):
        subprocess.run([str(PYTHON), "-m", "compileall", "-q", "-j", "0", "-x", skipped, folder],
                       stdout=subprocess.DEVNULL, check=False)


def ensure_test_tools() -> None:
    """In CI, install with apt-get what some tests use when it is missing (best effort: without it they skip):
    Chromium and its driver (the report's browser test), dicom3tools (the DICOM validator dciodvfy)."""
    in_ci = os.environ.get("CI", "").lower() not in ("", "0", "false")
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0
    missing = [package for package, programs in TEST_TOOLS.items()
               if not all(shutil.which(program) for program in programs)]
    if not (in_ci and missing and as_root and shutil.which("apt-get")):
        return
    print(f"installing {', '.join(missing)} for the tests that use them", flush=True)
    deadline = time.monotonic() + TOOLS_INSTALL_S
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        for command in (["apt-get", "update", "-qq"],
                        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing]):
            subprocess.run(command, check=True, env=environment, timeout=max(1.0, deadline - time.monotonic()),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    except (OSError, subprocess.SubprocessError) as exc:
        stderr = exc.stderr if isinstance(exc, subprocess.CalledProcessError) and exc.stderr else ""
        detail = stderr.strip().splitlines()[-1:]
        print(f"could not install {', '.join(missing)} ({exc}{'; ' + detail[0] if detail else ''}); the tests "
              "that use them will skip", file=sys.stderr, flush=True)


def _workers(arguments: list[str]) -> list[str]:
    """pytest-xdist options: one test process per core (at most :data:`TEST_WORKERS`), each on its own cores
    (tests/conftest.py); none when the arguments choose themselves or one core is all.

    Each test module runs whole on one worker, so that its module-scoped fixtures (a registered patient, a
    study) are built once (split between workers, each built them: 40 s of a 6-minute suite), and the modules
    are handed out in the order of their longest test (tests/conftest.py sorts them), as workers come free."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if cores < 2 or any(a == "-n" or a.startswith(("-n", "--numprocesses", "--dist")) or a == "no:xdist"
                        for a in arguments):
        return []
    return ["-n", str(min(cores, TEST_WORKERS)), "--dist", "loadfile", "--no-loadscope-reorder"]


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"demo", "test"}:
        print(__doc__)
        return 2
    ensure_environment()
    command, rest = argv[0], argv[1:]
    if command == "demo":
        return subprocess.run([str(BIN / "sirtreg"), "demo", *rest], cwd=ROOT).returncode
    ensure_test_tools()
    code = subprocess.run([str(PYTHON), "-m", "pytest", *_workers(rest), *rest], cwd=ROOT).returncode
    if code == NO_TESTS_COLLECTED:
        print("pytest collected no tests: the test suite is missing or was filtered away", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
