"""The method registry: a method is data, an architecture plus a training recipe.

The paper's and the baselines' entries are listed explicitly below (no import-time scanning).
Ablations are entries that differ from ``ours`` in one recipe field, never ``if`` branches inside the
trainers. Other networks come from installed packages (entry points of ``GROUP``) or from a
``pkg.module:factory`` reference; both are checked with one probe forward (``check_contract``) when
first looked up. A name that cannot be resolved is a ``MethodError`` (a KeyError) with one line.

``methods`` imports nothing of ``bench`` (docs/architecture.md §Layers), so it reads its entry
points itself with the standard library rather than through ``bench.core.plugins``.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from typing import Any, Callable, Literal

import torch
from torch import nn

from .blocks import SingleTaskModel, count_params
from .chi import build_chi
from .mirnet import MIRNet
from .ours import build_ours
from .ridnet import RIDNet

Pretrain = Literal["none", "joint", "maxl"]
AuxLoss = Literal["mrl", "rl"]  # masked reconstruction loss (L_MaskRec) | plain L_rec


@dataclass(frozen=True)
class Recipe:
    """How a method is trained and evaluated (docs/design.md §1, §6).

    pretrain      none (random init) | joint (Adam on L_pri + aux loss) | maxl (Alg. 1)
    pretrain_aux  auxiliary loss during pre-training: mrl (L_MaskRec) | rl (L_rec, no mask)
    grad_loss     λ_G·L_G in MAXL's mask step
    finetune      mtl (Alg. 2) | supervised (L1 on the clean output)
    inner_scope   parameters updated in the inner loop and at meta-test: heads | all
    aux_loss      auxiliary loss in MTL's inner loop and at meta-test: mrl | rl
    metatest      adapt each test image (Alg. 3) before predicting
    """

    pretrain: Pretrain = "maxl"
    pretrain_aux: AuxLoss = "mrl"
    grad_loss: bool = True
    finetune: Literal["mtl", "supervised"] = "mtl"
    inner_scope: Literal["heads", "all"] = "heads"
    aux_loss: AuxLoss = "mrl"
    metatest: bool = True

    @property
    def uses_mask(self) -> bool:
        """Whether the mask network g_θ2 takes part in any stage (else it is neither trained nor counted)."""
        return (self.pretrain == "maxl" and self.pretrain_aux == "mrl") or (
            self.finetune == "mtl" and self.aux_loss == "mrl")


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    build: Callable[..., nn.Module]
    recipe: Recipe = field(default_factory=Recipe)
    arch: str = "ours"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    # The memory layout its weights (and so its convolutions) use, in training, evaluation and any
    # adaptation: channels_last where it is faster on CPU (the supervised baselines: RIDNet's and
    # MIRNet's training steps and MIRNet's evaluation; docs/results-log.md has the timings). Ours
    # stays contiguous: its meta-test must equal `bench.adaptation`'s and the Denoiser's bit for bit,
    # and its MTL inner loop chooses its own layout (`bench.adaptation.inner.memory_layout`).
    layout: Literal["contiguous", "channels_last"] = "contiguous"
    source: str = "built-in"  # where the entry comes from: built-in, "distribution version", or a reference

    def create(self, **overrides: Any) -> nn.Module:
        model = self.build(**{**self.arch_kwargs, **overrides})
        return model.to(memory_format=torch.channels_last) if self.layout == "channels_last" else model

    def with_recipe(self, **changes: Any) -> "MethodSpec":
        return replace(self, recipe=replace(self.recipe, **changes))

    def param_counts(self, model: nn.Module | None = None) -> dict[str, int]:
        """total, restorer, mask and adapted-at-test-time parameter counts."""
        model = model if model is not None else self.create()
        restorer = getattr(model, "restorer", model)
        mask = getattr(model, "mask_net", None) if self.recipe.uses_mask else None
        counts = {"restorer": count_params(restorer), "mask": count_params(mask) if mask is not None else 0}
        counts["total"] = counts["restorer"] + counts["mask"]
        if self.recipe.metatest and hasattr(restorer, "head_names"):
            adapted = restorer if self.recipe.inner_scope == "all" else [getattr(restorer, n) for n in restorer.head_names]
            counts["adapted"] = count_params(adapted) if isinstance(adapted, nn.Module) else sum(map(count_params, adapted))
        else:
            counts["adapted"] = 0
        return counts

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "arch": self.arch, "description": self.description,
                "recipe": asdict(self.recipe), "layout": self.layout, "source": self.source,
                "params": self.param_counts()}


_OURS = MethodSpec("ours", "MAXL pre-training + MTL (heads, L_MaskRec) + meta-test (the paper's method)", build_ours)

_METHODS: list[MethodSpec] = [
    _OURS,
    replace(_OURS, name="ours-rl", description="ours with the unmasked L_rec in MTL and meta-test (Table 3 RL)")
    .with_recipe(aux_loss="rl"),
    replace(_OURS, name="ours-ri", description="random init (no MAXL) + MTL (Table 3 RI + MTL, MRL)")
    .with_recipe(pretrain="none"),
    replace(_OURS, name="ours-ri-rl", description="random init + MTL with L_rec (Table 3 RI + MTL, RL)")
    .with_recipe(pretrain="none", aux_loss="rl"),
    replace(_OURS, name="ours-body-head", description="body and heads updated in the inner loop (Table 3)")
    .with_recipe(inner_scope="all"),
    replace(_OURS, name="ours-ri-body-head", description="random init, body + heads in the inner loop (Table 3)")
    .with_recipe(pretrain="none", inner_scope="all"),
    replace(_OURS, name="ours-joint", description="joint training on L_pri + L_rec, no MAXL (Table 1 row 1)")
    .with_recipe(pretrain="joint", pretrain_aux="rl", grad_loss=False),
    MethodSpec("chi", "Chi et al.'s parallel auxiliary head, joint training with L_rec (Table 1 row 2)", build_chi,
               Recipe(pretrain="joint", pretrain_aux="rl", grad_loss=False, aux_loss="rl"), arch="chi"),
]


def build_ridnet(**kwargs: Any) -> SingleTaskModel:
    return SingleTaskModel(RIDNet(**kwargs))


def build_mirnet(**kwargs: Any) -> SingleTaskModel:
    return SingleTaskModel(MIRNet(**kwargs))


_SUPERVISED = Recipe(pretrain="none", finetune="supervised", metatest=False, aux_loss="rl", grad_loss=False)
_METHODS += [
    MethodSpec("ridnet", "RIDNet (Anwar & Barnes 2019), supervised L1 on the MTL data; no mean shift "
               "(1,499,347 params; +24 with mean_shift=True)", build_ridnet, _SUPERVISED, arch="ridnet",
               layout="channels_last"),
    MethodSpec("mirnet", "MIRNet (Zamir et al. 2020), supervised L1 on the MTL data; official weight sharing "
               "(31,787,419 params)", build_mirnet, _SUPERVISED, arch="mirnet",
               layout="channels_last"),
]

SUPERVISED = _SUPERVISED  # the recipe a bare network factory is trained with

REGISTRY: dict[str, MethodSpec] = {m.name: m for m in _METHODS}  # the built-in entries
GROUP = "ttaid_bench.methods"
PROBE_SHAPE = (1, 3, 32, 32)
LOADED: dict[str, MethodSpec] = {}  # plugin and reference entries checked so far


class MethodError(KeyError):
    """A method that cannot be used: an unknown name, or a plugin that is broken. One line."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Declared:
    name: str
    value: str
    dist: str
    version: str

    @property
    def source(self) -> str:
        return f"{self.dist} {self.version}".strip() or "unknown distribution"

    def where(self) -> str:
        return f"method {self.name!r} (plugin {self.source}, {self.value})"


