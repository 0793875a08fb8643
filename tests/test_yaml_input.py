"""The YAML input machinery shared by cohort manifests and patient plans: the parts their tests do not reach."""

from __future__ import annotations

import pytest
import yaml

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.yaml_input import Reader, describe, entry_label, load_yaml, refusal, relative, write_yaml


def test_load_yaml_reports_repeated_keys_but_not_merge_keys(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("base: &b {x: 1}\nuse:\n  <<: *b\n  <<: *b\n  y: 2\ny: 3\ny: 4\n", encoding="utf-8")
    document, repeated = load_yaml(path, what="plan")
    assert document["use"] == {"x": 1, "y": 2}
    assert repeated == ["line 7: key 'y' is repeated"]


def test_load_yaml_names_what_it_cannot_read(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"cannot read the cohort manifest .*latin1\.yaml"):
        load_yaml(path, what="cohort manifest")


def test_reader_collects_every_problem(tmp_path):
    reader = Reader(tmp_path)
    assert reader.fields("top", {"nmae": 1}, {"name": True}) == {}
    assert reader.path("top, image", "missing.nii.gz") is None
    assert reader.identifier("top, id", "a b") is None
    assert reader.fraction("top, f", 1.0) is None
    assert reader.number("top, n", True) is None
    assert reader.choice("top, modality", "PET", ("CT", "MR")) is None
    assert reader.isotope("top, isotope", "y90") == "Y-90"
    assert reader.problems == [
        "top: unknown key 'nmae'; did you mean 'name'?",
        "top: missing 'name'",
        f"top, image: no such file: {tmp_path / 'missing.nii.gz'}",
        "top, id: 'a b' may hold only letters, digits, '.', '_' and '-'",
        "top, f: must be in [0, 1), got 1.0",
        "top, n: must be a finite number, got True",
        "top, modality: must be one of CT, MR, got 'PET'",
    ]


def test_labels_descriptions_and_refusal():
    assert entry_label("floating", {"id": "ct1"}, 2) == "floating ct1"
    assert entry_label("floating", {"id": 7}, 2) == "floating #2"
    assert describe("x" * 100) == repr("x" * 100)[:57] + "..."
    assert str(refusal(["a: b"], what="plan")) == "1 problem in the plan:\n  a: b"
    assert str(refusal(["a: b", "c: d"], what="cohort manifest", prefix="c.yaml: ")).startswith(
        "c.yaml: 2 problems in the cohort manifest:\n")


def test_relative_paths_use_slashes(tmp_path):
    assert relative(tmp_path / "p" / "ct.nii.gz", tmp_path) == "p/ct.nii.gz"
    assert relative(tmp_path / "ct.nii.gz", tmp_path / "plans") == "../ct.nii.gz"


def test_write_yaml_keeps_key_order_and_refuses_an_existing_file(tmp_path):
    path = write_yaml({"b": 1, "a": "é"}, tmp_path / "sub" / "x.yaml")
    assert path == tmp_path / "sub" / "x.yaml"
    assert path.read_text(encoding="utf-8") == "b: 1\na: é\n"
    with pytest.raises(OutputExistsError):
        write_yaml({}, path)
    write_yaml({"c": 2}, path, overwrite=True)
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == {"c": 2}
    assert [p.name for p in path.parent.iterdir()] == ["x.yaml"]
