"""Denoise a user's own photos with a trained model, adapting it to each photo first (Alg. 3).

``Denoiser`` holds a trained model (``bench.trained.load_model``: a checkpoint file, an MLflow run,
or the best finished run of a study row) with its meta-test defaults (K, α, optimizer), so a photo
is adapted exactly as the study evaluated its test images. Photos that fit the memory budget go
through the very functions the study uses (``bench.evaluate.predict`` → ``bench.adapt.meta_test``),
so the numbers match the study's to the last digit; larger ones are cut into overlapping tiles
(``bench.tiling``) and adapted either once per photo (one set of heads, fitted to the sum of the
tiles' losses, each pixel counted once) or once per tile.

``denoise_files`` is the ``bench denoise`` command body; photo files are ``bench.data.photos``'.
Why one file of ~410 lines: the command body only checks options through ``Denoiser.settings`` and
reports per file; kept beside the class so the two cannot drift apart again (issue 17).
"""
from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor, nn

from methods import Recipe

from . import tiled
from .config import MetaTestConfig
from .data.io import image_size, write_png
from .data.photos import Photo, as_photo, check_suffix, collect_inputs, match_references, read_photo, to_output, write_photo
from .device import parse_device
from .errors import BenchError, DataError
from .evaluate import adapts, to_tensor
from .metrics import image_metrics
from .tiling import ALIGN, auto_tile, bytes_per_pixel, plan
from .tiling import check as check_tiles
from .trained import TrainedModel, load_model
from .tta.registry import Adaptation, check_pairing, for_recipe, get_selectable

DEFAULT_OVERLAP = 64  # px; seams measured below 1e-4 at 64 (README "Large images")
DEFAULT_BUDGET_GIB = 4.0
MIN_SIDE = ALIGN  # the U-Net halves the image twice: a side under 4 px leaves nothing to convolve
AdaptPer = Literal["image", "tile"]


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
    entry: Adaptation | None = None  # an adaptation registry entry (``--adapt``) instead of the meta-test

    def __post_init__(self) -> None:
        if not self.budget_gib > 0:
            raise BenchError(f"--max-memory {self.budget_gib}: expected a positive number of GiB")
        self.model = self.model.to(self.device).eval()
        if self.entry is not None:
            if self.entry.evaluation_only:
                get_selectable(self.entry.name)  # the one-line refusal
            check_pairing(self.entry, self.model)

    # -- construction (every way in is ``bench.trained.load_model``) ------------------------------

    @classmethod
    def of(cls, trained: TrainedModel, device: str = "auto", budget_gib: float = DEFAULT_BUDGET_GIB) -> "Denoiser":
        return cls(trained.model, trained.recipe, trained.metatest, trained.arch, trained.source,
                   parse_device(device), budget_gib)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, arch: str | None = None, device: str = "auto") -> "Denoiser":
        """From a ``.pt`` file that ``bench run`` wrote (``.bench/cache/finetune-*.pt``)."""
        return cls.of(load_model(checkpoint=path, arch=arch), device)

    @classmethod
    def from_run(cls, run_id: str, *, home: str | Path | None = None, device: str = "auto") -> "Denoiser":
        """From an MLflow run of ``bench run``: a row run (parent) or the stage run holding the checkpoint.

        A row evaluated without meta-test defaults to K = 0, so the row's numbers are reproduced.
        """
        return cls.of(load_model(run_id=run_id, home=home), device)

    @classmethod
    def from_study(cls, study: str, row: str, *, preset: str | None = None, home: str | Path | None = None,
                   device: str = "auto") -> "Denoiser":
        """From the finished run of a study row with the best validation PSNR (over seeds and presets)."""
        return cls.of(load_model(study=study, row=row, preset=preset, home=home), device)

    # -- use ---------------------------------------------------------------------------------

    @property
    def adapts(self) -> bool:
        """Whether the network has an auxiliary head to adapt (the baselines have none)."""
        return adapts(self.model)

    @property
    def has_mask(self) -> bool:
        return self.adapts and self.recipe.aux_loss == "mrl"

    def bytes_per_pixel(self, adapting: bool) -> float:
        return bytes_per_pixel(self.arch, adapting)

    def auto_tile(self, height: int, width: int, adapting: bool, overlap: int = DEFAULT_OVERLAP) -> int:
        """0 (whole image) when it fits the memory budget, else the largest tile that does."""
        return auto_tile(height, width, self.bytes_per_pixel(adapting), self.budget_gib * 2**30, overlap)

    def settings(self, steps: int | None = None, lr: float | None = None, tile: int | None = None,
                 overlap: int = DEFAULT_OVERLAP, adapt: AdaptPer = "image") -> MetaTestConfig:
        """The meta-test a call runs (the model's defaults, overridden by ``steps`` and ``lr``), once the
        call's options are checked; bad values raise a one-line BenchError naming the flag."""
        if adapt not in ("image", "tile"):
            raise BenchError(f"--adapt-per {adapt!r}: expected image or tile")
        try:
            check_tiles(tile or 0, overlap)
        except ValueError as e:
            raise BenchError(f"--tile {tile} --overlap {overlap}: {e}") from None
        k = self.metatest.steps if steps is None else steps
        if k < 0:
            raise BenchError(f"--adapt-steps {k}: expected 0 or more")
        alpha = self.metatest.lr if lr is None else lr
        if not alpha > 0:
            raise BenchError(f"--lr {alpha}: expected a positive step size")
        return self.metatest.model_copy(update={"steps": k, "lr": alpha})

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
        mt = self.settings(steps, lr, tile, overlap, adapt)
        height, width = photo.rgb.shape[:2]
        if min(height, width) < MIN_SIDE:
            raise DataError(f"{photo.name}: image of {width}×{height} px; expected at least {MIN_SIDE} px on each "
                            "side (the network halves the image twice)")
        if self.entry is not None:
            return self._run_entry(photo, before, trajectory)
        adapting = self.adapts and mt.steps > 0
        size = self.auto_tile(height, width, adapting, overlap) if tile is None else tile
        tiles = plan(height, width, size, overlap)
        x = to_tensor(photo.rgb)
        job = tiled.Job(self.model, self.recipe, mt, self.device, before, trajectory, mask, on_tile)
        if len(tiles) == 1:
            parts = tiled.whole(job, x, adapting)
        elif adapting and adapt == "image":
            parts = tiled.joint(job, x, tiles, overlap, cache_bytes=self.budget_gib * 2**30 / 2)
        else:
            parts = tiled.per_tile(job, x, tiles, overlap, adapting)

        def hwc(t: Tensor | None) -> np.ndarray | None:
            if t is None:
                return None
            arr = t.detach().float().cpu().clamp(0, 1).reshape(-1, height, width).permute(1, 2, 0).numpy()
            return np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr)

        return Result(hwc(parts["after"]), hwc(parts.get("before")),
                      [hwc(s) for s in parts["steps"]] if parts.get("steps") is not None else None,
                      hwc(parts.get("mask")), len(tiles), adapting)


    def _run_entry(self, photo: Photo, before: bool, trajectory: bool) -> Result:
        """``--adapt NAME``: the registry entry on the whole image (``bench.tta.run.adapt_image``)."""
        from .tta.run import adapt_image

        height, width = photo.rgb.shape[:2]
        x = to_tensor(photo.rgb, self.device)

        def hwc(t: Tensor) -> np.ndarray:
            return np.ascontiguousarray(t.detach().float().cpu().clamp(0, 1)[0].permute(1, 2, 0).numpy())

        res = adapt_image(self.entry, self.model, x, trajectory=trajectory, diagnostics=False)
        plain = None
        if before:
            with torch.no_grad():
                out = self.model(x)
            plain = hwc(out[0] if isinstance(out, tuple) else out)
        steps = [hwc(t) for t in res.trajectory] if res.trajectory is not None else None
        return Result(hwc(res.prediction), plain, steps, None, 1, self.entry.learns)


