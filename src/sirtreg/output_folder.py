"""Output folders written as a unit: staged, locked, renamed into place, and described by a manifest.

A command that writes a folder does it through :class:`OutputFolder`::

    with OutputFolder(out_dir, overwrite=overwrite, inputs=[...], command="register") as out:
        ...  # write every file into `out.staging`, a new empty folder beside `out_dir`

On entry the folder is checked (not a file; empty, or with ``overwrite`` a folder
this tool wrote, holding nothing else; no input inside it; its parent writable)
and locked (``.<name>.lock`` beside it), so a second command into it is refused at
once. On a clean exit :data:`MANIFEST_NAME` (every file with its size and SHA-256)
is written last and the staging folder renamed to ``out_dir``, replacing the earlier
one; on an error or an interrupt the staging folder is removed and ``out_dir`` is
left as it was. A folder without a manifest, or whose files differ from it, is
never mistaken for a complete one: :func:`verify_folder` refuses it.

Only the standard library: any layer may use it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from sirtreg.errors import InputError, OutputExistsError

log = logging.getLogger(__name__)

MANIFEST_NAME = "sirtreg-manifest.json"
"""The manifest at the root of every output folder."""
_MANIFEST_SEARCH_DEPTH = 4
"""How many folders up :func:`verify_folder` looks for the manifest of the unit a folder belongs to."""


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink())


def user_cache_folder(name: str, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The folder ``name`` of the user cache: ``cache_dir`` if given, else ``$XDG_CACHE_HOME/sirtreg/<name>``
    (``~/.cache/sirtreg/<name>`` when XDG_CACHE_HOME is unset). Nothing is created."""
    if cache_dir is not None:
        return Path(cache_dir)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sirtreg" / name


@contextmanager
def replacing(path: str | os.PathLike[str], *, overwrite: bool = False, suffix: str = "") -> Iterator[Path]:
    """A temporary name beside ``path`` to write to: renamed to ``path`` when the block ends, removed if it fails.

    Refuses an existing ``path`` unless ``overwrite``; creates the parent folder. The temporary name
    ``.<name>.partial<suffix>`` ends in ``suffix`` (a writer that picks the format by suffix needs it).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; choose another name or pass overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name[: len(path.name) - len(suffix)]}.partial{suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomically(path: str | os.PathLike[str], data: bytes | str, *, overwrite: bool = False) -> Path:
    """Write ``data`` (text as UTF-8) under a temporary name beside ``path``, then rename it into place."""
    with replacing(path, overwrite=overwrite) as temporary:
        temporary.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return Path(path)


def save_figure(figure: Any, path: str | os.PathLike[str], *, overwrite: bool = False, **options: Any) -> Path:
    """Save a matplotlib ``figure`` as PNG under a temporary name, then rename it: never a cut file under ``path``.

    ``options`` go to ``Figure.savefig`` (dpi, facecolor).
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise InputError(f"figures are written as PNG; got {path.name}")
    with replacing(path, overwrite=overwrite, suffix=path.suffix) as temporary:
        figure.savefig(temporary, format="png", **options)
    return path


def write_manifest(folder: Path, *, command: str, version: str) -> Path:
    """Write :data:`MANIFEST_NAME` listing every file under ``folder`` (relative path, bytes, SHA-256)."""
    files = {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
             for p in _files_under(folder) if p.name != MANIFEST_NAME}
    document = {"written_by": f"sirtreg {version}", "command": command, "files": files}
    return write_atomically(folder / MANIFEST_NAME, json.dumps(document, indent=2) + "\n", overwrite=True)


def _unlisted(folder: Path, listed: Iterable[str]) -> list[str]:
    """Files under ``folder`` (relative POSIX paths) that are not in ``listed``, the manifest aside."""
    present = {p.relative_to(folder).as_posix() for p in _files_under(folder) if p.name != MANIFEST_NAME}
    return sorted(present - set(listed))


