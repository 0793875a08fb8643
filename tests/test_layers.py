"""The package's layering and the independence of its command modules (pyproject.toml, [tool.importlinter]):
kept by the code, and live.

A module may import from its own layer and the layers below it, never from one above
(cli -> study/pipeline/report/review -> yaml_input -> io/metrics/register/dosimetry/segment/phantom
-> geometry and the shared helpers -> errors/progress).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(package_parent: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the project's contract on the ``sirtreg`` package found in ``package_parent``."""
    if not LINT_IMPORTS.exists():
        pytest.skip("import-linter is needed (pip install -e '.[test]')")
    environment = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", str(ROOT / "pyproject.toml")], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_the_code_keeps_its_layers(tmp_path):
    result = _lint(ROOT / "src", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_the_contract_is_live_a_lower_layer_importing_a_higher_one_breaks_it(tmp_path):
    """A copy of the package whose geometry module imports the CLI breaks the contract, and says where."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "sirtreg", copy / "sirtreg", ignore=shutil.ignore_patterns("__pycache__"))
    geometry = copy / "sirtreg" / "geometry.py"
    geometry.write_text(geometry.read_text(encoding="utf-8") + "\nimport sirtreg.cli  # noqa: E402\n", encoding="utf-8")
    result = _lint(copy, tmp_path)
    assert result.returncode != 0
    assert "sirtreg.geometry is not allowed to import sirtreg.cli" in result.stdout, result.stdout


def test_a_command_module_importing_another_breaks_the_independence_of_commands(tmp_path):
    """Command modules share helpers (sirtreg.cli.app, .structures, .study_options), never each other's commands."""
    copy = tmp_path / "src"
    shutil.copytree(ROOT / "src" / "sirtreg", copy / "sirtreg", ignore=shutil.ignore_patterns("__pycache__"))
    dose_study = copy / "sirtreg" / "cli" / "dose_study.py"
    dose_study.write_text(dose_study.read_text(encoding="utf-8") + "\nimport sirtreg.cli.study  # noqa: E402\n",
                          encoding="utf-8")
    result = _lint(copy, tmp_path)
    assert result.returncode != 0
    assert "sirtreg.cli.dose_study is not allowed to import sirtreg.cli.study" in result.stdout, result.stdout
