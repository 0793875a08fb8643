"""A small output folder of `sirtreg run` for the review tests: results.json and report.html, no images to compute."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import pytest

from sirtreg.report.html import Picture, Section, Table, Text, write_html

# floating id -> (landmark names, lesion names): ct's landmarks are scored, mr's lesions (it has no landmark
# map); the lesions of ct and of the MAA CT, and the "pet" image that carried nothing, are not scored
LANDMARKS = {"ct": (["landmark 1", "clip <2>"], ["lesion 1"]), "mr": ([], ["lesion 1", "lesion 2"])}


def png(width: int, height: int, rgb: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    """A PNG file of one colour, ``width`` x ``height`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def results_document() -> dict:
    """The parts of results.json that the review reads, as `sirtreg run` writes them."""
    doses = [{"source": "MAA CT", "role": "liver", "structure": "liver"},
             {"source": "MAA CT", "role": "lesion", "structure": "MAA CT/lesion 1"}]
    registrations = []
    for key, (landmarks, lesions) in {**LANDMARKS, "pet": ([], [])}.items():
        doses += [{"source": key, "role": "lesion", "structure": f"{key}/{name}"} for name in lesions]
        registrations.append({"floating": key, "modality": "MR" if key == "mr" else "CT", "role": "",
                              "guidance": "liver+landmarks", "landmarks": landmarks})
    return {"format": "sirtreg-run", "version": 1, "doses": doses, "registrations": registrations}


@pytest.fixture()
def run_folder(tmp_path: Path) -> Path:
    """An output folder with results.json and a report of two pictures and a table."""
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results_document()), encoding="utf-8")
    sections = [Section("Floating image ct (CT)", [Text("liver+landmarks guidance."),
                                                  Picture(png(40, 30), title="contours", caption="red and green"),
                                                  Table(["a", "b"], [[1, 2.5]])]),
                Section("Floating image mr (MR)", [Picture(png(20, 10, (30, 200, 30)), title="checkerboard")])]
    write_html(folder / "report.html", "sirtreg run report", sections)
    return folder
