"""Deliberately naive reference loops: what `bench perf` times the fast paths against, and what the
fast paths are checked to agree with (here and in tests/test_adapt.py).

They follow the algorithms literally and do nothing clever: one sample at a time, the *whole*
network (body included) at every inner step, plain ``torch.autograd.grad`` / ``torch.optim``.
``official_meta_test`` is the official TTAID test loop (its Adam, its thresholded mask, its
reported prediction), the reference for what the paper's meta-test numbers measured.
"""
from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.func import functional_call

from bench.adaptation.inner import Scope, inner_parameters
from bench.core.losses import aux_loss, gradient_loss, l1


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


def naive_maxl_meta_backward(restorer: nn.Module, mask_net: nn.Module, noisy: Tensor, clean: Tensor, *,
                             inner_lr: float, use_mask: bool = True, lambda_g: float = 0.0) -> float:
    """MAXL's meta pass literally, the graph ``bench.training.pretrain.mask_meta_backward`` avoids:
    the look-ahead step keeps its graph (``create_graph``) and the outer loss back-propagates
    through it, a double backward, into ``mask_net``'s ``.grad``. Returns the outer loss."""
    mask = mask_net(noisy)
    params = dict(restorer.named_parameters())
    pred, rec = restorer(noisy)
    inner = l1(pred, clean) + aux_loss(rec, noisy, mask if use_mask else None)
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    fast = {k: p - inner_lr * g for (k, p), g in zip(params.items(), grads)}
    outer = l1(functional_call(restorer, fast, (noisy,))[0], clean)
    if lambda_g:
        outer = outer + lambda_g * gradient_loss(mask, noisy)
    outer.backward(inputs=list(mask_net.parameters()))
    return outer.item()


def naive_maxl_step(model: nn.Module, opts: tuple[torch.optim.Optimizer, torch.optim.Optimizer], noisy: Tensor,
                    clean: Tensor, *, inner_lr: float, lambda_g: float) -> None:
    """One MAXL step the plain way, in the caller's layout: the auxiliary Adam step on θ1 (mask
    fixed), then the double-backward meta step on θ2 (``naive_maxl_meta_backward``)."""
    r, g, (opt1, opt2) = model.restorer, model.mask_net, opts
    with torch.no_grad():
        mask = g(noisy)
    pred, rec = r(noisy)
    opt1.zero_grad(set_to_none=True)
    (l1(pred, clean) + aux_loss(rec, noisy, mask)).backward()
    opt1.step()
    opt2.zero_grad(set_to_none=True)
    naive_maxl_meta_backward(r, g, noisy, clean, inner_lr=inner_lr, lambda_g=lambda_g)
    opt2.step()


def naive_meta_test(model: nn.Module, noisy: Tensor, *, steps: int, lr: float, scope: Scope = "heads",
                    aux: str = "mrl", optimizer: str = "sgd", freeze: bool = True) -> Tensor:
    """Alg. 3 the obvious way: per image a deep copy of the model, ``torch.optim`` on the inner
    parameters, the full restorer forward (body included) at every step; the mask once per image.

    ``freeze`` (default) turns off ``requires_grad`` outside the inner parameters, so backward
    stops at the heads, as any sensible implementation would; ``freeze=False`` also back-propagates
    through the body for nothing (as the official test loop does: same result, slower).
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


def official_meta_test(model: nn.Module, noisy: Tensor, *, steps: int, lr: float, threshold: float | None = 0.5,
                       report: str = "before_last") -> Tensor:
    """Alg. 3 as the official TTAID test loop runs it (the one behind the paper's Table 2 meta-test).

    Per image: a deep copy of the model; Adam (betas 0.9/0.999, eps 1e-8) over the restorer's
    parameters from the first head's name on; ``steps`` iterations of the full restorer *and* the
    mask network forward, the mask thresholded at ``threshold`` (None: the soft mask), masked L1,
    backward (through the body too), step. ``report="before_last"`` returns the prediction of the
    last iteration's forward pass, i.e. after K−1 updates, as the official loop does;
    ``report="after"`` one more forward after the K-th update.

    With ``threshold=None, report="after"`` this is ``bench.adaptation.inner.meta_test(optimizer="adam")``
    computed the slow way (`bench perf` checks that they agree).
    """
    if report not in ("before_last", "after"):
        raise ValueError(f"report {report!r}: expected before_last or after")
    out = []
    for j in range(noisy.shape[0]):
        n = noisy[j : j + 1]
        m = copy.deepcopy(model)
        r = m.restorer
        named = list(r.named_parameters())
        first = next(i for i, (k, _) in enumerate(named) if k.split(".", 1)[0] in r.head_names)
        opt = torch.optim.Adam([p for _, p in named[first:]], lr=lr, betas=(0.9, 0.999), eps=1e-8)
        pred = None
        for _ in range(steps):
            opt.zero_grad()
            pred, rec = r(n)
            with torch.no_grad():
                mask = m.mask_net(n)
                if threshold is not None:
                    mask = (mask > threshold).to(n.dtype)
            aux_loss(rec, n, mask).backward()
            opt.step()
        if pred is None or report == "after":
            with torch.no_grad():
                pred = r(n)[0]
        out.append(pred.detach())
    return torch.cat(out)
