"""Image reading and the real-set loaders, on tiny trees written in exactly the official layouts."""
from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from bench.core.errors import DataError
from bench.data import real
from bench.data.io import image_size, read_image, write_png

RNG = np.random.default_rng(0)


def _u8(h: int = 12, w: int = 16) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, arr: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kwargs)
    return path


def _truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --- tree writers ------------------------------------------------------------------------------


def _div2k(root: Path, split: str = "train", n: int = 2) -> list[Path]:
    return [_save(root / "DIV2K" / split / f"{i:04d}.png", _u8(10 + i, 14)) for i in range(1, n + 1)]


SCENES = ("0001_001_S6_00100_00060_3200_L", "0002_001_S6_00100_00020_3200_N")


def _sidd(root: Path, scenes=SCENES) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    base = root / "SIDD_Small_sRGB_Only"
    base.mkdir(parents=True)
    (base / "Scene_Instances.txt").write_text("\n".join(scenes) + "\n")
    written = {}
    for scene in scenes:
        gt, noisy = _u8(), _u8()
        _save(base / "Data" / scene / "GT_SRGB_010.PNG", gt, format="PNG")
        _save(base / "Data" / scene / "NOISY_SRGB_010.PNG", noisy, format="PNG")
        written[f"{scene}/010"] = (gt, noisy)
    return written


def _polyu(root: Path, ids=("Canon5D2_5_160_3200_chair_11", "Nikon_D800_1600_plant_3")) -> Path:
    folder = root / "PolyU" / "CroppedImages"
    for name in ids:
        _save(folder / f"{name}_real.JPG", _u8(), format="JPEG", quality=95)
        _save(folder / f"{name}_mean.JPG", _u8(), format="JPEG", quality=95)
    return folder


