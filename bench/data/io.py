"""Image files in and out: every image enters the harness as float32 (H, W, 3) RGB in [0, 1].

Reading is strict on purpose: a silently wrong image (a dropped alpha mask, a half-decoded file)
would bias a benchmark without anyone noticing, so every doubt becomes a one-line DataError.

PNG, JPEG and most other formats are decoded with Pillow; TIFF with tifffile (through imageio),
which also reads 16-bit colour. Known limit: Pillow reads a 16-bit *colour* PNG at 8-bit precision
(it keeps the high byte), so such files come back correctly scaled but quantised to 1/255;
16-bit grey PNGs and 16-bit TIFFs keep full precision.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from bench.core.errors import DataError

_TIFF_SUFFIXES = {".tif", ".tiff"}


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode an image file to float32 (H, W, 3) RGB in [0, 1].

    8- and 16-bit samples are scaled by 255 and 65535; grey is repeated to three channels; palette
    images are expanded; an alpha channel is dropped only when fully opaque. Anything else raises
    DataError naming the file.
    """
    p = Path(path)
    return to_rgb_float(decode(p), p)


def decode(path: str | os.PathLike[str]) -> np.ndarray:
    """The pixels as stored (palette expanded, native byte order): (H, W) or (H, W, C).

    A missing, corrupt or truncated file raises one DataError naming it.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file; expected an image file")
    try:
        arr = _decode_tiff(p) if p.suffix.lower() in _TIFF_SUFFIXES else _decode_pillow(p)
    except DataError:
        raise
    except Exception as exc:  # decoders raise many types for corrupt data (OSError, SyntaxError, ...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{p}: cannot decode image ({reason}); the file is corrupt, truncated or not an image"
        ) from None
    if not arr.dtype.isnative:  # e.g. Pillow's big-endian "I;16B"
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def _decode_pillow(path: Path) -> np.ndarray:
    """Pixels as stored, with palette images expanded (keeping any transparency as alpha)."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decode now, so truncation surfaces here and not later
        if im.mode in ("P", "PA"):
            has_alpha = im.mode == "PA" or "transparency" in im.info
            im = im.convert("RGBA" if has_alpha else "RGB")
        elif im.mode == "1":
            im = im.convert("L")
        elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif im.mode == "RGBX":
            im = im.convert("RGB")
        return np.asarray(im)


def _decode_tiff(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return np.asarray(iio.imread(path, plugin="tifffile"))


def full_scale(arr: np.ndarray, path: Path) -> float:
    """The value that means 'white' for this sample type."""
    if arr.dtype == np.uint8:
        return 255.0
    if arr.dtype == np.uint16:
        return 65535.0
    if arr.dtype == np.int32 and arr.size and arr.min() >= 0 and arr.max() <= 65535:
        return 65535.0  # Pillow's mode "I" for 16-bit grey from some encoders
    if arr.dtype == np.bool_:
        return 1.0
    if np.issubdtype(arr.dtype, np.floating):
        if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0):
            raise DataError(f"{path}: floating-point samples outside [0, 1]; expected an image in [0, 1]")
        return 1.0
    raise DataError(f"{path}: unsupported sample type {arr.dtype}; expected 8- or 16-bit integer or float in [0, 1]")


def to_rgb_float(arr: np.ndarray, path: Path) -> np.ndarray:
    """Decoded pixels → float32 (H, W, 3) in [0, 1]; transparency, odd layouts and empty images
    raise DataError naming ``path``."""
    if not arr.dtype.isnative:  # e.g. Pillow's big-endian "I;16B"
        arr = arr.astype(arr.dtype.newbyteorder("="))
    scale = full_scale(arr, path)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4):
        raise DataError(f"{path}: unsupported pixel layout {arr.shape}; expected a single grey, RGB or RGBA image")
    if arr.shape[2] in (2, 4):  # grey + alpha, RGB + alpha
        alpha = arr[..., -1]
        if np.any(alpha != (True if arr.dtype == np.bool_ else scale)):
            raise DataError(f"{path}: image has transparency; expected an opaque RGB image")
        arr = arr[..., :-1]
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{path}: empty image {arr.shape[:2]}")
    out = arr.astype(np.float32)
    if scale != 1.0:
        out /= np.float32(scale)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


def write_png(path: str | os.PathLike[str], img: np.ndarray, bits: int = 8) -> None:
    """Save an image in [0, 1] as an 8- or 16-bit PNG (values rounded, clipped, NaN → 0).

    (H, W) or (H, W, C) with C = 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA. 16-bit files are encoded
    here (Pillow cannot write 16-bit colour); parent folders are created.
    """
    if bits not in (8, 16):
        raise ValueError(f"write_png: bits must be 8 or 16, got {bits}")
    arr = np.asarray(img, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (2, 3, 4))) or 0 in arr.shape[:2]:
        raise ValueError(f"write_png: expected a non-empty (H, W) or (H, W, 1|2|3|4) image, got {arr.shape}")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    top = (1 << bits) - 1
    ints = np.clip(np.rint(np.nan_to_num(arr) * top), 0, top)
    if bits == 8:
        from PIL import Image

        Image.fromarray(ints.astype(np.uint8)).save(p, format="PNG")
    else:
        p.write_bytes(_encode_png16(ints.astype(np.uint16)))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _encode_png16(arr: np.ndarray) -> bytes:
    """A minimal valid 16-bit PNG of 1–4 channels: one IDAT, every row with filter 0, big-endian samples."""
    height, width = arr.shape[:2]
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]  # grey, grey + alpha, RGB, RGBA
    rows = arr.astype(">u2").reshape(height, -1).view(np.uint8)
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6))
        + _png_chunk(b"IEND", b"")
    )


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels (for cheap data checks)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found")
    try:
        if p.suffix.lower() in _TIFF_SUFFIXES:
            import imageio.v3 as iio

            shape = iio.improps(p, plugin="tifffile").shape
            return int(shape[0]), int(shape[1])
        from PIL import Image

        with Image.open(p) as im:
            width, height = im.size
        return int(height), int(width)
    except Exception as exc:  # any decoder failure means the header is unreadable
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{p}: cannot read image header ({reason}); the file is corrupt or not an image") from None
