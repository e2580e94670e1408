"""The one functional inner loop behind MTL (Alg. 2) and meta-test (Alg. 3).

Both run K chained gradient steps on the auxiliary loss, per sample, over the *inner* parameters
(the two heads by default). Because the body and the mask network are frozen inside the loop,
their outputs are computed once per batch and only the heads run K times; on CUDA
``torch.func.vmap`` runs the per-sample loops side by side (on CPU a plain loop over the samples,
which is faster there: see ``per_sample_mode``). For MTL the steps keep their graph (second order unless
``first_order``), so ``mtl_loss(...).backward()`` reaches every parameter of the restorer and the
mask network; meta-test runs without a graph and leaves the model untouched.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vmap
from torch.utils._pytree import tree_map

from bench.core.losses import aux_loss

Scope = Literal["heads", "all"]
Params = dict[str, Tensor]


def inner_parameters(restorer: nn.Module, scope: Scope = "heads") -> dict[str, nn.Parameter]:
    """The parameters an inner loop updates: the heads (``restorer.head_names``) or everything."""
    if scope == "all":
        return dict(restorer.named_parameters())
    heads = tuple(restorer.head_names)
    return {n: p for n, p in restorer.named_parameters() if n.split(".", 1)[0] in heads}


def forward_with(restorer: nn.Module, params: Params, noisy: Tensor,
                 features: Tensor | None) -> tuple[Tensor, Tensor]:
    """(clean, rec) of ``restorer`` with ``params`` in place of its own (the others unchanged);
    ``features``: the body's output computed once (None: the body runs, e.g. when it adapts)."""
    kwargs = {} if features is None else {"features": features}
    return functional_call(restorer, params, (noisy,), kwargs)


def frozen_outputs(model: nn.Module, noisy: Tensor, scope: Scope, aux: str) -> tuple[Tensor | None, Tensor | None]:
    """What the inner loop never changes, computed once: the body's features (None when the body
    itself adapts, ``scope="all"``) and the mask (None for the unmasked loss, ``aux="rl"``)."""
    features = model.restorer.body(noisy) if scope == "heads" else None
    mask = model.mask_net(noisy) if aux == "mrl" else None
    return features, mask


def aux_grad(restorer: nn.Module, params: Params, noisy: Tensor, mask: Tensor | None, features: Tensor | None,
             *, scale: float = 1.0, weight: Tensor | None = None) -> tuple[Params, Tensor]:
    """∇ of scale·L_aux (``losses.aux_loss``, per-pixel ``weight`` optional) w.r.t. ``params``, and the
    clean prediction of the same forward pass. Functional (``torch.func.grad``): works under vmap,
    and keeps a graph only where the caller's autograd records one (MTL)."""

    def loss(p: Params) -> tuple[Tensor, Tensor]:
        clean, rec = forward_with(restorer, p, noisy, features)
        return scale * aux_loss(rec, noisy, mask, weight), clean

    return grad(loss, has_aux=True)(params)


OnStep = Callable[[int, Params, Tensor, Params], None]


