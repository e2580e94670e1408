"""The adaptation protocol: what an entry moves (a ``Moves``) and what it steps on (a ``Loss``).

An ``Adaptation`` (``bench.adaptation.registry``) names one of each; ``bench.adaptation.run.adapt_image``
executes any pair the same way: ``moves.start`` gives a ``Moved`` (the parameter dict θ0 and the
prediction as a function of θ), ``loss.bind`` gives the self-supervised loss as a function of θ, and
the one inner loop (``inner.run_steps``) steps on it. The paper's and the baselines' families are
written with this protocol below and registered by name, so presets and studies name them as
strings; a plugin passes its own objects (docs/extending.md).

Capabilities (what a model must offer, weakest first): nothing, restorer, aux-head
(``restorer.head_names`` and a forward returning (clean, rec)), aux-head+mask (also ``mask_net``).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from bench.adaptation.classical import classical_denoise
from bench.adaptation.inner import Params, forward_with, inner_parameters
from bench.adaptation.zsn2n import zero_shot_net, zsn2n_loss
from bench.core.errors import ConfigError
from bench.core.losses import aux_loss, l1

CAPABILITIES = ("nothing", "restorer", "aux-head", "aux-head+mask")
OFFICIAL_FREEZE = ("github.com/agusgun/TTAID, modules/models/real_denoiser.py, RealDenoiserMetaTransfer.validate, "
                   "lines 1051-1054 (validation) and 1180-1183 (testing)")


def first_output(out: Tensor | tuple[Tensor, ...]) -> Tensor:
    """The clean prediction of a forward pass (the auxiliary-head networks return (clean, rec))."""
    return out[0] if isinstance(out, tuple) else out


def entry_mask(entry: Any, model: nn.Module, noisy: Tensor) -> Tensor:
    """The mask ``entry``'s masked loss weights pixels with: the mask network's soft mask, or that
    mask thresholded (``mask_threshold``, the official loop's mask > 0.5)."""
    mask = model.mask_net(noisy)
    t = entry.mask_threshold
    return mask if t is None else (mask > t).to(mask.dtype)


def stronger(a: str, b: str) -> str:
    """The capability that covers both."""
    return max(a, b, key=CAPABILITIES.index)


# ---- what moves ---------------------------------------------------------------------------------

class Moved:
    """One image's adaptation state: the parameters θ0 an entry steps on, and its prediction as a
    function of θ. ``restore`` (the restorer's (clean, rec) output) exists where the restorer's own
    weights move, so the auxiliary losses can step on it."""

    restores = False

    def __init__(self, noisy: Tensor, params: Params) -> None:
        self.noisy, self.params = noisy, params

    def input(self, p: Params) -> Tensor:
        """The image the denoiser sees (the noisy image, or an adapted version of it)."""
        return self.noisy

    def denoise(self, p: Params, x: Tensor) -> Tensor:
        """The denoiser with parameters ``p`` on any input ``x`` (ZS-N2N's and Noise2Self's losses)."""
        raise NotImplementedError

    def restore(self, p: Params) -> Tensor | tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} does not move the restorer's own weights")

    def predict(self, p: Params) -> Tensor:
        return self.denoise(p, self.input(p))


class RestorerMoved(Moved):
    """Some of the restorer's own weights move; ``features``: the body's output when the body is frozen."""

    restores = True

    def __init__(self, restorer: nn.Module, noisy: Tensor, params: Params, features: Tensor | None) -> None:
        super().__init__(noisy, params)
        self.restorer, self.features = restorer, features

    def denoise(self, p: Params, x: Tensor) -> Tensor:
        return first_output(functional_call(self.restorer, p, (x,)))

    def restore(self, p: Params) -> Tensor | tuple[Tensor, Tensor]:
        return forward_with(self.restorer, p, self.noisy, self.features)

    def predict(self, p: Params) -> Tensor:
        return first_output(self.restore(p))


class Moves:
    """Which parameters an entry creates or moves, and how its prediction is formed.

    ``learns``: ``start(model, noisy, seed)`` returns a ``Moved`` with at least one parameter; else
    ``predict(entry, model, noisy)`` returns (prediction, extra) with nothing learned (NLM, none).
    ``requires``: the capability a model needs (``CAPABILITIES``).
    """

    name = ""
    requires = "nothing"
    learns = True
    within: tuple[str, ...] = ()  # the moves whose parameters include these (an oracle over them bounds this)
    restores = False  # its Moved has ``restore`` (the auxiliary losses need it)
    description = ""

    def start(self, model: nn.Module, noisy: Tensor, seed: int) -> Moved:
        raise NotImplementedError

    def predict(self, entry: Any, model: nn.Module, noisy: Tensor) -> tuple[Tensor, dict[str, Any]]:
        raise NotImplementedError

    def probe_model(self) -> nn.Module:
        """A tiny network registration checks ``start`` on (it must move at least one parameter):
        the paper's architecture at width 4, which offers every capability. Override it when the
        moves only make sense on your own network."""
        import methods

        return methods.create("ours", base=4, scale=2, mask_base=4)

    def __repr__(self) -> str:
        return f"<moves {self.name}>"


