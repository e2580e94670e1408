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
        return meta_test(model, noisy, steps=mt.steps, lr=mt.lr, scope=recipe.inner_scope,
                         aux=recipe.aux_loss, optimizer=mt.optimizer)
    with torch.no_grad():
        return model(noisy)


def evaluate(model: nn.Module, recipe: Recipe, pairs: Sequence[ImagePair], mt: MetaTestConfig,
             metatest: bool, device: torch.device, progress=None) -> list[dict]:
    """One row per image: image name and psnr / ssim (paper convention) / ssim_gauss."""
    model.eval()
    rows = []
    for pair in pairs:
        noisy, clean = to_tensor(pair.noisy, device), to_tensor(pair.clean, device)
        metrics = image_metrics(predict(model, noisy, recipe, mt, metatest), clean)
        rows.append({"image": pair.name, **{k: v[0] for k, v in metrics.items()}})
        if progress:
            progress()
    model.train()
    return rows


def noisy_rows(pairs: Sequence[ImagePair]) -> list[dict]:
    """The "noisy input" reference: the metrics of the unprocessed noisy images."""
    rows = []
    for pair in pairs:
        m = image_metrics(to_tensor(pair.noisy), to_tensor(pair.clean))
        rows.append({"image": pair.name, **{k: v[0] for k, v in m.items()}})
    return rows


def mean_psnr(rows: list[dict]) -> float:
    return float(np.mean([r["psnr"] for r in rows]))
