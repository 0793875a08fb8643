"""The command line's allocator setting: taken where glibc offers it, left to the user's environment."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = "from sirtreg.allocator import reuse_freed_memory; print(reuse_freed_memory())"


def _run(environment: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, env=environment, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is for glibc on Linux")
def test_the_setting_is_taken_unless_the_environment_sets_the_allocator(monkeypatch):
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert _run(clean) in ("True", "False")  # False only on a C library without mallopt (e.g. musl)
    assert _run({**clean, "MALLOC_ARENA_MAX": "2"}) == "False"  # the user's own allocator settings win
