"""The reference side of the pyramid: shared by the registrations of several floating images to one reference, or
computed ahead (while PyTorch loads), it changes nothing in their results; and each channel is what its level
would compute alone."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sirtreg.register import Annotated, GuidedReference, preset, register_guided
from sirtreg.register.engine import Level
from sirtreg.register.pyramid import stages


def _short(settings):
    """Few iterations on two levels, the affine and the non-rigid stage sharing the 8 mm one."""
    return dataclasses.replace(
        settings, affine=dataclasses.replace(settings.affine, levels_mm=(8.0,), iterations=(5,)),
        nonrigid=dataclasses.replace(settings.nonrigid, levels_mm=(8.0, 5.0), iterations=(3, 3)))


@pytest.mark.slow
@pytest.mark.parametrize("guidance", ["image", "liver+landmarks"])
def test_prepared_and_shared_channels_are_all_the_engine_needs_and_change_nothing(fast_patient, guidance):
    reference, floating = fast_patient.reference, fast_patient.floating[1]
    sides = (Annotated(reference.image, reference.liver, reference.landmark_map),
             Annotated(floating.image, floating.liver, floating.landmark_map))
    settings = _short(preset(guidance))
    alone = register_guided(*sides, settings)
    shared = GuidedReference(sides[0])
    shared.prepare(settings)  # as the command does, ahead
    (_, _, cache), = shared.channels._scopes.values()
    ahead = dict(cache)
    assert ahead and all(isinstance(value, np.ndarray) or value is None for value in ahead.values())  # no PyTorch
    first = register_guided(shared, sides[1], settings)
    assert all(cache[key] is value for key, value in ahead.items())
    assert {key[:2] for key in set(cache) - set(ahead)} == {("reference", "mind")}  # only what needs PyTorch
    computed = dict(cache)
    second = register_guided(shared, sides[1], settings)  # finds them all
    assert all(cache[key] is value for key, value in computed.items()) and len(cache) == len(computed)
    for result in (first, second):
        assert np.array_equal(result.affine.parameters, alone.affine.parameters)
        assert np.array_equal(result.displacement.array, alone.displacement.array)


@pytest.mark.slow
def test_floating_mind_channel_of_a_level_does_not_depend_on_the_levels_before_it(fast_patient):
    """Image guidance runs the affine stage on mutual information and the non-rigid one on MIND at the same
    spacings: the MIND descriptor must come from the floating image smoothed for MIND, not from the affine
    stage's image channel on the finer floating grid."""
    reference, floating = fast_patient.reference.image, fast_patient.floating[1].image
    settings = preset("image")
    affine_8mm, nonrigid_8mm = (next(s for s in stages(settings, False) if s.name == name and s.spacing_mm == 8.0)
                                for name in ("affine", "non-rigid"))
    region = reference.grid
    after_affine: dict = {}
    Level(affine_8mm, region, reference, floating, None, None, None, torch.device("cpu"), margin_mm=20.0,
          cache=after_affine)
    levels = [Level(nonrigid_8mm, region, reference, floating, None, None, None, torch.device("cpu"), margin_mm=20.0,
                    cache=cache) for cache in (after_affine, {})]
    image = [level.floating.data[level.slices["image"]] for level in levels]
    assert image[0].shape[0] == 12  # the MIND-SSC descriptor
    assert torch.equal(image[0], image[1])
