"""The one functional gradient-step loop behind every learned adaptation.

Loss-agnostic: it takes a loss of a parameter dict and returns new dicts, never touching a module,
so the caller's model stays bit-identical. The update rule is the one ``bench.adapt`` uses for
MTL's inner loop and meta-test (plain SGD, or Adam with betas 0.9/0.999, eps 1e-8 and bias
correction, written out so that it also works with ``create_graph=True`` for second-order MTL).
"""
from __future__ import annotations

from typing import Callable, Literal

import torch
from torch import Tensor
from torch.func import grad_and_value

Params = dict[str, Tensor]
OnStep = Callable[[int, Params, Tensor, Params], None]

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8
# 1 − β written as literals: (1 - 0.9) in floating point is 0.09999999999999998, not 0.1
ONE_MINUS_BETA1, ONE_MINUS_BETA2 = 0.1, 0.001


def lr_at(t: int, lr: float, halve_lr_at: int | None) -> float:
    """The lr of update t (1-based): StepLR(step_size=halve_lr_at, gamma=0.5) semantics."""
    return lr if halve_lr_at is None else lr * 0.5 ** ((t - 1) // halve_lr_at)


def run_steps(loss_fn: Callable[[Params], Tensor], params: Params, *, steps: int, lr: float,
              optimizer: str = "sgd", create_graph: bool = False, on_step: OnStep | None = None,
              halve_lr_at: int | None = None, keep: Literal["all", "last"] = "all") -> list[Params]:
    """``steps`` chained updates of ``params`` on ``loss_fn``.

    Returns every iterate ``[θ0, θ1, …, θK]`` (``keep="all"``) or ``[θK]`` (``keep="last"``, for long
    runs or large parameter sets). ``on_step(t, θt, loss(θt), ∇loss(θt))`` is called before update
    t+1 (t = 0 … K−1) with the loss value and gradient the update uses (detached unless
    ``create_graph``). ``create_graph=True`` keeps the graph through the steps (second order).
    """
    if optimizer not in ("sgd", "adam"):
        raise ValueError(f"optimizer {optimizer!r}: expected sgd or adam")
    grad_fn = grad_and_value(loss_fn)
    iterates = [params] if keep == "all" else []
    adam = optimizer == "adam"
    m = {k: torch.zeros_like(v) for k, v in params.items()} if adam else None
    v2 = {k: torch.zeros_like(v) for k, v in params.items()} if adam else None
    for t in range(1, steps + 1):
        g, value = grad_fn(params)
        if not create_graph:
            g = {k: x.detach() for k, x in g.items()}
            value = value.detach()
        if on_step is not None:
            on_step(t - 1, params, value, g)
        if adam:
            m = {k: BETA1 * m[k] + ONE_MINUS_BETA1 * g[k] for k in g}
            v2 = {k: BETA2 * v2[k] + ONE_MINUS_BETA2 * g[k] ** 2 for k in g}
            step = {k: (m[k] / (1 - BETA1**t)) / ((v2[k] / (1 - BETA2**t)).sqrt() + EPS) for k in g}
        else:
            step = g
        step_lr = lr_at(t, lr, halve_lr_at)
        params = {k: params[k] - step_lr * step[k] for k in params}
        if keep == "all":
            iterates.append(params)
    return iterates if keep == "all" else [params]