def lr_at(t: int, lr: float, halve_lr_at: int | None) -> float:
    """The lr of update t (1-based): StepLR(step_size=halve_lr_at, gamma=0.5) semantics."""
    return lr if halve_lr_at is None else lr * 0.5 ** ((t - 1) // halve_lr_at)


class InnerOptimizer:
    """The one update rule of every learned adaptation, functional (no in-place ops, so MTL can
    differentiate through it): ``params = opt.step(params, grads)``. ``sgd``: θ − α·g; ``adam``: the
    official code's meta-test variant (betas 0.9/0.999, eps 1e-8, bias-corrected). ``grads`` may be a
    sum over tiles (``bench.inference.tiled``'s joint adaptation) as well as one image's gradient;
    ``halve_lr_at`` halves the lr every n updates (ZS-N2N's schedule)."""

    OPTIMIZERS = ("sgd", "adam")

    def __init__(self, params: Params, optimizer: str = "sgd", lr: float = 1e-5,
                 halve_lr_at: int | None = None) -> None:
        if optimizer not in self.OPTIMIZERS:
            raise ValueError(f"optimizer {optimizer!r}: expected one of {', '.join(self.OPTIMIZERS)}")
        self.optimizer, self.lr, self.halve_lr_at, self.t = optimizer, lr, halve_lr_at, 0
        if optimizer == "adam":
            self.m = {k: torch.zeros_like(v) for k, v in params.items()}
            self.v = {k: torch.zeros_like(v) for k, v in params.items()}

    def step(self, params: Params, grads: Params) -> Params:
        self.t += 1
        if self.optimizer == "adam":  # 1 − β as literals: (1 - 0.9) in floating point is not 0.1
            t, g = self.t, grads
            self.m = {k: 0.9 * self.m[k] + 0.1 * g[k] for k in g}
            self.v = {k: 0.999 * self.v[k] + 0.001 * g[k] ** 2 for k in g}
            update = {k: (self.m[k] / (1 - 0.9**t)) / ((self.v[k] / (1 - 0.999**t)).sqrt() + 1e-8) for k in g}
        else:
            update = grads
        lr = lr_at(self.t, self.lr, self.halve_lr_at)
        return {k: params[k] - lr * update[k] for k in params}


def run_steps(loss_fn: Callable[[Params], Tensor], params: Params, *, steps: int, lr: float,
              optimizer: str = "sgd", create_graph: bool = False, on_step: OnStep | None = None,
              halve_lr_at: int | None = None, keep: Literal["all", "last"] = "all") -> list[Params]:
    """``steps`` chained ``InnerOptimizer`` updates of ``params`` on any ``loss_fn`` of a parameter
    dict: the loop behind MTL's inner loop, meta-test and every entry of ``bench.adaptation``.

    Returns every iterate ``[θ0, θ1, …, θK]`` (``keep="all"``) or ``[θK]`` (``keep="last"``, for long
    runs or large parameter sets). ``on_step(t, θt, loss(θt), ∇loss(θt))`` is called before update
    t+1 (t = 0 … K−1) with the loss value and gradient the update uses (detached unless
    ``create_graph``). ``create_graph=True`` keeps the graph through the steps (second order).
    """
    opt = InnerOptimizer(params, optimizer, lr, halve_lr_at)
    grad_fn = grad_and_value(loss_fn)
    out = [params] if keep == "all" else []
    for t in range(steps):
        g, value = grad_fn(params)
        if not create_graph:
            g = {k: x.detach() for k, x in g.items()}
            value = value.detach()
        if on_step is not None:
            on_step(t, params, value, g)
        params = opt.step(params, g)
        if keep == "all":
            out.append(params)
    return out if keep == "all" else [params]


def iterates(restorer: nn.Module, params: Params, noisy: Tensor, mask: Tensor | None, features: Tensor | None,
             *, steps: int, lr: float, scale: float = 1.0, create_graph: bool = False,
             optimizer: str = "sgd") -> list[Params]:
    """The inner parameters before and after each of ``steps`` chained steps on scale·L_aux, for one
    image (a batch of 1, or one sample inside vmap): ``steps + 1`` dicts, the first ``params``.

    ``create_graph`` keeps the steps differentiable (MTL's second order); else gradients are detached.
    """

    def loss(p: Params) -> Tensor:
        return scale * aux_loss(forward_with(restorer, p, noisy, features)[1], noisy, mask)

    return run_steps(loss, params, steps=steps, lr=lr, optimizer=optimizer, create_graph=create_graph)


def meta_test_iterates(model: nn.Module, noisy: Tensor, *, steps: int, lr: float, scope: Scope = "heads",
                       aux: str = "mrl", optimizer: str = "sgd") -> tuple[list[Params], Tensor | None, Tensor | None]:
    """Alg. 3's parameters for one image (B = 1): (the ``steps + 1`` iterates, body features, mask);
    ``forward_with(model.restorer, it[k], noisy, features)`` is ``meta_test(trajectory=True)[k]``.
    For a look inside the adapted network (Fig. 8); predictions come from ``meta_test``."""
    with torch.no_grad():
        params = {k: p.detach() for k, p in inner_parameters(model.restorer, scope).items()}
        features, mask = frozen_outputs(model, noisy, scope, aux)
        its = iterates(model.restorer, params, noisy, mask, features, steps=steps, lr=lr, optimizer=optimizer)
    return its, features, mask


class _Switch:
    """A module-wide choice that a ``with`` block changes and restores (``memory_layout``,
    ``per_sample_mode``); a value outside ``choices`` is a ValueError naming ``what``."""

    def __init__(self, what: str, choices: tuple[str, ...]) -> None:
        self.what, self.choices, self.value = what, choices, choices[0]

    @contextlib.contextmanager
    def set(self, mode: str):
        if mode not in self.choices:
            raise ValueError(f"{self.what} {mode!r}: expected one of {', '.join(self.choices)}")
        previous, self.value = self.value, mode
        try:
            yield
        finally:
            self.value = previous


LAYOUTS = ("auto", "channels_last", "contiguous")
_layout = _Switch("memory layout", LAYOUTS)


def memory_layout(mode: str):
    """The memory layout ``mtl_loss`` and ``meta_test`` run their convolutions in, inside this block:
    ``channels_last`` (NHWC: the images, the body's features, the mask and the adapted heads'
    weights), ``contiguous`` (NCHW, what the caller passes), or ``auto`` (the default):
    ``mtl_loss`` on CPU runs channels-last, where oneDNN's convolutions and their double backward
    run faster (`bench perf`); ``meta_test`` keeps the caller's layout, so that its outputs equal
    bit for bit every other path through ``run_steps`` (``bench.adaptation``'s Alg. 3, the Denoiser).
    Results of the two layouts agree to float rounding (tests/test_speed.py); outputs come back
    contiguous. Per-sample loops under ``vmap`` always run in NCHW: channels-last inputs there give
    wrong body gradients (torch 2.14, CPU).
    """
    return _layout.set(mode)


def _nhwc(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def _in_layout(noisy: Tensor, params: Params, *images: Tensor,
               auto_nhwc: bool) -> tuple[bool, Tensor, Params, tuple[Tensor, ...]]:
    """(channels-last?, then ``noisy``, ``params`` and ``images`` in the layout of ``memory_layout``;
    ``auto_nhwc``: what ``auto`` means on CPU for the caller)."""
    mode = _layout.value
    if mode == "auto":
        mode = "channels_last" if auto_nhwc and noisy.device.type == "cpu" else "contiguous"
    if mode == "contiguous" or _resolved_per_sample_mode(noisy) == "vmap":
        return False, noisy, params, images
    return True, _nhwc(noisy), {k: _nhwc(v) for k, v in params.items()}, tuple(_nhwc(x) for x in images)


def _frozen_in_layout(model: nn.Module, noisy: Tensor, scope: Scope, aux: str,
                      nhwc: bool) -> tuple[Tensor | None, Tensor | None]:
    """``frozen_outputs``, with the body's and the mask network's weights channels-last too when
    ``nhwc`` (differentiable copies: their gradients reach the model's own parameters)."""
    if not nhwc:
        return frozen_outputs(model, noisy, scope, aux)

    def run(module: nn.Module) -> Tensor:
        return functional_call(module, {k: _nhwc(p) for k, p in module.named_parameters()}, (noisy,))

    return (run(model.restorer.body) if scope == "heads" else None), (run(model.mask_net) if aux == "mrl" else None)


PER_SAMPLE_MODES = ("auto", "vmap", "loop")
_per_sample_mode = _Switch("per-sample mode", PER_SAMPLE_MODES)


def per_sample_mode(mode: str):
    """How the per-sample inner loops run inside this block: ``vmap`` (torch.func.vmap: one batched
    kernel per op; per-sample weights become grouped convolutions), ``loop`` (a Python loop over the
    samples, plain kernels), or ``auto`` (the default): vmap on CUDA, loop elsewhere. Both compute
    the same thing; on CPU the loop is faster (grouped-conv backward is slow there; `bench perf`
    times both), on a GPU batching is what fills the device.
    """
    return _per_sample_mode.set(mode)


def _resolved_per_sample_mode(noisy: Tensor) -> str:
    mode = _per_sample_mode.value
    return ("vmap" if noisy.device.type == "cuda" else "loop") if mode == "auto" else mode


def _per_sample(fn, noisy: Tensor, *batched: Tensor | None):
    """``fn(noisy_j, *others_j)`` for every sample j (each with a batch dim of 1), results stacked
    along a new leading dim; None arguments are passed through as None. See ``per_sample_mode``."""
    mode = _resolved_per_sample_mode(noisy)
    if mode == "loop":
        outs = [fn(noisy[j : j + 1], *(None if x is None else x[j : j + 1] for x in batched))
                for j in range(noisy.shape[0])]
        return tree_map(lambda *xs: torch.stack(xs), *outs)
    present = [x for x in batched if x is not None]

    def call(n: Tensor, *xs: Tensor):
        it = iter(xs)
        args = [None if x is None else next(it)[None] for x in batched]
        return fn(n[None], *args)

    return vmap(call, randomness="error")(noisy, *present)


def mtl_loss(model: nn.Module, noisy: Tensor, clean: Tensor, *, steps: int, inner_lr: float,
             lambda_in: float, lambda_out: float, first_order: bool = False,
             scope: Scope = "heads", aux: str = "mrl") -> Tensor:
    """Alg. 2's outer loss: λ_out·Σ_j L_pri(f_{θ'_j}(I_n,j), I_gt,j).

    θ'_j = the inner parameters after ``steps`` chained SGD steps on λ_in·L_aux for sample j.
    The mask is computed once per sample and stays in the graph, so θ2 gets its meta-gradient
    through the inner steps.
    """
    restorer = model.restorer
    nhwc, noisy, params, (clean,) = _in_layout(noisy, inner_parameters(restorer, scope), clean, auto_nhwc=True)
    features, mask = _frozen_in_layout(model, noisy, scope, aux, nhwc)

    def sample_loss(n: Tensor, c: Tensor, m: Tensor | None, f: Tensor | None) -> Tensor:
        adapted = iterates(restorer, params, n, m, f, steps=steps, lr=inner_lr, scale=lambda_in,
                           create_graph=not first_order)[-1]
        return (forward_with(restorer, adapted, n, f)[0] - c).abs().mean()

    return lambda_out * _per_sample(sample_loss, noisy, clean, mask, features).sum()


PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_PRECISIONS = {"cuda": ("bf16", "fp16"), "cpu": ("bf16",)}  # fp16 on CPU is slow and not offered


def precision_context(device: torch.device, precision: str):
    """The autocast context of a meta-test ``precision``: nothing for fp32, else bf16/fp16 autocast."""
    if precision not in PRECISIONS:
        from bench.core.errors import BenchError

        raise BenchError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in AUTOCAST_PRECISIONS.get(device.type, ()):
        from bench.core.errors import BenchError

        raise BenchError(f"precision {precision!r} is not available on {device.type}; "
                         f"use {' or '.join(('fp32', *AUTOCAST_PRECISIONS.get(device.type, ())))}")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def fp16_loss_scale(noisy: Tensor) -> float:
    """A static loss scale for fp16: 2^round(log2 √(C·H·W)) of one image.

    L_aux is a mean over C·H·W pixels, so its per-pixel gradient is ~1/(C·H·W) (3e-7 at 1024²,
    below fp16's normal range), while a weight gradient sums over all pixels (overflow if the
    loss were a plain sum). The geometric middle keeps both in range up to ~4 MP per image.
    """
    return float(2.0 ** round(0.5 * math.log2(noisy[0].numel())))


def meta_test(model: nn.Module, noisy: Tensor, *, steps: int, lr: float, scope: Scope = "heads",
              aux: str = "mrl", optimizer: str = "sgd", trajectory: bool = False,
              precision: str = "fp32") -> Tensor:
    """Alg. 3 batched over images: per image, ``steps`` gradient steps on L_aux (no λ), body and mask
    frozen, with layout and precision options. The kernel ``bench perf`` times; studies, training's
    validation and the ``Denoiser`` run the same maths per image through the ``alg3`` entry
    (``bench.adaptation.run.adapt_image``), equal bit for bit (tests/test_one_adaptation.py).

    Returns the clean prediction of the adapted parameters, shape like ``noisy``; with
    ``trajectory=True`` a tensor (steps+1, B, 3, H, W) of the prediction before and after each step.
    The model's own parameters are never modified. ``precision`` ``bf16``/``fp16`` runs the forward
    and backward passes under autocast (CUDA; ``bf16`` also on CPU, opt-in); parameters and the SGD
    update stay fp32, and fp16 uses a static loss scale. The output has ``noisy``'s dtype.
    """
    restorer = model.restorer
    scale = fp16_loss_scale(noisy) if precision == "fp16" else 1.0
    step_lr = lr / scale if optimizer == "sgd" else lr  # Adam is invariant to the loss scale
    out_dtype = noisy.dtype
    with torch.no_grad(), precision_context(noisy.device, precision):
        params = {k: p.detach() for k, p in inner_parameters(restorer, scope).items()}
        nhwc, noisy, params, _ = _in_layout(noisy, params, auto_nhwc=False)
        features, mask = _frozen_in_layout(model, noisy, scope, aux, nhwc)

        def sample_iterates(n: Tensor, m: Tensor | None, f: Tensor | None) -> list[Params]:
            its = iterates(restorer, params, n, m, f, steps=steps, lr=step_lr, scale=scale, optimizer=optimizer)
            return its if trajectory else its[-1:]

        def sample_pred(n: Tensor, m: Tensor | None, f: Tensor | None) -> Tensor:
            return torch.cat([forward_with(restorer, p, n, f)[0] for p in sample_iterates(n, m, f)])

        if precision == "fp32":
            out = _per_sample(sample_pred, noisy, mask, features)  # (B, S, 3, H, W)
        else:  # autocast is inactive under a bare vmap (only torch.func.grad re-enables it), so the
            # adapted heads (B-batched) predict outside vmap, one image at a time, under autocast
            adapted = _per_sample(sample_iterates, noisy, mask, features)
            out = torch.stack([torch.cat([
                forward_with(restorer, {k: v[j] for k, v in p.items()}, noisy[j : j + 1],
                         None if features is None else features[j : j + 1])[0] for p in adapted])
                for j in range(noisy.shape[0])])
    out = out.to(out_dtype)  # a no-op in fp32
    return (out.transpose(0, 1) if trajectory else out[:, 0]).contiguous()