def _mat_v5(path: Path, noisy: np.ndarray, mean: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(path, {"img_noisy": noisy, "img_mean": mean})
    return path


def _mat_v73(path: Path, variables: dict[str, np.ndarray]) -> Path:
    """An HDF5 file laid out as MATLAB -v7.3 writes it: 512-byte user block, column-major arrays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512) as f:
        for key, arr in variables.items():
            f.create_dataset(key, data=arr.T)  # MATLAB's (H, W, 3) lands in HDF5 as (3, W, H)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")
    return path


def _nam(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    a = (_u8(12, 16), _u8(12, 16))
    b = (_u8(10, 18), _u8(10, 18))
    _mat_v5(root / "Nam" / "Canon_5D_Mark_III" / "a.mat", *a)
    _mat_v73(root / "Nam" / "Nikon_D800" / "b.mat", {"img_noisy": b[0], "img_mean": b[1]})
    return {"Canon_5D_Mark_III/a": a, "Nikon_D800/b": b}


# --- read_image / write_png --------------------------------------------------------------------


def test_read_8bit_rgb_png_and_jpeg(tmp_path):
    arr = _u8()
    img = read_image(_save(tmp_path / "a.png", arr))
    assert img.dtype == np.float32 and img.shape == (12, 16, 3)
    np.testing.assert_array_equal(img, arr.astype(np.float32) / 255)
    jpg = read_image(_save(tmp_path / "a.jpg", arr, quality=95))
    assert jpg.shape == (12, 16, 3) and 0 <= jpg.min() and jpg.max() <= 1


def test_read_16bit_scales_by_65535(tmp_path):
    grey = RNG.integers(0, 65536, (6, 7), dtype=np.uint16)
    _save(tmp_path / "g16.png", grey)
    img = read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(img, np.repeat(grey[..., None], 3, 2) / 65535, atol=1e-7)

    rgb16 = RNG.integers(0, 65536, (6, 7, 3), dtype=np.uint16)
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "c16.tif", rgb16)
    np.testing.assert_allclose(read_image(tmp_path / "c16.tif"), rgb16 / 65535, atol=1e-7)

    write_png(tmp_path / "c16.png", rgb16 / 65535, bits=16)  # Pillow decodes colour at 8-bit precision
    np.testing.assert_allclose(read_image(tmp_path / "c16.png"), rgb16 / 65535, atol=1 / 255)


def test_read_grey_palette_and_opaque_alpha_become_rgb(tmp_path):
    arr = _u8()
    grey = read_image(_save(tmp_path / "l.png", arr[..., 0]))
    assert grey.shape == (12, 16, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    pal = Image.fromarray(arr).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), np.asarray(pal.convert("RGB")) / np.float32(255))
    rgba = np.dstack([arr, np.full(arr.shape[:2], 255, np.uint8)])
    np.testing.assert_array_equal(read_image(_save(tmp_path / "rgba.png", rgba)), arr / np.float32(255))


def test_transparent_image_is_rejected(tmp_path):
    rgba = np.dstack([_u8(), np.full((12, 16), 255, np.uint8)])
    rgba[0, 0, 3] = 0
    path = _save(tmp_path / "t.png", rgba)
    with pytest.raises(DataError, match=r"t\.png.*has transparency; expected an opaque RGB image"):
        read_image(path)
    pal = Image.fromarray(_u8()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal.save(tmp_path / "tp.png", transparency=int(np.asarray(pal)[0, 0]))  # a used palette entry is transparent
    with pytest.raises(DataError, match=r"tp\.png.*has transparency"):
        read_image(tmp_path / "tp.png")


@pytest.mark.parametrize("name", ["bad.png", "bad.jpg"])
def test_truncated_or_corrupt_image_is_rejected(tmp_path, name):
    path = _truncate(_save(tmp_path / name, _u8(64, 64)), keep=0.4)
    with pytest.raises(DataError, match=rf"{name}: cannot decode image"):
        read_image(path)
    junk = tmp_path / f"junk_{name}"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=rf"junk_{name}: cannot decode image"):
        read_image(junk)


def test_missing_image_is_rejected(tmp_path):
    with pytest.raises(DataError, match=r"nope\.png: file not found"):
        read_image(tmp_path / "nope.png")


def test_write_png_round_trips(tmp_path):
    img = _u8() / np.float32(255)
    write_png(tmp_path / "sub" / "x.png", img)
    np.testing.assert_array_equal(read_image(tmp_path / "sub" / "x.png"), img)
    write_png(tmp_path / "g.png", img[..., 0], bits=16)
    np.testing.assert_allclose(read_image(tmp_path / "g.png")[..., 0], img[..., 0], atol=1e-6)
    assert image_size(tmp_path / "g.png") == (12, 16)
    with pytest.raises(ValueError):
        write_png(tmp_path / "y.png", img, bits=12)


# --- loaders on good trees ---------------------------------------------------------------------


def test_load_div2k(tmp_path):
    _div2k(tmp_path, "train", 2)
    _div2k(tmp_path, "valid", 1)
    train = real.load_div2k(tmp_path)
    assert [p.name for p in train] == ["0001", "0002"]
    assert train[0].clean.shape == (11, 14, 3) and train[0].noisy is None
    assert len(real.load_div2k(tmp_path, "valid")) == 1
    with pytest.raises(DataError, match="split 'test'"):
        real.load_div2k(tmp_path, "test")


def test_load_sidd_small(tmp_path):
    written = _sidd(tmp_path)
    pairs = real.load_sidd_small(tmp_path)
    assert [p.name for p in pairs] == sorted(written)
    for pair in pairs:
        gt, noisy = written[pair.name]
        np.testing.assert_array_equal(pair.clean, gt / np.float32(255))
        np.testing.assert_array_equal(pair.noisy, noisy / np.float32(255))


def test_load_polyu(tmp_path):
    _polyu(tmp_path)
    pairs = real.load_polyu(tmp_path)
    assert [p.name for p in pairs] == ["Canon5D2_5_160_3200_chair_11", "Nikon_D800_1600_plant_3"]
    assert all(p.clean.shape == p.noisy.shape == (12, 16, 3) for p in pairs)


def test_load_nam_reads_matlab_v5_and_v73(tmp_path):
    written = _nam(tmp_path)
    pairs = real.load_nam(tmp_path)
    assert [p.name for p in pairs] == sorted(written)
    for pair in pairs:
        noisy, mean = written[pair.name]
        assert pair.clean.shape == mean.shape  # v7.3's transposed storage is undone
        np.testing.assert_array_equal(pair.clean, mean / np.float32(255))
        np.testing.assert_array_equal(pair.noisy, noisy / np.float32(255))


# --- loaders on bad trees ----------------------------------------------------------------------

LOADERS = {
    "div2k": (real.load_div2k, "DIV2K/train"),
    "sidd": (real.load_sidd_small, "SIDD_Small_sRGB_Only"),
    "polyu": (real.load_polyu, "PolyU/CroppedImages"),
    "nam": (real.load_nam, "Nam"),
}


@pytest.mark.parametrize("which", LOADERS)
def test_missing_root_says_where_the_set_goes(tmp_path, which):
    loader, rel = LOADERS[which]
    absent = re.escape(str(tmp_path / "absent"))
    with pytest.raises(DataError, match=rf"data root {absent} does not exist.*{rel}.*datasets/README\.md"):
        loader(tmp_path / "absent")


@pytest.mark.parametrize("which", LOADERS)
def test_missing_set_folder_says_where_it_goes(tmp_path, which):
    loader, rel = LOADERS[which]
    expected = re.escape(str(tmp_path / rel))
    with pytest.raises(DataError, match=rf"not found: expected {expected} .*datasets/README\.md"):
        loader(tmp_path)


@pytest.mark.parametrize("which", ["div2k", "polyu", "nam"])
def test_empty_set_folder_is_rejected(tmp_path, which):
    loader, rel = LOADERS[which]
    (tmp_path / rel).mkdir(parents=True)
    (tmp_path / rel / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match=rf"{re.escape(str(tmp_path / rel))}: no \*"):
        loader(tmp_path)


def test_sidd_empty_listing_missing_listing_and_missing_scene(tmp_path):
    base = tmp_path / "SIDD_Small_sRGB_Only"
    (base / "Data").mkdir(parents=True)
    with pytest.raises(DataError, match=r"Scene_Instances\.txt: not found"):
        real.load_sidd_small(tmp_path)
    (base / "Scene_Instances.txt").write_text("\n\n")
    with pytest.raises(DataError, match=r"Scene_Instances\.txt: lists no scenes"):
        real.load_sidd_small(tmp_path)
    (base / "Scene_Instances.txt").write_text("0003_x\n")
    with pytest.raises(DataError, match=r"Data/0003_x: scene folder listed in .*Scene_Instances\.txt is missing"):
        real.load_sidd_small(tmp_path)
    (base / "Data" / "0003_x").mkdir()
    with pytest.raises(DataError, match=r"Data/0003_x: no GT_SRGB_\*\.PNG"):
        real.load_sidd_small(tmp_path)


@pytest.mark.parametrize("drop, message", [
    ("GT_SRGB_010.PNG", r"NOISY_SRGB_010\.PNG: noisy image without its clean twin .*GT_SRGB_010\.PNG"),
    ("NOISY_SRGB_010.PNG", r"GT_SRGB_010\.PNG: clean image without its noisy twin .*NOISY_SRGB_010\.PNG"),
])
def test_sidd_unpaired_file_is_rejected(tmp_path, drop, message):
    _sidd(tmp_path)
    (tmp_path / "SIDD_Small_sRGB_Only" / "Data" / SCENES[1] / drop).unlink()
    with pytest.raises(DataError, match=rf"{SCENES[1]}/{message}"):
        real.load_sidd_small(tmp_path)


@pytest.mark.parametrize("drop, message", [
    ("x_mean.JPG", r"x_real\.JPG: noisy image without its clean twin .*x_mean\.JPG"),
    ("x_real.JPG", r"x_mean\.JPG: clean image without its noisy twin .*x_real\.JPG"),
])
def test_polyu_unpaired_file_is_rejected(tmp_path, drop, message):
    folder = _polyu(tmp_path, ids=("a", "x"))
    (folder / drop).unlink()
    with pytest.raises(DataError, match=message):
        real.load_polyu(tmp_path)


def test_mismatched_pair_sizes_are_rejected(tmp_path):
    _sidd(tmp_path)
    noisy = tmp_path / "SIDD_Small_sRGB_Only" / "Data" / SCENES[0] / "NOISY_SRGB_010.PNG"
    _save(noisy, _u8(12, 15), format="PNG")
    message = r"NOISY_SRGB_010\.PNG: size 12x15 differs from its clean twin GT_SRGB_010\.PNG \(12x16\)"
    with pytest.raises(DataError, match=message):
        real.load_sidd_small(tmp_path)
    folder = _polyu(tmp_path, ids=("p",))
    _save(folder / "p_real.JPG", _u8(8, 16), format="JPEG")
    with pytest.raises(DataError, match=r"p_real\.JPG: size 8x16 differs"):
        real.load_polyu(tmp_path)
    _mat_v5(tmp_path / "Nam" / "m.mat", _u8(12, 16), _u8(12, 14))
    with pytest.raises(DataError, match=r"m\.mat: img_noisy 12x16 and img_mean 12x14 differ in size"):
        real.load_nam(tmp_path)


def test_corrupt_images_in_a_set_are_rejected(tmp_path):
    paths = _div2k(tmp_path, "train", 2)
    _truncate(paths[1])
    with pytest.raises(DataError, match=r"DIV2K/train/0002\.png: cannot decode image"):
        real.load_div2k(tmp_path)
    folder = _polyu(tmp_path, ids=("q",))
    (folder / "q_mean.JPG").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(DataError, match=r"q_mean\.JPG: cannot decode image"):
        real.load_polyu(tmp_path)


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_truncated_mat_is_rejected(tmp_path, version):
    noisy, mean = _u8(40, 40), _u8(40, 40)
    path = tmp_path / "Nam" / "t.mat"
    if version == "v5":
        _mat_v5(path, noisy, mean)
    else:
        _mat_v73(path, {"img_noisy": noisy, "img_mean": mean})
    _truncate(path, keep=0.3 if version == "v5" else 0.6)
    with pytest.raises(DataError, match=r"Nam/t\.mat: cannot read MATLAB file"):
        real.load_nam(tmp_path)


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_mat_without_expected_keys_is_rejected(tmp_path, version):
    path = tmp_path / "Nam" / "k.mat"
    if version == "v5":
        path.parent.mkdir(parents=True)
        scipy.io.savemat(path, {"img_noisy": _u8(), "clean": _u8()})
    else:
        _mat_v73(path, {"img_noisy": _u8(), "clean": _u8()})
    message = r"Nam/k\.mat: no variable 'img_mean'; expected uint8 variables img_noisy and img_mean"
    with pytest.raises(DataError, match=message):
        real.load_nam(tmp_path)


def test_mat_with_wrong_dtype_is_rejected(tmp_path):
    _mat_v5(tmp_path / "Nam" / "f.mat", _u8() / 255.0, _u8() / 255.0)
    with pytest.raises(DataError, match=r"f\.mat: img_noisy is float64 \(12, 16, 3\); expected uint8"):
        real.load_nam(tmp_path)


def test_images_smaller_than_min_size_are_rejected(tmp_path):
    _div2k(tmp_path, "train", 1)  # 11x14
    assert len(real.load_div2k(tmp_path, min_size=11)) == 1
    with pytest.raises(DataError, match=r"0001\.png: image is 11x14, smaller than min_size 12"):
        real.load_div2k(tmp_path, min_size=12)
    _nam(tmp_path)
    with pytest.raises(DataError, match=r"Nikon_D800/b\.mat: image is 10x18, smaller than min_size 11"):
        real.load_nam(tmp_path, min_size=11)


# --- the registry and the check report ---------------------------------------------------------


def test_sets_registry_points_at_the_loaders(tmp_path):
    assert set(real.SETS) == {"div2k-train", "div2k-valid", "sidd-small", "polyu", "nam"}
    _sidd(tmp_path)
    assert len(real.SETS["sidd-small"].load(tmp_path)) == 2
    with pytest.raises(DataError, match="unknown data set 'cc'; known: div2k-train"):
        real.get_set("cc")


def test_check_reports_found_missing_and_broken_sets(tmp_path):
    _sidd(tmp_path)
    _nam(tmp_path)
    (tmp_path / "PolyU" / "CroppedImages").mkdir(parents=True)  # there, but empty
    rows = {r["name"]: r for r in real.check(tmp_path)}
    assert rows["sidd-small"]["found"] and rows["sidd-small"]["pairs"] == 2 and rows["sidd-small"]["error"] is None
    assert rows["sidd-small"]["min_size"] == rows["sidd-small"]["max_size"] == (12, 16)
    assert rows["nam"]["pairs"] == 2 and rows["nam"]["min_size"] == (10, 18) and rows["nam"]["max_size"] == (12, 16)
    assert not rows["div2k-train"]["found"] and rows["div2k-train"]["path"] == str(tmp_path / "DIV2K" / "train")
    assert "datasets/README.md" in rows["div2k-train"]["error"]
    assert rows["polyu"]["found"] and rows["polyu"]["pairs"] == 0 and "no *_real.JPG" in rows["polyu"]["error"]
    assert [r["name"] for r in real.check(tmp_path, ["nam"])] == ["nam"]


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv(real.DATA_ROOT_ENV, raising=False)
    assert real.data_root() == Path("datasets")
    monkeypatch.setenv(real.DATA_ROOT_ENV, str(tmp_path))
    assert real.data_root() == tmp_path
    assert real.data_root(tmp_path / "cli") == tmp_path / "cli"
