"""Self-contained HTML reports: text escaped, pictures embedded, bad items refused."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from sirtreg.errors import InputError, OutputExistsError
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.report.html import PNG_SIGNATURE, Picture, Section, Table, Text, render_html, write_html
from sirtreg.report.overlays import Contours, OverlayRow, save_contour_overlays


def test_every_text_is_escaped():
    page = render_html("<title>", [Section("a & b", [Text("<script>alert(1)</script>"),
                                                     Table(["<th>"], [["<td>"], [None], [1.23456]], note='"x"',
                                                           formats={"<th>": ".2f"})])])
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;title&gt;" in page and "a &amp; b" in page and "&lt;td&gt;" in page and "&quot;x&quot;" in page
    assert ">1.23<" in page and ">\u2013<" in page  # floats formatted per column; None as a dash


def test_pictures_are_embedded_as_data_uris(tmp_path):
    grid = Grid((20, 16, 12), (2.0, 2.0, 3.0), (0.0, 0.0, 0.0))
    image = Volume(np.random.default_rng(0).normal(size=grid.shape).astype(np.float32), grid, "MR")
    mask = np.zeros(grid.shape, bool)
    mask[4:8, 5:11, 6:14] = True
    png = save_contour_overlays([OverlayRow("MR", image, [Contours("box", LabelVolume.from_mask(mask, grid), "red"),
                                                          Contours("none", None, "green")])], tmp_path / "a.png")
    path = write_html(tmp_path / "report.html", "report", [Section("s", [Picture.from_file(png, title="p")])])
    page = path.read_text()
    encoded = page.split('src="data:image/png;base64,')[1].split('"')[0]
    assert base64.b64decode(encoded) == png.read_bytes()
    assert "http" not in page and "a.png" not in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "report.html"]  # no temporary file left
    with pytest.raises(OutputExistsError):
        write_html(path, "report", [])


def test_bad_items_are_refused():
    with pytest.raises(InputError, match="not a PNG"):
        Picture(b"GIF89a", title="gif")
    with pytest.raises(InputError, match="every row needs 2 cells"):
        Table(["a", "b"], [[1]])
    with pytest.raises(InputError, match="level must be 2 or 3"):
        render_html("t", [Section("s", [], level=1)])
    assert Picture(PNG_SIGNATURE).png == PNG_SIGNATURE
