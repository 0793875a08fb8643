"""The reference side of the pyramid, shared by the registrations of several floating images to one reference,
changes nothing in their results."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sirtreg.register import ReferenceChannels, guidance_labels, preset, register


@pytest.mark.slow
def test_shared_reference_channels_give_the_same_transform(fast_patient):
    reference, floating = fast_patient.reference, fast_patient.floating[0]
    settings = preset("liver")
    settings = dataclasses.replace(settings, affine=dataclasses.replace(settings.affine, iterations=(5, 5)),
                                   nonrigid=dataclasses.replace(settings.nonrigid, iterations=(5, 3, 3)))
    options = {"settings": settings, "reference_labels": guidance_labels(reference.liver),
               "floating_labels": guidance_labels(floating.liver)}
    alone = register(reference.image, floating.image, **options)
    shared = ReferenceChannels()
    first = register(reference.image, floating.image, reference_channels=shared, **options)
    (_, _, cache), = shared._scopes.values()
    computed = dict(cache)
    assert any(key[:2] == ("reference", "mind") for key in computed)  # the MIND descriptor of each level
    second = register(reference.image, floating.image, reference_channels=shared, **options)  # finds them all
    assert all(cache[key] is value for key, value in computed.items()) and len(cache) == len(computed)
    for result in (first, second):
        assert np.array_equal(result.affine.parameters, alone.affine.parameters)
        assert np.array_equal(result.displacement.array, alone.displacement.array)
