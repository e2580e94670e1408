"""What every `bench perf` case shares: the configuration, a case's result and checks, the network
and the test images, and the helpers that compare gradients and outputs.

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
from bench.perf.measure import interleaved, speedup, tensor_peak_mib
from bench.perf.roofline import add_rates, count_flops

MTL_HP = dict(inner_lr=5e-5, lambda_in=10.0, lambda_out=10.0)
META_LR = 1e-5
CHECK_INNER_LR = 5e-3  # MTL check: 100× the paper's α
CHECK_LR = 1e-2  # meta-test check: 1000× the paper's α, the adaptation moves the output by ≫ TOL_IMAGE
OFFICIAL_LR = 1e-5  # the official test loop's Adam step (timing)
OFFICIAL_CHECK_LR = 1e-3  # its check: 100× that, so that K−1 Adam steps move the output ≫ TOL_IMAGE

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
    roofline: bool = True  # FLOPs per variant (one extra run each) and the machine's measured peaks
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
        if cfg.roofline:
            self.log("  counting FLOPs")
            add_rates(result.variants, {name: count_flops(fn) for name, fn in fns.items()})


# --------------------------------------------------------------------------- inputs


def build_model(width: tuple[int, int] = (32, 16), weights: str | None = None) -> nn.Module:
    """The paper's network (or a wider one); ``weights``: a state_dict file or a pipeline checkpoint."""
    base, scale = width
    model = methods.create("ours", base=base, scale=scale, mask_base=32)
    if weights:
        from bench.core.errors import BenchError
        from bench.runtime.checkpoints import first_line, read_checkpoint

        state = read_checkpoint(weights, hint="expected a state_dict or a `bench run` checkpoint of this network")
        try:
            model.load_state_dict(state.get("model", state) if isinstance(state, dict) else state)
        except (RuntimeError, KeyError, AttributeError, TypeError, ValueError) as e:
            raise BenchError(f"--weights {weights}: not a state_dict of this network ({first_line(e)})") from None
    return model


@functools.lru_cache(maxsize=16)
def sample_pair(size: int, index: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A size×size crop of a bundled photograph (mirrored where it is smaller) with nam-like camera noise."""
    import skimage.data

    from bench.data.noise import noise_model

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


def grads_after(module: nn.Module, fill: Callable[[], Any]) -> dict[str, Tensor]:
    """``module``'s parameter gradients after ``fill()`` (anything that back-propagates into them),
    starting from none."""
    module.zero_grad(set_to_none=True)
    fill()
    return {k: p.grad.detach().clone() for k, p in module.named_parameters() if p.grad is not None}


def grads_of(model: nn.Module, loss_fn: Callable[[], Tensor]) -> dict[str, Tensor]:
    return grads_after(model, lambda: loss_fn().backward())


def channels_last(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).to(memory_format=torch.channels_last)


def cl(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)
