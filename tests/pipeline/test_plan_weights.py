"""Weights of a patient run from a grid search's table (`sirtreg run --weights-from`), and their refusals."""

from __future__ import annotations

import pytest

from sirtreg.errors import InputError
from sirtreg.pipeline import FloatingInput, Plan, ReferenceInput, RunWeights, SpectInput, with_tuned_weights
from sirtreg.study.tuning import read_tuned_weights


def _plan(*floating: FloatingInput, weights=None) -> Plan:
    return Plan(ReferenceInput("maa_ct.nii.gz"), SpectInput("spect.nii.gz", 2.0, "Y-90"), floating,
                weights=weights or {})


CT = FloatingInput("ct", "CT", "ct.nii.gz", guidance="liver")
MR = FloatingInput("mr", "MR", "mr.nii.gz", guidance="liver")
MR_IMAGE = FloatingInput("mr-image", "MR", "mr.nii.gz", guidance="image")


@pytest.fixture
def liver_table(tmp_path, write_tune_table):
    """Liver guidance tuned on CT and MR: CT chooses wI 1, wS 2 (RRMSD 2 mm); MR chooses affine only (3 mm)."""
    return write_tune_table(tmp_path / "tune.csv", "liver", {
        ("CT", 1.0, 2.0): [2.0, 2.0], ("CT", 0.0, 0.0): [4.0, 4.0],
        ("MR", 1.0, 2.0): [5.0, 5.0], ("MR", 0.0, 0.0): [3.0, 3.0]})


def test_tuned_weights_go_to_the_floating_images_of_their_guidance_and_modality(liver_table):
    tuned = read_tuned_weights(liver_table)
    assert (tuned.name, tuned.guidance, tuned.rrmsd_mm) == ("liver", "liver", {"CT": 2.0, "MR": 3.0})
    plan = with_tuned_weights(_plan(CT, MR, MR_IMAGE), [tuned])
    source = "tune.csv (grid search 'liver', RRMSD {:.2f} mm on its train split)"
    assert plan.weights_for(CT) == RunWeights(1.0, 2.0, 1.0, source=source.format(2.0))
    assert plan.weights_for(MR) == RunWeights(0.0, 0.0, 1.0, source=source.format(3.0))
    assert plan.weights_for(MR).describe().startswith("affine only: wI 0, wS 0, rigidity 1 (from tune.csv")
    assert plan.weights_for(MR_IMAGE).source == "the engine's defaults"  # no table tunes image guidance


def test_a_modality_the_table_did_not_tune_is_refused(tmp_path, write_tune_table):
    ct_only = read_tuned_weights(write_tune_table(tmp_path / "ct_only.csv", "liver", {("CT", 1.0, 1.0): [2.0]}))
    with pytest.raises(InputError) as error:
        with_tuned_weights(_plan(CT, MR), [ct_only])
    assert str(error.value) == (
        "1 problem in the weights of --weights-from:\n  floating mr: ct_only.csv chose no MR weights for liver "
        "guidance (modalities it tuned: CT); tune MR too, or set the weights in the plan")


def test_weights_set_twice_or_tuned_twice_are_refused(liver_table, tmp_path, write_tune_table):
    tuned = read_tuned_weights(liver_table)
    with pytest.raises(InputError, match="floating ct: the plan sets CT weights for liver guidance and tune.csv "
                                         "tunes them too"):
        with_tuned_weights(_plan(CT, MR, weights={("CT", "liver"): RunWeights(1, 1, 1)}), [tuned])
    again = read_tuned_weights(write_tune_table(tmp_path / "again.csv", "liver", {("CT", 1.0, 1.0): [2.0]}))
    with pytest.raises(InputError, match="tune.csv and again.csv both tune liver guidance; give one"):
        with_tuned_weights(_plan(CT), [tuned, again])


def test_a_table_of_several_methods_is_not_a_grid_search(tmp_path, write_tune_table):
    path = write_tune_table(tmp_path / "mixed.csv", "liver", {("CT", 1.0, 1.0): [2.0]})
    rows = path.read_text().splitlines()
    other = rows[1].replace("liver[", "image[").replace(",liver,liver,", ",image,image,").replace(",1.0,1.0,", ",1.0,0.0,")
    path.write_text("\n".join([*rows, other]) + "\n")
    with pytest.raises(InputError, match=r"mixed.csv is not the table of one grid search .*: its methods are "
                                         r"image \(image\), liver \(liver\)"):
        read_tuned_weights(path)
