"""Denoise a user's own photos with a trained model, adapting it to each photo first (Alg. 3).

``Denoiser`` loads a model from a checkpoint file, an MLflow run, or the best finished run of a
study row, and takes its meta-test defaults (K, α, optimizer) from the checkpoint, so a photo is
adapted exactly as the study evaluated its test images. Photos that fit the memory budget go
through the very functions the study uses (``bench.evaluate.predict`` → ``bench.adapt.meta_test``),
so the numbers match the study's to the last digit; larger ones are cut into overlapping tiles
(``bench.tiling``) and adapted either once per photo (one set of heads, fitted to the sum of the
tiles' losses, each pixel counted once) or once per tile.

``denoise_files`` is the ``bench denoise`` command behind the CLI.
"""
from __future__ import annotations

import csv
import glob
import os
import struct
import tempfile
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from pydantic import ValidationError
from torch import Tensor, nn

import methods
from methods import Recipe

from .adapt import _forward, _frozen_outputs, inner_parameters, meta_test
from .config import MetaTestConfig
from .data.base import ImagePair
# io's decoders and scaling, so a photo reads exactly as the study's data loaders read an image;
# only the alpha channel (which read_image refuses, for benchmarks) is handled here.
from .data.io import _TIFF_SUFFIXES, _decode_pillow, _decode_tiff, _png_chunk, _to_rgb_float, image_size
from .errors import BenchError, ConfigError, DataError
from .evaluate import adapts, predict, to_tensor
from .metrics import image_metrics
from .tiling import Blender, Tile, plan, tile_for_budget
from .tiling import check as check_tiles

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DEFAULT_OVERLAP = 64  # px; seams measured below 1e-4 at 64 (README "Large images")
DEFAULT_BUDGET_GIB = 4.0
AdaptPer = Literal["image", "tile"]

# Peak working memory per pixel of one tile (CPU, float32): the growth of VmHWM over one call,
# fitted between 256² and 512² inputs (ours K=5: 2,325 B/px; K=0: 1,150; chi K=5: 2,420; RIDNet
# 2,890 at 256²; MIRNet 4,820 at 192²), rounded up. The budget divides by these to size tiles;
# an unknown architecture uses the largest.
BYTES_PER_PIXEL: dict[tuple[str, bool], float] = {
    ("ours", True): 2600.0, ("ours", False): 1300.0,
    ("chi", True): 2800.0, ("chi", False): 1300.0,
    ("ridnet", False): 3000.0, ("mirnet", False): 5500.0,
}


# ----------------------------------------------------------------------------------------------
# Photos in and out


@dataclass
class Photo:
    """An image as the network sees it (float32 RGB) plus what is needed to write it back as given."""

    rgb: np.ndarray  # (H, W, 3) float32 in [0, 1]
    alpha: np.ndarray | None = None  # (H, W) float32 in [0, 1], kept untouched
    grey: bool = False  # written back as one channel
    bits: int = 8  # 16 when the input held 16-bit samples (or floats)
    name: str = "image"


def _png_bit_depth(path: Path) -> int | None:
    """A PNG's declared bit depth (Pillow decodes 16-bit colour PNGs at 8 bits; the file says 16)."""
    with open(path, "rb") as f:
        head = f.read(25)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[24]


