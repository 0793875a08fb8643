"""The refusal suite: every bad input, absurd number, unsafe output and hostile file, one table.

Each case runs a `sirtreg` command in-process and expects exit status 2, exactly one line on
stderr that starts with ``error:`` and names the problem (after any warnings; a plan's refusal lists its
problems on indented lines below it), no traceback, and the files of the
working folder exactly as they were: nothing written under a final name, nothing replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from sirtreg.cli import app
from sirtreg.geometry import Grid, LabelVolume, Volume
from sirtreg.io import write_dicom_series, write_image
from sirtreg.output_folder import OutputFolder

runner = CliRunner()
GRID = Grid((32, 32, 24), (4.0, 4.0, 4.0), (-64.0, -64.0, -48.0))


def _blobs(shift_mm: float = 0.0) -> np.ndarray:
    """A smooth CT-like image (z, y, x): a liver-like ellipsoid and two blobs, shifted along x."""
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in GRID.shape), indexing="ij")
    x, y, z = (i * 4.0 - 64.0 - shift_mm), j * 4.0 - 64.0, k * 4.0 - 48.0
    image = 40.0 + 60.0 * ((x / 40) ** 2 + (y / 30) ** 2 + (z / 25) ** 2 < 1)
    image += 80.0 * np.exp(-((x - 10) ** 2 + y ** 2 + (z - 5) ** 2) / 60) + 50.0 * np.exp(-((x + 20) ** 2 + (y - 10) ** 2) / 90)
    return image.astype(np.float32)


def _nifti_with(source: Path, target: Path, *, pixdim_x: float | None = None, sform_shift_mm: float = 0.0,
                negate_sform_x: bool = False) -> Path:
    header = bytearray(source.read_bytes())
    if pixdim_x is not None:
        struct.pack_into("<f", header, 80, pixdim_x)
    srow = np.array(struct.unpack_from("<12f", header, 280)).reshape(3, 4)
    srow[2, 3] += sform_shift_mm
    if negate_sform_x:
        srow[:, 0] *= -1
    struct.pack_into("<12f", header, 280, *srow.ravel())
    target.write_bytes(bytes(header))
    return target


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every input the cases need, good and bad, in one folder (never changed by a case)."""
    root = tmp_path_factory.mktemp("refusals")
    f: dict[str, Path] = {"root": root}
    ct = Volume(_blobs(), GRID, "CT")
    f["ct"] = write_image(ct, root / "ct.nii.gz")
    f["ct_nii"] = write_image(ct, root / "ct.nii")
    f["mr"] = write_image(Volume(_blobs(6.0), GRID, "MR"), root / "mr.nii.gz")
    liver = np.zeros(GRID.shape, np.uint8)
    liver[6:18, 8:24, 6:26] = 1
    f["liver"] = write_image(LabelVolume(liver, GRID, labels={1: "liver"}), root / "liver.nii.gz")
    organs = liver.copy()
    organs[2:5, 2:6, 2:6] = 5
    organs[19:22, 25:29, 2:6] = 6
    f["organs"] = write_image(LabelVolume(organs, GRID), root / "organs.nii.gz")
    spect = np.full(GRID.shape, 5.0, np.float32)
    spect[liver > 0] = 100.0
    f["spect"] = write_image(Volume(spect, GRID, "NM"), root / "spect.nii.gz")
    nan_spect = spect.copy()
    nan_spect[10, 10, 10], nan_spect[11, 12, 13] = np.nan, np.inf
    f["nan_spect"] = write_image(Volume(nan_spect, GRID, "NM"), root / "nan_spect.nii.gz")
    f["negative_spect"] = write_image(Volume(spect - 50.0, GRID, "NM"), root / "bgsub_spect.nii.gz")
    data = f["spect"].read_bytes()
    (root / "cut_spect.nii.gz").write_bytes(data[: len(data) * 6 // 10])
    f["cut_spect"] = root / "cut_spect.nii.gz"
    data = f["ct"].read_bytes()
    (root / "cut_ct.nii.gz").write_bytes(data[: len(data) // 2])
    f["cut_ct"] = root / "cut_ct.nii.gz"
    (root / "garbage.nii.gz").write_bytes(b"garbage")
    f["garbage"] = root / "garbage.nii.gz"
    f["flipped"] = _nifti_with(f["ct_nii"], root / "flipped.nii", pixdim_x=-4.0, negate_sform_x=True)
    f["two_geometries"] = _nifti_with(f["ct_nii"], root / "two_geometries.nii", sform_shift_mm=30.0)
    image = sitk.GetImageFromArray(np.zeros((8, 8, 8), np.int16))
    image.SetSpacing((1000.0, 1000.0, 1000.0))
    f["metres"] = root / "metres.nrrd"
    sitk.WriteImage(image, str(f["metres"]))
    f["slice"] = root / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((20, 30), np.int16)), str(f["slice"]))
    f["vector"] = root / "vector.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 6, 6, 3), np.float32), isVector=True), str(f["vector"]))
    f["fractional"] = write_image(Volume(liver * 0.5, GRID), root / "fractional.nii.gz")
    f["nan_labels"] = write_image(Volume(np.where(liver > 0, np.nan, 0).astype(np.float32), GRID),
                                  root / "nan_labels.nii.gz")
    f["shifted_labels"] = write_image(LabelVolume(liver, Grid(GRID.size, GRID.spacing_mm, (0.0, 0.0, 0.0))),
                                      root / "shifted_labels.nii.gz")
    (root / "notes.txt").write_text("not an image")
    f["text"] = root / "notes.txt"
    small = Grid((16, 16, 6), (1.0, 1.0, 2.5))
    f["dicom_cut"] = write_dicom_series(Volume(np.zeros(small.shape, np.int16), small), root / "dicom_cut", modality="CT")
    sorted(f["dicom_cut"].glob("*.dcm"))[3].unlink()
    two = root / "dicom_two"
    for index, name in enumerate(("arterial", "venous")):
        folder = write_dicom_series(Volume(np.full(small.shape, index, np.int16), small), root / f"series_{name}",
                                    modality="CT")
        for number, path in enumerate(sorted(folder.glob("*.dcm"))):
            dataset = pydicom.dcmread(path)
            del dataset.SeriesInstanceUID
            dataset.SeriesDescription, dataset.SeriesNumber = name, index + 1
            two.mkdir(exist_ok=True)
            dataset.save_as(two / f"{name}_{number}.dcm")
    f["dicom_two"] = two
    # a registration written by the CLI, and damaged copies of it
    registration = root / "registration"
    result = runner.invoke(app, ["register", "--reference", str(f["ct"]), "--floating", str(f["mr"]), "-o",
                                 str(registration), "--guidance", "image", "--affine-only"])
    assert result.exit_code == 0, result.output
    f["registration"] = registration
    for name, damage in (("unfinished", "manifest"), ("mixed", "extra"), ("altered", "altered")):
        copy = root / f"registration_{name}"
        copy.mkdir()
        for item in registration.iterdir():
            (copy / item.name).write_bytes(item.read_bytes())
        if damage == "manifest":
            (copy / "sirtreg-manifest.json").unlink()
        elif damage == "extra":
            (copy / "displacement.nii.gz").write_bytes((copy / "warped_floating.nii.gz").read_bytes())
        else:
            (copy / "affine.tfm").write_text((copy / "affine.tfm").read_text().replace("0", "1", 3))
        f[f"registration_{name}"] = copy
    f["points"] = root / "points.json"
    f["points"].write_text(json.dumps({"lesion 1": [0.0, 1.0, 2.0]}))
    (root / "broken_points.json").write_text('{"lesion 1": [0, 1, ')
    f["broken_points"] = root / "broken_points.json"
    (root / "flat_points.json").write_text(json.dumps({"lesion 1": [0, 1, 2, 3, 4, 5]}))
    f["flat_points"] = root / "flat_points.json"
    (root / "deep_points.json").write_text("[" * 100000 + "]" * 100000)
    f["deep_points"] = root / "deep_points.json"
    # folders: someone's own files, and one that a live command is writing
    (root / "mine").mkdir()
    (root / "mine" / "thesis.docx").write_text("keep me")
    f["mine"] = root / "mine"
    f["existing"] = root / "existing.nii.gz"
    f["existing"].write_bytes(f["ct"].read_bytes())
    f["busy"] = root / "busy"
    busy = OutputFolder(f["busy"], command="test")
    busy.lock.write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    # plans
    f["plan"] = root / "plan.yaml"
    f["plan"].write_text(_plan(f, activity="2.0"))
    for name, activity in (("nan", ".nan"), ("huge", "1800"), ("negative", "-1")):
        f[f"plan_{name}"] = root / f"plan_{name}.yaml"
        f[f"plan_{name}"].write_text(_plan(f, activity=activity))
    f["plan_organs"] = root / "plan_organs.yaml"
    f["plan_organs"].write_text(_plan(f, activity="2.0", liver="organs.nii.gz"))
    bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        bomb.append(f"{chr(97 + level)}: &{chr(97 + level)} [{', '.join([f'*{chr(96 + level)}'] * 9)}]")
    f["plan_bomb"] = root / "plan_bomb.yaml"
    f["plan_bomb"].write_text("\n".join(bomb) + "\n")
    f["plan_deep"] = root / "plan_deep.yaml"
    f["plan_deep"].write_text("a: " + "[" * 2000 + "]" * 2000 + "\n")
    f["plan_tabs"] = root / "plan_tabs.yaml"
    f["plan_tabs"].write_text("reference:\n\timage: ct.nii.gz\n")
    return f


def _plan(f: dict[str, Path], *, activity: str, liver: str = "liver.nii.gz") -> str:
    return (f"reference:\n  image: ct.nii.gz\n  liver: {liver}\nspect:\n  image: spect.nii.gz\n"
            f"  activity_gbq: {activity}\n  isotope: Y-90\nfloating:\n  - id: mr1\n    modality: MR\n"
            f"    image: mr.nii.gz\n    liver: liver.nii.gz\n    guidance: liver\n")


@dataclass(frozen=True)
class Case:
    """One refusal: the arguments (``{name}`` is a path of :func:`files`, ``{out}`` a new path) and the message."""

    command: str
    arguments: str
    message: str

    def argv(self, files: dict[str, Path], out: Path) -> list[str]:
        return [part.format(out=out, **files) for part in self.arguments.split()]


REG = "register --reference {ct} --floating {mr} --guidance image --affine-only -o {out}"
LIVER_REG = "register --reference {ct} --floating {mr} --reference-liver {liver} --floating-liver {liver} -o {out}"
DOSE = "dose --spect {spect} --liver {liver} -o {out}"
PLAN = "plan --spect {spect} --liver {liver} -o {out}"
CASES = [
    # info: the file is read to its end and its geometry checked before anything is said about it
    Case("info", "info {root}/nothing.nii.gz", "no such file"),
    Case("info", "info {slice}", "2D image"),
    Case("info", "info {vector}", "3 components per voxel"),
    Case("info", "info {cut_ct}", "cut_ct.nii.gz is truncated"),
    Case("info", "info {garbage}", "garbage.nii.gz is damaged"),
    Case("info", "info {flipped}", "non-positive voxel size"),
    Case("info", "info {two_geometries}", "the sform and the qform of its header disagree"),
    Case("info", "info {metres}", "outside the 0.05-50 mm of any scan"),
    Case("info", "info {text}", "not a DICOM image file"),
    Case("info", "info {dicom_cut}", "missing"),
    Case("info", "info {dicom_two}", "holds 2 series"),
    Case("info", "info {ct} --labels {shifted_labels}", "not on the same grid"),
    Case("info", "info {ct} --labels {fractional}", "fractional values"),
    Case("info", "info {ct} --labels {nan_labels}", "NaN or infinite values"),
    # convert
    Case("convert", "convert {ct} {ct} --overwrite", "would overwrite the input"),
    Case("convert", "convert {ct} {existing}", "exists"),
    Case("convert", "convert {ct} {out}.xyz", "unknown image format"),
    Case("convert", "convert {cut_ct} {out}.nii.gz", "truncated"),
    Case("convert", "convert {nan_labels} {out}.nii.gz --labels", "NaN or infinite values"),
    # segment: refused before the network is loaded
    Case("segment", "segment {ct} --modality pet -o {out}.nii.gz", "ct or mr"),
    Case("segment", "segment {ct} --modality ct --target spleen -o {out}.nii.gz", "liver or lesions"),
    Case("segment", "segment {ct} --modality ct -o {ct} --overwrite", "would overwrite the input"),
    Case("segment", "segment {cut_ct} --modality ct -o {out}.nii.gz", "truncated"),
    # register: settings, contours and the output folder are checked before the registration
    Case("register", REG.replace(" --affine-only", "") + " --wi nan", "wI must be a finite number"),
    Case("register", REG + " --wi 2", "--affine-only runs no non-rigid stage"),
    Case("register", REG.replace(" --affine-only", "") + " --rigidity nan", "rigidity must be a finite number"),
    Case("register", REG.replace(" --affine-only", "") + " --rigidity inf", "rigidity must be a finite number"),
    Case("register", LIVER_REG + " --ws -1", "must be >= 0"),
    Case("register", REG + " --similarity ncc", "similarity must be one of mind, mi"),
    Case("register", REG + " --landmark-channels some", "landmark_channels must be one of each, paper"),
    Case("register", REG + " --working-region liver", "--working-region liver needs --reference-liver"),
    Case("register", LIVER_REG + " --working-region body", "working_region must be one of liver, whole"),
    Case("register", REG.replace("image", "bones"), "guidance must be one of"),
    Case("register", REG.replace("image", "liver"), "liver guidance needs --reference-liver and --floating-liver"),
    Case("register", LIVER_REG + " --guidance liver+landmarks", "needs --reference-landmarks"),
    Case("register", REG.replace(" --affine-only", "") + " --ws 1", "image-based registration has no label term"),
    Case("register", LIVER_REG.replace("--floating-liver {liver}", "--floating-liver {organs}"),
         "organs.nii.gz holds several labels (1, 5, 6); choose the liver with --liver-segment"),
    Case("register", LIVER_REG + " --liver-segment 9", "liver.nii.gz holds no label '9'"),
    Case("register", REG.replace("{mr}", "{cut_ct}"), "cut_ct.nii.gz is truncated"),
    Case("register", REG.replace("{out}", "{mine}"), "is not empty"),
    Case("register", REG.replace("{out}", "{mine}") + " --overwrite", "replaces only a folder sirtreg wrote"),
    Case("register", REG.replace("{out}", "{root}"), "holds the input"),
    Case("register", REG.replace("{out}", "{busy}"), "is being written by process"),
    # warp: only a complete, unaltered registration is applied
    Case("warp", "warp {root}/nothing {points} -o {out}.json", "no registration folder"),
    Case("warp", "warp {registration_unfinished} {points} -o {out}.json", "has no sirtreg-manifest.json"),
    Case("warp", "warp {registration_mixed} {points} -o {out}.json", "holds files its manifest does not list"),
    Case("warp", "warp {registration_altered} {points} -o {out}.json", "affine.tfm differs"),
    Case("warp", "warp {registration} {broken_points} -o {out}.json", "broken_points.json is not valid JSON"),
    Case("warp", "warp {registration} {flat_points} -o {out}.json", "must be three numbers"),
    Case("warp", "warp {registration} {deep_points} -o {out}.json", "deep_points.json is not valid JSON"),
    Case("warp", "warp {registration} {mr} -o {out}.nii.gz", "needs --reference"),
    Case("warp", "warp {registration} {mr} -o {existing} --reference {ct}", "exists"),
    Case("warp", "warp {registration} {points} -o {points} --overwrite", "would overwrite the input"),
    # dose: every number finite and plausible, the SPECT complete and finite, one liver
    Case("dose", DOSE + " --activity-gbq -1", "activity must be a positive number of GBq"),
    Case("dose", DOSE + " --activity-gbq nan", "activity must be a positive number of GBq"),
    Case("dose", DOSE + " --activity-gbq 1e308", "did you give MBq?"),
    Case("dose", DOSE + " --activity-gbq 2000", "2000 GBq is more than any SIRT treatment"),
    Case("dose", DOSE.replace("{spect}", "{nan_spect}") + " --activity-gbq 2", "the SPECT holds 2 NaN or infinite"),
    Case("dose", DOSE.replace("{spect}", "{cut_spect}") + " --activity-gbq 2", "cut_spect.nii.gz is truncated"),
    Case("dose", DOSE.replace("{spect}", "{negative_spect}") + " --activity-gbq 2", "negative counts"),
    Case("dose", DOSE.replace("{liver}", "{organs}") + " --activity-gbq 2", "holds several labels (1, 5, 6)"),
    Case("dose", DOSE.replace("{liver}", "{organs}") + " --activity-gbq 2 --liver-segment 7", "holds no label '7'"),
    Case("dose", DOSE + " --activity-gbq 2 --lung-shunt-fraction 1.5", "lung shunt fraction must be in [0, 1)"),
    Case("dose", DOSE + " --activity-gbq 2 --lung-shunt-fraction nan", "lung shunt fraction must be in [0, 1)"),
    Case("dose", DOSE + " --activity-gbq 2 --lung-mass-kg 0", "lung mass (kg) must be in [0.1, 5]"),
    Case("dose", DOSE + " --activity-gbq 2 --density-g-per-ml 1050", "tissue density (g/mL) must be in [0.3, 2]"),
    Case("dose", DOSE + " --activity-gbq 2 --calibration-time 2020-01-01 --injection-time 2026-01-01",
         "days apart, more than 20 half-lives of Y-90"),
    Case("dose", DOSE + " --activity-gbq 2 --calibration-time 2026-01-01", "needs both the calibration time"),
    Case("dose", DOSE + " --activity-gbq 2 --isotope tc99m", "unknown isotope"),
    Case("dose", DOSE.replace("{out}", "{root}") + " --activity-gbq 2 --overwrite", "holds the input"),
    Case("dose", DOSE.replace("{out}", "{mine}") + " --activity-gbq 2 --overwrite", "replaces only a folder"),
    Case("dose", DOSE.replace("{out}", "{busy}") + " --activity-gbq 2", "is being written by process"),
    # plan: the method, its inputs and the lung limits
    Case("plan", PLAN + " --method seeds --dose-gy 100", "method must be one of mird, partition, bsa"),
    Case("plan", PLAN + " --dose-gy 120", "the partition model needs tumour contours in the liver"),
    Case("plan", PLAN + " --method mird", "the mird method needs a target dose (Gy)"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --lung-shunt-fraction 0.6",
         "breaks the lung limit of 30 Gy per treatment"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --previous-lung-dose-gy 50", "leaves nothing of the 50 Gy"),
    Case("plan", PLAN + " --method bsa --height-cm 170 --weight-kg 70", "resin Y-90 microspheres only"),
    Case("plan", PLAN + " --method bsa --microspheres resin", "needs the patient's height"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --tumours {shifted_labels}", "lies on another grid"),
    Case("plan", PLAN.replace("{out}", "{root}") + " --method mird --dose-gy 120 --overwrite", "holds the input"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --lung-shunt-fraction 0.1 --lung {liver}",
         "give --lung-shunt-fraction or the images to measure it on (--lung), not both"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --ct {spect}", "no air inside the body below -400 HU"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --lung {liver} --ct {spect}",
         "measure the lung shunt fraction one way: --lung or --ct"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --perfused-segment 1", "give the perfused-volume file too"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --perfused {liver} --perfused {liver}", "both named"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --lung-mass-kg 50", "lung mass (kg) must be in [0.1, 5]"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --planar-anterior {spect}", "planar views need"),
    Case("plan", PLAN + " --method mird --dose-gy 120 --ct {spect} --planar-anterior {spect}",
         "measure the lung shunt fraction one way"),
    # verify: the Y-90 PET or post-treatment SPECT, and the registration
    Case("verify", "verify --spect {spect} --liver {liver} --activity-gbq 2 --pet {spect} --maa-ct {ct} -o {out}",
         "give both --maa-ct and --pet-ct"),
    Case("verify", "verify --spect {spect} --liver {liver} --activity-gbq 2 --pet {nan_spect} -o {out}",
         "the PET holds NaN or infinite voxels"),
    Case("verify", "verify --spect {spect} --liver {liver} --activity-gbq 2 --pet {spect} --scan-time "
         "2026-01-02 -o {out}", "needs both the PET's scan time and the injection time"),
    Case("verify", "verify --spect {spect} --liver {liver} --activity-gbq 2 -o {out}", "give one post-treatment image"),
    Case("verify", "verify --spect {spect} --liver {liver} --activity-gbq 2 --pet {spect} --post-spect {spect} "
         "-o {out}", "give one post-treatment image"),
    Case("verify", "verify --spect {spect} --liver {liver} --activity-gbq 2 --post-spect {spect} --scan-time "
         "2026-01-02 -o {out}", "calibrated by the administered activity and needs neither"),
    # run: the plan, its numbers and contours, and the output folder, before any work
    Case("run", "run {root}/nothing.yaml -o {out}", "nothing.yaml"),
    Case("run", "run {plan_bomb} -o {out}", "billion laughs"),
    Case("run", "run {plan_deep} -o {out}", "nest"),
    Case("run", "run {plan_tabs} -o {out}", "not valid YAML"),
    Case("run", "run {plan_nan} -o {out}", "must be a finite number of GBq, got nan"),
    Case("run", "run {plan_huge} -o {out}", "did you mean MBq?"),
    Case("run", "run {plan_negative} -o {out}", "activity"),
    Case("run", "run {plan_organs} -o {out}", "organs.nii.gz holds 3 labels (1, 5, 6)"),
    Case("run", "run {plan} -o {mine}", "is not empty"),
    Case("run", "run {plan} -o {mine} --overwrite", "replaces only a folder sirtreg wrote"),
    Case("run", "run {plan} -o {ct}", "exists and is not a folder"),
    Case("run", "run {plan} -o {out} --pseudonym P01", "a pseudonym is used only with --deidentify"),
    Case("run", "run {plan} -o {out} --device tpu", "device"),
    # review and study
    Case("review", "review {mine} --export {out}.csv", "holds no results.json"),
    Case("review", "review {root}/nothing --no-browser", "is not a folder"),
    Case("review-summary", "review-summary {mine} -o {out}", "holds no results.json"),
    Case("review-summary", "review-summary {root}/nothing -o {out}", "is not a folder"),
    Case("study", "study check {root}/nothing.yaml", "nothing.yaml"),
    Case("study", "study check {plan_bomb}", "billion laughs"),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every file (and folder) under ``root``, with the SHA-256 of its contents."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def test_the_suite_covers_every_command_with_at_least_60_cases():
    commands = {case.command for case in CASES}
    assert len(CASES) >= 60
    assert commands >= {"info", "convert", "segment", "register", "warp", "dose", "plan", "verify", "run", "review",
                        "review-summary", "study"}


@pytest.mark.parametrize("case", CASES, ids=[f"{c.command}-{i}" for i, c in enumerate(CASES)])
def test_refused_with_one_line_and_nothing_written(files, case, tmp_path):
    out = tmp_path / "output"
    before = _snapshot(files["root"])
    result = runner.invoke(app, case.argv(files, out))
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    starts = [index for index, line in enumerate(lines) if line.startswith("error:")]
    assert len(starts) == 1, result.stderr  # warnings may come before it
    error, *listed = lines[starts[0]:]
    assert all(line.startswith("  ") for line in listed), result.stderr  # only the problems it lists, indented
    assert case.message in " ".join([error, *(line.strip() for line in listed)]), result.stderr
    assert "Traceback" not in result.output
    assert _snapshot(files["root"]) == before
    assert not out.exists() and not any(tmp_path.iterdir())
