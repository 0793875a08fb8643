"""Output folders as a unit: staged, locked, listed in a manifest, replaced only when they are ours."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.output_folder import MANIFEST_NAME, OutputFolder, save_figure, verify_folder


def _write(out: OutputFolder, files: dict[str, str]) -> None:
    for name, text in files.items():
        (out.staging / name).parent.mkdir(parents=True, exist_ok=True)
        (out.staging / name).write_text(text)


def test_a_finished_folder_is_renamed_into_place_with_its_manifest(tmp_path):
    with OutputFolder(tmp_path / "out", command="test") as out:
        assert out.staging.is_dir() and not (tmp_path / "out").exists() and out.lock.is_file()
        _write(out, {"a.txt": "one", "sub/b.txt": "two"})
    manifest = json.loads((tmp_path / "out" / MANIFEST_NAME).read_text())
    assert set(manifest["files"]) == {"a.txt", "sub/b.txt"} and manifest["command"] == "test"
    assert not out.staging.exists() and not out.lock.exists()
    verify_folder(tmp_path / "out", what="test folder")
    verify_folder(tmp_path / "out" / "sub", what="test folder")  # a part of a unit: the manifest above covers it


def test_an_error_inside_leaves_nothing_and_keeps_the_earlier_output(tmp_path):
    with OutputFolder(tmp_path / "out", command="test") as out:
        _write(out, {"a.txt": "first"})
    with pytest.raises(RuntimeError), OutputFolder(tmp_path / "out", overwrite=True, command="test") as out:
        _write(out, {"a.txt": "second, half written"})
        raise RuntimeError("interrupted")
    assert (tmp_path / "out" / "a.txt").read_text() == "first"
    assert not out.staging.exists() and not out.lock.exists()


def test_a_second_command_into_a_locked_folder_is_refused_at_once(tmp_path):
    with OutputFolder(tmp_path / "out", command="first") as first:
        _write(first, {"a.txt": "first"})
        with pytest.raises(OutputExistsError, match=f"being written by process {os.getpid()}"):
            with OutputFolder(tmp_path / "out", command="second"):
                pass
        assert (first.staging / "a.txt").read_text() == "first"  # the live staging folder is untouched
    assert (tmp_path / "out" / "a.txt").read_text() == "first"


def test_the_lock_of_a_killed_command_is_cleared(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder = OutputFolder(tmp_path / "out", command="test")
    folder.lock.write_text(json.dumps({"pid": int(dead.stdout), "host": os.uname().nodename}))
    folder.staging.mkdir()
    (folder.staging / "half.txt").write_text("left by a killed command")
    with OutputFolder(tmp_path / "out", command="test") as out:
        assert not (out.staging / "half.txt").exists()
        _write(out, {"a.txt": "new"})
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", MANIFEST_NAME]


def test_overwrite_replaces_only_a_folder_sirtreg_wrote_and_nothing_else(tmp_path):
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "thesis.docx").write_text("keep me")
    with pytest.raises(OutputExistsError, match="replaces only a folder sirtreg wrote"):
        OutputFolder(mine, overwrite=True, command="test").check()
    with OutputFolder(tmp_path / "out", command="test") as out:
        _write(out, {"a.txt": "first"})
    (tmp_path / "out" / "added by hand.txt").write_text("keep me too")
    with pytest.raises(OutputExistsError, match=r"holds files sirtreg did not write \(added by hand.txt\)"):
        OutputFolder(tmp_path / "out", overwrite=True, command="test").check()
    assert (mine / "thesis.docx").read_text() == "keep me"


def test_an_output_holding_or_inside_an_input_is_refused(tmp_path):
    (tmp_path / "out").mkdir()
    spect = tmp_path / "out" / "dose.nii.gz"
    spect.write_bytes(b"input")
    with pytest.raises(OutputExistsError, match="holds the input"):
        OutputFolder(tmp_path / "out", overwrite=True, inputs=[spect], command="dose").check()
    with pytest.raises(OutputExistsError, match="lies inside the input folder"):
        OutputFolder(tmp_path / "out" / "sub", inputs=[tmp_path / "out"], command="dose").check()
    assert spect.read_bytes() == b"input"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root may write any folder")
def test_an_unwritable_parent_is_refused_before_any_work(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(OutputExistsError, match="is not writable"):
            OutputFolder(locked / "out", command="test").check()
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("damage, message", [
    ("no manifest", "has no sirtreg-manifest.json"),
    ("extra file", "holds files its manifest does not list"),
    ("changed file", "a.txt differs from the file that was written"),
    ("missing file", "a.txt, listed in its manifest, is missing"),
    ("damaged manifest", "manifest .* is damaged"),
])
def test_an_incomplete_or_mixed_folder_is_not_trusted(tmp_path, damage, message):
    with OutputFolder(tmp_path / "out", command="test") as out:
        _write(out, {"a.txt": "first", "b.txt": "second"})
    folder = tmp_path / "out"
    {"no manifest": lambda: (folder / MANIFEST_NAME).unlink(),
     "extra file": lambda: (folder / "displacement.nii.gz").write_text("older"),
     "changed file": lambda: (folder / "a.txt").write_text("FIRST"),
     "missing file": lambda: (folder / "a.txt").unlink(),
     "damaged manifest": lambda: (folder / MANIFEST_NAME).write_text("{")}[damage]()
    with pytest.raises(InputError, match=message):
        verify_folder(folder, what="test folder")


def test_a_figure_that_fails_to_save_leaves_no_file(tmp_path):
    class Failing:
        def savefig(self, path, **options):
            with open(path, "wb") as handle:
                handle.write(b"\x89PNG half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_figure(Failing(), tmp_path / "overlay.png")
    assert list(tmp_path.iterdir()) == []
