"""`bench denoise` and `bench.Denoiser`: the study's numbers reproduced, tiles without seams, bad input."""
from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import bench
import methods
from bench.cli import main
from bench.core.config import load_preset
from bench.core.errors import DataError
from bench.data import load_data
from bench.data.photos import export_pairs, read_photo
from bench.inference.denoise import Denoiser
from bench.inference.tiling import ALIGN, Blender, plan

STUDY = """\
title: "Ours with and without meta-test (denoise tests)"
rows:
  - {name: "Ours without meta-test", method: ours, metatest: false}
  - {name: "Ours with meta-test", method: ours, metatest: true}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A smoke-trained study of the two "Ours" rows (one shared training): home, study file, runs."""
    root = tmp_path_factory.mktemp("denoise")
    study = root / "ours2.yaml"
    study.write_text(STUDY)
    home = root / "home"
    saved = os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    try:
        main(["run", str(study), "--preset", "smoke", "--home", str(home), "--quiet"])
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
        client = MlflowClient()
        exp = next(e for e in client.search_experiments() if e.name.startswith("ours2-smoke-"))
        parents = {r.data.tags["row"]: r for r in client.search_runs([exp.experiment_id]) if "row" in r.data.tags}
        images = {}
        for row, run in parents.items():
            path = client.download_artifacts(run.info.run_id, "images.csv", str(root))
            with open(path) as f:
                images[row] = [r for r in csv.DictReader(f) if r["split"] == "test"]
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved
    checkpoint = Path(parents["Ours with meta-test"].data.tags["checkpoint"])
    return {"home": home, "study": study, "parents": parents, "images": images, "checkpoint": checkpoint}


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The embedded test pairs the study evaluated, as 8-bit PNGs (lossless: they lie on the 8-bit grid)."""
    return export_pairs(load_data(load_preset("smoke").data).test, tmp_path_factory.mktemp("pairs"))


@pytest.fixture(scope="module")
def denoiser(trained) -> Denoiser:
    return Denoiser.from_checkpoint(trained["checkpoint"], device="cpu")


def noisy_photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    import skimage.data

    rng = np.random.default_rng(seed)
    img = skimage.data.chelsea()[:h, :w].astype(np.float32) / 255
    return np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1).astype(np.float32)


# -- the study's numbers ---------------------------------------------------------------------------


def test_reference_numbers_equal_the_studys_evaluation(trained, exported, tmp_path, run_cli):
    noisy, clean = exported
    out = tmp_path / "out"
    code, text, err = run_cli("denoise", noisy, "--reference", clean, "--study", trained["study"],
                              "--row", "Ours with meta-test", "--home", trained["home"], "--out", out)
    assert code == 0, err
    assert err == ""
    rows = {r["image"]: r for r in csv.DictReader(open(out / "metrics.csv"))}
    study = {row: {r["image"].replace("/", "_") + ".png": r for r in recs} for row, recs in trained["images"].items()}
    assert set(rows) == set(study["Ours with meta-test"]) == {p.name for p in noisy.iterdir()}
    for name, r in rows.items():
        before, after = study["Ours without meta-test"][name], study["Ours with meta-test"][name]
        assert before["metatest"] == "False" and after["metatest"] == "True"
        for m in ("psnr", "ssim", "ssim_gauss"):
            assert float(r[f"before_{m}"]) == pytest.approx(float(before[m]), abs=1e-6), (name, m)
            assert float(r[f"after_{m}"]) == pytest.approx(float(after[m]), abs=1e-6), (name, m)
        # the printed line carries the same numbers
        line = next(ln for ln in text.splitlines() if ln.startswith(name + ":"))
        assert f"PSNR {float(before['psnr']):.4f} → {float(after['psnr']):.4f} dB" in line
        assert Image.open(out / name).size == Image.open(noisy / name).size
    # the summary's means are the row's test/psnr as the study logged it
    summary = text.strip().splitlines()[-1]
    assert summary.startswith(f"{len(rows)} image(s) in ")
    means = re.search(r"mean PSNR ([\d.]+) → ([\d.]+) dB, gain ([+-][\d.]+) dB", summary)
    metrics = {row: run.data.metrics["test/psnr"] for row, run in trained["parents"].items()}
    assert float(means[1]) == pytest.approx(metrics["Ours without meta-test"], abs=1e-4)
    assert float(means[2]) == pytest.approx(metrics["Ours with meta-test"], abs=1e-4)


def test_run_id_and_checkpoint_give_the_same_model(trained, exported, tmp_path, run_cli):
    noisy, _ = exported
    parents = trained["parents"]
    without = parents["Ours without meta-test"].info.run_id
    # a row evaluated without meta-test defaults to K = 0
    den = bench.Denoiser.from_run(without, home=trained["home"], device="cpu")
    assert den.entry.steps == 0 and den.entry.name == "alg3" and den.arch == "ours"
    code, text, err = run_cli("denoise", noisy, "--model", parents["Ours with meta-test"].info.run_id,
                              "--home", trained["home"], "--out", tmp_path / "a", "--adapt-steps", "3", "--lr", "1e-3")
    assert code == 0, err
    assert "meta-test K=3, lr 0.001, sgd" in text
    code, _, err = run_cli("denoise", noisy, "--checkpoint", trained["checkpoint"],
                           "--out", tmp_path / "b", "-k", "3", "--lr", "1e-3")
    assert code == 0, err
    for f in sorted((tmp_path / "a").glob("*.png")):
        assert np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(tmp_path / "b" / f.name)))


def test_python_api_layouts(denoiser):
    img = (noisy_photo(40, 52) * 255).round().astype(np.uint8)
    out = denoiser(img, steps=1)
    assert out.shape == img.shape and out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1
    # K = 0 is the plain forward pass; adaptation changes the output
    plain = denoiser(img, steps=0)
    with torch.no_grad():
        expected = denoiser.model(torch.from_numpy(img.astype(np.float32) / 255).permute(2, 0, 1)[None])
    assert np.abs(plain - expected[0].permute(1, 2, 0).clamp(0, 1).numpy()).max() < 1e-6
    assert np.abs(denoiser(img, steps=3, lr=1e-2) - plain).max() > 0
    grey = denoiser(img[..., 0], steps=1)
    assert grey.shape == img.shape[:2]
    alpha = np.linspace(0, 1, 40 * 52, dtype=np.float32).reshape(40, 52, 1)
    rgba = denoiser(np.concatenate([img.astype(np.float32) / 255, alpha], axis=2), steps=1)
    assert rgba.shape == (40, 52, 4) and np.array_equal(rgba[..., 3], alpha[..., 0])
    res = denoiser.run(img, steps=2, before=True, trajectory=True, mask=True)
    assert len(res.steps) == 3 and np.array_equal(res.steps[-1], res.image)
    assert np.abs(res.steps[0] - res.before).max() < 1e-6
    assert res.mask.shape == (40, 52) and res.adapted


# -- tiles ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("height,width,tile,overlap", [(200, 264, 136, 64), (301, 97, 96, 16), (64, 64, 128, 32)])
def test_plan_covers_the_image_with_aligned_tiles(height, width, tile, overlap):
    tiles = plan(height, width, tile, overlap)
    blend = Blender(height, width, tiles, overlap)
    assert float(blend.total.min()) > 0  # every pixel has weight
    for t in tiles:
        assert t.y0 % ALIGN == 0 and t.x0 % ALIGN == 0
        assert t.y1 - t.y0 <= max(tile, 0) or (t.y0, t.y1) == (0, height)
    covered = torch.zeros(height, width)
    for t in tiles:
        covered[t.slices] += 1
    assert covered.min() >= 1
    assert torch.allclose(blend.total[covered == 1], torch.ones(1))  # single cover: weight exactly one


def test_tiled_output_has_no_seams(denoiser):
    """Tiled vs untiled on 200×264 (6 tiles of ≤136 px, overlap 64): max |Δ| stays below 1e-4 (measured
    ~1e-5) without adaptation and with one adaptation per image; adapting each tile on its own
    moves the prediction by up to ~5e-4 at the smoke model's step (bound 2e-3), with no seam."""
    img = noisy_photo(200, 264)
    kw = dict(tile=136, overlap=64)
    for steps, adapt, bound in ((0, "image", 1e-4), (2, "image", 1e-4), (2, "tile", 2e-3)):
        whole = denoiser.run(img, steps=steps, tile=0).image
        tiled = denoiser.run(img, steps=steps, adapt=adapt, **kw)
        assert tiled.tiles == 6
        diff = np.abs(tiled.image - whole)
        print(f"K={steps} adapt per {adapt}: max |tiled − untiled| = {diff.max():.2e}")
        assert diff.max() < bound, (steps, adapt, diff.max())
    # the trajectory and the "before" image of the joint adaptation come from the same passes
    res = denoiser.run(img, steps=2, before=True, trajectory=True, mask=True, **kw)
    assert len(res.steps) == 3 and np.array_equal(res.steps[-1], res.image) and np.array_equal(res.steps[0], res.before)
    assert np.abs(res.before - denoiser.run(img, steps=0, tile=0).image).max() < 1e-4
    assert np.abs(res.mask - denoiser.run(img, steps=2, tile=0, mask=True).mask).max() < 1e-4


