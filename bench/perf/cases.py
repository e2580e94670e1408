"""The `bench perf` cases: each builds its inputs, checks the fast paths against the reference
(before timing, so the checks also warm up), then times its variants interleaved.

Hyper-parameters are the paper's (MTL: α = 5e-5, λ_in = λ_out = 10; meta-test: α = 1e-5) for
timing. Correctness checks use a larger step (``CHECK_INNER_LR``, ``CHECK_LR``) so that the
adaptation — and, for MTL, the second-order terms — visibly change the result: at the paper's α a
check would pass even if the inner loop did nothing. Each check states its tolerance and how large
the effect it guards is (``effect``), so a reader can see that the tolerance is meaningful.
"""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn

import methods

from ..adapt import meta_test, mtl_loss, per_sample_mode
from .measure import interleaved, speedup, sync, tensor_peak_mib
from .reference import naive_meta_test, naive_mtl_loss

MTL_HP = dict(inner_lr=5e-5, lambda_in=10.0, lambda_out=10.0)
META_LR = 1e-5
CHECK_INNER_LR = 5e-3  # MTL check: 100× the paper's α
CHECK_LR = 1e-2  # meta-test check: 1000× the paper's α, the adaptation moves the output by ≫ TOL_IMAGE

# Tolerances (float32). Gradients: per parameter tensor, max|fast − naive| / max|naive|.
# Images: max |fast − naive| over pixels, outputs in [0, 1] (8-bit step: 3.9e-3).
TOL_GRAD = 1e-3
TOL_IMAGE = 1e-4
TOL_PSNR_DB = 0.05  # low precision: |ΔPSNR| vs fp32 within the paper's "+0.05 dB is a contribution"


@dataclass(frozen=True)
class PerfConfig:
    """What `bench perf` measures. ``PerfConfig.quick_config()`` is the CI smoke (correctness only)."""

    device: str = "cpu"
    quick: bool = False
    cases: tuple[str, ...] = ("mtl", "metatest", "batched", "maxl", "eval")  # + "memmodel" (slow on CPU)
    sizes: tuple[int, ...] = (256, 512, 1024)  # meta-test image sizes
    precisions: tuple[str, ...] = ("fp32",)  # meta-test; fp32 always runs (the reference)
    steps: int = 5  # K
    mtl_batch: int = 2
    mtl_patch: int = 128
    maxl_batch: int = 16
    maxl_patch: int = 128
    eval_images: int = 4  # evaluation throughput and batched meta-test
    eval_size: int = 256
    repeats: int = 5
    warmup: int = 1
    first_order: bool = True  # also time first-order MTL
    channels_last: bool = False  # also time channels-last variants
    compile: bool = False  # also time torch.compile'd meta-test
    memory: bool = True  # tensor peak per variant (one extra run each)
    width: tuple[int, int] = (32, 16)  # (base, scale) of the network
    weights: str | None = None
    seed: int = 0

    @classmethod
    def quick_config(cls, **overrides: Any) -> "PerfConfig":
        base = cls(quick=True, sizes=(64,), steps=2, mtl_patch=64, maxl_batch=2, maxl_patch=64,
                   eval_images=2, eval_size=64, repeats=1, warmup=0, memory=False)
        return replace(base, **overrides)


@dataclass
class CaseResult:
    case: str
    title: str
    params: dict[str, Any]
    baselines: tuple[str, ...] = ()  # speed-ups are reported against each; the first is the headline
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add_check(self, what: str, value: float, tol: float, effect: float | None = None, unit: str = "") -> None:
        """A pass/fail check ``value ≤ tol``; with ``effect`` (the size of what the check guards, in
        the same unit) it also requires effect > 10·tol, else the check could not fail."""
        ok = bool(np.isfinite(value)) and value <= tol
        if effect is not None:
            ok = ok and effect > 10 * tol
        self.checks.append({"case": self.case, "what": what, "value": float(value), "tol": tol,
                            "effect": None if effect is None else float(effect), "unit": unit, "ok": ok})

    def as_dict(self) -> dict[str, Any]:
        speed: dict[str, dict[str, Any]] = {}
        for base in self.baselines:
            if base not in self.variants:
                continue
            b = self.variants[base]
            for name, v in self.variants.items():
                if name == base:
                    continue
                entry = speedup(b["times"], v["times"])
                if "cpu_times" in v:
                    entry["cpu_time"] = speedup(b["cpu_times"], v["cpu_times"])
                speed.setdefault(name, {})[base] = entry
        return {"case": self.case, "title": self.title, "params": self.params,
                "baseline": self.baselines[0] if self.baselines else None, "baselines": list(self.baselines),
                "variants": self.variants, "speedup": speed, "checks": self.checks, "notes": self.notes}