def read_photo(path: str | Path) -> Photo:
    """Decode PNG / JPEG / TIFF; grey becomes 3 channels, an alpha channel is set aside and kept.

    Bad files raise DataError naming the file (decoding itself is ``bench.data.io``'s, so a photo
    reads exactly as the study's data loaders read it).
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: file not found")
    if not p.is_file():
        raise DataError(f"{p}: not a file; expected an image file")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise DataError(f"{p}: unsupported file type {p.suffix or '(none)'!r}; expected PNG, JPEG or TIFF "
                        f"({', '.join(IMAGE_SUFFIXES)})")
    try:
        arr = _decode_tiff(p) if p.suffix.lower() in _TIFF_SUFFIXES else _decode_pillow(p)
    except Exception as exc:  # decoders raise many types for corrupt data
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{p}: cannot decode image ({reason}); the file is corrupt, truncated or not an image") from None
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    alpha = None
    if arr.ndim == 3 and arr.shape[2] in (2, 4):
        alpha = _to_rgb_float(arr[..., -1:], p)[..., 0]
        arr = arr[..., :-1]
    grey = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 1)
    rgb = _to_rgb_float(arr, p)
    wide = arr.dtype not in (np.uint8, np.bool_) or _png_bit_depth(p) == 16
    return Photo(rgb, alpha, grey, 16 if wide else 8, p.stem)


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


def _encode_png16(ints: np.ndarray) -> bytes:
    """A 16-bit PNG of 1–4 channels (grey, grey+alpha, RGB, RGBA); Pillow writes none of these in colour."""
    height, width = ints.shape[:2]
    channels = 1 if ints.ndim == 2 else ints.shape[2]
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    rows = ints.astype(">u2").reshape(height, -1).view(np.uint8)
    scanlines = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)
    header = struct.pack(">IIBBBBB", width, height, 16, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)
            + _png_chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def to_output(rgb: np.ndarray, like: Photo) -> np.ndarray:
    """The prediction in the input's layout: grey as one channel (channel mean), alpha appended."""
    planes = rgb.mean(axis=2, keepdims=True) if like.grey else rgb
    if like.alpha is not None:
        planes = np.concatenate([planes, like.alpha[..., None]], axis=2)
    return planes[..., 0] if planes.shape[2] == 1 else planes


def write_png(path: Path, img: np.ndarray, bits: int = 8) -> None:
    """(H, W) or (H, W, 2|3|4) in [0, 1] as an 8- or 16-bit PNG (rounded, clipped; folders created)."""
    top = (1 << bits) - 1
    ints = np.clip(np.rint(np.nan_to_num(np.asarray(img, dtype=np.float64)) * top), 0, top)
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 16:
        path.write_bytes(_encode_png16(ints.astype(np.uint16)))
    else:
        from PIL import Image

        Image.fromarray(ints.astype(np.uint8)).save(path, format="PNG")


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


