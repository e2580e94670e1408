"""Pre-training: MAXL (Alg. 1, Liu et al. 2019) or plain joint training of both heads.

MAXL alternates, every epoch, (a) an auxiliary pass, θ1 ← Adam on L_pri + L_aux with the mask
fixed, and (b) a meta pass that updates only the mask network θ2: a look-ahead SGD step of all of
θ1 on L_pri + L_aux keeps its graph, and θ2 ← Adam on L_pri(f_θ1⁺) + λ_G·L_G.
"""
from __future__ import annotations

import torch
from torch.func import functional_call

from methods import Recipe

from ..config import PretrainConfig
from ..data import PatchSampler, Source
from ..losses import aux_loss, gradient_loss, l1
from ..workers import stage_threads
from .context import TrainContext
from .loop import check_loss, check_weights


def pretrain(model: torch.nn.Module, recipe: Recipe, cfg: PretrainConfig, source: Source,
             ctx: TrainContext) -> None:
    """Train ``model`` in place with the recipe's pre-training (``joint`` or ``maxl``)."""
    stage_threads()
    restorer, mask_net = model.restorer, model.mask_net
    use_mask = recipe.pretrain == "maxl" and recipe.pretrain_aux == "mrl"
    # MAXL with the unmasked L_rec still runs its meta pass (as the official code does); the mask
    # then only learns from L_G, since θ1's look-ahead no longer depends on it.
    meta = recipe.pretrain == "maxl"
    lambda_g = cfg.lambda_g if recipe.grad_loss else 0.0
    opt1 = torch.optim.Adam(restorer.parameters(), lr=cfg.lr)
    opt2 = torch.optim.Adam(mask_net.parameters(), lr=cfg.lr) if meta else None
    sample = PatchSampler(source, cfg.patch, cfg.batch, ctx.rng)
    passes = 2 if meta else 1
    stateful = [opt1] + ([opt2] if meta else []) + [sample]
    start, _ = ctx.restore(model, stateful)
    with ctx.progress((cfg.epochs - start + 1) * cfg.steps_per_epoch * passes,
                      f"pretrain ({recipe.pretrain})", epochs=cfg.epochs) as advance:
        for epoch in range(start, cfg.epochs + 1):
            sums = {"loss_pri": 0.0, "loss_aux": 0.0}
            for _ in range(cfg.steps_per_epoch):  # (a) auxiliary pass
                noisy, clean = (t.to(ctx.device) for t in sample())
                with torch.no_grad():
                    mask = mask_net(noisy) if use_mask else None
                pred, rec = restorer(noisy)
                lp, la = l1(pred, clean), aux_loss(rec, noisy, mask)
                opt1.zero_grad(set_to_none=True)
                (lp + la).backward()
                opt1.step()
                check_loss(lp.item() + la.item(), "pretrain", epoch)
                sums["loss_pri"] += lp.item()
                sums["loss_aux"] += la.item()
                advance(epoch=epoch, loss=lp.item())
            metrics = {f"pretrain/{k}": v / cfg.steps_per_epoch for k, v in sums.items()}
            if meta:
                metrics["pretrain/loss_meta"] = _meta_pass(restorer, mask_net, opt2, sample, cfg, ctx, advance,
                                                           use_mask, lambda_g)
            check_weights(model, "pretrain", epoch)
            ctx.record(metrics, epoch)
            ctx.checkpoint(epoch, model, stateful, last=epoch == cfg.epochs)


def _meta_pass(restorer, mask_net, opt2, sample, cfg: PretrainConfig, ctx: TrainContext, advance,
               use_mask: bool, lambda_g: float) -> float:
    params = dict(restorer.named_parameters())
    total = 0.0
    for _ in range(cfg.steps_per_epoch):
        noisy, clean = (t.to(ctx.device) for t in sample())
        mask = mask_net(noisy)
        pred, rec = restorer(noisy)
        inner = l1(pred, clean) + aux_loss(rec, noisy, mask if use_mask else None)
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
        fast = {k: p - cfg.inner_lr * g for (k, p), g in zip(params.items(), grads)}
        outer = l1(functional_call(restorer, fast, (noisy,))[0], clean)
        if lambda_g:
            outer = outer + lambda_g * gradient_loss(mask, noisy)
        opt2.zero_grad(set_to_none=True)
        outer.backward(inputs=list(mask_net.parameters()))
        opt2.step()
        check_loss(outer.item(), "pretrain (meta pass)", 0)
        total += outer.item()
        advance(meta=outer.item())
    return total / cfg.steps_per_epoch
