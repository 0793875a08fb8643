"""Every slice of a written series carries the same series date and time, even across a second boundary."""

from __future__ import annotations

import datetime

import numpy as np
import pydicom

from sirtreg.geometry import Grid, Volume
from sirtreg.io import dicom_write
from sirtreg.io.dicom_write import write_dicom_series


def test_a_series_written_across_a_second_boundary_keeps_one_series_time(tmp_path, monkeypatch):
    ticks = iter(datetime.datetime(2026, 12, 31, 23, 59, 58) + datetime.timedelta(seconds=s) for s in range(100))

    class Clock(datetime.datetime):
        @classmethod
        def now(cls, tz=None):  # every call a second later: the slices are written across second (and day) boundaries
            return next(ticks)

    monkeypatch.setattr(dicom_write.datetime, "datetime", Clock)
    grid = Grid((8, 8, 5), (1.0, 1.0, 2.0))
    folder = write_dicom_series(Volume(np.zeros(grid.shape, np.float32), grid, "CT"), tmp_path / "ct")
    headers = [pydicom.dcmread(path, stop_before_pixels=True) for path in sorted(folder.glob("*.dcm"))]
    assert len(headers) == 5
    assert {(h.SeriesDate, h.SeriesTime, h.StudyDate, h.StudyTime) for h in headers} == {
        ("20261231", "235958", "20261231", "235958")}