def entry_for(name: str, steps: int | None, lr: float | None) -> Adaptation:
    """``bench denoise --adapt NAME [--adapt-steps K] [--lr LR]``: a selectable entry (never the oracle)."""
    entry = get_selectable(name)
    changes = {k: v for k, v in (("steps", steps), ("lr", lr)) if v is not None}
    return entry.with_(**changes) if changes else entry


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
    adapt: str | None = None  # an adaptation entry (``bench adaptations``); None: the model's meta-test


def open_denoiser(opts: DenoiseOptions) -> Denoiser:
    """The model named by exactly one of --model / --checkpoint / --study (+ --row)."""
    trained = load_model(checkpoint=opts.checkpoint, run_id=opts.model, study=opts.study, row=opts.row,
                         preset=opts.preset, arch=opts.arch, home=opts.home)
    den = Denoiser.of(trained, opts.device, opts.max_memory)
    if opts.adapt is not None:
        entry = entry_for(opts.adapt, opts.steps, opts.lr)
        check_pairing(entry, den.model)
        den.entry = for_recipe(entry, den.recipe)  # e.g. alg3 on a model meta-trained with L_rec
    return den


def _check_files(inputs: list[Path], out: Path) -> None:
    """Every input is an image whose header reads, --out is a folder, and no two inputs write the
    same file or over an input."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out}: an existing file; expected a folder for the denoised images")
    for p in inputs:
        check_suffix(p)
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


def _say(console, text: str, **kw: Any) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True, **kw)


def denoise_files(opts: DenoiseOptions, console) -> dict[str, Any]:
    """``bench denoise``: returns the summary (images, seconds, per-image rows, mean PSNR gain).

    Bad options or inputs stop before anything is written (BenchError). A file that fails on its
    own (too small, undecodable pixels, a reference of another size) gets one ``error:`` line on
    stderr and the batch goes on; the command then exits 1 (``typer.Exit``).
    """
    if opts.adapt is not None:  # checked before any file or model is read
        entry_for(opts.adapt, opts.steps, opts.lr)
        if opts.tile:
            raise BenchError(f"--tile {opts.tile} with --adapt {opts.adapt}: an adaptation entry runs on the whole "
                             "image; leave --tile out (tiling is the meta-test path's)")
    inputs = collect_inputs(opts.inputs)
    _check_files(inputs, opts.out)
    refs = match_references(inputs, opts.reference) if opts.reference is not None else {}
    for r in refs.values():
        image_size(r)
    den = open_denoiser(opts)
    mt = den.settings(opts.steps, opts.lr, opts.tile, opts.overlap, opts.adapt_per)
    k, lr = mt.steps, mt.lr
    if den.entry is not None:
        e = den.entry
        k, lr = e.updates_behind_prediction, e.lr
        how = f"adaptation {e.name} ({e.moves}, {e.loss}" + (f", {e.optimizer} lr {e.lr:g} × {e.steps})" if e.learns
                                                                else ")")
    elif den.adapts:
        how = f"meta-test K={k}, lr {lr:g}, {mt.optimizer}" if k > 0 else "no adaptation (K=0)"
    else:
        how = "plain forward pass: this network has no auxiliary head to adapt"
        if opts.steps:
            how += f" (--adapt-steps {opts.steps} ignored)"
    _say(console, f"model: {den.arch} from {den.source}; {how}; device {den.device}")
    for flag, wanted, ok in (("--save-mask", opts.save_mask, den.has_mask and den.entry is None),
                             ("--save-steps", opts.save_steps, (den.adapts or den.entry is not None) and k > 0)):
        if wanted and not ok:
            _say(console, f"note: {flag} ignored: {'no mask network in this model' if flag == '--save-mask' else 'no adaptation steps'}",
                 style="yellow")
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    start = time.perf_counter()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}")]
    with Progress(*cols, console=console, transient=True, disable=opts.quiet or not console.is_terminal) as bar:
        task = bar.add_task("denoising", total=len(inputs), info="")
        for path in inputs:
            bar.update(task, info=path.name)
            try:
                rows.append(_denoise_one(den, opts, path, refs.get(path), k, lr, bar, task))
            except DataError as e:
                failed.append(str(e))
                print(f"error: {e}", file=sys.stderr, flush=True)
            bar.update(task, advance=1)
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {"images": len(rows), "seconds": seconds, "rows": rows, "out": str(opts.out),
                               "failed": failed}
    line = f"{len(rows)} image(s) in {seconds:.1f} s"
    if refs and rows:
        before = float(np.mean([r["before_psnr"] for r in rows]))
        after = float(np.mean([r["after_psnr"] for r in rows]))
        summary.update(before_psnr=before, after_psnr=after, gain=after - before)
        line += f"; mean PSNR {before:.4f} → {after:.4f} dB, gain {_fmt_gain(after, before)} dB"
        _write_csv(opts.out / "metrics.csv", rows)
    line += f"; written to {opts.out}/" + (" (per-image numbers in metrics.csv)" if refs and rows else "")
    if failed:
        line += f"; {len(failed)} file(s) failed (see the error lines)"
    _say(console, line)
    if failed:
        import typer

        raise typer.Exit(1)
    return summary


def _denoise_one(den: Denoiser, opts: DenoiseOptions, path: Path, ref: Path | None, k: int, lr: float,
                 bar, task) -> dict[str, Any]:
    """Denoise one file and write its outputs; its row of metrics.csv."""
    t0 = time.perf_counter()
    photo = read_photo(path)
    clean = None
    if ref is not None:
        clean = read_photo(ref).rgb
        if clean.shape != photo.rgb.shape:
            raise DataError(f"{ref}: reference is {clean.shape[1]}×{clean.shape[0]}, "
                            f"input {path} is {photo.rgb.shape[1]}×{photo.rgb.shape[0]}; expected the same size")

    def on_tile(done: int, total: int) -> None:
        bar.update(task, info=f"{path.name}: tile {done}/{total}")

    res = den.run(photo, steps=k, lr=lr, tile=opts.tile, overlap=opts.overlap, adapt=opts.adapt_per,
                  before=clean is not None,
                  trajectory=opts.save_steps and (den.adapts or den.entry is not None) and k > 0,
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
        _say(bar.console, f"{path.name}: PSNR {row['before_psnr']:.4f} → {row['after_psnr']:.4f} dB "
             f"({_fmt_gain(row['after_psnr'], row['before_psnr'])}), SSIM {row['before_ssim']:.4f} → "
             f"{row['after_ssim']:.4f}  (noisy input {row['noisy_psnr']:.4f} dB)")
    row["seconds"] = time.perf_counter() - t0
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})


__all__ = ["Denoiser", "Result", "denoise_files", "DenoiseOptions"]
