"""The guided registration's one decision: which label maps guide the engine and where it works on the reference
(the settings' guidance and working region), and its refusals of what the guidance needs but was not given."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sirtreg.errors import InputError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.register import Annotated, GuidedReference, guided_labels, preset, register_guided
from sirtreg.register.pyramid import working_region

GRID = Grid((40, 36, 32), (2.0, 2.0, 2.0), (-40.0, -36.0, -32.0))
MARGIN_MM = 6.0


def _side() -> Annotated:
    """A bright block (the 'liver', 10 x 8 x 6 voxels) with one landmark in it, in a larger dark image."""
    liver = np.zeros(GRID.shape, np.uint8)
    liver[13:19, 14:22, 15:25] = 1
    landmarks = np.zeros(GRID.shape, np.uint8)
    landmarks[15, 17, 19] = 1
    image = np.where(liver > 0, 100.0, 0.0).astype(np.float32)
    image[4:-4, 4:-4, 4:-4] += 20.0  # a body around the liver
    return Annotated(Volume(image, GRID, "CT"), LabelVolume(liver, GRID, labels={1: "liver"}),
                     LabelVolume(landmarks, GRID, labels={1: "lesion"}))


def _settings(guidance: str, region: str = "liver"):
    return dataclasses.replace(preset(guidance, image_weight=0.0, label_weight=0.0), working_region=region,
                               margin_mm=MARGIN_MM)


@pytest.mark.parametrize("guidance", ["image", "liver", "liver+landmarks"])
def test_the_liver_region_is_the_reference_liver_plus_the_margin_for_every_guidance(guidance):
    side = _side()
    reference_labels, floating_labels = guided_labels(GuidedReference(side), side, _settings(guidance))
    region = working_region(side.image, reference_labels, _settings(guidance))
    # the block spans x 15..24, y 14..21, z 13..18 (voxels of 2 mm); 6 mm = 3 voxels more on each side
    assert region.size == (10 + 6, 8 + 6, 6 + 6)
    assert np.allclose(region.origin_mm, np.asarray(GRID.origin_mm) + 2.0 * np.array([15 - 3, 14 - 3, 13 - 3]))
    assert reference_labels.present_labels() == ([1, 2] if guidance == "liver+landmarks" else [1])
    assert (floating_labels is None) == (guidance == "image")  # image guidance reads no floating contour


def test_the_whole_region_needs_no_liver_and_image_guidance_there_reads_none():
    bare = Annotated(_side().image)
    settings = _settings("image", "whole")
    reference_labels, floating_labels = guided_labels(GuidedReference(bare), bare, settings)
    assert reference_labels is None and floating_labels is None
    assert working_region(bare.image, None, settings) == GRID
    result = register_guided(bare, bare, settings)
    assert result.settings["working_region"] == "whole"


def test_the_reference_labels_are_built_once_per_kind():
    reference = GuidedReference(_side())
    image, liver = _settings("image"), _settings("liver")
    assert reference.labels(image) is reference.labels(liver)  # the liver alone, for both
    assert reference.labels(_settings("liver+landmarks")) is not reference.labels(liver)


@pytest.mark.parametrize(("guidance", "region", "reference", "floating", "message"), [
    ("image", "liver", {"liver": None}, {}, "the working region 'liver' .* needs the reference's liver mask"),
    ("liver", "liver", {}, {"liver": None}, "liver guidance needs the floating image's liver mask"),
    ("liver", "whole", {"liver": None}, {}, "liver guidance needs the reference's liver mask"),
    ("liver+landmarks", "liver", {"landmarks": None}, {}, "needs the reference's landmark map"),
    ("liver+landmarks", "liver", {}, {"landmarks": None}, "needs the floating image's landmark map"),
])
def test_what_the_guidance_needs_is_refused_when_missing(guidance, region, reference, floating, message):
    side = _side()
    with pytest.raises(InputError, match=message):
        register_guided(dataclasses.replace(side, **reference), dataclasses.replace(side, **floating),
                        _settings(guidance, region))


def test_the_engine_refuses_the_liver_region_without_reference_labels():
    from sirtreg.register import register

    side = _side()
    with pytest.raises(InputError, match="working region 'liver' needs the reference's liver mask"):
        register(side.image, side.image, settings=_settings("image"))
