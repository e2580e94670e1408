"""Loaders for the real data sets the paper used, reading exactly the layouts the official code reads.

Every set lives in its own folder under one data root (``--data-root``, else ``$TTAID_DATA_ROOT``,
else ``./datasets``); datasets/README.md shows the trees. Each loader finds the files first (a cheap
scan that already rejects an incomplete tree), then decodes each file once into memory as
:class:`ImagePair` float32 arrays. Anything unusable is a one-line DataError naming the file or folder.

Memory note: decoded float32 is 4x the 8-bit size; SIDD-Small, PolyU and Nam fit easily, but all
of DIV2K train is ~26 GB as float32, which a patch sampler over it would have to keep in mind.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import DataError
from bench.data.base import ImagePair
from bench.data.io import image_size, read_image

DATA_ROOT_ENV = "TTAID_DATA_ROOT"
DEFAULT_DATA_ROOT = Path("datasets")
_SEE = "see datasets/README.md"

NAM_KEYS = ("img_noisy", "img_mean")


def data_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The data root: an explicit value (``--data-root``), else ``$TTAID_DATA_ROOT``, else ./datasets."""
    if override is not None and str(override) != "":
        return Path(override).expanduser()
    env = os.environ.get(DATA_ROOT_ENV, "")
    return Path(env).expanduser() if env else DEFAULT_DATA_ROOT


@dataclass(frozen=True)
class _Item:
    """One sample on disk: a clean file with its noisy twin, or one .mat holding both."""

    name: str
    clean: Path
    noisy: Path | None = None
    mat: bool = False


# --- finding files -------------------------------------------------------------------------------


def _set_dir(root: str | os.PathLike[str], relpath: str, label: str, layout: str) -> Path:
    """The set's folder, or a DataError that says where it should be."""
    base = Path(root)
    if not base.is_dir():
        raise DataError(
            f"data root {base} does not exist or is not a folder; {label} goes in {base / relpath} ({_SEE})"
        )
    path = base / relpath
    if not path.is_dir():
        raise DataError(f"{label} not found: expected {path} holding {layout} ({_SEE})")
    return path


def _files(folder: Path, suffixes: Iterable[str]) -> list[Path]:
    wanted = {s.lower() for s in suffixes}
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in wanted)


def _pair_up(found: dict[str, dict[str, Path]], clean_key: str, noisy_key: str,
             twin: Callable[[Path, str], Path]) -> list[tuple[str, Path, Path]]:
    """(id, clean, noisy) for every id, or a DataError for a file that lacks its twin."""
    pairs = []
    for key in sorted(found):
        files = found[key]
        if noisy_key not in files:
            clean = files[clean_key]
            raise DataError(f"{clean}: clean image without its noisy twin {twin(clean, noisy_key)}")
        if clean_key not in files:
            noisy = files[noisy_key]
            raise DataError(f"{noisy}: noisy image without its clean twin {twin(noisy, clean_key)}")
        pairs.append((key, files[clean_key], files[noisy_key]))
    return pairs


def _scan_div2k(root: str | os.PathLike[str], split: str) -> list[_Item]:
    if split not in ("train", "valid"):
        raise DataError(f"DIV2K split {split!r} is not one of: train, valid")
    folder = _set_dir(root, f"DIV2K/{split}", f"DIV2K {split}", "the HR PNGs (0001.png, ...)")
    files = _files(folder, [".png"])
    if not files:
        raise DataError(f"{folder}: no *.png images; expected the DIV2K {split} HR PNGs ({_SEE})")
    return [_Item(name=p.stem, clean=p) for p in files]


_SIDD_FILE = re.compile(r"^(GT|NOISY)_SRGB_(.+)\.png$", re.IGNORECASE)


def _sidd_twin(path: Path, kind: str) -> Path:
    """GT_SRGB_010.PNG <-> NOISY_SRGB_010.PNG."""
    return path.with_name(re.sub(r"^(GT|NOISY)", kind, path.name, flags=re.IGNORECASE))