def restorer_of(model: nn.Module) -> nn.Module:
    return getattr(model, "restorer", model)


def detached(named: dict[str, nn.Parameter]) -> Params:
    return {k: p.detach() for k, p in named.items()}


def body_frozen(restorer: nn.Module, params: Params) -> bool:
    """Whether the body's output can be computed once: the restorer has the auxiliary-head interface
    (its forward takes ``features``) and no moved parameter lies in its body."""
    return hasattr(restorer, "head_names") and not any(n.split(".", 1)[0] == "body" for n in params)


class RestorerWeights(Moves):
    """Moves some of the restorer's own weights: ``select(restorer)`` names them. The body's features
    are computed once per image when the body is frozen (``body_frozen``)."""

    requires, restores = "restorer", True

    def select(self, restorer: nn.Module) -> dict[str, nn.Parameter]:
        raise NotImplementedError

    def start(self, model, noisy, seed):
        restorer = restorer_of(model)
        params = detached(self.select(restorer))
        return RestorerMoved(restorer, noisy, params, restorer.body(noisy) if body_frozen(restorer, params) else None)


class Heads(RestorerWeights):
    name, requires, within = "heads", "aux-head", ("all",)
    description = "the two heads (restorer.head_names); body and mask frozen, body features computed once"

    def select(self, restorer):
        return inner_parameters(restorer, "heads")


class OfficialHeads(RestorerWeights):
    """The official TTAID test loop's parameters: it sets ``requires_grad = False`` on every restorer
    parameter, in parameter order, up to and including the first whose name contains ``head`` (the
    primary head's first convolution), so that one stays frozen with the body."""

    name, requires, within = "official-heads", "aux-head", ("heads", "all")
    description = ("the parameters after the first 'head' parameter in parameter order (the primary head's "
                   f"first conv frozen with the body; {OFFICIAL_FREEZE})")

    def select(self, restorer):
        named = list(restorer.named_parameters())
        first = next((i for i, (n, _) in enumerate(named) if "head" in n), len(named))
        return dict(named[first + 1:])


class AllWeights(RestorerWeights):
    name = "all"
    description = "every restorer weight (the body runs at every step)"

    def select(self, restorer):
        return dict(restorer.named_parameters())


class OffsetMoved(Moved):
    def __init__(self, restorer: nn.Module, noisy: Tensor) -> None:
        super().__init__(noisy, {"offset": torch.zeros_like(noisy)})
        self.restorer = restorer

    def input(self, p: Params) -> Tensor:
        return self.noisy + torch.tanh(p["offset"])

    def denoise(self, p: Params, x: Tensor) -> Tensor:
        return first_output(self.restorer(x))


class Offset(Moves):
    name, requires = "offset", "restorer"
    description = "a per-pixel input offset y + tanh(φ), φ = 0 at start; the network frozen (LAN)"

    def start(self, model, noisy, seed):
        return OffsetMoved(restorer_of(model), noisy)


class FreshMoved(Moved):
    def __init__(self, net: nn.Module, noisy: Tensor) -> None:
        super().__init__(noisy, detached(dict(net.named_parameters())))
        self.net = net

    def denoise(self, p: Params, x: Tensor) -> Tensor:
        return x - functional_call(self.net, p, (x,))


class Fresh(Moves):
    name, requires = "fresh", "nothing"
    description = "a new zero-shot network per image (ZS-N2N's), initialised from the seed"

    def start(self, model, noisy, seed):
        return FreshMoved(zero_shot_net(seed, noisy.device, noisy.dtype), noisy)


class Plain(Moves):
    name, requires, learns = "none", "restorer", False
    description = "nothing: the trained network's plain forward pass"

    def predict(self, entry, model, noisy):
        return model(noisy), {}


def dihedral(x: Tensor, k: int, flip: bool) -> Tensor:
    """One of the 8 flips/rotations of an image batch (…, H, W): a horizontal flip (when ``flip``),
    then a rotation by k·90° (k = 0 … 3); odd k swaps H and W."""
    return torch.rot90(x.flip(-1) if flip else x, k, dims=(-2, -1))


def dihedral_inverse(x: Tensor, k: int, flip: bool) -> Tensor:
    """The inverse of ``dihedral(·, k, flip)``: the image back in its own orientation and shape."""
    x = torch.rot90(x, -k, dims=(-2, -1))
    return x.flip(-1) if flip else x


