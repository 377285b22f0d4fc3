"""The command-line tools on small images: deblur (files, folders, globs, modes, bad files, never
overwriting inputs) and evaluate (CSV, summary, contact sheet)."""
import csv
import hashlib
import json
import os
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT, pack_module

sys.path.insert(0, os.path.join(ROOT, "tools"))
training = pack_module("models.hidiff.training")
hidiff = pack_module("models.hidiff")
blur = pack_module("models.blur")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    hidiff.save_hidiff(training.build_model(training.PRESETS["tiny"]), str(path))
    return str(path)


def picture(path, mode, size=(36, 28), seed=0):
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(array[..., 0] if channels == 1 else array, mode).save(path)
    return path


def digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_deblur_folder_keeps_modes_skips_bad_files_and_never_overwrites_inputs(tmp_path, tiny_model, capsys):
    import deblur

    folder = tmp_path / "shots"
    folder.mkdir()
    picture(folder / "a.png", "RGB")
    picture(folder / "b.png", "RGBA", seed=1)
    picture(folder / "g.png", "L", seed=2)
    (folder / "broken.png").write_bytes(b"not an image at all")  # named like one: left out, with a note
    (folder / "cut.png").write_bytes((folder / "a.png").read_bytes()[:60])  # an image, truncated: a failure
    picture(folder / "old_deblurred.png", "RGB", seed=3)  # a previous output: not taken as an input
    before = {p.name: digest(p) for p in folder.iterdir()}
    status = deblur.main([str(folder), "--model", tiny_model, "--device", "cpu"])
    assert status == 1  # the truncated image was skipped and reported
    err = capsys.readouterr()
    assert "left out " + str(folder / "broken.png") in err.err
    assert "skipped " + str(folder / "cut.png") in err.out + err.err
    for name, mode in (("a", "RGB"), ("b", "RGBA"), ("g", "L")):
        with Image.open(folder / f"{name}_deblurred.png") as out:
            assert out.mode == mode and out.size == (36, 28)
    with Image.open(folder / "b_deblurred.png") as out, Image.open(folder / "b.png") as original:
        assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(original.getchannel("A")))
    assert not (folder / "old_deblurred_deblurred.png").exists()
    assert all(digest(folder / name) == value for name, value in before.items())


def test_deblur_glob_into_a_folder_and_an_input_named_like_an_output(tmp_path, tiny_model):
    import deblur

    picture(tmp_path / "x.png", "RGB")
    picture(tmp_path / "x_deblurred.png", "RGB", seed=5)  # given explicitly: it is an input now
    kept = digest(tmp_path / "x_deblurred.png")
    assert deblur.main([str(tmp_path / "x.png"), str(tmp_path / "x_deblurred.png"), "--model", tiny_model, "--tile", "64", "--overlap", "8"]) == 0
    assert digest(tmp_path / "x_deblurred.png") == kept
    assert (tmp_path / "x_deblurred_2.png").exists() and (tmp_path / "x_deblurred_deblurred.png").exists()
    out = tmp_path / "results"
    assert deblur.main([str(tmp_path / "x*.png"), "--model", tiny_model, "--out", str(out)]) == 0
    inputs = sorted(p for p in os.listdir(tmp_path) if p.startswith("x") and p.endswith(".png"))
    assert sorted(os.listdir(out)) == inputs  # same names, in the output folder
    assert deblur.main([str(tmp_path / "nothing*.png"), "--model", tiny_model]) == 2
    assert deblur.main([str(tmp_path / "x.png"), "--model", tiny_model, "--tile", "64", "--overlap", "64"]) == 2  # overlap >= tile


def test_evaluate_writes_csv_summary_and_contact_sheet(tmp_path, tiny_model):
    import evaluate

    sharp = tmp_path / "sharp"
    sharp.mkdir()
    image_io = pack_module("models.common.image_io")
    for i in range(2):
        image_io.save_png(blur.dead_leaves(40, torch.Generator().manual_seed(i)), str(sharp / f"{i}.png"))
    out = tmp_path / "eval"
    assert evaluate.main(["--sharp", str(sharp), "--out", str(out), "--model", tiny_model, "--baseline", "blind-wiener",
                          "--baseline", "oracle-wiener", "--kernel-size", "7", "--crop", "32", "--sheet-height", "32"]) == 0
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == 2 * 4 and {r["method"] for r in rows} >= {"blurry", "tiny.safetensors", "Wiener (true kernel)"}
    summary = json.load(open(out / "summary.json"))["methods"]
    assert summary[0]["method"] == "blurry" and summary[0]["gain_db"] == 0
    oracle = next(s for s in summary if s["method"] == "Wiener (true kernel)")
    assert oracle["gain_db"] > 0  # deconvolving with the true kernel must help
    assert "| method | PSNR dB |" in open(out / "summary.md").read()
    with Image.open(out / "contact_sheet.png") as sheet:
        assert sheet.size[1] > 2 * 32
    # the same set again gives the same blurry inputs (fixed-seed kernels)
    assert evaluate.main(["--sharp", str(sharp), "--out", str(tmp_path / "again"), "--kernel-size", "7", "--crop", "32"]) == 0
    again = list(csv.DictReader(open(tmp_path / "again" / "per_image.csv")))
    assert [r["psnr"] for r in again] == [r["psnr"] for r in rows if r["method"] == "blurry"]
