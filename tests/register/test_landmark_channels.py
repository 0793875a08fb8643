"""One label channel per landmark: two adjacent lesions cannot trade places.

The scene: a liver that is a bar along x (it says nothing about motion along x) holding two lesions of
7 mm radius whose centres are 18 mm apart; the floating scan is the scene moved 18 mm along x, so its
first lesion lies exactly where the reference has the second, and the image term is off: the labels
alone must tell the lesions apart. With a channel per landmark each lesion is drawn to its own twin.
(The paper's two-class map also finds this shift, from the shape of the two lesions together; what
the channels add is that no lesion can be matched to another's place.)
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.metrics import mass_centre_distances_mm
from sirtreg.register import Annotated, guidance_labels, preset, register_guided, warp

GRID = Grid((70, 40, 40), (2.0, 2.0, 2.0), (-69.0, -39.0, -39.0))
SHIFT_MM = 18.0


def _scene(offset_mm: float) -> tuple[Volume, LabelVolume, LabelVolume]:
    points = GRID.world_coordinates(np.float64)
    y, z = points[..., 1], points[..., 2]
    liver = (np.abs(y) < 25.0) & (np.abs(z) < 25.0)
    lesions = np.zeros(GRID.shape, np.uint8)
    for value, centre_x in ((1, -SHIFT_MM / 2), (2, SHIFT_MM / 2)):
        lesions[np.linalg.norm(points - (centre_x + offset_mm, 0.0, 0.0), axis=-1) <= 7.0] = value
    rng = np.random.default_rng(int(offset_mm))
    image = np.where(liver, 60.0, -100.0) - 40.0 * (lesions > 0) + rng.normal(0, 5, GRID.shape)
    return (Volume(image.astype(np.float32), GRID, modality="CT"), LabelVolume(liver.astype(np.uint8), GRID),
            LabelVolume(lesions, GRID, labels={1: "lesion 1", 2: "lesion 2"}))


@pytest.mark.slow
def test_adjacent_lesions_keep_their_identity_with_one_channel_each():
    reference, reference_liver, reference_lesions = _scene(0.0)
    floating, floating_liver, floating_lesions = _scene(SHIFT_MM)
    settings = dataclasses.replace(preset("liver+landmarks", image_weight=0.0), landmark_channels="each")
    result = register_guided(Annotated(reference, reference_liver, reference_lesions),
                             Annotated(floating, floating_liver, floating_lesions), settings)
    carried = warp(floating_lesions, result.transform, GRID)
    distances = mass_centre_distances_mm(reference_lesions, carried)
    assert max(distances.values()) < 2.0, distances


def test_each_landmark_is_a_class_of_its_own_and_the_paper_map_merges_them():
    from sirtreg.register.guidance import check_inputs

    reference, reference_liver, reference_lesions = _scene(0.0)
    labels = guidance_labels(reference_liver, reference_lesions)
    assert labels.present_labels() == [1, 2, 3]  # liver, then 1 + each landmark's value
    assert labels.labels == {1: "liver", 2: "lesion 1", 3: "lesion 2"}
    for channels, classes in (("each", [(1,), (2,), (3,)]), ("paper", [(1,), (2, 3)])):
        settings = dataclasses.replace(preset("liver+landmarks"), landmark_channels=channels)
        assert check_inputs(reference, reference, settings, labels, labels) == (classes, classes)