def _scan_sidd(root: str | os.PathLike[str]) -> list[_Item]:
    base = _set_dir(root, "SIDD_Small_sRGB_Only", "SIDD-Small", "Scene_Instances.txt and Data/<scene>/")
    listing = base / "Scene_Instances.txt"
    if not listing.is_file():
        raise DataError(f"{listing}: not found; expected the list of scene folders of SIDD-Small ({_SEE})")
    scenes = [line.strip() for line in listing.read_text(errors="replace").splitlines() if line.strip()]
    if not scenes:
        raise DataError(f"{listing}: lists no scenes; expected one scene folder name per line")
    items = []
    for scene in scenes:
        folder = base / "Data" / scene
        if not folder.is_dir():
            raise DataError(f"{folder}: scene folder listed in {listing} is missing")
        found: dict[str, dict[str, Path]] = {}
        for p in folder.iterdir():
            m = _SIDD_FILE.match(p.name)
            if m and p.is_file():
                found.setdefault(m.group(2), {})[m.group(1).upper()] = p
        if not found:
            raise DataError(f"{folder}: no GT_SRGB_*.PNG / NOISY_SRGB_*.PNG pair")
        for key, clean, noisy in _pair_up(found, "GT", "NOISY", _sidd_twin):
            items.append(_Item(name=f"{scene}/{key}", clean=clean, noisy=noisy))
    return items


_POLYU_FILE = re.compile(r"^(.+)_(real|mean)\.(jpg|jpeg)$", re.IGNORECASE)


def _polyu_twin(path: Path, kind: str) -> Path:
    """x_real.JPG <-> x_mean.JPG."""
    return path.with_name(re.sub(r"_(real|mean)(\.[^.]+)$", rf"_{kind}\2", path.name, flags=re.IGNORECASE))


def _scan_polyu(root: str | os.PathLike[str]) -> list[_Item]:
    folder = _set_dir(root, "PolyU/CroppedImages", "PolyU", "*_real.JPG (noisy) and *_mean.JPG (clean)")
    found: dict[str, dict[str, Path]] = {}
    for p in _files(folder, [".jpg", ".jpeg"]):
        m = _POLYU_FILE.match(p.name)
        if m:
            found.setdefault(m.group(1), {})[m.group(2).lower()] = p
    if not found:
        raise DataError(f"{folder}: no *_real.JPG / *_mean.JPG pairs ({_SEE})")
    pairs = _pair_up(found, "mean", "real", _polyu_twin)
    return [_Item(name=key, clean=clean, noisy=noisy) for key, clean, noisy in pairs]


_NAM_PNG = re.compile(r"^(.+)_(real|mean)\.png$", re.IGNORECASE)


def _scan_nam(root: str | os.PathLike[str]) -> list[_Item]:
    folder = _set_dir(root, "Nam", "Nam (CC)", ".mat files (img_noisy, img_mean) or *_real.png / *_mean.png pairs")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    mats = [p for p in files if p.suffix.lower() == ".mat"]
    items = [_Item(name=p.relative_to(folder).with_suffix("").as_posix(), clean=p, mat=True) for p in mats]
    found: dict[str, dict[str, Path]] = {}
    for p in files:  # CC15 as the literature uses it: <camera>_iso<N>_<k>_real.png (noisy) / _mean.png (clean)
        m = _NAM_PNG.match(p.name)
        if m:
            key = (p.parent.relative_to(folder) / m.group(1)).as_posix()
            found.setdefault(key, {})[m.group(2).lower()] = p
    items += [_Item(name=key, clean=clean, noisy=noisy)
              for key, clean, noisy in _pair_up(found, "mean", "real", _polyu_twin)]
    if not items:
        raise DataError(f"{folder}: no *.mat files and no *_real.png / *_mean.png pairs (searched recursively); "
                        f"expected Nam's CC images ({_SEE})")
    return sorted(items, key=lambda i: i.name)


# --- decoding ------------------------------------------------------------------------------------


