"""Study figures: the grid-search heat map and the RMSD box plots are readable PNG files; bad input is refused."""

from __future__ import annotations

import pytest
from PIL import Image

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.report.study_figures import plot_grid_rrmsd, plot_rmsd_boxes


def grid_summary():
    """Summary rows of a 3 x 2 (wI, wS) grid for CT and MR; one MR grid point with no finished registration."""
    rows = []
    for modality, offset in (("CT", 2.0), ("MR", 4.0)):
        for wi in (0.0, 0.5, 1.0):
            for ws in (0.0, 1.0):
                missing = modality == "MR" and (wi, ws) == (1.0, 1.0)
                rows.append({"method": f"liver[wI={wi!r},wS={ws!r},rigidity=1.0]", "modality": modality,
                             "image_weight": wi, "label_weight": ws, "rigidity": 1.0, "failed": int(missing),
                             "rrmsd_mm": None if missing else offset + abs(wi - 0.5) + ws})
    return rows


def result_rows():
    rows = []
    for modality, images in (("CT", 4), ("MR", 3)):
        for image in range(images):
            for number, name in enumerate(("image-affine", "liver-affine", "liver")):
                rows.append({"patient": f"P{image}", "floating": modality.lower(), "method_name": name,
                             "modality": modality, "status": "ok", "rmsd_mm": 8.0 - 2 * number + 0.3 * image})
    rows.append({"patient": "P9", "floating": "ct", "method_name": "liver", "modality": "CT", "status": "failed",
                 "rmsd_mm": None})
    return rows


def assert_png(path, *, min_width: int) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width >= min_width and image.height >= 300
        image.verify()


def test_grid_heat_map_has_one_panel_per_modality(tmp_path):
    path = plot_grid_rrmsd(grid_summary(), tmp_path / "grid.png",
                           best={"CT": "liver[wI=0.5,wS=0.0,rigidity=1.0]"})
    assert path == tmp_path / "grid.png"
    assert_png(path, min_width=2 * 400)


def test_box_plots_have_one_panel_per_modality(tmp_path):
    path = plot_rmsd_boxes(result_rows(), tmp_path / "boxes.png", methods=["image-affine", "liver-affine", "liver"])
    assert_png(path, min_width=2 * 400)


def test_box_plots_of_a_method_subset(tmp_path):
    path = plot_rmsd_boxes(result_rows(), tmp_path / "boxes.png", methods=["liver"])
    assert_png(path, min_width=400)


@pytest.mark.parametrize(("plot", "rows", "name", "message"), [
    (plot_grid_rrmsd, [], "grid.png", "no results"),
    (plot_grid_rrmsd, grid_summary(), "grid.pdf", "PNG"),
    (plot_rmsd_boxes, [row | {"status": "failed"} for row in result_rows()], "boxes.png", "no registration"),
    (plot_rmsd_boxes, result_rows(), "boxes.jpg", "PNG"),
])
def test_bad_input_is_refused(tmp_path, plot, rows, name, message):
    with pytest.raises(InputError, match=message):
        plot(rows, tmp_path / name)
    assert not (tmp_path / name).exists()


def test_an_existing_figure_is_kept_unless_overwrite(tmp_path):
    path = tmp_path / "boxes.png"
    path.write_bytes(b"keep me")
    with pytest.raises(OutputExistsError):
        plot_rmsd_boxes(result_rows(), path)
    assert path.read_bytes() == b"keep me"
    plot_rmsd_boxes(result_rows(), path, overwrite=True)
    assert_png(path, min_width=400)
