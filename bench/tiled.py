"""Alg. 3 on one photo, whole or cut into overlapping tiles (``bench.tiling``) and blended back.

- ``whole``: the study's own functions (``evaluate.predict`` → ``adapt.meta_test``), so a photo
  that fits memory gets the study's numbers to the last digit;
- ``per_tile``: each tile adapted on its own (Alg. 3 per tile); also the no-adaptation path;
- ``joint``: one set of adapted heads for the whole photo, fitted to the sum of the tiles' losses
  with each pixel counted once: the untiled image's adaptation up to the tiles' border effects.

Each returns ``{"after": (C, H, W), "before", "steps": [...], "mask"}`` with what the ``Job`` asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor, nn

from methods import Recipe

from .adapt import InnerOptimizer, aux_grad, forward_with, frozen_outputs, inner_parameters, meta_test
from .config import MetaTestConfig
from .evaluate import adapts, predict
from .tiling import Blender, Tile


@dataclass
class Job:
    """A model, its meta-test, and what a call wants besides the adapted prediction."""

    model: nn.Module
    recipe: Recipe
    mt: MetaTestConfig  # K (``steps``), α, optimizer
    device: torch.device
    before: bool = False  # the prediction without adaptation
    trajectory: bool = False  # the prediction before and after each step
    mask: bool = False  # the mask g_θ2 (masked-loss models only)
    on_tile: Callable[[int, int], None] | None = None  # progress: (done, total)

    @property
    def wants_mask(self) -> bool:
        return self.mask and adapts(self.model) and self.recipe.aux_loss == "mrl"

    def mask_of(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model.mask_net(x)

    def meta_test(self, x: Tensor, trajectory: bool) -> Tensor:
        mt = self.mt
        return meta_test(self.model, x, steps=mt.steps, lr=mt.lr, scope=self.recipe.inner_scope,
                         aux=self.recipe.aux_loss, optimizer=mt.optimizer, trajectory=trajectory)

    def plain(self, x: Tensor) -> Tensor:
        return predict(self.model, x, self.recipe, self.mt, metatest=False)


def whole(job: Job, x: Tensor, adapting: bool) -> dict[str, Any]:
    """One pass through the study's own functions, so the numbers equal the study's."""
    x = x.to(job.device)
    out: dict[str, Any] = {}
    if adapting and job.trajectory:
        traj = job.meta_test(x, trajectory=True)[:, 0]
        out["steps"], out["after"] = list(traj), traj[-1]
    else:
        out["after"] = predict(job.model, x, job.recipe, job.mt, metatest=adapting)
        out["steps"] = [out["after"]] if job.trajectory else None
    if job.before:
        out["before"] = job.plain(x) if adapting else out["after"]
    if job.wants_mask:
        out["mask"] = job.mask_of(x)
    return out


def per_tile(job: Job, x: Tensor, tiles: list[Tile], overlap: int, adapting: bool) -> dict[str, Any]:
    """Each tile adapted on its own (Alg. 3 per tile) and blended; also the no-adaptation path."""
    height, width = x.shape[-2:]
    blend = Blender(height, width, tiles, overlap)
    for i, t in enumerate(tiles):
        xt = x[(..., *t.slices)].to(job.device)
        if adapting:
            traj = job.meta_test(xt, trajectory=job.trajectory)
            if job.trajectory:
                for s in range(job.mt.steps + 1):
                    blend.add(f"step{s}", i, traj[s])
                traj = traj[-1]
            blend.add("after", i, traj)
            if job.before:
                blend.add("before", i, job.plain(xt))
        else:
            blend.add("after", i, job.plain(xt))
        if job.wants_mask:
            blend.add("mask", i, job.mask_of(xt))
        if job.on_tile:
            job.on_tile(i + 1, len(tiles))
    return _collect(blend, job.mt.steps if adapting else 0, job.before, job.trajectory)


def joint(job: Job, x: Tensor, tiles: list[Tile], overlap: int, cache_bytes: float) -> dict[str, Any]:
    """One set of adapted heads for the whole photo: K steps of Alg. 3's update
    (``adapt.InnerOptimizer``) on the sum over tiles of each tile's L_aux gradient (``adapt.aux_grad``).

    Each tile's per-pixel loss is weighted by its normalised blending window times its share of
    the image's pixels, so every pixel counts once and the loss is the untiled image's L_aux up to
    the tiles' border effects (one tile covering the image: exactly ``meta_test``). The frozen body
    features and mask are computed once per tile and kept on the CPU when they fit
    ``cache_bytes``, else recomputed at each step.
    """
    model, restorer, recipe, mt = job.model, job.model.restorer, job.recipe, job.mt
    height, width = x.shape[-2:]
    blend = Blender(height, width, tiles, overlap)
    params = {k: p.detach() for k, p in inner_parameters(restorer, recipe.inner_scope).items()}
    opt = InnerOptimizer(params, mt.optimizer, mt.lr)
    per_px = 4 * (restorer.body.out_channels + 1) if recipe.inner_scope == "heads" else 4
    keep = sum(t.area for t in tiles) * per_px <= cache_bytes
    cache: dict[int, tuple[Tensor | None, Tensor | None]] = {}
    total = (mt.steps + 1) * len(tiles)
    for step in range(mt.steps + 1):
        final = step == mt.steps
        grads: dict[str, Tensor] = {}
        for i, t in enumerate(tiles):
            xt = x[(..., *t.slices)].to(job.device)
            with torch.no_grad():
                if i in cache:
                    feats, m = (None if c is None else c.to(job.device) for c in cache[i])
                else:
                    feats, m = frozen_outputs(model, xt, recipe.inner_scope, recipe.aux_loss)
                    if keep:
                        cache[i] = tuple(None if c is None else c.cpu() for c in (feats, m))
                if final:
                    clean = forward_with(restorer, params, xt, feats)[0]
                else:
                    share = blend.weights(i).to(job.device) * (t.area / (height * width))
                    g, clean = aux_grad(restorer, params, xt, m, feats, weight=share)
                    grads = {k: grads[k] + v for k, v in g.items()} if grads else g
            if step == 0 and job.before:
                blend.add("before", i, clean)
            if job.trajectory:
                blend.add(f"step{step}", i, clean)
            if final:
                blend.add("after", i, clean)
            if step == 0 and job.wants_mask:
                blend.add("mask", i, m if m is not None else job.mask_of(xt))
            if job.on_tile:
                job.on_tile(step * len(tiles) + i + 1, total)
        if not final:
            params = opt.step(params, grads)
    return _collect(blend, mt.steps, job.before, job.trajectory)


def _collect(blend: Blender, steps: int, before: bool, trajectory: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"after": blend.result("after")}
    if before:
        out["before"] = blend.result("before") if "before" in blend.keys() else out["after"]
    if trajectory:
        out["steps"] = [blend.result(f"step{s}") for s in range(steps + 1)] if steps else [out["after"]]
    if "mask" in blend.keys():
        out["mask"] = blend.result("mask")
    return out
