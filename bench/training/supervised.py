"""Supervised fine-tuning for the baselines (RIDNet, MIRNet): Adam on L1, best-on-val state."""
from __future__ import annotations

import torch

from bench.adaptation.evaluate import mean_psnr
from bench.adaptation.registry import Adaptation
from bench.core.config import SupervisedConfig
from bench.core.losses import l1
from bench.data import PatchSampler, Source
from bench.data.base import ImagePair
from bench.training.context import TrainContext
from bench.training.loop import fit
from methods import Recipe


def finetune_supervised(model: torch.nn.Module, recipe: Recipe, cfg: SupervisedConfig, adapt: Adaptation,
                        source: Source, val: list[ImagePair], ctx: TrainContext) -> None:
    """``adapt``: the adaptation validation scores after (``none`` for a network without an auxiliary head)."""
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sample = PatchSampler(source, cfg.patch, cfg.batch, ctx.rng)

    def step(noisy, clean) -> float:
        loss = l1(model(noisy), clean)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def validate(epoch: int) -> dict[str, float]:
        return {"val_psnr": mean_psnr(model, adapt, val, ctx.device)}

    fit(model, step, sample, epochs=cfg.epochs, steps_per_epoch=sample.steps_per_epoch(cfg.steps_per_epoch),
        val_every=cfg.val_every, validate=validate, score_key="val_psnr", prefix="finetune", ctx=ctx,
        stateful=[opt, sample])
