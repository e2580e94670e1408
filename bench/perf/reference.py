"""Reference loops: what `bench perf` times the fast paths against, and what the fast paths are
checked to agree with (here and in tests/test_adapt.py).

Two kinds, and each says which it is. ``official_meta_test`` is the official TTAID test loop as
that code runs it — same parameters frozen, same optimizer, same mask, same reported prediction —
so a ratio against it is a ratio against what the official code costs. The ``naive_*`` loops
follow the algorithms literally and do nothing clever: one sample at a time, the whole network at
every inner step, plain ``torch.autograd.grad`` / ``torch.optim``; they are slower than any
sensible implementation by design, and `bench perf` names them so (docs/performance.md).
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


OFFICIAL_SOURCE = "agusgun/TTAID, modules/models/real_denoiser.py, RealDenoiserMetaTransfer.validate, lines 1170-1204"
"""Where ``official_meta_test`` is transcribed from: the test-mode branch (no ground truth); the
validation-mode branch (lines 1041-1075) is the same loop."""


def official_frozen(restorer: nn.Module) -> list[str]:
    """The restorer parameters the official test loop freezes: in ``named_parameters`` order, every
    one up to and including the first whose name contains ``head`` (real_denoiser.py lines
    1180-1183: ``param.requires_grad = False; if 'head' in name: break``) — the body and the
    primary head's first convolution. Its Adam holds all parameters but steps only those with a
    gradient, i.e. the rest."""
    names = [k for k, _ in restorer.named_parameters()]
    first = next((i for i, k in enumerate(names) if "head" in k), len(names) - 1)
    return names[: first + 1]


def official_meta_test(model: nn.Module, noisy: Tensor, *, steps: int, lr: float, threshold: float | None = 0.5,
                       report: str = "before_last") -> Tensor:
    """Alg. 3 as the official TTAID test loop runs it (the one behind the paper's Table 2 meta-test;
    ``OFFICIAL_SOURCE``), at the cost that code has.

    Per image: a deep copy of the restorer; ``requires_grad = False`` on ``official_frozen`` (so
    backward never enters the body, nor the primary head's first conv); Adam (betas 0.9/0.999,
    eps 1e-8) over the rest; ``steps`` iterations of the full restorer forward and the mask network
    forward (recorded by autograd as there, though ``(mask > 0.5).float()`` passes no gradient
    back), the mask thresholded at ``threshold`` (None: the soft mask, detached), masked L1,
    backward, step. ``report="before_last"`` returns the prediction of the last
    iteration's forward pass, i.e. after K−1 updates, as the official loop does (it also clamps it
    to [0, 1], which the metrics do here); ``report="after"`` one more forward after the K-th update.
    """
    if report not in ("before_last", "after"):
        raise ValueError(f"report {report!r}: expected before_last or after")
    out = []
    for j in range(noisy.shape[0]):
        n = noisy[j : j + 1]
        m = copy.deepcopy(model)
        r = m.restorer
        frozen = set(official_frozen(r))
        for k, p in r.named_parameters():
            p.requires_grad_(k not in frozen)
        opt = torch.optim.Adam([p for p in r.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.999), eps=1e-8)
        pred = None
        for _ in range(steps):
            opt.zero_grad()
            pred, rec = r(n)
            mask = m.mask_net(n)  # with autograd recording, as there; the threshold cuts the graph
            mask = (mask > threshold).to(n.dtype) if threshold is not None else mask.detach()
            aux_loss(rec, n, mask).backward()
            opt.step()
        if pred is None or report == "after":
            with torch.no_grad():
                pred = r(n)[0]
        out.append(pred.detach())
    return torch.cat(out)
