"""A user's photos in and out (``bench denoise``): kept as given, unlike benchmark images.

Benchmark images must be opaque RGB (``bench.data.io.read_image`` refuses anything else); a photo
may be grey, carry an alpha channel or 16-bit samples, and is written back the same way. Decoding
and scaling are ``bench.data.io``'s, so a photo reads exactly as the study's loaders read an image.
"""
from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from bench.core.errors import DataError
from bench.data.base import ImagePair
from bench.data.io import decode, full_scale, to_rgb_float, write_png

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass
class Photo:
    """An image as the network sees it (float32 RGB) plus what is needed to write it back as given."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    alpha: np.ndarray | None = None  # (H, W) float32 in [0, 1], kept untouched
    grey: bool = False  # written back as one channel
    bits: int = 8  # 16 when the input held 16-bit samples (or floats)
    name: str = "image"  # where it came from, for messages (a file path, or the API caller's name)


def check_suffix(path: Path) -> None:
    """DataError unless ``path`` names a PNG, JPEG or TIFF file."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{path}: unsupported file type {path.suffix or '(none)'!r}; expected PNG, JPEG or TIFF "
                        f"({', '.join(IMAGE_SUFFIXES)})")


def _png_bit_depth(path: Path) -> int | None:
    """A PNG's declared bit depth (Pillow decodes 16-bit colour PNGs at 8 bits; the file says 16)."""
    with open(path, "rb") as f:
        head = f.read(25)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24]


def read_photo(path: str | Path) -> Photo:
    """Decode PNG / JPEG / TIFF; grey becomes 3 channels, an alpha channel is set aside and kept.

    Bad files raise DataError naming the file.
    """
    p = Path(path)
    if p.is_file():
        check_suffix(p)
    arr = decode(p)
    alpha = None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        alpha = arr[..., -1].astype(np.float32)
        scale = full_scale(arr, p)
        if scale != 1.0:
            alpha /= np.float32(scale)
        arr = arr[..., :-1]
    grey = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1)
    rgb = to_rgb_float(arr, p)
    wide = arr.dtype not in (np.uint8, np.bool_) or _png_bit_depth(p) == 16
    return Photo(rgb, alpha, grey, 16 if wide else 8, str(p))


def as_photo(image: np.ndarray | Photo, name: str = "image") -> Photo:
    """An array from the Python API: (H, W), (H, W, 1|2|3|4); uint8, uint16 or float in [0, 1]."""
    if isinstance(image, Photo):
        return image
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or 0 in arr.shape[:2]:
        raise DataError(f"{name}: image of shape {arr.shape}; expected (H, W) or (H, W, C) with C = 1, 2, 3 or 4")
    if arr.dtype == np.uint8:
        scale, bits = 255.0, 8
    elif arr.dtype == np.uint16:
        scale, bits = 65535.0, 16
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
            raise DataError(f"{name}: float samples outside [0, 1]; expected an image scaled to [0, 1]")
        scale, bits = 1.0, 16
    else:
        raise DataError(f"{name}: unsupported sample type {arr.dtype}; expected uint8, uint16 or float in [0, 1]")
    out = arr.astype(np.float32)
    if scale != 1.0:
        out /= np.float32(scale)
    alpha = out[..., -1].copy() if arr.shape[2] in (2, 4) else None
    colour = out[..., :-1] if alpha is not None else out
    grey = colour.shape[2] == 1
    rgb = np.ascontiguousarray(np.repeat(colour, 3, axis=2) if grey else colour)
    return Photo(rgb, alpha, grey, bits, name)


def to_output(rgb: np.ndarray, like: Photo) -> np.ndarray:
    """The prediction in the input's layout: grey as one channel (channel mean), alpha appended."""
    planes = rgb.mean(axis=2, keepdims=True) if like.grey else rgb
    if like.alpha is not None:
        planes = np.concatenate([planes, like.alpha[..., None]], axis=2)
    return planes[..., 0] if planes.shape[2] == 1 else planes


def write_photo(path: Path, rgb: np.ndarray, like: Photo) -> None:
    """Write a prediction with the input's channels (grey / RGB, alpha kept) and bit depth."""
    write_png(path, to_output(np.asarray(rgb, dtype=np.float64), like), like.bits)


def export_pairs(pairs: Sequence[ImagePair], folder: str | Path) -> tuple[Path, Path]:
    """Write evaluation pairs as 8-bit PNGs ``folder/noisy/<name>.png`` and ``folder/clean/<name>.png``.

    The embedded pairs lie on the 8-bit grid, so this is lossless: denoising these files
    reproduces the study's evaluation of the same images.
    """
    root = Path(folder)
    for pair in pairs:
        stem = pair.name.replace("/", "_").replace("#", "_")
        for kind, img in (("noisy", pair.noisy), ("clean", pair.clean)):
            write_png(root / kind / f"{stem}.png", img)
    return root / "noisy", root / "clean"


def collect_inputs(specs: Sequence[str]) -> list[Path]:
    """Files, folders (their images, not recursive) and glob patterns → a sorted, de-duplicated list."""
    found: list[Path] = []
    for spec in specs:
        p = Path(spec)
        if p.is_dir():
            imgs = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not imgs:
                raise DataError(f"{p}: folder holds no image; expected {', '.join(IMAGE_SUFFIXES)} files")
            found += imgs
        elif p.exists():
            found.append(p)
        elif glob.has_magic(spec):
            hits = sorted(Path(h) for h in glob.glob(spec, recursive=True))
            imgs = [h for h in hits if h.is_file() and h.suffix.lower() in IMAGE_SUFFIXES]
            if not imgs:
                raise DataError(f"{spec}: pattern matches no image; expected {', '.join(IMAGE_SUFFIXES)} files")
            found += imgs
        else:
            raise DataError(f"{p}: file not found")
    unique = list(dict.fromkeys(f.resolve() for f in found))
    return [Path(f) for f in unique]


def match_references(inputs: list[Path], reference: Path) -> dict[Path, Path]:
    """The clean image for each input: the file itself (one input) or the same stem in a folder."""
    if not reference.exists():
        raise DataError(f"--reference {reference}: not found; expected a clean image or a folder of them")
    if reference.is_file():
        if len(inputs) != 1:
            raise DataError(f"--reference {reference}: one file for {len(inputs)} inputs; "
                            "expected a folder holding a clean image of the same name for each input")
        return {inputs[0]: reference}
    by_stem: dict[str, list[Path]] = {}
    for f in sorted(reference.iterdir()):
        if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
            by_stem.setdefault(f.stem, []).append(f)
    out = {}
    for p in inputs:
        cands = by_stem.get(p.stem, [])
        if not cands:
            raise DataError(f"--reference {reference}: no clean image named {p.stem}.* for input {p}")
        same = [c for c in cands if c.suffix.lower() == p.suffix.lower()]
        out[p] = (same or cands)[0]
    return out
