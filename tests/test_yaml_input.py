"""The YAML input machinery shared by cohort manifests and patient plans: the parts their tests do not reach."""

from __future__ import annotations

import pytest
import yaml

from sirtreg.dosimetry.isotopes import read_activity_gbq, read_isotope
from sirtreg.errors import InputError, OutputExistsError, describe
from sirtreg.yaml_input import (
    Loader,
    Reader,
    YamlLimitError,
    entry_label,
    load_yaml,
    refusal,
    relative,
    write_yaml,
)


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
    assert reader.parsed("top, isotope", "y90", read_isotope) == "Y-90"
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


# --- bounds: no "billion laughs" ------------------------------------------------------
def _bomb(levels: int) -> str:
    """A YAML "billion laughs": ``levels`` lists of 9 aliases of the list before, 9**levels values written out."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("levels", [4, 9, 11])
def test_a_billion_laughs_is_refused_by_its_size_written_out(tmp_path, levels):
    path = tmp_path / "bomb.yaml"
    path.write_text(_bomb(levels), encoding="utf-8")
    with pytest.raises(InputError, match=r"^bomb\.yaml is refused: aliases \(\*name\) add more than 10000 values once "
                       r"written out \(a 'billion laughs'\?\)$"):
        load_yaml(path, what="plan")
    with pytest.raises(YamlLimitError):  # the loader itself, as plain PyYAML uses it
        yaml.load(_bomb(levels), Loader=Loader)  # noqa: S506 - the bounded safe loader


def test_a_few_aliases_and_merge_keys_stay_allowed(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(_bomb(3), encoding="utf-8")  # 9**3 values written out: within the bounds
    document, _ = load_yaml(path, what="plan")
    assert len(document["a3"]) == 9 and document["a3"][0][0][0] == ["lol"] * 9


@pytest.mark.parametrize(("text", "expected"), [
    ("a: " + "[" * 40 + "]" * 40 + "\n", r"line 1: collections nest more than 32 deep$"),
    ("a: " + "[" * 100_000 + "\n", r"line 1: collections nest more than 32 deep$"),  # no RecursionError
    ("a: &a [" + "[" * 20 + "]" * 20 + "]\nb: [[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]\n",
     r"collections nest more than 32 deep once aliases \(\*name\) are written out$"),
    ("a: &a [1, *a]\n", r"line 1: the collection anchored here holds an alias to itself$"),
    ("a: &a 1\nb: [" + ", ".join(["*a"] * 101) + "]\n",
     r"line 2: more than 100 aliases \(\*name\); write the values out$"),
])
def test_deep_nesting_recursive_aliases_and_many_aliases_are_refused(tmp_path, text, expected):
    path = tmp_path / "deep.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=r"^deep\.yaml is refused: " + expected):
        load_yaml(path, what="cohort manifest")


def test_a_file_over_one_mib_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_text("# " + "x" * (1 << 20) + "\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"^the plan .*big\.yaml is \d+ bytes, more than 1048576 \(1 MiB\): is it "):
        load_yaml(path, what="plan")
    with pytest.raises(YamlLimitError, match="longer than 1048576 characters"):
        yaml.load("# " + "x" * (1 << 20), Loader=Loader)  # noqa: S506 - the bounded safe loader


# --- numbers ---------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "kwargs", "expected"), [
    (float("nan"), {}, "must be a finite number of GBq, got nan"),
    (float("inf"), {"unit": "MBq", "gbq_per_unit": 1e-3}, "must be a finite number of MBq, got inf"),
    (-1, {}, "must be a positive number of GBq, got -1"),
    (True, {}, "must be a number of GBq, without unit (the unit is in the key), got True"),
    (101, {}, "101 GBq is more than 100 GBq, far more than any treatment; did you mean MBq?"),
    (1.5e5, {"unit": "MBq", "gbq_per_unit": 1e-3}, "150000.0 MBq is more than 100 GBq, far more than any treatment"),
])
def test_reader_refuses_activities_out_of_range(tmp_path, value, kwargs, expected):
    reader = Reader(tmp_path)
    assert reader.parsed("spect, activity", value, lambda typed: read_activity_gbq(typed, **kwargs)) is None
    assert reader.problems == [f"spect, activity: {expected}"]


def test_reader_warns_of_unusual_activities(tmp_path, caplog):
    reader = Reader(tmp_path)

    def in_mbq(typed):
        return read_activity_gbq(typed, unit="MBq", gbq_per_unit=1e-3)

    with caplog.at_level("WARNING", logger="sirtreg"):
        assert reader.parsed("a", 100, read_activity_gbq) == 100.0
        assert reader.parsed("b", 2e4 + 1, in_mbq) == pytest.approx(20.001)
        assert reader.parsed("c", 5, in_mbq) == pytest.approx(0.005)
        assert reader.parsed("d", 1.8, read_activity_gbq) == 1.8
    assert reader.problems == []
    assert caplog.messages == ["a: an activity of 100 GBq is more than 20 GBq: did you mean MBq?",
                               "b: 20001 MBq is more than 20 GBq, more than usual treatments",
                               "c: 5 MBq is less than 0.01 GBq, less than any treatment; did you mean GBq?"]


@pytest.mark.parametrize(("value", "expected"), [
    (float("nan"), "must be a finite number, got nan"),
    (float("-inf"), "must be a finite number, got -inf"),
    (1.0, "must be in [0, 1), got 1.0"),
    (-0.01, "must be in [0, 1), got -0.01"),
])
def test_reader_refuses_fractions_out_of_range(tmp_path, value, expected):
    reader = Reader(tmp_path)
    assert reader.fraction("f", value) is None
    assert reader.problems == [f"f: {expected}"]


@pytest.mark.parametrize(("activity", "fraction", "expected"), [
    (".nan", "0.04", ["patient P01, spect, activity_gbq: must be a finite number, got nan"]),
    (".inf", "0.04", ["patient P01, spect, activity_gbq: must be a finite number, got inf"]),
    ("1800", "0.04", ["patient P01, spect, activity_gbq: 1800 GBq is more than 100 GBq, far more than any treatment; "
                      "did you mean MBq?"]),
    ("1.8", ".nan", ["patient P01, spect, lung_shunt_fraction: must be a finite number, got nan"]),
    ("1.8", "1.5", ["patient P01, spect, lung_shunt_fraction: must be in [0, 1), got 1.5"]),
])
def test_manifest_numbers_are_finite_and_in_range(tmp_path, activity, fraction, expected):
    from sirtreg.study.manifest import _ManifestReader

    (tmp_path / "spect.nii.gz").write_bytes(b"")
    document = yaml.load(f"{{image: spect.nii.gz, activity_gbq: {activity}, isotope: Y-90, "  # noqa: S506
                         f"lung_shunt_fraction: {fraction}}}", Loader=Loader)
    reader = _ManifestReader(tmp_path)
    assert reader.spect("patient P01, spect", document) is None
    assert reader.problems == expected


def test_manifest_spect_images_made_in_code_refuse_bad_numbers(tmp_path):
    from sirtreg.study.manifest import SpectImage

    for activity in (float("nan"), 0, 150, True):
        with pytest.raises(InputError, match="SPECT activity"):
            SpectImage(tmp_path / "s.nii.gz", activity, "Y-90")
    with pytest.raises(InputError, match=r"lung shunt fraction must be a number in \[0, 1\)"):
        SpectImage(tmp_path / "s.nii.gz", 1.8, "Y-90", lung_shunt_fraction=float("nan"))