@functools.cache
def declared() -> tuple[Declared, ...]:
    """The ``GROUP`` entry points installed, without importing them (one per distinct declaration)."""
    seen: dict[tuple[str, str, str], Declared] = {}
    for ep in metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        name = (dist.metadata["Name"] if dist is not None else "") or ""
        seen.setdefault((ep.name, ep.value, name), Declared(ep.name, ep.value, name, dist.version if dist else ""))
    return tuple(sorted(seen.values(), key=lambda d: (d.name, d.dist)))


def refresh() -> None:
    """Forget discovered and checked plugins (after installing one into the running process)."""
    declared.cache_clear()
    LOADED.clear()


def plugin_names() -> list[str]:
    return sorted({d.name for d in declared()})


def names() -> list[str]:
    """The built-in methods, then the installed plugins' (listed without importing them)."""
    return list(REGISTRY) + [n for n in plugin_names() if n not in REGISTRY]


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def get(name: str) -> MethodSpec:
    """A method by name: built-in, an installed plugin's, or ``pkg.module:factory``. MethodError
    (one line) for an unknown name, a name defined twice, or a plugin that fails to import, is not
    a method, or breaks the model contract on its probe forward."""
    found = [d for d in declared() if d.name == name]
    if name in REGISTRY:
        if found:
            raise MethodError(f"{found[0].where()}: the name {name!r} is taken by a built-in method; rename the plugin")
        return REGISTRY[name]
    if name in LOADED:
        return LOADED[name]
    if len(found) > 1:
        raise MethodError(f"method {name!r}: defined twice, by plugins " + " and ".join(d.source for d in found)
                          + "; uninstall one")
    if found:
        d = found[0]
        obj = load(d.value, d.where())
        LOADED[name] = check_contract(as_spec(obj, name, d.source, d.where()), d.where())
    elif ":" in name:
        where = f"method {name!r}"
        LOADED[name] = check_contract(as_spec(load(name, where), name, name, where), where)
    else:
        raise MethodError(f"unknown method {name!r}; known methods: {', '.join(names())} "
                          "(or a factory as pkg.module:function)")
    return LOADED[name]


