"""One code path for every adaptation entry: ``adapt_image(entry, model, noisy, clean=None)``.

Every entry is a pair of protocol objects (``bench.adaptation.families``): its ``Moves`` gives the
parameter dict θ0 and the prediction as a function of θ, its ``Loss`` the self-supervised loss of θ,
and learned entries run ``bench.adaptation.inner.run_steps`` on that loss through
``torch.func.functional_call``, so the model's own weights are never written. For the multi-task
networks the body features (when the body is frozen) and the mask are computed once per image, as
``bench.adaptation.inner`` does. Entries that do not learn (NLM, ``none``) predict in one call.

Diagnostics per step (the loss, the output change, and with the clean image the float PSNR, the
gradient alignment and L_pri's change over the first update) cost extra forward passes; their time
is measured and left out of ``seconds``, which is the adaptation's own wall time (``seconds_total``
includes them).
"""
from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import grad, grad_and_value

from bench.adaptation.families import entry_mask, first_output
from bench.adaptation.inner import Params, run_steps
from bench.adaptation.registry import Adaptation, check_pairing
from bench.core.errors import ConfigError
from bench.core.losses import l1
from bench.core.metrics import psnr_float
from bench.core.probe import MemoryProbe, sync


@dataclass
class AdaptResult:
    """What one adaptation of one image produced and cost.

    losses       the entry's own loss at θ0 … θK (empty for entries that do not learn)
    delta_grey   mean |pred(θt+1) − pred(θt)| × 255 for t = 0 … K−1 (grey levels)
    psnr         float PSNR (output clamped to [0, 1], not quantized) of pred(θ0) … pred(θK); one value
                 for entries that do not learn; empty without ``clean``
    alignment    cos(∇L_self, ∇L_pri) over the adapted parameters at θ0 (needs ``clean``)
    alignment_pri  the same cosine over only the parameters L_pri moves (those where ∇L_pri(θ0) is not
                 identically zero: the primary head, not the auxiliary one, for the head entries); equals
                 ``alignment`` for entries that move nothing else (needs ``clean``)
    lpri_pred    ⟨∇L_pri(θ0), θ1 − θ0⟩: the first-order change of L_pri that the entry's actual first
                 update predicts (SGD −lr·g, Adam ≈ −lr·sign(g)); needs ``clean`` and K ≥ 1
    lpri_actual  L_pri(θ1) − L_pri(θ0): the change the first update made (needs ``clean`` and K ≥ 1)
    seconds      wall time of the adaptation and its prediction, diagnostics excluded
    peak_mib     CUDA: peak allocated minus allocated before; CPU: growth of the process's RSS peak
                 (VmHWM); None where it cannot be measured
    trajectory   (K+1, 1, 3, H, W) predictions of every iterate, with ``trajectory=True``
    moved        the names of the parameters the adaptation updated (restorer-relative for the heads and
                 all weights, ``offset`` for LAN, the zero-shot network's own names for fresh)
    """

    prediction: Tensor
    updates: int
    losses: list[float] = field(default_factory=list)
    delta_grey: list[float] = field(default_factory=list)
    psnr: list[float] = field(default_factory=list)
    alignment: float | None = None
    alignment_pri: float | None = None
    lpri_pred: float | None = None
    lpri_actual: float | None = None
    seconds: float = 0.0
    seconds_total: float = 0.0
    peak_mib: float | None = None
    memory_kind: str = ""
    trajectory: Tensor | None = None
    moved: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def _moved_by(g: Params) -> list[str]:
    """The names whose gradient is not identically zero (the parameters a loss moves)."""
    return [k for k, v in g.items() if bool((v != 0).any())]


def _cosine(a: Params, b: Params) -> float:
    dot = sum((a[k].double() * b[k].double()).sum() for k in a)
    na = math.sqrt(sum(a[k].double().pow(2).sum() for k in a))
    nb = math.sqrt(sum(b[k].double().pow(2).sum() for k in b))
    return float(dot / (na * nb)) if na > 0 and nb > 0 else math.nan


