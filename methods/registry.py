"""The method registry: a method is data, an architecture plus a training recipe.

Entries are listed explicitly below (no import-time scanning), so a missing name is a plain
KeyError that lists what exists. Ablations are entries that differ from ``ours`` in one recipe
field, never ``if`` branches inside the trainers.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
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
                "recipe": asdict(self.recipe), "layout": self.layout, "params": self.param_counts()}


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

REGISTRY: dict[str, MethodSpec] = {m.name: m for m in _METHODS}


def names() -> list[str]:
    return list(REGISTRY)


def get(name: str) -> MethodSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(REGISTRY)}") from None


def create(name: str, **overrides: Any) -> nn.Module:
    """Build the network of a registered method; ``overrides`` go to its architecture builder."""
    return get(name).create(**overrides)