def load(ref: str, where: str) -> Any:
    """The object ``pkg.module:attr`` names; MethodError when it does not import."""
    module, _, attr = ref.partition(":")
    if not module or not attr:
        raise MethodError(f"{where}: expected a reference pkg.module:attr")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:  # noqa: BLE001 - third-party code: one line, not a traceback
        raise MethodError(f"{where}: fails to import ({first_line(e)})") from None
    return obj


def as_spec(obj: Any, name: str, source: str, where: str) -> MethodSpec:
    """A plugin's object as a method: a ``MethodSpec`` named like its entry point, or a callable that
    builds an ``nn.Module`` (trained with the supervised recipe, ``SUPERVISED``)."""
    if isinstance(obj, MethodSpec):
        if obj.name != name:
            raise MethodError(f"{where}: its MethodSpec is named {obj.name!r}; use the entry point's name {name!r}")
        return replace(obj, source=source)
    if not callable(obj):
        raise MethodError(f"{where}: expected a MethodSpec or a callable that builds an nn.Module, "
                          f"got {type(obj).__name__}")
    doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
    return MethodSpec(name, doc[0] if doc else f"{name} (supervised)", obj, SUPERVISED, arch=name, source=source)


def shown(out: Any) -> str:
    """What a forward pass returned, in a few words."""
    if isinstance(out, torch.Tensor):
        return f"a {out.dtype} tensor of shape {tuple(out.shape)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of " + ", ".join(shown(o) for o in out)
    return f"a {type(out).__name__}"


def check_contract(spec: MethodSpec, where: str) -> MethodSpec:
    """One probe forward on a ``PROBE_SHAPE`` image: the model returns a float tensor of the input's
    shape; with ``restorer.head_names``, the restorer returns (clean, rec) of that shape and has a
    ``body``; a recipe that uses the mask needs ``mask_net`` returning (1, 1, H, W); a meta-learned
    recipe needs the auxiliary head. MethodError naming what was expected and what came back."""
    try:
        model = spec.create()
    except Exception as e:  # noqa: BLE001 - third-party code: one line
        raise MethodError(f"{where}: fails to build ({first_line(e)})") from None
    if not isinstance(model, nn.Module):
        raise MethodError(f"{where}: its factory should return an nn.Module, returned {shown(model)}")
    x = torch.rand(PROBE_SHAPE, generator=torch.Generator().manual_seed(0))
    want = f"a float tensor of shape {PROBE_SHAPE}"

    def call(fn: Callable[[], Any], what: str) -> Any:
        try:
            with torch.no_grad():
                return fn()
        except Exception as e:  # noqa: BLE001 - third-party code: one line
            raise MethodError(f"{where}: {what} on a {PROBE_SHAPE} image fails ({first_line(e)})") from None

    out = call(lambda: model(x), "the forward pass")
    if not (isinstance(out, torch.Tensor) and out.shape == x.shape and out.is_floating_point()):
        raise MethodError(f"{where}: the forward pass of a {PROBE_SHAPE} image should return {want}, "
                          f"returned {shown(out)}")
    restorer = getattr(model, "restorer", model)
    recipe = spec.recipe
    meta = recipe.finetune == "mtl" or recipe.metatest or recipe.pretrain == "maxl"
    if hasattr(restorer, "head_names") or meta:
        missing = [a for a in ("head_names", "body") if not hasattr(restorer, a)]
        missing += [h for h in getattr(restorer, "head_names", ()) if not isinstance(getattr(restorer, h, None), nn.Module)]
        if missing:
            raise MethodError(f"{where}: a meta-learned method's restorer needs head_names, body and its heads; "
                              f"missing {', '.join(missing)}")
        pair = call(lambda: restorer(x), "the restorer")
        if not (isinstance(pair, tuple) and len(pair) == 2 and all(
                isinstance(t, torch.Tensor) and t.shape == x.shape for t in pair)):
            raise MethodError(f"{where}: the restorer of a {PROBE_SHAPE} image should return (clean, rec), two "
                              f"tensors of shape {PROBE_SHAPE}; returned {shown(pair)}")
        features = call(lambda: restorer.body(x), "the body")
        call(lambda: restorer(x, features=features), "the restorer with precomputed features")
    if recipe.uses_mask or getattr(model, "mask_net", None) is not None:
        if not isinstance(getattr(model, "mask_net", None), nn.Module):
            raise MethodError(f"{where}: its recipe uses the mask (L_MaskRec), but the model has no mask_net")
        mask = call(lambda: model.mask_net(x), "the mask network")
        shape = (1, 1, *PROBE_SHAPE[2:])
        if not (isinstance(mask, torch.Tensor) and tuple(mask.shape) == shape):
            raise MethodError(f"{where}: the mask network of a {PROBE_SHAPE} image should return a tensor of "
                              f"shape {shape}, returned {shown(mask)}")
    return spec


def create(name: str, **overrides: Any) -> nn.Module:
    """Build the network of a registered method; ``overrides`` go to its architecture builder."""
    return get(name).create(**overrides)
