"""Scoring a model on fixed evaluation pairs, with or without test-time adaptation."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from methods import Recipe

from .adapt import meta_test
from .config import MetaTestConfig
from .data.base import ImagePair
from .metrics import image_metrics


def to_tensor(img: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].to(device)


def adapts(model: nn.Module) -> bool:
    """Whether a network has an auxiliary head to adapt with (baselines do not)."""
    return hasattr(getattr(model, "restorer", None), "head_names")


def predict(model: nn.Module, noisy: Tensor, recipe: Recipe, mt: MetaTestConfig, metatest: bool) -> Tensor:
    if metatest and adapts(model) and mt.steps > 0:
        if mt.variant == "official":  # the registry's entry: one code path for the official test loop
            from .tta.registry import for_recipe, get
            from .tta.run import adapt_image

            entry = for_recipe(get("official").with_(steps=mt.steps, lr=mt.lr, optimizer=mt.optimizer), recipe)
            return torch.cat([adapt_image(entry, model, noisy[i:i + 1]).prediction for i in range(noisy.shape[0])])
        return meta_test(model, noisy, steps=mt.steps, lr=mt.lr, scope=recipe.inner_scope,
                         aux=recipe.aux_loss, optimizer=mt.optimizer)
    with torch.no_grad():
        return model(noisy)


BATCH_PIXELS = 2**20  # images of one size are evaluated together, up to this many pixels per call


def batches(shapes: Sequence[tuple[int, ...]], max_pixels: int = BATCH_PIXELS) -> list[list[int]]:
    """Indices of ``shapes`` grouped into calls: equal shapes together (first-seen order), at most
    ``max_pixels`` pixels per call, always at least one image; ``max_pixels`` ≤ 0: one per call."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    out = []
    for shape, idx in groups.items():
        per_call = max(1, max_pixels // max(1, shape[0] * shape[1])) if max_pixels > 0 else 1
        out += [idx[j : j + per_call] for j in range(0, len(idx), per_call)]
    return out


def evaluate(model: nn.Module, recipe: Recipe, pairs: Sequence[ImagePair], mt: MetaTestConfig,
             metatest: bool, device: torch.device, progress=None, batch_pixels: int = BATCH_PIXELS) -> list[dict]:
    """One row per image (in ``pairs``' order): image name and psnr / ssim (paper convention) /
    ssim_gauss. Images of one size run as one batch (``batches``): meta-test adapts each image on
    its own either way, and the numbers equal one call per image (tests/test_speed.py)."""
    model.eval()
    rows: list[dict | None] = [None] * len(pairs)
    for idx in batches([p.noisy.shape for p in pairs], batch_pixels):
        noisy = torch.cat([to_tensor(pairs[i].noisy, device) for i in idx])
        clean = torch.cat([to_tensor(pairs[i].clean, device) for i in idx])
        metrics = image_metrics(predict(model, noisy, recipe, mt, metatest), clean)
        for j, i in enumerate(idx):
            rows[i] = {"image": pairs[i].name, **{k: v[j] for k, v in metrics.items()}}
            if progress:
                progress()
    model.train()
    return rows  # type: ignore[return-value]


def noisy_rows(pairs: Sequence[ImagePair]) -> list[dict]:
    """The "noisy input" reference: the metrics of the unprocessed noisy images."""
    rows = []
    for pair in pairs:
        m = image_metrics(to_tensor(pair.noisy), to_tensor(pair.clean))
        rows.append({"image": pair.name, **{k: v[0] for k, v in m.items()}})
    return rows


def mean_psnr(rows: list[dict]) -> float:
    return float(np.mean([r["psnr"] for r in rows]))
