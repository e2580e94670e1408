"""An adaptation entry on one photo, whole or cut into overlapping tiles (``bench.inference.tiling``).

- ``whole``: the evaluator's own executor (``bench.adaptation.run.adapt_image``), so a photo that
  fits memory gets the study's numbers to the last digit;
- ``per_tile``: each tile adapted on its own by the same executor, then blended; every entry;
- ``joint``: one set of adapted weights for the whole photo, fitted to the sum of the tiles'
  losses with each pixel counted once: the untiled image's adaptation up to the tiles' border
  effects. For the entries whose loss is a per-pixel mean over the image (``JOINT_LOSSES``).

Each returns ``{"after": (C, H, W), "before", "steps": [...], "mask"}`` with what the ``Job`` asked
for. Every path follows the entry as a whole, so ``official`` (mask > 0.5, the prediction after
K − 1 updates) adapts the same way tiled as untiled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from bench.adaptation.families import RestorerWeights, body_frozen
from bench.adaptation.inner import InnerOptimizer, aux_grad, forward_with
from bench.adaptation.registry import Adaptation
from bench.adaptation.run import adapt_image, entry_mask, first_output
from bench.inference.tiling import Blender, Tile

JOINT_LOSSES = ("aux-mask", "aux-rec")
"""Losses that are a mean over pixels, so a sum over tiles weighted by each pixel's share is the
whole image's loss; entries with another loss adapt per tile."""


