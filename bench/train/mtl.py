"""MTL fine-tuning (Alg. 2): Adam on the meta-gradient of ``bench.adapt.mtl_loss``.

After each validation epoch the model is scored on the held-out split *after* meta-test (the
official code's selection rule) and the best state is kept and restored at the end.
"""
from __future__ import annotations

import copy

import torch

from methods import Recipe

from ..adapt import mtl_loss
from ..config import FinetuneConfig, MetaTestConfig
from ..data import PatchSampler, Source
from ..data.base import ImagePair
from ..evaluate import evaluate, mean_psnr
from .context import TrainContext


def finetune_mtl(model: torch.nn.Module, recipe: Recipe, cfg: FinetuneConfig, mt: MetaTestConfig,
                 source: Source, val: list[ImagePair], ctx: TrainContext) -> None:
    params = list(model.restorer.parameters())
    if recipe.aux_loss == "mrl":
        params += list(model.mask_net.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    sample = PatchSampler(source, cfg.patch, cfg.batch, ctx.rng)
    best_psnr, best_state = float("-inf"), None
    with ctx.progress(cfg.epochs * cfg.steps_per_epoch, "MTL") as advance:
        for epoch in range(1, cfg.epochs + 1):
            total = 0.0
            for _ in range(cfg.steps_per_epoch):
                noisy, clean = (t.to(ctx.device) for t in sample())
                loss = mtl_loss(model, noisy, clean, steps=cfg.steps, inner_lr=cfg.inner_lr,
                                lambda_in=cfg.lambda_in, lambda_out=cfg.lambda_out,
                                first_order=cfg.first_order, scope=recipe.inner_scope, aux=recipe.aux_loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.item()
                advance(loss=loss.item())
            metrics = {"finetune/loss": total / cfg.steps_per_epoch}
            if epoch % cfg.val_every == 0 or epoch == cfg.epochs:
                adapted = mean_psnr(evaluate(model, recipe, val, mt, recipe.metatest, ctx.device))
                plain = mean_psnr(evaluate(model, recipe, val, mt, False, ctx.device))
                metrics.update({"finetune/val_psnr": adapted, "finetune/val_psnr_no_metatest": plain})
                if adapted > best_psnr:
                    best_psnr, best_state = adapted, copy.deepcopy(model.state_dict())
                    metrics["finetune/best_epoch"] = epoch
            ctx.record(metrics, epoch)
    model.load_state_dict(best_state)
