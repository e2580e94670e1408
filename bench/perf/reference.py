"""Deliberately naive reference loops: what `bench perf` times the fast paths against, and what the
fast paths are checked to agree with (here and in tests/test_adapt.py).

They follow the algorithms literally and do nothing clever: one sample at a time, the *whole*
network (body included) at every inner step, plain ``torch.autograd.grad`` / ``torch.optim``.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..adapt import Scope, inner_parameters
from ..losses import aux_loss, l1


def naive_mtl_loss(model: nn.Module, noisy: Tensor, clean: Tensor, *, steps: int, inner_lr: float,
                   lambda_in: float, lambda_out: float, first_order: bool = False, scope: Scope = "heads",
                   aux: str = "mrl") -> Tensor:
    """Alg. 2's outer loss, per sample, the full network at every step, autograd.grad chained by hand."""
    r = model.restorer
    names = list(inner_parameters(r, scope))
    total = 0.0
    for j in range(noisy.shape[0]):
        n, c = noisy[j : j + 1], clean[j : j + 1]
        mask = model.mask_net(n) if aux == "mrl" else None
        params = {k: p for k, p in r.named_parameters() if k in names}
        for _ in range(steps):
            _, rec = functional_call(r, params, (n,))
            grads = torch.autograd.grad(lambda_in * aux_loss(rec, n, mask), list(params.values()),
                                        create_graph=not first_order)
            params = {k: v - inner_lr * g for (k, v), g in zip(params.items(), grads)}
        total = total + l1(functional_call(r, params, (n,))[0], c)
    return lambda_out * total


def naive_meta_test(model: nn.Module, noisy: Tensor, *, steps: int, lr: float, scope: Scope = "heads",
                    aux: str = "mrl", optimizer: str = "sgd", freeze: bool = True) -> Tensor:
    """Alg. 3 the obvious way: per image a deep copy of the model, ``torch.optim`` on the inner
    parameters, the full restorer forward (body included) at every step; the mask once per image.

    ``freeze`` (default) turns off ``requires_grad`` outside the inner parameters, so backward
    stops at the heads, as any sensible implementation would; ``freeze=False`` also back-propagates
    through the body for nothing (what the original test loop did: same result, slower).
    """
    out = []
    for j in range(noisy.shape[0]):
        n = noisy[j : j + 1]
        m = copy.deepcopy(model)
        inner = inner_parameters(m.restorer, scope)
        if freeze:
            for k, p in m.named_parameters():
                p.requires_grad_(k.startswith("restorer.") and k[len("restorer."):] in inner)
        params = list(inner.values())
        opt = (torch.optim.SGD(params, lr=lr) if optimizer == "sgd"
               else torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999), eps=1e-8))
        with torch.no_grad():
            mask = m.mask_net(n) if aux == "mrl" else None
        for _ in range(steps):
            opt.zero_grad()
            aux_loss(m.restorer(n)[1], n, mask).backward()
            opt.step()
        with torch.no_grad():
            out.append(m.restorer(n)[0])
    return torch.cat(out)
