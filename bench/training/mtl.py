"""MTL fine-tuning (Alg. 2): Adam on the meta-gradient of ``bench.adaptation.inner.mtl_loss``.

After each validation epoch the model is scored on the held-out split *after* the meta-test
adaptation (the official code's selection rule) and the best state is kept.
"""
from __future__ import annotations

import torch

from bench.adaptation.evaluate import mean_psnr
from bench.adaptation.inner import mtl_loss
from bench.adaptation.registry import Adaptation, get
from bench.core.config import FinetuneConfig
from bench.core.images import to_tensor
from bench.data import PatchSampler, Source
from bench.data.base import ImagePair
from bench.runtime.tracking import artifact_name
from bench.training.context import TrainContext
from bench.training.loop import fit
from methods import Recipe


def finetune_mtl(model: torch.nn.Module, recipe: Recipe, cfg: FinetuneConfig, adapt: Adaptation,
                 source: Source, val: list[ImagePair], ctx: TrainContext) -> None:
    """``adapt``: the test-time adaptation validation scores after (the preset's meta-test entry)."""
    params = list(model.restorer.parameters())
    if recipe.aux_loss == "mrl":
        params += list(model.mask_net.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sample = PatchSampler(source, cfg.patch, cfg.batch, ctx.rng)
    steps_per_epoch = sample.steps_per_epoch(cfg.steps_per_epoch)
    total = cfg.epochs * steps_per_epoch
    # The paper keeps β constant; "cosine" anneals it to 1 % over the run, which steadies short schedules.
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total, eta_min=cfg.lr * 0.01) \
        if cfg.schedule == "cosine" else None

    def step(noisy, clean) -> float:
        loss = mtl_loss(model, noisy, clean, steps=cfg.steps, inner_lr=cfg.inner_lr, lambda_in=cfg.lambda_in,
                        lambda_out=cfg.lambda_out, first_order=cfg.first_order, scope=recipe.inner_scope,
                        aux=recipe.aux_loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        return loss.item()

    def validate(epoch: int) -> dict[str, float]:
        if recipe.aux_loss == "mrl":  # the mask of fixed validation images across epochs (Figs. 5/6)
            with torch.no_grad():
                for pair in val[: cfg.mask_images]:
                    mask = model.mask_net(to_tensor(pair.noisy, ctx.device))[0, 0].cpu().numpy()
                    ctx.image(mask, f"masks/{artifact_name(pair.name)}/epoch_{epoch:04d}.png")
        return {"val_psnr": mean_psnr(model, adapt, val, ctx.device),
                "val_psnr_no_metatest": mean_psnr(model, get("none"), val, ctx.device)}

    fit(model, step, sample, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, val_every=cfg.val_every,
        validate=validate, score_key="val_psnr", prefix="finetune", ctx=ctx,
        stateful=[opt] + ([sched] if sched is not None else []) + [sample])
