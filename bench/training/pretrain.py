"""Pre-training: MAXL (Alg. 1, Liu et al. 2019) or plain joint training of both heads.

MAXL alternates, every epoch, (a) an auxiliary pass, θ1 ← Adam on L_pri + L_aux with the mask
fixed, and (b) a meta pass that updates only the mask network θ2: a look-ahead SGD step of all of
θ1 on L_pri + L_aux, and θ2 ← Adam on L_pri(f_θ1⁺) + λ_G·L_G.

The meta pass's gradient is computed without a double backward (``mask_meta_backward``): L_aux is
linear in the mask, so the look-ahead's dependence on it is one Jacobian-vector product. On CPU
both passes run channels-last (oneDNN's faster layout here; `bench perf` times both).
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp

from bench.core.config import PretrainConfig
from bench.core.losses import aux_loss, gradient_loss, l1
from bench.data import PatchSampler, Source
from bench.runtime.workers import stage_threads
from bench.training.context import TrainContext
from bench.training.loop import check_loss, check_weights
from methods import Recipe


def pretrain(model: torch.nn.Module, recipe: Recipe, cfg: PretrainConfig, source: Source,
             ctx: TrainContext) -> None:
    """Train ``model`` in place with the recipe's pre-training (``joint`` or ``maxl``)."""
    stage_threads()
    restorer, mask_net = model.restorer, model.mask_net
    use_mask = recipe.pretrain == "maxl" and recipe.pretrain_aux == "mrl"
    # MAXL with the unmasked L_rec still runs its meta pass (as the official code does); the mask
    # then only learns from L_G, since θ1's look-ahead does not depend on it.
    meta = recipe.pretrain == "maxl"
    lambda_g = cfg.lambda_g if recipe.grad_loss else 0.0
    layout = training_layout(ctx.device)
    with _weights_in(layout, model):
        opt1 = torch.optim.Adam(restorer.parameters(), lr=cfg.lr)
        opt2 = torch.optim.Adam(mask_net.parameters(), lr=cfg.lr) if meta else None
        sample = PatchSampler(source, cfg.patch, cfg.batch, ctx.rng)

        def batch() -> tuple[Tensor, Tensor]:
            return tuple(t.to(ctx.device, memory_format=layout) for t in sample())

        passes = 2 if meta else 1
        stateful = [opt1] + ([opt2] if meta else []) + [sample]
        start, _ = ctx.restore(model, stateful)
        with ctx.progress((cfg.epochs - start + 1) * cfg.steps_per_epoch * passes,
                          f"pretrain ({recipe.pretrain})", epochs=cfg.epochs) as advance:
            for epoch in range(start, cfg.epochs + 1):
                sums = {"loss_pri": 0.0, "loss_aux": 0.0}
                for _ in range(cfg.steps_per_epoch):  # (a) auxiliary pass
                    noisy, clean = batch()
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
                    total = 0.0
                    for _ in range(cfg.steps_per_epoch):  # (b) meta pass
                        noisy, clean = batch()
                        opt2.zero_grad(set_to_none=True)
                        outer = mask_meta_backward(restorer, mask_net, noisy, clean, inner_lr=cfg.inner_lr,
                                                   use_mask=use_mask, lambda_g=lambda_g)
                        opt2.step()
                        check_loss(outer, "pretrain (meta pass)", epoch)
                        total += outer
                        advance(meta=outer)
                    metrics["pretrain/loss_meta"] = total / cfg.steps_per_epoch
                check_weights(model, "pretrain", epoch)
                ctx.record(metrics, epoch)
                ctx.checkpoint(epoch, model, stateful, last=epoch == cfg.epochs)


def training_layout(device: torch.device) -> torch.memory_format:
    """Channels-last on CPU, where oneDNN's convolutions run both of MAXL's passes faster than in
    NCHW (`bench perf`'s MAXL case times it; docs/results-log.md has the measured runs)."""
    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


@contextlib.contextmanager
def _weights_in(layout: torch.memory_format, model: nn.Module):
    """``model``'s 4-D weights in ``layout`` inside the block, contiguous again after it, so that
    checkpoints, evaluation and the later stages see the usual layout."""
    model.to(memory_format=layout)
    try:
        yield
    finally:
        model.to(memory_format=torch.contiguous_format)


def mask_meta_backward(restorer: nn.Module, mask_net: nn.Module, noisy: Tensor, clean: Tensor, *,
                       inner_lr: float, use_mask: bool = True, lambda_g: float = 0.0) -> float:
    """Accumulate into ``mask_net``'s ``.grad`` the gradient of the meta pass's outer loss
    L_pri(f_θ⁺) + λ_G·L_G(mask), θ⁺ = θ − α·∇θ(L_pri + L_aux(mask)); return the outer loss.

    Without a double backward: L_aux = mean(M ⊙ |rec − I_n|) is linear in M, so
    ∂outer/∂M_p = −(α/N)·Σ_c sign(rec − I_n)_{c,p}·(J_θ rec · v)_{c,p} with v = ∇θ⁺ L_pri(f_θ⁺):
    one first-order look-ahead, one backward at θ⁺ and one forward-mode product at θ. Equal to
    the literal second-order graph (``bench.perf.reference.naive_maxl_meta_backward``) up to
    float rounding (tests/test_pretrain.py).
    """
    mask = mask_net(noisy)
    params = {k: p.detach() for k, p in restorer.named_parameters()}
    pred, rec = restorer(noisy)
    inner = l1(pred, clean) + aux_loss(rec, noisy, mask.detach() if use_mask else None)
    grads = torch.autograd.grad(inner, list(restorer.parameters()))
    # without the mask in L_aux, θ⁺ does not depend on it: the look-ahead is only the logged loss
    fast = {k: (params[k] - inner_lr * g).requires_grad_(use_mask) for k, g in zip(params, grads)}
    lp = l1(functional_call(restorer, fast, (noisy,))[0], clean)
    outer, surrogate = lp.detach(), None
    if use_mask:
        v = torch.autograd.grad(lp, list(fast.values()), allow_unused=True)
        rec = rec.detach()
        tangents = {k: g for k, g in zip(fast, v) if g is not None}
        fixed = {k: p for k, p in params.items() if k not in tangents}
        with torch.no_grad(), warnings.catch_warnings():
            # forward-mode AD's first use loads torch's own decompositions with torch.jit.script,
            # whose deprecation warning is torch's business, not the user's (torch 2.14)
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            _, jv = jvp(lambda p: functional_call(restorer, {**fixed, **p}, (noisy,))[1],
                        ({k: params[k] for k in tangents},), (tangents,))
            d_mask = (-inner_lr / rec.numel()) * (torch.sign(rec - noisy) * jv).sum(1, keepdim=True)
        surrogate = (mask * d_mask).sum()
    if lambda_g:
        lg = lambda_g * gradient_loss(mask, noisy)
        outer = outer + lg.detach()
        surrogate = lg if surrogate is None else surrogate + lg
    if surrogate is not None:
        surrogate.backward(inputs=list(mask_net.parameters()))
    return outer.item()