def test_auto_tile_follows_the_memory_budget(denoiser):
    den = Denoiser(denoiser.model, denoiser.recipe, denoiser.entry, denoiser.arch, budget_gib=0.05)
    assert den.auto_tile(64, 64, adapting=True) == 0  # fits: whole image, exactly the study's path
    size = den.auto_tile(3000, 2000, adapting=True)
    assert size % ALIGN == 0 and size * size * den.bytes_per_pixel(True) <= 0.05 * 2**30
    img = noisy_photo(160, 200)
    assert den.run(img, steps=1).tiles > 1


@pytest.mark.huge  # 9–17 min on 2 CPU cores: `pytest -m huge`
def test_a_3000x2000_photo_denoises_on_cpu_within_24_gib(trained, tmp_path):
    """Peak resident memory of a fresh process that denoises 3000×2000 with K=5, one adaptation per image."""
    script = textwrap.dedent(f"""
        import numpy as np, time
        from bench.inference.denoise import Denoiser
        den = Denoiser.from_checkpoint({str(trained['checkpoint'])!r}, device="cpu")
        rng = np.random.default_rng(0)
        img = rng.random((2000, 3000, 3), dtype=np.float32)
        t = time.perf_counter()
        res = den.run(img, steps=5)
        hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
        print(res.tiles, hwm / 2**20, time.perf_counter() - t, res.image.shape)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    tiles, peak_gib, seconds, *_ = proc.stdout.split()
    print(f"3000×2000, K=5, per image: {tiles} tiles, {float(seconds):.0f} s, peak RSS {float(peak_gib):.2f} GiB")
    assert int(tiles) > 1 and float(peak_gib) < 24


# -- files ----------------------------------------------------------------------------------------


def test_layouts_and_bit_depths_are_kept(trained, tmp_path, run_cli):
    src = tmp_path / "in"
    src.mkdir()
    rgb = (noisy_photo(36, 44) * 65535).round().astype(np.uint16)
    from bench.data.io import write_png

    write_png(src / "deep.png", rgb / 65535, bits=16)
    Image.fromarray((rgb[..., 0] >> 8).astype(np.uint8), "L").save(src / "grey.png")
    rgba = np.concatenate([(rgb >> 8).astype(np.uint8), np.full((36, 44, 1), 128, np.uint8)], axis=2)
    rgba[:5, :5, 3] = 0
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    Image.fromarray((rgb >> 8).astype(np.uint8)).save(src / "photo.jpg", quality=95)
    import tifffile

    tifffile.imwrite(src / "deeptiff.tiff", rgb)
    write_png(src / "deepalpha.png", np.concatenate([rgb / 65535, np.full((36, 44, 1), 0.5)], axis=2), bits=16)
    out = tmp_path / "out"
    code, text, err = run_cli("denoise", str(src / "*.png"), src / "photo.jpg", src / "deeptiff.tiff",
                              "--checkpoint", trained["checkpoint"], "--out", out, "--save-mask", "--save-steps")
    assert code == 0, err
    assert "6 image(s)" in text
    assert read_photo(out / "deep.png").bits == 16 and read_photo(out / "deeptiff.png").bits == 16
    assert Image.open(out / "grey.png").mode == "L" and Image.open(out / "photo.png").mode == "RGB"
    a = np.asarray(Image.open(out / "alpha.png"))
    assert a.shape == (36, 44, 4) and np.array_equal(a[..., 3], rgba[..., 3])
    da = read_photo(out / "deepalpha.png")
    # Pillow reads 16-bit colour PNGs at 8 bits (bench.data.io), so the kept alpha is 0.5 to 1/255
    assert da.bits == 16 and da.alpha is not None and np.allclose(da.alpha, 0.5, atol=1 / 255)
    k = Denoiser.from_checkpoint(trained["checkpoint"]).entry.steps
    assert sorted(p.name for p in (out / "deep.steps").iterdir()) == [f"step_{s}.png" for s in range(k + 1)]
    assert Image.open(out / "deep.mask.png").size == (44, 36)


def test_a_baseline_runs_forward_and_ignores_k(tmp_path, run_cli):
    ckpt = tmp_path / "ridnet.pt"
    torch.save({"model": methods.create("ridnet").state_dict(), "payload": {"arch": "ridnet", "arch_kwargs": {}}}, ckpt)
    Image.fromarray((noisy_photo(24, 24) * 255).astype(np.uint8)).save(tmp_path / "x.png")
    code, text, err = run_cli("denoise", tmp_path / "x.png", "--checkpoint", ckpt, "-k", "3",
                              "--out", tmp_path / "out", "--reference", tmp_path / "x.png")
    assert code == 0, err
    assert "no auxiliary head" in text and "--adapt-steps 3 ignored" in text
    assert "gain +0.0000 dB" in text


# -- bad input ------------------------------------------------------------------------------------


def bad_inputs(root: Path, trained) -> list[tuple[list, str]]:
    good = root / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    text = root / "notes.txt"
    text.write_text("not an image")
    fake = root / "fake.png"
    fake.write_text("not a png either")
    ridnet = root / "ridnet.pt"
    torch.save({"model": methods.create("ridnet").state_dict(), "payload": {"arch": "ridnet"}}, ridnet)
    bare = root / "bare.pt"
    torch.save(methods.create("ridnet").state_dict(), bare)
    lying = root / "lying.pt"
    torch.save({"model": methods.create("chi").state_dict(), "payload": {"arch": "ours"}}, lying)
    ck = ["--checkpoint", trained["checkpoint"]]
    home = ["--home", trained["home"]]
    return [
        ([text, *ck], f"{text}: unsupported file type '.txt'"),
        ([fake, *ck], f"{fake}: cannot read image header"),
        ([root / "missing.png", *ck], "missing.png: file not found"),
        ([str(root / "*.bmp"), *ck], "pattern matches no image"),
        ([good, "--model", "0123456789abcdef", *home], "--model '0123456789abcdef': no such MLflow run"),
        ([good, "--model", "x", "--home", root / "empty"], "no MLflow store at"),
        ([good, "--checkpoint", ridnet, "--arch", "ours"], "checkpoint of architecture 'ridnet', not 'ours'"),
        ([good, "--checkpoint", bare], "weights do not fit architecture 'ours'"),
        ([good, "--checkpoint", lying], "weights do not fit architecture 'ours'"),
        ([good, "--checkpoint", text], "cannot load checkpoint"),
        ([good], "expected exactly one of --model"),
        ([good, *ck, "--model", "abc"], "got --model and --checkpoint"),
        ([good, "--study", trained["study"], "--row", "Nope", *home], "--row 'Nope': not a row of study"),
        ([good, "--study", trained["study"], "--row", "Ours with meta-test", "--preset", "paper", *home],
         "no finished run"),
        ([good, *ck, "--reference", root / "nothing"], "--reference"),
        ([good, *ck, "--reference", fake], "cannot read image header"),
        ([good, *ck, "--tile", "100", "--overlap", "64"], "--tile 100 --overlap 64"),
        ([good, *ck, "--adapt-per", "pixel"], "--adapt-per 'pixel'"),
        ([good, *ck, "-k", "-1"], "--adapt-steps -1"),
        ([good, *ck, "--lr", "0"], "--lr 0"),
        ([good, *ck, "--out", root], "would overwrite this input"),
        ([good, *ck, "--out", text], f"--out {text}: an existing file"),
        ([good, *ck, "--device", "tpu"], "--device 'tpu'"),
    ]


def test_bad_input_is_one_line_and_exit_2(trained, tmp_path, run_cli):
    for args, needle in bad_inputs(tmp_path, trained):
        out = [] if "--out" in args else ["--out", tmp_path / "out"]
        code, _, err = run_cli("denoise", *args, *out)
        assert code == 2, (args, err)
        assert needle in err, (needle, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err


def test_a_file_that_fails_alone_is_one_line_and_the_batch_goes_on(trained, tmp_path, run_cli):
    """Too small for the network (a side under 4 px) or undecodable pixels behind a readable header:
    one `error:` line each, the other files are denoised, exit code 1."""
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((noisy_photo(3, 40) * 255).astype(np.uint8)).save(src / "a_thin.png")
    Image.fromarray((noisy_photo(24, 28) * 255).astype(np.uint8)).save(src / "b_good.png")
    truncated = src / "c_truncated.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    out = tmp_path / "out"
    code, text, err = run_cli("denoise", src, "--checkpoint", trained["checkpoint"], "--out", out)
    assert code == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err, err
    assert lines[0] == f"error: {src / 'a_thin.png'}: image of 40×3 px; expected at least 4 px on each side " \
                       "(the network halves the image twice)"
    assert lines[1].startswith(f"error: {truncated}: cannot decode image")
    assert sorted(p.name for p in out.iterdir()) == ["b_good.png"]
    assert "1 image(s) in" in text and "2 file(s) failed" in text
    with pytest.raises(DataError, match="expected at least 4 px"):  # the Python API too
        Denoiser.from_checkpoint(trained["checkpoint"], device="cpu")(np.zeros((2, 9, 3), np.uint8))


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_one_png_writer_keeps_every_layout_and_depth(tmp_path, channels, bits):
    """bench.data.io.write_png writes grey, grey + alpha, RGB and RGBA at 8 and 16 bits; read back as a
    photo, colour and alpha come back on the written grid (Pillow reads 16-bit colour at 8 bits, and
    16-bit grey + alpha as RGBA: the grey flag is lost there, the values are not)."""
    from bench.data.io import write_png

    rng = np.random.default_rng(channels)
    img = rng.random((5, 7, channels))
    write_png(tmp_path / "x.png", img, bits=bits)
    photo = read_photo(tmp_path / "x.png")
    colour, alpha = (img[..., :-1], img[..., -1]) if channels in (2, 4) else (img, None)
    grey = colour.shape[2] == 1
    # 8 bits: rounded to 1/255; 16-bit grey: to 1/65535; Pillow keeps the high byte of other 16-bit layouts
    tol = {8: 0.5 / 255}.get(bits, 0.5 / 65535 if grey and alpha is None else 1 / 255) + 1e-6
    assert photo.grey == (grey and (channels, bits) != (2, 16))
    assert photo.bits == bits and (photo.alpha is None) == (alpha is None)
    expected = np.repeat(colour, 3, axis=2) if grey else colour
    assert np.abs(photo.rgb - expected).max() <= tol
    if alpha is not None:
        assert np.abs(photo.alpha - alpha).max() <= tol
    with pytest.raises(ValueError, match="expected a non-empty"):
        write_png(tmp_path / "y.png", np.zeros((4, 4, 5)), bits=bits)