DIHEDRAL = tuple((k, flip) for flip in (False, True) for k in range(4))
"""The 8 transforms of the dihedral group D4 as (rotation k, horizontal flip)."""


class SelfEnsemble(Moves):
    name, requires, learns = "ensemble8", "restorer", False
    description = ("×8 self-ensemble: the trained network on the 8 flips/rotations of the image, each output "
                   "mapped back, averaged; nothing learned")

    def predict(self, entry, model, noisy):
        total = None
        for k, flip in DIHEDRAL:
            out = dihedral_inverse(first_output(model(dihedral(noisy, k, flip))), k, flip)
            total = out if total is None else total + out
        return total / len(DIHEDRAL), {"transforms": len(DIHEDRAL)}


class Classical(Moves):
    name, requires, learns = "classical", "nothing", False
    description = "no network: a classical denoiser (non-local means or BM3D) with the entry's options"

    def predict(self, entry, model, noisy):
        image = noisy[0].permute(1, 2, 0).double().cpu().numpy()
        out, sigma = classical_denoise(image, **entry.options)
        pred = torch.from_numpy(out).permute(2, 0, 1)[None].to(device=noisy.device, dtype=noisy.dtype)
        return pred, {"sigma": sigma, **entry.options}


# ---- what it steps on ---------------------------------------------------------------------------

LossFn = Callable[[Params], Tensor]


class Loss:
    """The loss an entry steps on, as a function of the moved parameters.

    ``bind(entry, model, moved, clean)`` returns that function for one image; what never changes
    during the steps (a mask) is computed there, once. ``needs_restore``: it reads the restorer's
    (clean, rec) output, so only moves that move the restorer's own weights can pair with it.
    ``needs_clean``: it reads the clean image (evaluation only).
    """

    name = ""
    requires = "nothing"
    needs_restore = False
    needs_clean = False
    description = ""

    def bind(self, entry: Any, model: nn.Module, moved: Moved, clean: Tensor | None) -> LossFn:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<loss {self.name}>"


class AuxMask(Loss):
    name, requires, needs_restore = "aux-mask", "aux-head+mask", True
    description = "Alg. 3's L_MaskRec on the auxiliary head's reconstruction, mask from g_θ2"

    def bind(self, entry, model, moved, clean):
        mask = entry_mask(entry, model, moved.noisy)
        return lambda p: aux_loss(moved.restore(p)[1], moved.noisy, mask)


class AuxRec(Loss):
    name, requires, needs_restore = "aux-rec", "aux-head", True
    description = "the unmasked L_rec on the auxiliary head's reconstruction"

    def bind(self, entry, model, moved, clean):
        return lambda p: aux_loss(moved.restore(p)[1], moved.noisy, None)


class ZsN2N(Loss):
    name = "zs-n2n"
    description = "Zero-Shot Noise2Noise's residual + consistency loss on the denoiser"

    def bind(self, entry, model, moved, clean):
        return lambda p: zsn2n_loss(lambda x: moved.denoise(p, x), moved.input(p))


class Oracle(Loss):
    name, needs_clean = "oracle", True
    description = "L_pri: L1 of the prediction against the clean image (evaluation only)"

    def bind(self, entry, model, moved, clean):
        if clean is None:
            raise ValueError(f"adaptation {entry.name!r} steps on the clean image: pass clean")
        return lambda p: l1(moved.predict(p), clean)


class NoLoss(Loss):
    name = "none"
    description = "nothing to step on (entries that do not learn)"

    def bind(self, entry, model, moved, clean):
        raise ValueError(f"adaptation {entry.name!r} has no loss to step on")


MOVES: dict[str, Moves] = {m.name: m for m in (Plain(), Heads(), AllWeights(), OfficialHeads(), Offset(), Fresh(),
                                               Classical(), SelfEnsemble())}
LOSSES: dict[str, Loss] = {x.name: x for x in (NoLoss(), AuxMask(), AuxRec(), ZsN2N(), Oracle())}


def get_moves(name: str) -> Moves:
    try:
        return MOVES[name]
    except KeyError:
        raise ConfigError(f"moves {name!r}: expected one of {', '.join(MOVES)} or a Moves object") from None


def get_loss(name: str) -> Loss:
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"loss {name!r}: expected one of {', '.join(LOSSES)} or a Loss object") from None


__all__ = ["CAPABILITIES", "OFFICIAL_FREEZE", "Moved", "RestorerMoved", "Moves", "RestorerWeights", "Loss", "LossFn",
           "MOVES", "LOSSES", "get_moves", "get_loss", "first_output", "entry_mask", "stronger", "restorer_of",
           "detached", "body_frozen", "SelfEnsemble", "DIHEDRAL", "dihedral", "dihedral_inverse"]