class Bench:
    """Shared state of one run: the device, the network, the test images."""

    def __init__(self, cfg: PerfConfig, log: Callable[[str], None] = lambda s: None) -> None:
        self.cfg, self.log = cfg, log
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.width, cfg.weights).to(self.device)
        self.rng = np.random.default_rng(cfg.seed)

    def pair(self, size: int, index: int = 0) -> tuple[Tensor, Tensor]:
        """(noisy, clean), each (1, 3, size, size) on the device: a photograph with camera noise."""
        noisy, clean = sample_pair(size, index, self.cfg.seed)
        return to_tensor(noisy, self.device), to_tensor(clean, self.device)

    def patches(self, batch: int, patch: int) -> tuple[Tensor, Tensor]:
        size = max(2 * patch, 128)
        noisy, clean = self.pair(size)
        ys = self.rng.integers(0, size - patch + 1, batch)
        xs = self.rng.integers(0, size - patch + 1, batch)
        crop = lambda t: torch.cat([t[..., y : y + patch, x : x + patch] for y, x in zip(ys, xs)])  # noqa: E731
        return crop(noisy).contiguous(), crop(clean).contiguous()

    def time(self, result: CaseResult, fns: dict[str, Callable[[], Any]], warmup: int | None = None) -> None:
        cfg = self.cfg
        self.log(f"  timing {', '.join(fns)} ({cfg.repeats} rounds)")
        timed = interleaved(fns, repeats=cfg.repeats, warmup=cfg.warmup if warmup is None else warmup,
                            device=self.device)
        for name, r in timed.items():
            result.variants.setdefault(name, {}).update(r)
        if cfg.memory:
            for name, fn in fns.items():
                self.log(f"  tensor peak of {name}")
                result.variants[name]["memory"]["tensor_peak_mib"] = tensor_peak_mib(fn, self.device)


# --------------------------------------------------------------------------- inputs


def build_model(width: tuple[int, int] = (32, 16), weights: str | None = None) -> nn.Module:
    """The paper's network (or a wider one); ``weights``: a state_dict file or a pipeline checkpoint."""
    base, scale = width
    model = methods.create("ours", base=base, scale=scale, mask_base=32)
    if weights:
        from ..errors import BenchError

        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        except (OSError, RuntimeError, KeyError, AttributeError, ValueError) as e:
            raise BenchError(f"--weights {weights}: not a state_dict of this network ({' '.join(str(e).split())[:200]})") from None
    return model