@dataclass
class Job:
    """A model, the adaptation entry it runs, and what a call wants besides the adapted prediction."""

    model: nn.Module
    entry: Adaptation
    device: torch.device
    before: bool = False  # the prediction without adaptation
    trajectory: bool = False  # the prediction before and after each step
    mask: bool = False  # the mask g_θ2 (entries with the masked loss only)
    on_tile: Callable[[int, int], None] | None = None  # progress: (done, total)
    seed: int = 0  # initialises a fresh zero-shot network

    @property
    def adapting(self) -> bool:
        """Whether any update runs (an entry that learns with K > 0)."""
        return self.entry.takes_steps

    @property
    def wants_mask(self) -> bool:
        return self.mask and self.entry.loss == "aux-mask"

    @property
    def joinable(self) -> bool:
        """Whether ``joint`` can run this entry (weights shared by every tile, a per-pixel loss)."""
        return isinstance(self.entry.mover, RestorerWeights) and self.entry.loss in JOINT_LOSSES

    def mask_of(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return entry_mask(self.entry, self.model, x)

    def plain(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return first_output(self.model(x))

    def adapt(self, x: Tensor) -> tuple[Tensor, list[Tensor] | None]:
        """(the entry's prediction, every iterate's prediction when the job wants the trajectory)."""
        res = adapt_image(self.entry, self.model, x, trajectory=self.trajectory, diagnostics=False, seed=self.seed)
        return res.prediction, (list(res.trajectory) if res.trajectory is not None else None)


def whole(job: Job, x: Tensor) -> dict[str, Any]:
    """One pass through the evaluator's executor, so the numbers equal the study's."""
    x = x.to(job.device)
    after, steps = job.adapt(x)
    out: dict[str, Any] = {"after": after, "steps": steps}
    if job.before:
        out["before"] = job.plain(x) if job.adapting else after
    if job.wants_mask:
        out["mask"] = job.mask_of(x)
    return out


def per_tile(job: Job, x: Tensor, tiles: list[Tile], overlap: int) -> dict[str, Any]:
    """Each tile adapted on its own and blended."""
    height, width = x.shape[-2:]
    blend = Blender(height, width, tiles, overlap)
    count = 0
    for i, t in enumerate(tiles):
        xt = x[(..., *t.slices)].to(job.device)
        after, steps = job.adapt(xt)
        blend.add("after", i, after)
        for s, pred in enumerate(steps or []):
            blend.add(f"step{s}", i, pred)
        count = len(steps or [])
        if job.before:
            blend.add("before", i, job.plain(xt) if job.adapting else after)
        if job.wants_mask:
            blend.add("mask", i, job.mask_of(xt))
        if job.on_tile:
            job.on_tile(i + 1, len(tiles))
    return _collect(blend, count, job.before, job.trajectory)


def joint(job: Job, x: Tensor, tiles: list[Tile], overlap: int, cache_bytes: float) -> dict[str, Any]:
    """One set of adapted weights for the whole photo: K updates of the entry's optimizer
    (``adaptation.inner.InnerOptimizer``) on the sum over tiles of each tile's loss gradient
    (``adaptation.inner.aux_grad``).

    Each tile's per-pixel loss is weighted by its normalised blending window times its share of
    the image's pixels, so every pixel counts once and the loss is the untiled image's up to the
    tiles' border effects (one tile covering the image: exactly ``whole``). The frozen body
    features and mask are computed once per tile and kept on the CPU when they fit
    ``cache_bytes``, else recomputed at each step. The reported prediction is the entry's
    (after K updates, or K − 1 for ``predict_after: before-last``).
    """
    entry, model = job.entry, job.model
    if not job.joinable:
        raise ValueError(f"adaptation {entry.name!r} ({entry.moves}, {entry.loss}) cannot adapt jointly over tiles; "
                         "adapt it per tile")
    restorer = model.restorer
    height, width = x.shape[-2:]
    blend = Blender(height, width, tiles, overlap)
    params = {k: p.detach() for k, p in entry.mover.select(restorer).items()}
    frozen = body_frozen(restorer, params)
    opt = InnerOptimizer(params, entry.optimizer, entry.lr, entry.halve_lr_at)
    per_px = 4 * (restorer.body.out_channels + 1) if frozen else 4
    keep = sum(t.area for t in tiles) * per_px <= cache_bytes
    cache: dict[int, tuple[Tensor | None, Tensor | None]] = {}
    k = entry.steps
    reported = entry.updates_behind_prediction
    total = (k + 1) * len(tiles)
    for step in range(k + 1):
        final = step == k
        grads: dict[str, Tensor] = {}
        for i, t in enumerate(tiles):
            xt = x[(..., *t.slices)].to(job.device)
            with torch.no_grad():
                if i in cache:
                    feats, m = (None if c is None else c.to(job.device) for c in cache[i])
                else:
                    feats = restorer.body(xt) if frozen else None
                    m = job.mask_of(xt) if entry.loss == "aux-mask" else None
                    if keep:
                        cache[i] = tuple(None if c is None else c.cpu() for c in (feats, m))
                if final:
                    clean = forward_with(restorer, params, xt, feats)[0]
                else:
                    share = blend.weights(i).to(job.device) * (t.area / (height * width))
                    g, clean = aux_grad(restorer, params, xt, m, feats, weight=share)
                    grads = {n: grads[n] + v for n, v in g.items()} if grads else g
            if step == 0 and job.before:
                blend.add("before", i, clean)
            if job.trajectory:
                blend.add(f"step{step}", i, clean)
            if step == reported:
                blend.add("after", i, clean)
            if step == 0 and job.wants_mask:
                blend.add("mask", i, m if m is not None else job.mask_of(xt))
            if job.on_tile:
                job.on_tile(step * len(tiles) + i + 1, total)
        if not final:
            params = opt.step(params, grads)
    return _collect(blend, k + 1, job.before, job.trajectory)


def _collect(blend: Blender, iterates: int, before: bool, trajectory: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"after": blend.result("after")}
    if before:
        out["before"] = blend.result("before") if "before" in blend.keys() else out["after"]
    if trajectory:
        out["steps"] = [blend.result(f"step{s}") for s in range(iterates)] if iterates else [out["after"]]
    if "mask" in blend.keys():
        out["mask"] = blend.result("mask")
    return out