def _mat_arrays(path: Path) -> dict[str, np.ndarray]:
    """``img_noisy`` and ``img_mean`` as (H, W, 3) arrays, from MATLAB v5 or v7.3 (HDF5) files."""
    import h5py

    if not path.is_file():
        raise DataError(f"{path}: file not found")
    expect = f"expected uint8 variables {' and '.join(NAM_KEYS)}"
    out: dict[str, np.ndarray] = {}
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                for key in NAM_KEYS:
                    if key not in f or not isinstance(f[key], h5py.Dataset):
                        raise DataError(f"{path}: no variable {key!r}; {expect}")
                    # HDF5 keeps MATLAB's column-major order: (H, W, 3) is stored as (3, W, H).
                    out[key] = np.asarray(f[key][()]).T
        else:
            from scipy.io import loadmat

            data = loadmat(path, variable_names=list(NAM_KEYS))
            for key in NAM_KEYS:
                if key not in data:
                    raise DataError(f"{path}: no variable {key!r}; {expect}")
                out[key] = np.asarray(data[key])
    except DataError:
        raise
    except Exception as exc:  # scipy/h5py raise many types for corrupt or truncated files
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read MATLAB file ({reason}); the file is corrupt or truncated") from None
    for key, arr in out.items():
        if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or 0 in arr.shape:
            raise DataError(f"{path}: {key} is {arr.dtype} {arr.shape}; expected uint8 (H, W, 3)")
    return out


