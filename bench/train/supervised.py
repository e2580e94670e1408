"""Supervised fine-tuning for the baselines (RIDNet, MIRNet): Adam on L1, best-on-val state."""
from __future__ import annotations

import torch

from methods import Recipe

from ..config import MetaTestConfig, SupervisedConfig
from ..data import PatchSampler, Source
from ..data.base import ImagePair
from ..evaluate import evaluate, mean_psnr
from ..losses import l1
from .context import TrainContext
from .loop import fit


def finetune_supervised(model: torch.nn.Module, recipe: Recipe, cfg: SupervisedConfig, mt: MetaTestConfig,
                        source: Source, val: list[ImagePair], ctx: TrainContext) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sample = PatchSampler(source, cfg.patch, cfg.batch, ctx.rng)

    def step(noisy, clean) -> float:
        loss = l1(model(noisy), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def validate(epoch: int) -> dict[str, float]:
        return {"val_psnr": mean_psnr(evaluate(model, recipe, val, mt, False, ctx.device))}

    fit(model, step, sample, epochs=cfg.epochs, steps_per_epoch=sample.steps_per_epoch(cfg.steps_per_epoch),
        val_every=cfg.val_every, validate=validate, score_key="val_psnr", prefix="finetune", ctx=ctx,
        stateful=[opt, sample])