# ----------------------------------------------------------------------------------------------
# Loading a model


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise BenchError(f"--device {name!r}: expected auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"--device {name}: CUDA is not available on this machine; use --device cpu")
    return torch.device(name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def load_checkpoint(path: str | Path, arch: str | None = None) -> tuple[nn.Module, Recipe, MetaTestConfig, str]:
    """Build the network a checkpoint names and load its weights; (model, recipe, meta-test defaults, arch).

    Accepts what ``bench run`` writes ({"model", "payload", ...}) and bare state dicts (then
    ``arch``, default ``ours``, says what they are). Weights that do not fit raise DataError.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: checkpoint not found" if not p.exists() else f"{p}: not a file; expected a .pt checkpoint")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{p}: cannot load checkpoint ({_first_line(exc)}); expected a .pt file written by `bench run`") from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state, payload = obj["model"], obj.get("payload") or {}
    elif isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state, payload = obj, {}
    else:
        raise DataError(f"{p}: not a model checkpoint (holds a {type(obj).__name__}); "
                        "expected a dict with 'model' weights as `bench run` writes, or a state dict")
    saved = payload.get("arch")
    if arch and saved and arch != saved:
        raise DataError(f"{p}: checkpoint of architecture {saved!r}, not {arch!r}")
    name = arch or saved or "ours"
    try:
        spec = methods.get(name)
    except KeyError as e:
        raise ConfigError(f"{p}: {e.args[0]}") from None
    try:
        model = spec.create(**(payload.get("arch_kwargs") or {}))
    except TypeError as e:
        raise DataError(f"{p}: architecture {name!r} rejects the checkpoint's arch_kwargs ({_first_line(e)})") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        example = (missing or unexpected or shapes)[0]
        raise DataError(f"{p}: weights do not fit architecture {name!r} ({len(missing)} missing, {len(unexpected)} "
                        f"unexpected, {len(shapes)} mis-shaped tensors, e.g. {example!r}); "
                        "expected a checkpoint of that architecture")
    model.load_state_dict(state)
    model.eval()
    fields = Recipe.__dataclass_fields__
    saved_recipe = {k: v for k, v in (payload.get("recipe") or {}).items() if k in fields}
    if "aux_loss" not in saved_recipe and "pretrain_aux" in saved_recipe:  # a pre-training checkpoint
        saved_recipe["aux_loss"] = saved_recipe["pretrain_aux"]
    recipe = replace(spec.recipe, **saved_recipe)
    try:
        mt = MetaTestConfig.model_validate(payload.get("metatest") or {})
    except ValidationError:
        mt = MetaTestConfig()
    return model, recipe, mt, name


def _client(home: Path):
    """An MLflow client on the store ``bench run`` wrote under ``home`` (or $MLFLOW_TRACKING_URI)."""
    from . import tracking

    if not os.environ.get("MLFLOW_TRACKING_URI") and not (home / "mlflow.db").exists():
        raise BenchError(f"no MLflow store at {home / 'mlflow.db'}; run `bench run` first or pass --home")
    tracking.setup(home)
    from mlflow.tracking import MlflowClient

    return MlflowClient(), tracking.mask_secret(tracking.tracking_uri(home))


def _download_checkpoint(client, run, dst: Path) -> Path | None:
    """The stage checkpoint behind a row run or a stage run (following reuse), downloaded to ``dst``."""
    import mlflow.artifacts

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # keep stderr for errors
    tags = run.data.tags
    for rid in dict.fromkeys(r for r in (tags.get("checkpoint_run"), tags.get("trained_in_run"), run.info.run_id) if r):
        try:
            files = [f.path for f in client.list_artifacts(rid, "checkpoints") if f.path.endswith(".pt")]
        except Exception:  # a run of another kind, or an artifact store that lists nothing
            continue
        if files:
            try:
                return Path(mlflow.artifacts.download_artifacts(run_id=rid, artifact_path=files[0], dst_path=str(dst)))
            except Exception as e:
                raise BenchError(f"run {rid}: cannot download {files[0]} ({_first_line(e)})") from None
    local = tags.get("checkpoint")
    return Path(local) if local and Path(local).is_file() else None


# ----------------------------------------------------------------------------------------------
# The denoiser


@dataclass
class Result:
    """What ``Denoiser.run`` returns; images are float32 HWC in [0, 1] in the network's RGB."""

    image: np.ndarray  # the prediction after adaptation
    before: np.ndarray | None = None  # the prediction without adaptation (``before=True``)
    steps: list[np.ndarray] | None = None  # before and after each step (``trajectory=True``), Fig. 7
    mask: np.ndarray | None = None  # (H, W) mask g_θ2 (``mask=True``, masked-loss models only)
    tiles: int = 1
    adapted: bool = False  # whether any adaptation step ran


@dataclass
class Denoiser:
    """A trained model plus how to adapt it: ``Denoiser.from_run(id)(photo, steps=5)``.

    ``metatest`` holds the defaults (K, α, optimizer) the model was evaluated with in its study;
    every call may override K and α.
    """

    model: nn.Module = field(repr=False)
    recipe: Recipe
    metatest: MetaTestConfig = field(default_factory=MetaTestConfig)
    arch: str = "ours"
    source: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    budget_gib: float = DEFAULT_BUDGET_GIB

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, arch: str | None = None, device: str = "auto") -> "Denoiser":
        """From a ``.pt`` file that ``bench run`` wrote (``.bench/cache/finetune-*.pt``)."""
        model, recipe, mt, name = load_checkpoint(path, arch)
        return cls(model, recipe, mt, name, f"checkpoint {path}", _device(device))

    @classmethod
    def from_run(cls, run_id: str, *, home: str | Path | None = None, device: str = "auto") -> "Denoiser":
        """From an MLflow run of ``bench run``: a row run (parent) or the stage run holding the checkpoint.

        A row evaluated without meta-test defaults to K = 0, so the row's numbers are reproduced.
        """
        from mlflow.exceptions import MlflowException

        from .studies import default_home

        home = Path(home) if home is not None else default_home()
        client, uri = _client(home)
        try:
            run = client.get_run(run_id)
        except MlflowException:
            raise BenchError(f"--model {run_id!r}: no such MLflow run in {uri}; `bench ui --home {home}` lists them") from None
        with tempfile.TemporaryDirectory() as tmp:
            path = _download_checkpoint(client, run, Path(tmp))
            if path is None:
                raise BenchError(f"--model {run_id!r}: the run holds no model checkpoint; expected a row run of "
                                 "`bench run` or one of its stage runs")
            model, recipe, mt, name = load_checkpoint(path)
        params, tags = run.data.params, run.data.tags
        if params.get("metatest") == "False":
            mt = mt.model_copy(update={"steps": 0})
        label = tags.get("row") or run.info.run_name or run_id
        seed = f", seed {tags['seed']}" if "seed" in tags else ""
        return cls(model, recipe, mt, name, f"run {run_id} ({label}{seed})", _device(device))

    @classmethod
    def from_study(cls, study: str, row: str, *, preset: str | None = None, home: str | Path | None = None,
                   device: str = "auto") -> "Denoiser":
        """From the finished run of a study row with the best validation PSNR (over seeds and presets)."""
        from .studies import default_home, load_study

        name, spec = load_study(study)
        rows = [r.name for r in spec.rows]
        if row not in rows:
            raise ConfigError(f"--row {row!r}: not a row of study {name}; expected one of: {', '.join(map(repr, rows))}")
        home = Path(home) if home is not None else default_home()
        client, uri = _client(home)

        def of_this_study(tag: str) -> bool:  # "<study>-<preset>-<8-hex digest>", as StudyRunner names it
            if not tag.startswith(f"{name}-") or len(tag) < len(name) + 11 or tag[-9] != "-":
                return False
            return preset is None or tag[len(name) + 1 : -9] == preset

        exps = [e.experiment_id for e in client.search_experiments() if e.name.startswith(f"{name}-")]
        runs = client.search_runs(exps, "attributes.status = 'FINISHED'") if exps else []
        runs = [r for r in runs if r.data.tags.get("row") == row and of_this_study(r.data.tags.get("study", ""))
                and "val/psnr" in r.data.metrics]
        if not runs:
            how = f" --preset {preset}" if preset else ""
            raise BenchError(f"--study {name} --row {row!r}: no finished run in {uri}; run `bench run {study}{how}` first")
        best = max(runs, key=lambda r: r.data.metrics["val/psnr"])
        return cls.from_run(best.info.run_id, home=home, device=device)

    # -- use ---------------------------------------------------------------------------------

    @property
    def adapts(self) -> bool:
        """Whether the network has an auxiliary head to adapt (the baselines have none)."""
        return adapts(self.model)

    @property
    def has_mask(self) -> bool:
        return self.adapts and self.recipe.aux_loss == "mrl"

    def bytes_per_pixel(self, adapting: bool) -> float:
        return BYTES_PER_PIXEL.get((self.arch, adapting), max(BYTES_PER_PIXEL.values()))

    def auto_tile(self, height: int, width: int, adapting: bool, overlap: int = DEFAULT_OVERLAP) -> int:
        """0 (whole image) when it fits the memory budget, else the largest tile that does."""
        bpp, budget = self.bytes_per_pixel(adapting), self.budget_gib * 2**30
        if height * width * bpp <= budget:
            return 0
        return tile_for_budget(budget, bpp, overlap)

    def __call__(self, image: np.ndarray, steps: int | None = None, *, lr: float | None = None,
                 tile: int | None = None, overlap: int = DEFAULT_OVERLAP, adapt: AdaptPer = "image") -> np.ndarray:
        """Denoise one image array (see ``as_photo``); returns it in the input's layout, float32 in [0, 1].

        ``steps`` = K adaptation steps (0: none; default: the checkpoint's), ``tile`` in px (0: never;
        default: automatic from the memory budget).
        """
        photo = as_photo(image)
        out = self.run(photo, steps=steps, lr=lr, tile=tile, overlap=overlap, adapt=adapt).image
        return np.ascontiguousarray(to_output(out, photo), dtype=np.float32)

    def run(self, image: np.ndarray | Photo, *, steps: int | None = None, lr: float | None = None,
            tile: int | None = None, overlap: int = DEFAULT_OVERLAP, adapt: AdaptPer = "image",
            before: bool = False, trajectory: bool = False, mask: bool = False,
            on_tile: Callable[[int, int], None] | None = None) -> Result:
        """Denoise with every by-product asked for; see ``Result``."""
        photo = as_photo(image)
        k = self.metatest.steps if steps is None else steps
        if k < 0:
            raise BenchError(f"--adapt-steps {k}: expected 0 or more")
        alpha = self.metatest.lr if lr is None else lr
        if not alpha > 0:
            raise BenchError(f"--lr {alpha}: expected a positive step size")
        if adapt not in ("image", "tile"):
            raise BenchError(f"--adapt-per {adapt!r}: expected image or tile")
        mt = self.metatest.model_copy(update={"steps": k, "lr": alpha})
        adapting = self.adapts and k > 0
        height, width = photo.rgb.shape[:2]
        size = self.auto_tile(height, width, adapting, overlap) if tile is None else tile
        try:
            tiles = plan(height, width, size, overlap)
        except ValueError as e:
            raise BenchError(f"--tile {size} --overlap {overlap}: {e}") from None
        x = to_tensor(photo.rgb)
        if len(tiles) == 1:
            parts = self._whole(x, mt, adapting, before, trajectory, mask)
        elif adapting and adapt == "image":
            parts = self._joint(x, tiles, overlap, mt, before, trajectory, mask, on_tile)
        else:
            parts = self._per_tile(x, tiles, overlap, mt, adapting, before, trajectory, mask, on_tile)

        def hwc(t: Tensor | None) -> np.ndarray | None:
            if t is None:
                return None
            arr = t.detach().float().cpu().clamp(0, 1).reshape(-1, height, width).permute(1, 2, 0).numpy()
            return np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr)

        return Result(hwc(parts["after"]), hwc(parts.get("before")),
                      [hwc(s) for s in parts["steps"]] if parts.get("steps") is not None else None,
                      hwc(parts.get("mask")), len(tiles), adapting)

    # -- the three ways through an image ----------------------------------------------------------

    def _mask_of(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model.mask_net(x)

    def _whole(self, x: Tensor, mt: MetaTestConfig, adapting: bool, before: bool, trajectory: bool,
               mask: bool) -> dict[str, Any]:
        """One pass through the study's own functions, so the numbers equal the study's."""
        x = x.to(self.device)
        out: dict[str, Any] = {}
        if adapting and trajectory:
            traj = meta_test(self.model, x, steps=mt.steps, lr=mt.lr, scope=self.recipe.inner_scope,
                             aux=self.recipe.aux_loss, optimizer=mt.optimizer, trajectory=True)[:, 0]
            out["steps"], out["after"] = list(traj), traj[-1]
        else:
            out["after"] = predict(self.model, x, self.recipe, mt, metatest=adapting)
            out["steps"] = [out["after"]] if trajectory else None
        if before:
            out["before"] = predict(self.model, x, self.recipe, mt, metatest=False) if adapting else out["after"]
        if mask and self.has_mask:
            out["mask"] = self._mask_of(x)
        return out

    def _per_tile(self, x: Tensor, tiles: list[Tile], overlap: int, mt: MetaTestConfig, adapting: bool,
                  before: bool, trajectory: bool, mask: bool, on_tile) -> dict[str, Any]:
        """Each tile adapted on its own (Alg. 3 per tile) and blended; also the no-adaptation path."""
        height, width = x.shape[-2:]
        blend = Blender(height, width, tiles, overlap)
        for i, t in enumerate(tiles):
            xt = x[(..., *t.slices)].to(self.device)
            if adapting:
                traj = meta_test(self.model, xt, steps=mt.steps, lr=mt.lr, scope=self.recipe.inner_scope,
                                 aux=self.recipe.aux_loss, optimizer=mt.optimizer, trajectory=trajectory)
                if trajectory:
                    for s in range(mt.steps + 1):
                        blend.add(f"step{s}", i, traj[s])
                    traj = traj[-1]
                blend.add("after", i, traj)
                if before:
                    blend.add("before", i, predict(self.model, xt, self.recipe, mt, metatest=False))
            else:
                blend.add("after", i, predict(self.model, xt, self.recipe, mt, metatest=False))
            if mask and self.has_mask:
                blend.add("mask", i, self._mask_of(xt))
            if on_tile:
                on_tile(i + 1, len(tiles))
        return self._collect(blend, mt.steps if adapting else 0, before, trajectory)

    def _joint(self, x: Tensor, tiles: list[Tile], overlap: int, mt: MetaTestConfig, before: bool,
               trajectory: bool, mask: bool, on_tile) -> dict[str, Any]:
        """One set of adapted heads for the whole photo: K steps on Σ_tiles of the tile's L_aux.

        Each tile's per-pixel loss is weighted by its normalised blending window, so every pixel
        counts once and the loss is the untiled image's L_aux up to the tiles' border effects.
        The frozen body features and mask are computed once per tile and kept on the CPU when they
        fit half the memory budget, else recomputed at each step.
        """
        model, restorer, recipe = self.model, self.model.restorer, self.recipe
        height, width = x.shape[-2:]
        blend = Blender(height, width, tiles, overlap)
        params = {k: p.detach().clone().requires_grad_(True)
                  for k, p in inner_parameters(restorer, recipe.inner_scope).items()}
        opt_cls = torch.optim.Adam if mt.optimizer == "adam" else torch.optim.SGD
        opt = opt_cls(list(params.values()), lr=mt.lr)
        per_px = 4 * (restorer.body.out_channels + 1) if recipe.inner_scope == "heads" else 4
        keep = sum(t.area for t in tiles) * per_px <= self.budget_gib * 2**30 / 2
        cache: dict[int, tuple[Tensor | None, Tensor | None]] = {}
        denom = 3 * height * width
        total = (mt.steps + 1) * len(tiles)
        for step in range(mt.steps + 1):
            final = step == mt.steps
            for i, t in enumerate(tiles):
                xt = x[(..., *t.slices)].to(self.device)
                if i in cache:
                    feats, m = (None if c is None else c.to(self.device) for c in cache[i])
                else:
                    with torch.no_grad():
                        feats, m = _frozen_outputs(model, xt, recipe.inner_scope, recipe.aux_loss)
                    if keep:
                        cache[i] = tuple(None if c is None else c.cpu() for c in (feats, m))
                with torch.set_grad_enabled(not final):
                    clean, rec = _forward(restorer, params, xt, feats)
                    if not final:
                        err = (rec - xt).abs()
                        err = err * m if m is not None else err
                        ((err * blend.weights(i).to(self.device)).sum() / denom).backward()
                clean = clean.detach()
                if step == 0 and before:
                    blend.add("before", i, clean)
                if trajectory:
                    blend.add(f"step{step}", i, clean)
                if final:
                    blend.add("after", i, clean)
                if step == 0 and mask and self.has_mask:
                    blend.add("mask", i, m if m is not None else self._mask_of(xt))
                if on_tile:
                    on_tile(step * len(tiles) + i + 1, total)
            if not final:
                opt.step()
                opt.zero_grad(set_to_none=True)
        return self._collect(blend, mt.steps, before, trajectory)

    @staticmethod
    def _collect(blend: Blender, steps: int, before: bool, trajectory: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"after": blend.result("after")}
        if before:
            out["before"] = blend.result("before") if "before" in blend.keys() else out["after"]
        if trajectory:
            out["steps"] = [blend.result(f"step{s}") for s in range(steps + 1)] if steps else [out["after"]]
        if "mask" in blend.keys():
            out["mask"] = blend.result("mask")
        return out


# ----------------------------------------------------------------------------------------------
# The `bench denoise` command


@dataclass
class DenoiseOptions:
    inputs: list[str]
    model: str | None = None
    checkpoint: Path | None = None
    study: str | None = None
    row: str | None = None
    preset: str | None = None
    arch: str | None = None
    steps: int | None = None
    lr: float | None = None
    out: Path = Path("denoised")
    device: str = "auto"
    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    adapt_per: str = "image"
    max_memory: float = DEFAULT_BUDGET_GIB
    reference: Path | None = None
    save_mask: bool = False
    save_steps: bool = False
    home: Path | None = None
    quiet: bool = False


def open_denoiser(opts: DenoiseOptions) -> Denoiser:
    """The model named by exactly one of --model / --checkpoint / --study (+ --row)."""
    given = [flag for flag, v in (("--model", opts.model), ("--checkpoint", opts.checkpoint),
                                  ("--study", opts.study)) if v is not None]
    if len(given) != 1:
        raise BenchError("expected exactly one of --model RUN_ID, --checkpoint FILE or --study NAME --row ROW"
                         + (f"; got {' and '.join(given)}" if given else ""))
    if opts.row is not None and opts.study is None:
        raise BenchError("--row needs --study NAME")
    if opts.arch is not None and opts.checkpoint is None:
        raise BenchError("--arch applies to --checkpoint only (runs and studies record their architecture)")
    if opts.checkpoint is not None:
        den = Denoiser.from_checkpoint(opts.checkpoint, arch=opts.arch, device=opts.device)
    elif opts.model is not None:
        den = Denoiser.from_run(opts.model, home=opts.home, device=opts.device)
    else:
        if opts.row is None:
            from .studies import load_study

            name, spec = load_study(opts.study)
            raise BenchError(f"--study {name}: expected --row, one of: {', '.join(repr(r.name) for r in spec.rows)}")
        den = Denoiser.from_study(opts.study, opts.row, preset=opts.preset, home=opts.home, device=opts.device)
    if not opts.max_memory > 0:
        raise BenchError(f"--max-memory {opts.max_memory}: expected a positive number of GiB")
    den.budget_gib = opts.max_memory
    return den


def _check_inputs(inputs: list[Path], out: Path) -> None:
    """Every input is an image whose header reads, and no two write the same file or over an input."""
    for p in inputs:
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{p}: unsupported file type {p.suffix or '(none)'!r}; expected PNG, JPEG or TIFF")
        image_size(p)
    stems: dict[str, Path] = {}
    for p in inputs:
        if p.stem in stems:
            raise DataError(f"{p} and {stems[p.stem]} would both be written to {out / (p.stem + '.png')}; "
                            "denoise them into separate --out folders")
        stems[p.stem] = p
        if (out / f"{p.stem}.png").resolve() == p.resolve():
            raise DataError(f"{p}: --out {out} would overwrite this input; choose another --out folder")


def _fmt_gain(after: float, before: float) -> str:
    return f"{after - before:+.4f}"


def denoise_files(opts: DenoiseOptions, console) -> dict[str, Any]:
    """``bench denoise``: returns the summary (images, seconds, per-image rows, mean PSNR gain)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if opts.adapt_per not in ("image", "tile"):
        raise BenchError(f"--adapt-per {opts.adapt_per!r}: expected image or tile")
    try:
        check_tiles(opts.tile or 0, opts.overlap)
    except ValueError as e:
        raise BenchError(f"--tile {opts.tile} --overlap {opts.overlap}: {e}") from None
    if opts.steps is not None and opts.steps < 0:
        raise BenchError(f"--adapt-steps {opts.steps}: expected 0 or more")
    if opts.lr is not None and not opts.lr > 0:
        raise BenchError(f"--lr {opts.lr}: expected a positive step size")
    inputs = collect_inputs(opts.inputs)
    _check_inputs(inputs, opts.out)
    refs = match_references(inputs, opts.reference) if opts.reference is not None else {}
    for r in refs.values():
        image_size(r)
    den = open_denoiser(opts)
    k = den.metatest.steps if opts.steps is None else opts.steps
    lr = den.metatest.lr if opts.lr is None else opts.lr
    if den.adapts:
        how = f"meta-test K={k}, lr {lr:g}, {den.metatest.optimizer}" if k > 0 else "no adaptation (K=0)"
    else:
        how = "plain forward pass: this network has no auxiliary head to adapt"
        if opts.steps:
            how += f" (--adapt-steps {opts.steps} ignored)"
    console.print(f"model: {den.arch} from {den.source}; {how}; device {den.device}", highlight=False, markup=False, soft_wrap=True)
    for flag, wanted, ok in (("--save-mask", opts.save_mask, den.has_mask),
                             ("--save-steps", opts.save_steps, den.adapts and k > 0)):
        if wanted and not ok:
            console.print(f"note: {flag} ignored: {'no mask network in this model' if flag == '--save-mask' else 'no adaptation steps'}",
                          style="yellow", highlight=False, markup=False, soft_wrap=True)
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}")]
    with Progress(*cols, console=console, transient=True, disable=opts.quiet or not console.is_terminal) as bar:
        task = bar.add_task("denoising", total=len(inputs), info="")
        for path in inputs:
            t0 = time.perf_counter()
            photo = read_photo(path)
            clean = None
            if path in refs:
                clean = read_photo(refs[path]).rgb
                if clean.shape != photo.rgb.shape:
                    raise DataError(f"{refs[path]}: reference is {clean.shape[1]}×{clean.shape[0]}, "
                                    f"input {path} is {photo.rgb.shape[1]}×{photo.rgb.shape[0]}; expected the same size")
            bar.update(task, info=path.name)

            def on_tile(done: int, total: int, name: str = path.name) -> None:
                bar.update(task, info=f"{name}: tile {done}/{total}")

            res = den.run(photo, steps=k, lr=lr, tile=opts.tile, overlap=opts.overlap, adapt=opts.adapt_per,
                          before=clean is not None, trajectory=opts.save_steps and den.adapts and k > 0,
                          mask=opts.save_mask, on_tile=on_tile)
            write_photo(opts.out / f"{path.stem}.png", res.image, photo)
            if res.mask is not None:
                write_png(opts.out / f"{path.stem}.mask.png", res.mask, photo.bits)
            if res.steps is not None and opts.save_steps:
                for s, img in enumerate(res.steps):
                    write_photo(opts.out / f"{path.stem}.steps" / f"step_{s}.png", img, photo)
            row: dict[str, Any] = {"image": path.name, "height": photo.rgb.shape[0], "width": photo.rgb.shape[1],
                                   "tiles": res.tiles, "steps": k if res.adapted else 0, "lr": lr}
            if clean is not None:
                ct = to_tensor(clean)
                for label, img in (("noisy", photo.rgb), ("before", res.before), ("after", res.image)):
                    for m, v in image_metrics(to_tensor(img), ct).items():
                        row[f"{label}_{m}"] = v[0]
                bar.console.print(
                    f"{path.name}: PSNR {row['before_psnr']:.4f} → {row['after_psnr']:.4f} dB "
                    f"({_fmt_gain(row['after_psnr'], row['before_psnr'])}), SSIM {row['before_ssim']:.4f} → "
                    f"{row['after_ssim']:.4f}  (noisy input {row['noisy_psnr']:.4f} dB)", highlight=False, markup=False, soft_wrap=True)
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            bar.update(task, advance=1)
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {"images": len(rows), "seconds": seconds, "rows": rows, "out": str(opts.out)}
    line = f"{len(rows)} image(s) in {seconds:.1f} s"
    if refs:
        before = float(np.mean([r["before_psnr"] for r in rows]))
        after = float(np.mean([r["after_psnr"] for r in rows]))
        summary.update(before_psnr=before, after_psnr=after, gain=after - before)
        line += f"; mean PSNR {before:.4f} → {after:.4f} dB, gain {_fmt_gain(after, before)} dB"
        _write_csv(opts.out / "metrics.csv", rows)
    line += f"; written to {opts.out}/" + (" (per-image numbers in metrics.csv)" if refs else "")
    console.print(line, highlight=False, markup=False, soft_wrap=True)
    return summary


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})


__all__ = ["Denoiser", "Result", "Photo", "read_photo", "write_photo", "as_photo", "export_pairs",
           "collect_inputs", "denoise_files", "DenoiseOptions", "load_checkpoint"]