@functools.lru_cache(maxsize=16)
def sample_pair(size: int, index: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A size×size crop of a bundled photograph (mirrored where it is smaller) with nam-like camera noise."""
    import skimage.data

    from ..data.noise import noise_model

    names = ("astronaut", "coffee", "chelsea", "rocket")  # bundled with scikit-image, no download
    img = np.asarray(getattr(skimage.data, names[index % len(names)])()[..., :3], dtype=np.float32) / 255.0
    reps = (-(-size // img.shape[0]), -(-size // img.shape[1]))
    if reps != (1, 1):  # mirror-tile: no seams, any size
        rows = np.concatenate([img if i % 2 == 0 else img[::-1] for i in range(reps[0])], axis=0)
        img = np.concatenate([rows if j % 2 == 0 else rows[:, ::-1] for j in range(reps[1])], axis=1)
    y0, x0 = (img.shape[0] - size) // 2, (img.shape[1] - size) // 2
    clean = np.ascontiguousarray(img[y0 : y0 + size, x0 : x0 + size], dtype=np.float32)
    noisy = noise_model("nam-like")(clean, np.random.default_rng(seed + 1000 * index))
    return np.ascontiguousarray(noisy, dtype=np.float32), clean


def to_tensor(img: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].contiguous().to(device)


def rel_grad_err(fast: dict[str, Tensor], ref: dict[str, Tensor]) -> float:
    """max over parameter tensors of max|fast − ref| / max|ref| (missing gradients count as 0)."""
    err = 0.0
    for k in ref.keys() | fast.keys():
        r = ref[k] if k in ref else torch.zeros_like(fast[k])
        f = fast[k] if k in fast else torch.zeros_like(r)
        err = max(err, ((f - r).abs().max() / r.abs().max().clamp_min(1e-12)).item())
    return err


def grads_of(model: nn.Module, loss_fn: Callable[[], Tensor]) -> dict[str, Tensor]:
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    return {k: p.grad.detach().clone() for k, p in model.named_parameters() if p.grad is not None}


def channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def cl(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


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


def case_mtl(b: Bench) -> CaseResult:
    """(a) one MTL step (meta-gradient: loss + backward; the Adam update, equal for all, is left out)."""
    cfg, model = b.cfg, b.model
    B, P, K = cfg.mtl_batch, cfg.mtl_patch, cfg.steps
    auto, other = _modes(b.device)
    res = CaseResult("mtl", f"MTL step, B={B}, {P}², K={K}",
                     {"batch": B, "patch": P, "steps": K, **MTL_HP, "check_inner_lr": CHECK_INNER_LR,
                      "per_sample": auto}, baselines=("naive",))
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

    fns = {"naive": step(naive_mtl_loss), "ours": step(mtl_loss),
           f"ours, {other}": _in_mode(other, step(mtl_loss))}
    if cfg.first_order:
        fns["ours, first order"] = step(mtl_loss, first_order=True)
    if cfg.channels_last:
        m_cl = channels_last(model)
        g_cl = grads_of(m_cl, lambda: mtl_loss(m_cl, cl(noisy), cl(clean), **chk))
        res.add_check("channels-last grads vs ours (rel. max err)", rel_grad_err(g_cl, g_fast), TOL_GRAD)
        fns["ours, channels-last"] = step(mtl_loss, m_cl, cl(noisy), cl(clean))
    res.notes.append(f"ours = body and mask once per batch, heads K times, per-sample loops by {auto} "
                     f"(per_sample_mode auto on {b.device.type})")
    b.time(res, fns)
    model.zero_grad(set_to_none=True)
    return res


def _psnr(pred: Tensor, clean: Tensor) -> float:
    from ..metrics import psnr

    return float(psnr(pred.float(), clean.float())[0])


def case_metatest(b: Bench, size: int) -> CaseResult:
    """(b) meta-test of one size×size image: naive (full network every step) vs ours (and variants)."""
    cfg, model = b.cfg, b.model
    K = cfg.steps
    auto, other = _modes(b.device)
    res = CaseResult(f"metatest-{size}", f"meta-test {size}², K={K}",
                     {"size": size, "steps": K, "lr": META_LR, "check_lr": CHECK_LR, "per_sample": auto},
                     baselines=("naive", "naive, body frozen"))
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
    run = lambda m=model, x=noisy, **kw: (lambda: meta_test(m, x, steps=K, lr=META_LR, **kw))  # noqa: E731
    fns = {"naive": lambda: naive_meta_test(model, noisy, steps=K, lr=META_LR, freeze=False),
           "naive, body frozen": lambda: naive_meta_test(model, noisy, steps=K, lr=META_LR),
           "ours": run(), f"ours, {other}": _in_mode(other, run())}
    res.notes.append("naive = a deep copy per image, torch.optim.SGD on the heads, the full restorer every "
                     "step, backward also through the body (as the original test loop); 'body frozen' "
                     "turns requires_grad off outside the heads, so backward stops at them")

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
    if cfg.compile:
        _add_compiled(b, res, fns, noisy, fast)
    b.time(res, fns)
    return res


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
    """(c) one MAXL step as `bench run` trains it: an auxiliary (Adam) step and a meta step (mask)."""
    from ..config import PretrainConfig
    from ..data import Source
    from ..data.base import ImagePair
    from ..train.context import TrainContext
    from ..train.pretrain import pretrain

    cfg = b.cfg
    B, P = cfg.maxl_batch, cfg.maxl_patch
    res = CaseResult("maxl", f"MAXL step (aux + meta pass), B={B}, {P}²", {"batch": B, "patch": P})
    size = max(2 * P, 128)
    pairs = []
    for i in range(2):
        noisy, clean = sample_pair(size, i, cfg.seed)
        pairs.append(ImagePair(f"img{i}", clean, noisy))
    source = Source(pairs)
    pcfg = PretrainConfig(epochs=1, steps_per_epoch=1, batch=B, patch=P)
    model = copy.deepcopy(b.model)  # pre-training updates it in place
    recipe = methods.get("ours").recipe
    ctx = TrainContext(b.device, np.random.default_rng(cfg.seed), quiet=True)
    res.notes.append("times bench.train.pretrain.pretrain for 1 epoch × 1 step: patch sampling + one "
                     "auxiliary Adam step on θ1 + one meta step (look-ahead, Adam on θ2)")
    b.time(res, {"ours (bench.train.pretrain)": lambda: pretrain(model, recipe, pcfg, source, ctx)})
    return res


def case_eval(b: Bench) -> CaseResult:
    """(d) evaluation throughput: bench.evaluate.evaluate (predict + PSNR/SSIM), images per second."""
    from ..config import MetaTestConfig
    from ..data.base import ImagePair
    from ..evaluate import evaluate

    cfg, model = b.cfg, b.model
    N, S, K = cfg.eval_images, cfg.eval_size, cfg.steps
    res = CaseResult("eval", f"evaluation of {N} images of {S}² (metrics included)",
                     {"images": N, "size": S, "steps": K, "lr": META_LR})
    pairs = [ImagePair(f"img{i}", *reversed(sample_pair(S, i, cfg.seed))) for i in range(N)]
    recipe, mt = methods.get("ours").recipe, MetaTestConfig(steps=K, lr=META_LR)
    b.time(res, {"with meta-test": lambda: evaluate(model, recipe, pairs, mt, True, b.device),
                 "without meta-test": lambda: evaluate(model, recipe, pairs, mt, False, b.device)})
    for v in res.variants.values():
        v["images_per_s"] = N / v["timing"]["median"]
    return res


def check_precisions(precisions: tuple[str, ...], device: torch.device) -> None:
    """Fail early (BenchError) on a precision that does not exist or is not available on the device."""
    from ..adapt import precision_context

    for p in precisions:
        precision_context(device, p)
