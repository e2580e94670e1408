"""Denoise a user's own photos with a trained model, adapting it to each photo first.

``Denoiser`` holds a trained model (``bench.inference.trained.load_model``: a checkpoint file, an
MLflow run, or the best finished run of a study row) with the adaptation entry its study scored it
with (the preset's meta-test: K, α, optimizer, variant), so a photo is adapted exactly as the
study evaluated its test images. Any other entry (``bench adaptations``) may replace it. Photos
that fit the memory budget go through the evaluator's own executor
(``bench.adaptation.run.adapt_image``), so the numbers match the study's to the last digit;
larger ones are cut into overlapping tiles (``bench.inference.tiling``) and adapted either once per
photo (one set of weights fitted to the sum of the tiles' losses, each pixel counted once) or
once per tile (``bench.inference.tiled``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch
from torch import Tensor, nn

from bench.adaptation.registry import Adaptation, capabilities, check_pairing, for_recipe, get, get_selectable
from bench.core.device import parse_device
from bench.core.errors import BenchError, DataError
from bench.core.images import to_tensor
from bench.data.photos import Photo, as_photo, to_output
from bench.inference import tiled
from bench.inference.tiling import ALIGN, auto_tile, bytes_per_pixel, plan
from bench.inference.tiling import check as check_tiles
from bench.inference.trained import TrainedModel, load_model
from methods import Recipe

DEFAULT_OVERLAP = 64  # px; tiled and untiled outputs agree within 1e-4 at this overlap (tests/test_denoise.py)
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
    """A trained model plus the adaptation it runs: ``Denoiser.from_run(id)(photo, steps=5)``.

    ``entry`` is the adaptation the model was scored with in its study (K = 0 for a row without
    meta-test, ``none`` for a network without an auxiliary head), or any entry a caller picks
    (``entry_for``); every call may override its K and lr.
    """

    model: nn.Module = field(repr=False)
    recipe: Recipe
    entry: Adaptation = field(default_factory=lambda: get("none"))
    arch: str = "ours"
    source: str = ""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    budget_gib: float = DEFAULT_BUDGET_GIB

    def __post_init__(self) -> None:
        if not self.budget_gib > 0:
            raise BenchError(f"--max-memory {self.budget_gib}: expected a positive number of GiB")
        self.model = self.model.to(self.device).eval()
        self.use(self.entry)

    def use(self, entry: Adaptation) -> None:
        """Adapt with ``entry`` from now on: checked against the model (one-line refusal) and made to
        follow the model's recipe (e.g. ``alg3`` on a model meta-trained with L_rec steps on L_rec)."""
        if entry.evaluation_only:
            get_selectable(entry.name)  # the one-line refusal
        check_pairing(entry, self.model)
        self.entry = for_recipe(entry, self.recipe)

    # -- construction (every way in is ``bench.inference.trained.load_model``) ---------------------

    @classmethod
    def of(cls, trained: TrainedModel, device: str = "auto", budget_gib: float = DEFAULT_BUDGET_GIB) -> "Denoiser":
        return cls(trained.model, trained.recipe, trained.entry, trained.arch, trained.source, parse_device(device),
                   budget_gib)

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, arch: str | None = None, device: str = "auto") -> "Denoiser":
        """From a ``.pt`` file that ``bench run`` wrote (the home's ``cache/finetune-*.pt``)."""
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
        return "aux-head" in capabilities(self.model)

    @property
    def has_mask(self) -> bool:
        return self.entry.loss == "aux-mask"

    def bytes_per_pixel(self, adapting: bool) -> float:
        return bytes_per_pixel(self.arch, adapting)

    def auto_tile(self, height: int, width: int, adapting: bool, overlap: int = DEFAULT_OVERLAP) -> int:
        """0 (whole image) when it fits the memory budget, else the largest tile that does."""
        return auto_tile(height, width, self.bytes_per_pixel(adapting), self.budget_gib * 2**30, overlap)

    def settings(self, steps: int | None = None, lr: float | None = None, tile: int | None = None,
                 overlap: int = DEFAULT_OVERLAP, adapt: AdaptPer = "image") -> Adaptation:
        """The entry a call runs (the model's, with K and lr overridden by ``steps`` and ``lr``), once
        the call's options are checked; bad values raise a one-line BenchError naming the flag. An
        entry that does not learn ignores ``steps`` and ``lr``."""
        if adapt not in ("image", "tile"):
            raise BenchError(f"--adapt-per {adapt!r}: expected image or tile")
        try:
            check_tiles(tile or 0, overlap)
        except ValueError as e:
            raise BenchError(f"--tile {tile} --overlap {overlap}: {e}") from None
        if steps is not None and steps < 0:
            raise BenchError(f"--adapt-steps {steps}: expected 0 or more")
        if lr is not None and not lr > 0:
            raise BenchError(f"--lr {lr}: expected a positive step size")
        return with_steps(self.entry, steps, lr) if self.entry.learns else self.entry

    def __call__(self, image: np.ndarray, steps: int | None = None, *, lr: float | None = None,
                 tile: int | None = None, overlap: int = DEFAULT_OVERLAP, adapt: AdaptPer = "image") -> np.ndarray:
        """Denoise one image array (see ``as_photo``); returns it in the input's layout, float32 in [0, 1].

        ``steps`` = K adaptation steps (0: none; default: the entry's), ``tile`` in px (0: never;
        default: automatic from the memory budget).
        """
        photo = as_photo(image)
        out = self.run(photo, steps=steps, lr=lr, tile=tile, overlap=overlap, adapt=adapt).image
        return np.ascontiguousarray(to_output(out, photo), dtype=np.float32)

    def run(self, image: np.ndarray | Photo, *, steps: int | None = None, lr: float | None = None,
            tile: int | None = None, overlap: int = DEFAULT_OVERLAP, adapt: AdaptPer = "image",
            before: bool = False, trajectory: bool = False, mask: bool = False,
            on_tile: Callable[[int, int], None] | None = None) -> Result:
        """Denoise with every by-product asked for; see ``Result``. Tiled, an entry whose weights
        every tile shares adapts once per photo (``adapt="image"``); others adapt per tile."""
        photo = as_photo(image)
        entry = self.settings(steps, lr, tile, overlap, adapt)
        height, width = photo.rgb.shape[:2]
        if min(height, width) < MIN_SIDE:
            raise DataError(f"{photo.name}: image of {width}×{height} px; expected at least {MIN_SIDE} px on each "
                            "side (the network halves the image twice)")
        job = tiled.Job(self.model, entry, self.device, before, trajectory, mask, on_tile)
        size = self.auto_tile(height, width, job.adapting, overlap) if tile is None else tile
        tiles = plan(height, width, size, overlap)
        x = to_tensor(photo.rgb)
        if len(tiles) == 1:
            parts = tiled.whole(job, x)
        elif job.adapting and adapt == "image" and job.joinable:
            parts = tiled.joint(job, x, tiles, overlap, cache_bytes=self.budget_gib * 2**30 / 2)
        else:
            parts = tiled.per_tile(job, x, tiles, overlap)

        def hwc(t: Tensor | None) -> np.ndarray | None:
            if t is None:
                return None
            arr = t.detach().float().cpu().clamp(0, 1).reshape(-1, height, width).permute(1, 2, 0).numpy()
            return np.ascontiguousarray(arr[..., 0] if arr.shape[2] == 1 else arr)

        return Result(hwc(parts["after"]), hwc(parts.get("before")),
                      [hwc(s) for s in parts["steps"]] if parts.get("steps") is not None else None,
                      hwc(parts.get("mask")), len(tiles), job.adapting)


def entry_for(name: str, steps: int | None, lr: float | None) -> Adaptation:
    """``bench denoise --adapt NAME [--adapt-steps K] [--lr LR]``: a selectable entry (never the oracle)."""
    return with_steps(get_selectable(name), steps, lr)


def with_steps(entry: Adaptation, steps: int | None, lr: float | None) -> Adaptation:
    """``entry`` with K and lr replaced where given (``--adapt-steps``, ``--lr``); a ConfigError for an
    entry that does not learn."""
    changes = {k: v for k, v in (("steps", steps), ("lr", lr)) if v is not None}
    return entry.with_(**changes) if changes else entry


__all__ = ["Denoiser", "Result", "entry_for", "DEFAULT_OVERLAP", "DEFAULT_BUDGET_GIB", "MIN_SIDE"]