class _Problem:
    """One image's adaptation: the entry's moves (parameters, prediction) and its loss, plus L_pri
    for the diagnostics."""

    def __init__(self, entry: Adaptation, model: nn.Module, noisy: Tensor, clean: Tensor | None, seed: int):
        self.clean = clean
        self.moved = entry.mover.start(model, noisy, seed)  # frozen parts computed once (the caller holds no_grad)
        if not self.moved.params:
            raise ConfigError(f"adaptation {entry.name!r} moves no parameter of this model (moves {entry.moves!r})")
        self.params = self.moved.params
        self.self_loss = entry.objective.bind(entry, model, self.moved, clean)
        self.predict = self.moved.predict

    def pri_loss(self, p: Params) -> Tensor:
        if self.clean is None:
            raise ValueError("L_pri needs the clean image")
        return l1(self.predict(p), self.clean)


class _Clock:
    """Wall time of the whole call and, separately, of the diagnostic blocks inside it."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.diag = device, 0.0

    def __enter__(self) -> "_Clock":
        sync(self.device)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        sync(self.device)
        self.total = time.perf_counter() - self.start

    def diagnostic(self, fn: Callable[[], Any]) -> Any:
        sync(self.device)
        t0 = time.perf_counter()
        out = fn()
        sync(self.device)
        self.diag += time.perf_counter() - t0
        return out


@functools.cache
def _warm_up() -> None:
    """torch.func's first ``grad`` imports torch._dynamo and sympy (seconds, once per process): done
    before any clock starts, so the first image's measured time is the adaptation's own."""
    grad(lambda x: (x * x).sum())(torch.ones(1))


def adapt_image(entry: Adaptation, model: nn.Module, noisy: Tensor, clean: Tensor | None = None, *,
                trajectory: bool = False, diagnostics: bool = True, seed: int = 0) -> AdaptResult:
    """Adapt to one noisy image (1, 3, H, W) as ``entry`` says and predict it.

    ``clean`` (evaluation only) adds the float PSNR per step, the gradient alignment at step 0 (over
    every adapted parameter and over those L_pri moves) and L_pri's predicted and actual change over
    the first update; the oracle entry needs it. ``diagnostics=False`` skips the per-step output
    change and PSNR (the losses are free and always kept). ``seed`` initialises the zero-shot network.
    The model's parameters and buffers are never modified.
    """
    if noisy.dim() != 4 or noisy.shape[0] != 1:
        raise ValueError(f"adapt_image takes one image (1, C, H, W), got shape {tuple(noisy.shape)}")
    check_pairing(entry, model)
    if entry.objective.needs_clean and clean is None:
        raise ValueError(f"adaptation {entry.name!r} steps on the clean image: pass clean")
    learns = entry.learns
    if learns:
        _warm_up()
    clock = _Clock(noisy.device)
    probe = MemoryProbe(noisy.device)
    with probe, clock, torch.no_grad():
        if learns:
            result = _learned(entry, model, noisy, clean, clock, trajectory, diagnostics, seed)
        else:
            prediction, extra = entry.mover.predict(entry, model, noisy)
            result = AdaptResult(prediction=prediction, updates=0, extra=extra)
        if not learns:
            if clean is not None:
                result.psnr = [clock.diagnostic(lambda: float(psnr_float(result.prediction[0], clean[0])))]
            if trajectory:
                result.trajectory = result.prediction[None]
    result.seconds_total = clock.total
    result.seconds = clock.total - clock.diag
    result.peak_mib = probe.over
    result.memory_kind = ("cuda-allocated" if noisy.device.type == "cuda" else "rss-peak-growth") \
        if probe.over is not None else "unavailable"
    return result


def _learned(entry: Adaptation, model: nn.Module, noisy: Tensor, clean: Tensor | None, clock: _Clock,
             trajectory: bool, diagnostics: bool, seed: int) -> AdaptResult:
    problem = _Problem(entry, model, noisy, clean, seed)
    k = entry.steps
    before_last = entry.predict_after == "before-last" and k > 0
    want_preds = diagnostics or trajectory
    losses: list[Tensor] = []
    deltas: list[float] = []
    psnrs: list[float] = []
    kept: list[Tensor] = []  # every iterate's prediction, only with trajectory=True
    previous: list[Tensor] = []  # the last iterate's prediction (for the output change)
    chosen: list[Tensor] = []
    alignment: list[float] = []
    first: dict[str, Any] = {}  # step-0 L_pri, its gradient and the two cosines (with the clean image)

    def record(pred: Tensor) -> None:
        """Per-iterate diagnostics, computed on the fly so that long runs hold one prediction."""
        if diagnostics:
            if previous:
                deltas.append(float((pred - previous.pop()).abs().mean()) * 255)
            previous.append(pred)
            if clean is not None:
                psnrs.append(float(psnr_float(pred[0], clean[0])))
        if trajectory:
            kept.append(pred)

    def see(p: Params, reported: bool) -> Tensor | None:
        """An iterate's prediction: real work when it is the reported one, else a diagnostic."""
        if reported:
            pred = problem.predict(p)
            if want_preds:
                clock.diagnostic(lambda: record(pred))
            return pred
        if want_preds:
            clock.diagnostic(lambda: record(problem.predict(p)))
        return None

    def align(p: Params, g_self: Params) -> None:
        g_pri, value = grad_and_value(problem.pri_loss)(p)
        g_pri = {n: g.detach() for n, g in g_pri.items()}
        alignment.append(_cosine(g_self, g_pri))
        pri = _moved_by(g_pri)
        first.update(value=float(value), grad=g_pri,
                     alignment_pri=_cosine({n: g_self[n] for n in pri}, {n: g_pri[n] for n in pri}))

    def first_update(p1: Params) -> None:
        """L_pri's change over the actual first update θ0 → θ1, predicted and measured."""
        g_pri, p0 = first.pop("grad"), problem.params
        first["lpri_pred"] = float(sum((g_pri[n].double() * (p1[n] - p0[n]).double()).sum() for n in g_pri))
        first["lpri_actual"] = float(problem.pri_loss(p1)) - first["value"]

    def on_step(t: int, p: Params, value: Tensor, g: Params) -> None:
        losses.append(value)
        if t == 0 and clean is not None:
            clock.diagnostic(lambda: align(p, g))
        if t == 1 and clean is not None:
            clock.diagnostic(lambda: first_update(p))
        pred = see(p, reported=before_last and t == k - 1)
        if pred is not None:
            chosen.append(pred)

    last = run_steps(problem.self_loss, problem.params, steps=k, lr=entry.lr, optimizer=entry.optimizer,
                     on_step=on_step, halve_lr_at=entry.halve_lr_at, keep="last")[0]
    if k == 0 and clean is not None:
        clock.diagnostic(lambda: align(last, {n: g.detach() for n, g in grad(problem.self_loss)(last).items()}))
    if k == 1 and clean is not None:
        clock.diagnostic(lambda: first_update(last))
    final = see(last, reported=not before_last)
    prediction = chosen[0] if before_last else final
    losses.append(clock.diagnostic(lambda: problem.self_loss(last)))
    return AdaptResult(prediction=prediction, updates=entry.updates_behind_prediction,
                       losses=clock.diagnostic(lambda: [float(v) for v in losses]), delta_grey=deltas, psnr=psnrs,
                       alignment=alignment[0] if alignment else None, alignment_pri=first.get("alignment_pri"),
                       lpri_pred=first.get("lpri_pred"), lpri_actual=first.get("lpri_actual"),
                       trajectory=torch.stack(kept) if trajectory else None, moved=list(problem.params))


__all__ = ["AdaptResult", "adapt_image", "entry_mask", "first_output"]  # the last two live in families
