"""The `bench perf` cases: each builds its inputs, checks the fast paths against the references
(``reference``; before timing, so the checks also warm up), then times its variants interleaved.
Settings, tolerances and shared helpers: ``harness``.
"""
from __future__ import annotations

import copy
import functools
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

import methods
from bench.adaptation.inner import memory_layout, meta_test, mtl_loss, per_sample_mode, precision_context
from bench.core.probe import sync
from bench.perf.harness import (
    CHECK_INNER_LR,
    CHECK_LR,
    META_LR,
    MTL_HP,
    OFFICIAL_CHECK_LR,
    OFFICIAL_LR,
    TOL_GRAD,
    TOL_IMAGE,
    TOL_PSNR_DB,
    Bench,
    CaseResult,
    channels_last,
    cl,
    grads_after,
    grads_of,
    rel_grad_err,
    sample_pair,
)
from bench.perf.reference import (
    naive_maxl_meta_backward,
    naive_maxl_step,
    naive_meta_test,
    naive_mtl_loss,
    official_meta_test,
)

# --------------------------------------------------------------------------- cases


def _modes(device: torch.device) -> tuple[str, str]:
    """(what ``per_sample_mode("auto")`` picks on this device, the other one)."""
    auto = "vmap" if device.type == "cuda" else "loop"
    return auto, "loop" if auto == "vmap" else "vmap"