def _manifest_of(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The manifest of the unit ``folder`` belongs to (in it or a few folders up) and its parsed contents."""
    for root in [folder, *list(folder.parents)[:_MANIFEST_SEARCH_DEPTH]]:
        path = root / MANIFEST_NAME
        if path.is_file():
            try:
                document = json.loads(path.read_text(encoding="utf-8"))
                files = document["files"]
                if not isinstance(files, dict):
                    raise TypeError
            except (OSError, ValueError, KeyError, TypeError):
                raise InputError(f"the manifest {path} is damaged; the folder cannot be trusted") from None
            return root, files
    return None


def verify_folder(folder: str | os.PathLike[str], *, what: str) -> None:
    """Refuse a folder that is not a complete, unaltered output of this tool.

    The manifest (in ``folder`` or the output folder holding it) must list every file
    under ``folder``, and each listed file must be there with its size and SHA-256.
    ``what`` names the folder in messages ("registration folder").
    """
    folder = Path(folder)
    found = _manifest_of(folder)
    if found is None:
        raise InputError(f"{folder} is not a complete {what}: it has no {MANIFEST_NAME} (written by an "
                         "interrupted command, by hand, or by an older sirtreg?); write it again")
    root, files = found
    prefix = "" if root == folder else folder.relative_to(root).as_posix() + "/"
    listed = {name[len(prefix):]: entry for name, entry in files.items() if name.startswith(prefix)}
    if extra := _unlisted(folder, listed):
        raise InputError(f"{folder} holds files its manifest does not list ({', '.join(extra[:5])}): a {what} "
                         "mixed with other files cannot be trusted; write it again into a new folder")
    for name, entry in listed.items():
        path = folder / name
        if not path.is_file():
            raise InputError(f"{folder} is incomplete: {name}, listed in its manifest, is missing")
        if path.stat().st_size != entry.get("bytes") or sha256_of(path) != entry.get("sha256"):
            raise InputError(f"{folder}: {name} differs from the file that was written (checksum); "
                             f"the {what} cannot be trusted")


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def refuse_overwriting_inputs(output: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse an output (file or folder) that is one of the ``inputs``, holds one, or lies inside an input folder
    (links followed)."""
    path = Path(output).resolve()
    for item in map(lambda given: Path(given).resolve(), inputs):
        if item == path:
            raise OutputExistsError(f"output {output} would overwrite the input {item}")
        if path in item.parents:
            raise OutputExistsError(f"the output folder {output} holds the input {item}; choose another folder")
        if item.is_dir() and item in path.parents:
            raise OutputExistsError(f"the output {output} lies inside the input folder {item}")


class OutputFolder:
    """A folder written as a unit (see the module docstring).

    Parameters
    ----------
    path : the output folder.
    overwrite : replace an earlier output of this tool there, once the new one is complete.
    inputs : files and folders the command reads: the output may not hold them or lie inside them.
    command : what wrote the folder, for the manifest ("register").
    """

    def __init__(self, path: str | os.PathLike[str], *, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike[str]] = (), command: str) -> None:
        self.path = Path(os.path.abspath(path))
        self.overwrite = overwrite
        self.inputs = [Path(os.path.abspath(p)) for p in inputs]
        self.command = command
        self.staging = self.path.with_name(f".{self.path.name}.partial")
        self.lock = self.path.with_name(f".{self.path.name}.lock")
        self._locked = False

    def check(self) -> None:
        """Refuse, before any work, an output that is a file, is not empty (see ``overwrite``), holds an
        input or lies inside an input folder, or whose parent cannot be written."""
        path = self.path
        refuse_overwriting_inputs(path, self.inputs)
        if path.exists() and not path.is_dir():
            raise OutputExistsError(f"{path} exists and is not a folder")
        if path.is_dir() and any(path.iterdir()):
            if not self.overwrite:
                raise OutputExistsError(f"{path} is not empty; choose a new folder or pass --overwrite")
            self._check_replaceable()
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK | os.X_OK):
            raise OutputExistsError(f"cannot write {path}: {parent} is not writable")

    def _check_replaceable(self) -> None:
        """With ``overwrite``: the folder must be an earlier output of this tool, holding nothing else."""
        if not (self.path / MANIFEST_NAME).is_file():
            raise OutputExistsError(f"--overwrite replaces only a folder sirtreg wrote; {self.path} has no "
                                    f"{MANIFEST_NAME}: choose a new folder")
        _, files = _manifest_of(self.path)  # type: ignore[misc]  # the manifest is in the folder itself
        if extra := _unlisted(self.path, files):
            raise OutputExistsError(f"{self.path} holds files sirtreg did not write ({', '.join(extra[:5])}); "
                                    "--overwrite would lose them: move them or choose a new folder")

    def _acquire(self) -> None:
        self.lock.parent.mkdir(parents=True, exist_ok=True)
        owner = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
        for _ in range(2):
            try:
                descriptor = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._clear_stale_lock()
                continue
            except PermissionError:
                raise OutputExistsError(f"cannot write {self.path}: {self.lock.parent} is not writable") from None
            with os.fdopen(descriptor, "w") as handle:
                handle.write(owner)
            self._locked = True
            return
        raise OutputExistsError(f"{self.path} is being written by another sirtreg command (lock {self.lock})")

    def _clear_stale_lock(self) -> None:
        """Remove the lock (and staging folder) of a command that died; refuse a live one's."""
        try:
            owner = json.loads(self.lock.read_text(encoding="utf-8"))
            pid, host = int(owner["pid"]), str(owner["host"])
        except (OSError, ValueError, KeyError, TypeError):
            pid, host = -1, ""
        if host != socket.gethostname() or pid <= 0 or _is_alive(pid):
            where = f"process {pid} on {host}" if pid > 0 else "another command"
            raise OutputExistsError(f"{self.path} is being written by {where}; wait for it, or delete {self.lock} "
                                    "if no command is running")
        log.warning("removing the lock and staging folder of an interrupted command (process %d)", pid)
        shutil.rmtree(self.staging, ignore_errors=True)
        self.lock.unlink(missing_ok=True)

    def __enter__(self) -> OutputFolder:
        self.check()
        self._acquire()
        try:
            if self.staging.exists():
                log.warning("removing %s, left by an interrupted command", self.staging.name)
                shutil.rmtree(self.staging)
            self.staging.mkdir(parents=True)
        except BaseException:  # also Ctrl-C arriving just after the folder was made: it is ours, under our lock
            shutil.rmtree(self.staging, ignore_errors=True)
            self._release()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        try:
            if kind is None:
                from sirtreg import __version__

                write_manifest(self.staging, command=self.command, version=__version__)
                self._swap_into_place()
        finally:
            shutil.rmtree(self.staging, ignore_errors=True)
            self._release()

    def _swap_into_place(self) -> None:
        """Rename the staging folder to the output, replacing an earlier (checked) one."""
        if not self.path.exists() or (self.path.is_dir() and not any(self.path.iterdir())):
            if self.path.exists():
                self.path.rmdir()
            os.replace(self.staging, self.path)
            return
        self._check_replaceable()  # nothing was added to it while we worked
        previous = self.path.with_name(f".{self.path.name}.old")
        shutil.rmtree(previous, ignore_errors=True)
        os.replace(self.path, previous)
        try:
            os.replace(self.staging, self.path)
        except BaseException:
            os.replace(previous, self.path)  # put the earlier results back
            raise
        shutil.rmtree(previous, ignore_errors=True)

    def _release(self) -> None:
        if self._locked:
            self.lock.unlink(missing_ok=True)
            self._locked = False

    def final_paths(self, files: dict[str, Path]) -> dict[str, Path]:
        """``files`` (name -> path under the staging folder) with the paths they have once the folder is in place."""
        return {name: self.path / Path(path).relative_to(self.staging) for name, path in files.items()}


__all__: Sequence[str] = ["MANIFEST_NAME", "OutputFolder", "replacing", "save_figure", "sha256_of", "verify_folder",
                          "write_atomically", "write_manifest"]