def _mat_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Variable shapes from the .mat header only (for cheap checks)."""
    import h5py

    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                present = [k for k in NAM_KEYS if k in f and isinstance(f[k], h5py.Dataset)]
                shapes = {k: tuple(reversed(f[k].shape)) for k in present}
        else:
            from scipy.io import whosmat

            shapes = {name: tuple(shape) for name, shape, _ in whosmat(path) if name in NAM_KEYS}
    except Exception as exc:  # any reader failure means an unreadable file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: cannot read MATLAB file ({reason}); the file is corrupt or truncated") from None
    for key in NAM_KEYS:
        if key not in shapes:
            raise DataError(f"{path}: no variable {key!r}; expected uint8 variables {' and '.join(NAM_KEYS)}")
    return shapes


def _check_size(path: Path, size: tuple[int, int], min_size: int) -> None:
    if min(size) < min_size:
        raise DataError(f"{path}: image is {size[0]}x{size[1]}, smaller than min_size {min_size}")


def _check_twins(clean: Path, clean_size: tuple[int, ...], noisy: Path, noisy_size: tuple[int, ...]) -> None:
    if tuple(clean_size) != tuple(noisy_size):
        raise DataError(
            f"{noisy}: size {_fmt(noisy_size)} differs from its clean twin {clean.name} ({_fmt(clean_size)})"
        )


def _fmt(shape: Sequence[int]) -> str:
    return "x".join(str(s) for s in shape[:2])


def _decode(item: _Item, min_size: int) -> ImagePair:
    if item.mat:
        arrays = _mat_arrays(item.clean)
        clean, noisy = arrays["img_mean"], arrays["img_noisy"]
        if clean.shape != noisy.shape:
            raise DataError(
                f"{item.clean}: img_noisy {_fmt(noisy.shape)} and img_mean {_fmt(clean.shape)} differ in size"
            )
        _check_size(item.clean, clean.shape[:2], min_size)
        def to_float(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(a, dtype=np.float32) / np.float32(255)

        return ImagePair(item.name, to_float(clean), to_float(noisy))
    clean = read_image(item.clean)
    _check_size(item.clean, clean.shape[:2], min_size)
    if item.noisy is None:
        return ImagePair(item.name, clean)
    noisy = read_image(item.noisy)
    _check_twins(item.clean, clean.shape, item.noisy, noisy.shape)
    return ImagePair(item.name, clean, noisy)


def _item_size(item: _Item) -> tuple[int, int]:
    """(H, W) of a sample from headers only; also catches unequal twins."""
    if item.mat:
        shapes = _mat_shapes(item.clean)
        if shapes["img_mean"] != shapes["img_noisy"]:
            raise DataError(f"{item.clean}: img_noisy {_fmt(shapes['img_noisy'])} and img_mean "
                            f"{_fmt(shapes['img_mean'])} differ in size")
        return int(shapes["img_mean"][0]), int(shapes["img_mean"][1])
    size = image_size(item.clean)
    if item.noisy is not None:
        _check_twins(item.clean, size, item.noisy, image_size(item.noisy))
    return size


def _load(items: list[_Item], min_size: int) -> list[ImagePair]:
    return [_decode(item, min_size) for item in items]


# --- public loaders ------------------------------------------------------------------------------


def load_div2k(root: str | os.PathLike[str], split: str = "train", *, min_size: int = 0) -> list[ImagePair]:
    """DIV2K HR images, clean only: ``<root>/DIV2K/train/*.png`` or ``<root>/DIV2K/valid/*.png``."""
    return _load(_scan_div2k(root, split), min_size)


def load_sidd_small(root: str | os.PathLike[str], *, min_size: int = 0) -> list[ImagePair]:
    """SIDD-Small sRGB pairs: scenes listed in ``Scene_Instances.txt``, ``Data/<scene>/{GT,NOISY}_SRGB_*.PNG``."""
    return _load(_scan_sidd(root), min_size)


def load_polyu(root: str | os.PathLike[str], *, min_size: int = 0) -> list[ImagePair]:
    """PolyU cropped pairs: ``<root>/PolyU/CroppedImages/<id>_real.JPG`` (noisy) / ``<id>_mean.JPG`` (clean)."""
    return _load(_scan_polyu(root), min_size)


def load_nam(root: str | os.PathLike[str], *, min_size: int = 0) -> list[ImagePair]:
    """Nam (CC) pairs under ``<root>/Nam/``: every ``*.mat`` with uint8 ``img_noisy`` / ``img_mean``, and
    every ``<id>_real.png`` (noisy) / ``<id>_mean.png`` (clean) pair (CC15, as ``bench data fetch nam`` installs it)."""
    return _load(_scan_nam(root), min_size)


@dataclass(frozen=True)
class RealSet:
    """A real data set: how to load it, where it lives under the data root, what it is."""

    name: str
    relpath: str
    description: str
    paired: bool
    loader: Callable[..., list[ImagePair]]
    scan: Callable[[str | os.PathLike[str]], list[_Item]]

    def load(self, root: str | os.PathLike[str], *, min_size: int = 0) -> list[ImagePair]:
        return self.loader(root, min_size=min_size)


SETS: dict[str, RealSet] = {
    s.name: s
    for s in (
        RealSet("div2k-train", "DIV2K/train", "DIV2K HR training images (800 PNGs, clean): MAXL pre-training",
                False, functools.partial(load_div2k, split="train"), functools.partial(_scan_div2k, split="train")),
        RealSet("div2k-valid", "DIV2K/valid", "DIV2K HR validation images (100 PNGs, clean): pre-training validation",
                False, functools.partial(load_div2k, split="valid"), functools.partial(_scan_div2k, split="valid")),
        RealSet("sidd-small", "SIDD_Small_sRGB_Only", "SIDD-Small sRGB (160 smartphone pairs): MTL training",
                True, load_sidd_small, _scan_sidd),
        RealSet("polyu", "PolyU/CroppedImages", "PolyU cropped (100 DSLR pairs, JPEG): MTL training",
                True, load_polyu, _scan_polyu),
        RealSet("nam", "Nam", "Nam / CC (CC15: 15 pairs, 3 cameras; or .mat pairs): test", True, load_nam, _scan_nam),
    )
}


def get_set(name: str) -> RealSet:
    """The set called ``name``; a DataError lists the known names otherwise."""
    try:
        return SETS[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; known: {', '.join(SETS)}") from None


def check(root: str | os.PathLike[str], names: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per set: is it there, how many samples, smallest and largest (H, W), what is wrong.

    Reads only file headers (no pixel decoding), so it is quick even for DIV2K; a corrupt pixel
    stream is only caught by the loader. ``found`` means the set's folder exists; a folder that
    exists but is unusable has ``found=True`` and the DataError's message in ``error``.
    Sizes are (H, W) of the smallest and largest sample by area.
    """
    rows = []
    for name in list(SETS) if names is None else list(names):
        spec = get_set(name)
        path = Path(root) / spec.relpath
        row: dict[str, Any] = {
            "name": spec.name,
            "description": spec.description,
            "path": str(path),
            "found": path.is_dir(),
            "paired": spec.paired,
            "pairs": 0,
            "min_size": None,
            "max_size": None,
            "error": None,
        }
        if row["found"]:
            try:
                sizes = [_item_size(item) for item in spec.scan(root)]
                by_area = sorted(sizes, key=lambda hw: (hw[0] * hw[1], hw))
                row.update(pairs=len(sizes), min_size=by_area[0], max_size=by_area[-1])
            except DataError as exc:
                row["error"] = str(exc)
        else:
            row["error"] = f"not found: expected {path} ({_SEE})"
        rows.append(row)
    return rows