def _in_mode(mode: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with per_sample_mode(mode):
            return fn()
    return run


NAIVE_MTL = "naive chained loop (slow by design)"  # per sample, the whole network at every inner step
NAIVE_MAXL = "naive double backward (slow by design)"  # the literal second-order graph of MAXL's meta pass
NCHW = "ours, NCHW"  # MTL in the caller's layout (memory_layout "contiguous"); ours = auto (channels-last on CPU)
NHWC = "ours, NHWC loop"  # meta-test with memory_layout "channels_last" (its auto keeps the caller's NCHW)


def _layout(mode: str, fn: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        with memory_layout(mode):
            return fn()
    return run


def _nchw(fn: Callable[[], Any]) -> Callable[[], Any]:
    return _layout("contiguous", fn)


def case_mtl(b: Bench) -> CaseResult:
    """(a) one MTL step (meta-gradient: loss + backward; the Adam update, equal for all, is left out)."""
    cfg, model = b.cfg, b.model
    B, P, K = cfg.mtl_batch, cfg.mtl_patch, cfg.steps
    auto, other = _modes(b.device)
    res = CaseResult("mtl", f"MTL step, B={B}, {P}², K={K}",
                     {"batch": B, "patch": P, "steps": K, **MTL_HP, "check_inner_lr": CHECK_INNER_LR,
                      "per_sample": auto}, baselines=(NAIVE_MTL,))
    noisy, clean = b.patches(B, P)
    chk = dict(MTL_HP, inner_lr=CHECK_INNER_LR, steps=K)
    b.log("  checking gradients against the naive loop")
    g_naive = grads_of(model, lambda: naive_mtl_loss(model, noisy, clean, **chk))
    effect = None
    if cfg.first_order:
        g_naive_fo = grads_of(model, lambda: naive_mtl_loss(model, noisy, clean, first_order=True, **chk))
        effect = rel_grad_err(g_naive_fo, g_naive)  # how much the second-order terms matter
        g_fo = grads_of(model, lambda: mtl_loss(model, noisy, clean, first_order=True, **chk))
        res.add_check("first-order grads: ours vs naive (rel. max err)", rel_grad_err(g_fo, g_naive_fo), TOL_GRAD)
        res.notes.append(f"at the check α the second-order terms change the gradient by {effect:.2g} "
                         f"(rel. max; 1 = a parameter whose gradient exists only through them)")
    for mode in (auto, other):
        g = grads_of(model, _in_mode(mode, lambda: mtl_loss(model, noisy, clean, **chk)))
        res.add_check(f"second-order grads: ours ({mode}) vs naive (rel. max err)", rel_grad_err(g, g_naive),
                      TOL_GRAD, effect=effect)
        if mode == auto:
            g_fast = g

    def step(fn: Callable[..., Tensor], m: nn.Module = model, x: Tensor = noisy, y: Tensor = clean, **kw: Any):
        def run() -> None:
            m.zero_grad(set_to_none=True)
            fn(m, x, y, steps=K, **MTL_HP, **kw).backward()
        return run

    g_nchw = grads_of(model, _nchw(lambda: mtl_loss(model, noisy, clean, **chk)))
    res.add_check("second-order grads: ours vs ours in NCHW (rel. max err)", rel_grad_err(g_fast, g_nchw), TOL_GRAD)
    fns = {NAIVE_MTL: step(naive_mtl_loss), "ours": step(mtl_loss), NCHW: _nchw(step(mtl_loss)),
           f"ours, {other}": _in_mode(other, step(mtl_loss))}
    if cfg.first_order:
        fns["ours, first order"] = step(mtl_loss, first_order=True)
    if cfg.channels_last:
        m_cl = channels_last(model)
        g_cl = grads_of(m_cl, lambda: mtl_loss(m_cl, cl(noisy), cl(clean), **chk))
        res.add_check("channels-last grads vs ours (rel. max err)", rel_grad_err(g_cl, g_fast), TOL_GRAD)
        fns["ours, channels-last"] = step(mtl_loss, m_cl, cl(noisy), cl(clean))
    res.notes.append(f"'{NAIVE_MTL}' = per sample, the whole network (body included) at every inner step, "
                     "torch.autograd.grad chained by hand: what a literal transcription of Alg. 2 costs")
    res.notes.append(f"ours = body and mask once per batch, heads K times, per-sample loops by {auto} "
                     f"(per_sample_mode auto on {b.device.type}), memory_layout auto; '{NCHW}' = the same in "
                     f"the caller's NCHW layout")
    b.time(res, fns)
    model.zero_grad(set_to_none=True)
    return res


def _psnr(pred: Tensor, clean: Tensor) -> float:
    from bench.core.metrics import psnr

    return float(psnr(pred.float(), clean.float())[0])


OFFICIAL = "official loop"  # the official TTAID test loop at its own cost (reference.official_meta_test)
NAIVE_FROZEN = "naive SGD, body frozen"  # a plain torch.optim loop: costs what such code costs
NAIVE_SLOW = "naive SGD, slow by design"  # backward also through the body, for nothing
ALG3_ENTRY = "alg3 entry (smoke/quick/paper)"  # what evaluation and `bench denoise` run by default
OFFICIAL_ENTRY = "official entry (paper-official)"  # the same code path with the official variant


def metatest_entries(steps: int) -> dict[str, Any]:
    """Variant name → the adaptation entry a preset's ``metatest`` section makes: the default
    (SGD, Alg. 3) and the official variant (Adam, mask > 0.5, prediction after K−1 updates)."""
    from bench.adaptation.registry import from_metatest
    from bench.core.config import MetaTestConfig

    return {ALG3_ENTRY: from_metatest(MetaTestConfig(steps=steps, lr=META_LR)),
            OFFICIAL_ENTRY: from_metatest(MetaTestConfig(steps=steps, lr=OFFICIAL_LR, optimizer="adam",
                                                         variant="official"))}


def adapted(entry: Any, model: nn.Module, noisy: Tensor) -> Tensor:
    """The prediction of ``entry`` on one image, through the executor evaluation runs."""
    from bench.adaptation.run import adapt_image

    return adapt_image(entry, model, noisy, diagnostics=False).prediction


def case_metatest(b: Bench, size: int) -> CaseResult:
    """(b) meta-test of one size×size image: the paths users run (the preset entries, the kernel)
    against the official loop at its own cost, and against plain loops."""
    cfg, model = b.cfg, b.model
    K = cfg.steps
    auto, other = _modes(b.device)
    res = CaseResult(f"metatest-{size}", f"meta-test {size}², K={K}",
                     {"size": size, "steps": K, "lr": META_LR, "check_lr": CHECK_LR, "per_sample": auto},
                     baselines=(OFFICIAL, NAIVE_FROZEN, NAIVE_SLOW))
    noisy, clean = b.pair(size)
    b.log("  checking outputs against the naive loop")
    with torch.no_grad():
        before = model.restorer(noisy)[0]
    ref = naive_meta_test(model, noisy, steps=K, lr=CHECK_LR, freeze=False)
    effect = (ref - before).abs().max().item()
    ref_frozen = naive_meta_test(model, noisy, steps=K, lr=CHECK_LR)
    res.add_check("output: naive body frozen vs naive (max abs)", (ref_frozen - ref).abs().max().item(), TOL_IMAGE,
                  effect=effect)
    for mode in (auto, other):
        out = _in_mode(mode, lambda: meta_test(model, noisy, steps=K, lr=CHECK_LR))()
        res.add_check(f"output: ours ({mode}) vs naive (max abs)", (out - ref).abs().max().item(), TOL_IMAGE,
                      effect=effect)
        if mode == auto:
            fast = out
    out_nhwc = _layout("channels_last", lambda: meta_test(model, noisy, steps=K, lr=CHECK_LR))()
    res.add_check(f"output: {NHWC} vs ours (max abs)", (out_nhwc - fast).abs().max().item(), TOL_IMAGE)
    entries = metatest_entries(K)
    alg3_chk = adapted(entries[ALG3_ENTRY].with_(lr=CHECK_LR), model, noisy)
    res.add_check(f"output: {ALG3_ENTRY} vs ours (max abs)", (alg3_chk - fast).abs().max().item(), TOL_IMAGE,
                  effect=effect)
    _check_official(res, model, noisy, K, before, entries[OFFICIAL_ENTRY])
    run = lambda m=model, x=noisy, **kw: (lambda: meta_test(m, x, steps=K, lr=META_LR, **kw))  # noqa: E731
    fns = {OFFICIAL: lambda: official_meta_test(model, noisy, steps=K, lr=OFFICIAL_LR),
           NAIVE_FROZEN: lambda: naive_meta_test(model, noisy, steps=K, lr=META_LR),
           NAIVE_SLOW: lambda: naive_meta_test(model, noisy, steps=K, lr=META_LR, freeze=False),
           **{name: functools.partial(adapted, e, model, noisy) for name, e in entries.items()},
           "ours": run(), f"ours, {other}": _in_mode(other, run()),
           "ours, adam": run(optimizer="adam"), NHWC: _layout("channels_last", run()),
           f"{NHWC}, adam": _layout("channels_last", run(optimizer="adam"))}
    res.notes.append(f"{OFFICIAL} = the TTAID test loop as its code runs (reference.OFFICIAL_SOURCE): a deep copy "
                     "per image, the body and the primary head's first conv frozen, torch.optim.Adam on the "
                     "rest, full restorer and mask network every step, mask > 0.5, prediction before the "
                     f"last step. '{NAIVE_FROZEN}': torch.optim.SGD on the heads, full restorer every step, "
                     f"backward stopping at the heads. '{NAIVE_SLOW}': the same without freezing, so backward "
                     f"also runs through the body for nothing. '{ALG3_ENTRY}' / '{OFFICIAL_ENTRY}': "
                     "bench.adaptation.run.adapt_image with the entry a preset's metatest section makes (the "
                     "path studies, the Denoiser and `bench denoise` run); 'ours' = the meta_test kernel (SGD) "
                     f"in the default layout, per-sample mode {auto}")

    # PSNR at the paper's setting (α = 1e-5): without adaptation, fp32, and each low precision
    out32 = meta_test(model, noisy, steps=K, lr=META_LR)
    res.params.update(psnr_noisy=_psnr(noisy, clean), psnr_no_metatest=_psnr(before, clean),
                      psnr_fp32=_psnr(out32, clean))
    for p in cfg.precisions:
        if p == "fp32":
            continue
        out_lp = meta_test(model, noisy, steps=K, lr=META_LR, precision=p)
        base_lp = meta_test(model, noisy, steps=0, lr=META_LR, precision=p)
        out_lp_chk = meta_test(model, noisy, steps=K, lr=CHECK_LR, precision=p)
        d_psnr = _psnr(out_lp, clean) - res.params["psnr_fp32"]
        res.params.update({f"psnr_{p}": _psnr(out_lp, clean), f"psnr_{p}_no_adaptation": _psnr(base_lp, clean),
                           f"max_abs_diff_{p}_vs_fp32": (out_lp - out32).abs().max().item(),
                           f"max_abs_diff_{p}_vs_fp32_at_check_lr": (out_lp_chk - fast).abs().max().item()})
        res.add_check(f"{p}: |PSNR − fp32 PSNR| at the paper's α (dB)", abs(d_psnr), TOL_PSNR_DB, unit="dB")
        gain_lp = res.params[f"psnr_{p}"] - res.params[f"psnr_{p}_no_adaptation"]
        gain32 = res.params["psnr_fp32"] - res.params["psnr_no_metatest"]
        res.notes.append(f"{p}: PSNR {res.params[f'psnr_{p}']:.4f} dB vs fp32 {res.params['psnr_fp32']:.4f} dB "
                         f"(Δ {d_psnr:+.4f}); gain from adaptation {gain_lp:+.4f} dB ({p}) vs {gain32:+.4f} dB "
                         f"(fp32); max |{p} − fp32| {res.params[f'max_abs_diff_{p}_vs_fp32']:.2g}")
        fns[f"ours, {p}"] = run(precision=p)
    if cfg.channels_last:
        m_cl = channels_last(model)
        out_cl = meta_test(m_cl, cl(noisy), steps=K, lr=CHECK_LR)
        res.add_check("channels-last output vs ours (max abs)", (out_cl - fast).abs().max().item(), TOL_IMAGE)
        fns["ours, channels-last"] = run(m_cl, cl(noisy))
        fns["ours, adam, channels-last"] = run(m_cl, cl(noisy), optimizer="adam")
    if cfg.compile:
        _add_compiled(b, res, fns, noisy, fast)
    b.time(res, fns)
    return res


def _check_official(res: CaseResult, model: nn.Module, noisy: Tensor, K: int, before: Tensor, entry: Any) -> None:
    """The official entry (the path a paper-official preset runs) against the official loop it
    names, as shipped (mask > 0.5, prediction after K−1 updates), at a step (``OFFICIAL_CHECK_LR``)
    that moves the output well beyond the tolerance."""
    loop = official_meta_test(model, noisy, steps=K, lr=OFFICIAL_CHECK_LR)
    ours = adapted(entry.with_(lr=OFFICIAL_CHECK_LR), model, noisy)
    moved = (loop - before).abs().max().item()
    res.add_check(f"output: {OFFICIAL_ENTRY} vs {OFFICIAL} (max abs)", (ours - loop).abs().max().item(), TOL_IMAGE,
                  effect=moved if K > 1 else None)
    res.params.update(official_check_lr=OFFICIAL_CHECK_LR, official_moves_output_by=moved)


def _add_compiled(b: Bench, res: CaseResult, fns: dict, noisy: Tensor, fast: Tensor) -> None:
    import time

    K, model = b.cfg.steps, b.model
    compiled = torch.compile(meta_test, dynamic=False)
    try:
        start = time.perf_counter()
        out = compiled(model, noisy, steps=K, lr=CHECK_LR)
        sync(b.device)
        res.params["compile_seconds"] = time.perf_counter() - start
    except Exception as e:  # noqa: BLE001 — a backend that cannot compile this is a result, not a crash
        res.notes.append(f"torch.compile failed: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
        return
    res.add_check("torch.compile output vs ours (max abs)", (out - fast).abs().max().item(), TOL_IMAGE)
    fns["ours, torch.compile"] = lambda: compiled(model, noisy, steps=K, lr=META_LR)


def case_batched(b: Bench) -> CaseResult:
    """Batched meta-test: N equally-sized images in one call vs one call per image."""
    cfg, model = b.cfg, b.model
    N, S, K = cfg.eval_images, cfg.eval_size, cfg.steps
    auto, other = _modes(b.device)
    res = CaseResult("metatest-batched", f"meta-test of {N} images of {S}², K={K}: one call vs one per image",
                     {"images": N, "size": S, "steps": K, "lr": META_LR, "per_sample": auto},
                     baselines=("ours, one by one",))
    noisy = torch.cat([b.pair(S, i)[0] for i in range(N)])
    one = lambda lr: torch.cat([meta_test(model, noisy[i : i + 1], steps=K, lr=lr) for i in range(N)])  # noqa: E731
    ref = one(CHECK_LR)
    for mode in ("vmap", "loop"):
        out = _in_mode(mode, lambda: meta_test(model, noisy, steps=K, lr=CHECK_LR))()
        res.add_check(f"one call ({mode}) vs one by one (max abs)", (out - ref).abs().max().item(), TOL_IMAGE)
    b.time(res, {"ours, one by one": lambda: one(META_LR),
                 "ours, one call (vmap)": _in_mode("vmap", lambda: meta_test(model, noisy, steps=K, lr=META_LR)),
                 "ours, one call (loop)": _in_mode("loop", lambda: meta_test(model, noisy, steps=K, lr=META_LR))})
    for v in res.variants.values():
        v["images_per_s"] = N / v["timing"]["median"]
    return res


def case_maxl(b: Bench) -> CaseResult:
    """(c) one MAXL step as `bench run` trains it (an auxiliary Adam step on θ1 and a meta step on
    the mask), beside the plain step: NCHW, the meta gradient by a double backward."""
    from bench.core.config import PretrainConfig
    from bench.data import Source
    from bench.data.base import ImagePair
    from bench.training.context import TrainContext
    from bench.training.pretrain import mask_meta_backward, pretrain

    cfg = b.cfg
    B, P = cfg.maxl_batch, cfg.maxl_patch
    pcfg = PretrainConfig(epochs=1, steps_per_epoch=1, batch=B, patch=P)
    res = CaseResult("maxl", f"MAXL step (aux + meta pass), B={B}, {P}²",
                     {"batch": B, "patch": P, "inner_lr": pcfg.inner_lr, "lambda_g": pcfg.lambda_g},
                     baselines=(NAIVE_MAXL,))
    noisy, clean = b.patches(B, P)
    hp = dict(inner_lr=pcfg.inner_lr, lambda_g=pcfg.lambda_g)
    b.log("  checking the meta pass's mask gradients against the double backward")
    ref_model = copy.deepcopy(b.model)
    g_naive = grads_after(ref_model.mask_net, lambda: naive_maxl_meta_backward(ref_model.restorer,
                                                                              ref_model.mask_net, noisy, clean, **hp))
    for name, (m, n, c) in {"NCHW": (ref_model, noisy, clean),
                            "NHWC": (channels_last(ref_model), cl(noisy), cl(clean))}.items():
        g = grads_after(m.mask_net, lambda: mask_meta_backward(m.restorer, m.mask_net, n, c, **hp))
        res.add_check(f"mask gradients: ours ({name}, JVP) vs double backward (rel. max err)",
                      rel_grad_err(g, g_naive), TOL_GRAD)
    pairs = [ImagePair(f"img{i}", c, n) for i, (n, c) in
             enumerate(sample_pair(max(2 * P, 128), i, cfg.seed) for i in range(2))]
    source = Source(pairs)
    model = copy.deepcopy(b.model)  # pre-training updates it in place
    recipe = methods.get("ours").recipe
    ctx = TrainContext(b.device, np.random.default_rng(cfg.seed), quiet=True)
    naive = copy.deepcopy(b.model)
    opts = (torch.optim.Adam(naive.restorer.parameters(), lr=pcfg.lr),
            torch.optim.Adam(naive.mask_net.parameters(), lr=pcfg.lr))
    res.notes.append("ours times bench.training.pretrain.pretrain for 1 epoch × 1 step: patch sampling + one "
                     "auxiliary Adam step on θ1 + one meta step (look-ahead, Adam on θ2); on CPU channels-last, "
                     "the mask's meta gradient by one forward-mode product. naive: the same two steps on "
                     "fixed patches, NCHW, the meta gradient by a double backward (the literal second-order graph, "
                     "slower than the forward-mode product by design)")
    b.time(res, {"ours (bench.training.pretrain)": lambda: pretrain(model, recipe, pcfg, source, ctx),
                 NAIVE_MAXL: lambda: naive_maxl_step(naive, opts, noisy, clean, **hp)})
    return res


def case_eval(b: Bench) -> CaseResult:
    """(d) evaluation throughput: the one evaluator (bench.adaptation.evaluate.evaluate: adapt, predict,
    PSNR/SSIM and the diagnostics every study row logs), images per second."""
    from bench.adaptation.evaluate import Target, evaluate
    from bench.adaptation.registry import from_metatest, get
    from bench.core.config import MetaTestConfig
    from bench.data.base import ImagePair

    cfg, model = b.cfg, b.model
    N, S, K = cfg.eval_images, cfg.eval_size, cfg.steps
    res = CaseResult("eval", f"evaluation of {N} images of {S}² (metrics included)",
                     {"images": N, "size": S, "steps": K, "lr": META_LR})
    pairs = [ImagePair(f"img{i}", *reversed(sample_pair(S, i, cfg.seed))) for i in range(N)]
    targets = [Target("test", "", pairs)]
    alg3 = from_metatest(MetaTestConfig(steps=K, lr=META_LR))
    b.time(res, {"with meta-test": lambda: evaluate(model, alg3, targets, b.device),
                 "without meta-test": lambda: evaluate(model, get("none"), targets, b.device)})
    for v in res.variants.values():
        v["images_per_s"] = N / v["timing"]["median"]
    return res


def check_precisions(precisions: tuple[str, ...], device: torch.device) -> None:
    """Fail early (BenchError) on a precision that does not exist or is not available on the device."""
    for p in precisions:
        precision_context(device, p)
