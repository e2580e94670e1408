"""The adaptation registry: a test-time adaptation is data, like a method in ``methods/registry.py``.

An entry says which parameters move, on which self-supervised loss, with which optimizer, for how
many steps at which lr, and which prediction is reported; ``bench.adaptation.run.adapt_image`` is the one
code path that executes every entry. The built-in entries are listed explicitly below; published
hyper-parameters are cited in the entry, and a preset changes them through ``entry.with_(...)``.
Installed packages add entries through the ``ttaid_bench.adaptations`` entry points
(``bench.core.plugins``; docs/extending.md).

moves          what the entry moves (``bench.adaptation.families``): a registered name — none (plain
               forward) | heads (the auxiliary-head networks' two heads; body and mask frozen) |
               official-heads (the official test loop's: the heads but the primary head's first conv) |
               all (every restorer weight) | offset (a per-pixel input offset through tanh, network
               frozen) | fresh (a new zero-shot network per image) | ensemble8 (nothing: the 8
               flips/rotations averaged) | classical (no learning: NLM or BM3D,
               ``bench.adaptation.classical``, set by the entry's ``options``) — or a ``Moves`` object
loss           what it steps on: aux-mask (Alg. 3's L_MaskRec on the auxiliary head) | aux-rec (the
               unmasked L_rec, for methods meta-trained with it) | zs-n2n (Zero-Shot Noise2Noise) |
               oracle (L_pri = L1 against the clean image: evaluation only) | none — or a ``Loss`` object
predict_after  last (after K updates) | before-last (after K−1 updates, as the official TTAID test loop)
mask_threshold None = the soft mask (Alg. 3 as printed); 0.5 = mask > 0.5 (the official code)
scope          image (adapt per test image) | domain (fit once per scenario on its validation pairs, apply
               unchanged to test: ``bench.adaptation.domain``)

Why one module of ~460 lines: the entry record, its validation and the built-in entries with their
citations are one table read together; most of the length is entries as data.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from bench.adaptation import families
from bench.adaptation.classical import ALGORITHMS, BM3D_DEFAULTS, BM3D_PROFILES, NLM_DEFAULTS
from bench.core import plugins
from bench.core.errors import ConfigError

MOVES = tuple(families.MOVES)
LOSSES = tuple(families.LOSSES)
OPTIMIZERS = ("sgd", "adam")
PREDICT_AFTER = ("last", "before-last")
SCOPES = ("image", "domain")
OVERRIDABLE = ("steps", "lr", "optimizer", "mask_threshold", "predict_after", "halve_lr_at")
FIXED_OPTIONS = ("algorithm",)  # options of an entry that learns nothing that with_ may not change
GROUP = plugins.GROUPS["adaptations"]

PAPER = "Gunawan, Nugroho & Park, Test-time Adaptation for Real Image Denoising via Meta-transfer Learning"
TTAID = "github.com/agusgun/TTAID"
LAN = "Kim, Kim & Baik, LAN: Learning to Adapt Noise for Image Denoising, CVPR 2024; github.com/chjinny/LAN"
ZSN2N = ("Mansour & Heckel, Zero-Shot Noise2Noise: Efficient Image Denoising without any Data, CVPR 2023; "
         "colab.research.google.com/drive/1i82nyizTdszyHkaHBuKPbWnTzao8HF9b")


@dataclass(frozen=True)
class Adaptation:
    """One test-time adaptation, as data (see the module docstring for the field values).

    ``moves`` and ``loss`` are names after construction; given a ``families.Moves`` / ``families.Loss``
    object, the entry keeps its name there and the object in ``moves_impl`` / ``loss_impl``, which
    ``mover`` / ``objective`` return (a name resolves through ``families.MOVES`` / ``LOSSES``).
    """

    name: str
    moves: Any  # str | families.Moves
    loss: Any  # str | families.Loss
    description: str
    citation: str
    optimizer: str | None = None  # sgd | adam; None for entries that do not learn
    steps: int = 0
    lr: float = 0.0
    mask_threshold: float | None = None
    predict_after: str = "last"
    halve_lr_at: int | None = None  # StepLR(step_size=n, gamma=0.5): updates after the n-th use lr/2, lr/4 ...
    evaluation_only: bool = False
    scope: str = "image"  # image: adapt to each image; domain: fit once per scenario on validation (domain.py)
    options: dict[str, Any] = field(default_factory=dict)  # family-specific constants (NLM's)
    source: str = plugins.BUILT_IN  # where the entry comes from: built-in, or "distribution version"
    moves_impl: Any = field(default=None, repr=False, compare=False)
    loss_impl: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for attr, kind in (("moves", families.Moves), ("loss", families.Loss)):
            value = getattr(self, attr)
            if isinstance(value, kind):
                object.__setattr__(self, attr, value.name)
                object.__setattr__(self, f"{attr}_impl", value)

    @property
    def mover(self) -> families.Moves:
        """The object that says what this entry moves and how it predicts."""
        return self.moves_impl if self.moves_impl is not None else families.get_moves(self.moves)

    @property
    def objective(self) -> families.Loss:
        """The self-supervised loss this entry steps on."""
        return self.loss_impl if self.loss_impl is not None else families.get_loss(self.loss)

    @property
    def learns(self) -> bool:
        return self.mover.learns

    @property
    def takes_steps(self) -> bool:
        """Whether the entry changes anything at test time (it learns, with K > 0)."""
        return self.learns and self.steps > 0

    @property
    def requires(self) -> str:
        """What a model needs for this entry: aux-head+mask | aux-head | restorer | nothing."""
        return families.stronger(self.mover.requires, self.objective.requires)

    @property
    def updates_behind_prediction(self) -> int:
        """How many updates the reported prediction has seen (K, or K−1 for before-last)."""
        if not self.learns:
            return 0
        return max(self.steps - 1, 0) if self.predict_after == "before-last" else self.steps

    @property
    def option_keys(self) -> tuple[str, ...]:
        """The ``options`` an entry that learns nothing lets ``with_`` and ``select:`` change (all but
        ``FIXED_OPTIONS``); none for a learned entry."""
        return () if self.learns else tuple(k for k in self.options if k not in FIXED_OPTIONS)

    def with_(self, **changes: Any) -> "Adaptation":
        """A copy with ``steps``/``lr``/``optimizer``/``mask_threshold``/``predict_after``/``halve_lr_at``
        changed (a preset's budget) or, for an entry that learns nothing (NLM, BM3D), with keys of its
        ``options`` changed (``with_(sigma_scale=1.5)``); anything else, or a value out of range, is a
        ConfigError."""
        if not self.learns:
            return self._with_options(changes)
        unknown = sorted(set(changes) - set(OVERRIDABLE))
        if unknown:
            raise ConfigError(f"adaptation {self.name!r}: cannot override {', '.join(unknown)}; "
                              f"overridable: {', '.join(OVERRIDABLE)}")
        out = replace(self, **changes)
        out.validate()
        return out

    def _with_options(self, changes: dict[str, Any]) -> "Adaptation":
        if not changes:
            return self
        allowed = self.option_keys
        unknown = sorted(set(changes) - set(allowed))
        if unknown:
            what = f"overridable: {', '.join(allowed)}" if allowed else "it has no options to override"
            raise ConfigError(f"adaptation {self.name!r} ({self.moves}) has no steps, lr or optimizer; cannot "
                              f"override {', '.join(unknown)}; {what}")
        for key, value in changes.items():
            old = self.options[key]
            if isinstance(old, (bool, str)):
                ok, kind = type(value) is type(old), "true or false" if isinstance(old, bool) else "a string"
            elif isinstance(old, int):
                ok, kind = isinstance(value, int) and not isinstance(value, bool), "an integer > 0"
            else:
                ok, kind = isinstance(value, (int, float)) and not isinstance(value, bool), "a finite number > 0"
            if not ok:
                raise ConfigError(f"adaptation {self.name!r}: {key} {value!r}: expected {kind}")
        out = replace(self, options={**self.options, **changes})
        out.validate()
        return out

    def validate(self) -> None:
        where = f"adaptation {self.name!r}"
        try:
            mover, objective = self.mover, self.objective
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        for impl, table, what in ((self.moves_impl, families.MOVES, "moves"), (self.loss_impl, families.LOSSES, "loss")):
            if impl is not None and table.get(impl.name, impl) is not impl:
                raise ConfigError(f"{where}: {what} {impl.name!r} is the name of a built-in {what}; rename yours")
        if not mover.learns:
            if objective.name != "none":
                raise ConfigError(f"{where}: moves no parameter (moves {self.moves!r} learns nothing), so loss "
                                  f"{self.loss!r} would never be stepped on")
            self._validate_options(where)
            return
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"{where}: optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise ConfigError(f"{where}: steps {self.steps!r}: expected an integer >= 0")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr < 0:
            raise ConfigError(f"{where}: lr {self.lr!r}: expected a finite number >= 0")
        if self.scope not in SCOPES:
            raise ConfigError(f"{where}: scope {self.scope!r}: expected one of {', '.join(SCOPES)}")
        if self.scope == "domain" and not mover.restores:
            raise ConfigError(f"{where}: scope domain fits the restorer's own weights; moves {self.moves!r} does not move them")
        if self.predict_after not in PREDICT_AFTER:
            raise ConfigError(f"{where}: predict_after {self.predict_after!r}: expected one of {', '.join(PREDICT_AFTER)}")
        t = self.mask_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1):
            raise ConfigError(f"{where}: mask_threshold {t!r}: expected none (soft mask) or a number in (0, 1)")
        h = self.halve_lr_at
        if h is not None and (isinstance(h, bool) or not isinstance(h, int) or h < 1):
            raise ConfigError(f"{where}: halve_lr_at {h!r}: expected none or an integer >= 1")
        if objective.name == "none":
            raise ConfigError(f"{where}: moves {self.moves!r} needs a loss")
        if objective.needs_restore and not mover.restores:
            raise ConfigError(f"{where}: loss {self.loss!r} adapts the restorer's heads or weights, not {self.moves!r}")

    def _validate_options(self, where: str) -> None:
        """An entry that learns nothing: numeric options finite and > 0; the classical family's
        ``algorithm`` (and BM3D's ``profile``) known."""
        for key, value in self.options.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{where}: {key} {value!r}: expected a finite number > 0")
        if self.moves == "classical" and self.moves_impl is None:
            algorithm = self.options.get("algorithm")
            if algorithm not in ALGORITHMS:
                raise ConfigError(f"{where}: options.algorithm {algorithm!r}: expected one of {', '.join(ALGORITHMS)}")
            profile = self.options.get("profile", "np")
            if algorithm == "bm3d" and profile not in BM3D_PROFILES:
                raise ConfigError(f"{where}: profile {profile!r}: expected one of {', '.join(BM3D_PROFILES)}")

    def describe(self) -> dict[str, Any]:
        """One row for ``bench adaptations``: every field plus what a model must have."""
        row = {"name": self.name, "moves": self.moves, "loss": self.loss, "optimizer": self.optimizer,
               "steps": self.steps, "lr": self.lr, "description": self.description, "citation": self.citation}
        rest = {k: v for k, v in asdict(self).items() if k not in row and k not in ("moves_impl", "loss_impl")}
        return {**row, **rest, "requires": self.requires}


_ALG3 = Adaptation(
    "alg3", "heads", "aux-mask",
    "Alg. 3 as printed: SGD on the two heads, soft-mask L_MaskRec, no λ, output after K updates",
    f"{PAPER}, Alg. 3", optimizer="sgd", steps=5, lr=1e-5)

_ENTRIES: list[Adaptation] = [
    Adaptation("none", "none", "none", "no adaptation: the trained network's plain forward pass", PAPER),
    Adaptation("ensemble8", "ensemble8", "none", "×8 self-ensembling: the trained network on the 8 flips/rotations "
               "of the image, outputs mapped back and averaged (no learning)",
               citation="Timofte, Rothe & Van Gool, Seven ways to improve example-based single image super "
                        "resolution, CVPR 2016 (geometric self-ensemble); Lim et al., EDSR, CVPRW 2017"),
    _ALG3,
    replace(_ALG3, name="official", moves="official-heads", optimizer="adam", mask_threshold=0.5,
            predict_after="before-last",
            description="the official TTAID test loop: Adam (0.9/0.999) on the heads but the primary head's "
                        "first conv (frozen with the body, as the official loop freezes by parameter order), "
                        "mask > 0.5, prediction from before the last update (after K−1)",
            citation=f"{TTAID} (test loop; the freeze: {families.OFFICIAL_FREEZE}); {PAPER}"),
    replace(_ALG3, name="oracle", loss="oracle", evaluation_only=True,
            description="evaluation-only control: alg3's heads, K and optimizer family stepping on L_pri "
                        "against the clean image (the bound of what adapting the heads can give)",
            citation=f"this benchmark (the TTA study's oracle); {PAPER}"),
    Adaptation("domain-oracle", "heads", "oracle",
               "evaluation-only bound: the heads fitted once per scenario on its clean validation pairs (L_pri, "
               "full batch, Adam 1e-3, up to 200 updates, the count chosen on a held-out half of the validation "
               "tiles), then applied unchanged to its test images: what a few labelled target images buy",
               f"this benchmark (bench/adaptation/domain.py); {PAPER}", optimizer="adam", steps=200, lr=1e-3,
               evaluation_only=True, scope="domain"),
    Adaptation("lan-offset", "offset", "zs-n2n",
               "LAN: frozen restorer, per-pixel input offset y + tanh(φ), φ = 0 at start, ZS-N2N loss on "
               "the adapted input, Adam lr 5e-4, 20 steps (published)",
               f"{LAN} (main.py: lr 5e-4, 20 inner steps)", optimizer="adam", steps=20, lr=5e-4),
    Adaptation("ssl-finetune", "all", "zs-n2n",
               "self-supervised fine-tuning of every restorer weight on the ZS-N2N loss, Adam lr 5e-6, "
               "20 steps (LAN's 'finetune' comparison)",
               f"{LAN} (main.py --method finetune: lr 5e-6)", optimizer="adam", steps=20, lr=5e-6),
    Adaptation("zs-n2n", "fresh", "zs-n2n",
               "Zero-Shot Noise2Noise: a fresh 2-layer network (conv3x3 3→48, 48→48, conv1x1 48→3, LeakyReLU "
               "0.2) trained from scratch on the one noisy image, Adam lr 1e-3, 2,000 steps, lr halved at 1,500",
               ZSN2N, optimizer="adam", steps=2000, lr=1e-3, halve_lr_at=1500),
    Adaptation("nlm", "classical", "none",
               "non-local means (scikit-image denoise_nl_means, fast mode, patch 5, distance 6), h = h_factor·sigma "
               "(0.8), sigma = scikit-image estimate_sigma per image (mean over channels) × sigma_scale (1.0)",
               "Buades, Coll & Morel, A non-local algorithm for image denoising, CVPR 2005; scikit-image "
               "denoise_nl_means docs (h = 0.8·sigma with sigma given, fast mode) and its NLM gallery example",
               options=dict(NLM_DEFAULTS)),
    Adaptation("bm3d", "classical", "none",
               "BM3D (the bm3d package's bm3d_rgb, profile 'np', block matching on luminance-chrominance), "
               "sigma = scikit-image estimate_sigma per image (mean over channels) × sigma_scale (1.0), output "
               "clipped to [0, 1]",
               "Dabov, Foi, Katkovnik & Egiazarian, Image denoising by sparse 3-D transform-domain collaborative "
               "filtering, IEEE TIP 2007; the bm3d package by Mäkinen, Azzari & Foi (pypi.org/project/bm3d)",
               options=dict(BM3D_DEFAULTS)),
]
for _e in _ENTRIES:
    _e.validate()

REGISTRY: dict[str, Adaptation] = {e.name: e for e in _ENTRIES}  # the built-in entries
PLUGINS: dict[str, Adaptation] = {}  # the plugin entries loaded so far (``get`` loads them by name)


def probe_moves(entry: Adaptation, where: str) -> None:
    """A learned entry's moves must move at least one parameter: ``start`` runs once on its probe
    network (``Moves.probe_model``) and a 1×3×16×16 image; a failure or an empty dict is one line."""
    if not entry.learns:
        return
    mover = entry.mover
    try:
        model = mover.probe_model()
        with torch.no_grad():
            moved = mover.start(model, torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)), 0)
        count = len(moved.params)
    except Exception as e:  # noqa: BLE001 - third-party code: one line, not a traceback
        raise ConfigError(f"{where}: moves {entry.moves!r} fails on a probe network "
                          f"({plugins.first_line(e)})") from None
    if count == 0:
        raise ConfigError(f"{where}: moves no parameter (moves {entry.moves!r} selected none on a probe network)")


def check_plugin(plugin: plugins.Plugin) -> Adaptation:
    """A plugin's object as a registered entry: an ``Adaptation`` named like its entry point, valid,
    moving at least one parameter; one-line ConfigErrors naming the plugin."""
    plugins.expect(plugin, Adaptation, "an Adaptation (bench.adaptation.registry.Adaptation)")
    entry = plugin.obj
    if entry.name != plugin.name:
        raise ConfigError(f"{plugin.where()}: the entry point is named {plugin.name!r} but its Adaptation "
                          f"is named {entry.name!r}; use one name")
    entry = replace(entry, source=plugin.source)
    try:
        entry.validate()
    except ConfigError as e:
        raise ConfigError(f"{plugin.where()}: {e}") from None
    probe_moves(entry, plugin.where())
    return entry


def load_plugin(name: str) -> Adaptation:
    if name not in PLUGINS:
        PLUGINS[name] = check_plugin(plugins.load_one(GROUP, name, reserved=REGISTRY))
    return PLUGINS[name]


def refresh() -> None:
    """Forget every discovered plugin (methods' too): after installing one into the running process."""
    import methods

    plugins.refresh()
    methods.refresh()
    PLUGINS.clear()
    _structure.cache_clear()


def names(*, selectable: bool = False) -> list[str]:
    """Every entry, built-in first (a plugin's entries are listed without importing them); with
    ``selectable=True`` only those a user may pick for ``bench denoise``."""
    out = [n for n, e in REGISTRY.items() if not (selectable and e.evaluation_only)]
    extra = [n for n in plugins.names(GROUP) if n not in REGISTRY]
    return out + [n for n in extra if not (selectable and load_plugin(n).evaluation_only)]


def get(name: str) -> Adaptation:
    """The entry ``name``: built-in, or loaded from its plugin. A name both define is an error."""
    if name in REGISTRY:
        if name in plugins.names(GROUP):
            plugins.load_one(GROUP, name, reserved=REGISTRY)  # raises: the name is taken
        return REGISTRY[name]
    if name in plugins.names(GROUP):
        return load_plugin(name)
    raise ConfigError(f"unknown adaptation {name!r}; known adaptations: {', '.join(names())}")


def entries() -> list[Adaptation]:
    """Every entry, plugins loaded (a broken plugin is a ConfigError here)."""
    return [get(n) for n in names()]


def get_selectable(name: str) -> Adaptation:
    """``get`` for ``bench denoise --adapt``: evaluation-only entries (the oracle) are refused."""
    entry = get(name)
    if entry.evaluation_only:
        raise ConfigError(f"adaptation {name!r} is evaluation-only (it reads the clean image); "
                          f"choose one of {', '.join(names(selectable=True))}")
    return entry


def describe() -> list[dict[str, Any]]:
    """The rows of ``bench adaptations [--json]``."""
    return [e.describe() for e in entries()]


@functools.lru_cache(maxsize=None)
def _structure(method: str) -> nn.Module:
    """A registered method's network on the meta device: its structure only, no memory."""
    import methods

    try:
        spec = methods.get(method)
    except KeyError as e:
        raise ConfigError(e.args[0]) from None
    with torch.device("meta"):
        return spec.create()


def _model_of(method: str | nn.Module) -> tuple[str, nn.Module]:
    if isinstance(method, nn.Module):
        return type(method).__name__, method
    return method, _structure(method)


def capabilities(model: nn.Module) -> set[str]:
    """What a built model offers the entries: restorer, aux-head (``restorer.head_names``), aux-head+mask."""
    restorer = getattr(model, "restorer", model)
    caps = {"nothing", "restorer"}
    if hasattr(restorer, "head_names"):
        caps.add("aux-head")
        if isinstance(getattr(model, "mask_net", None), nn.Module):
            caps.add("aux-head+mask")
    return caps


_NEEDS = {"aux-head+mask": "an auxiliary head and a mask network", "aux-head": "an auxiliary head",
          "restorer": "a restorer", "nothing": "nothing"}


def has_aux_head(method: str | nn.Module) -> bool:
    """Whether a method (a registry name or a built model) has an auxiliary head to adapt."""
    return "aux-head" in capabilities(_model_of(method)[1])


def compatible(method: str | nn.Module) -> list[str]:
    """The entries that can run on a method (a registry name or a built model)."""
    caps = capabilities(_model_of(method)[1])
    return [e.name for e in entries() if e.requires in caps]


def check_pairing(entry: Adaptation | str, method: str | nn.Module) -> None:
    """A one-line ConfigError when ``entry`` cannot run on ``method`` (e.g. alg3 on ridnet: no auxiliary head)."""
    entry = get(entry) if isinstance(entry, str) else entry
    label, model = _model_of(method)
    caps = capabilities(model)
    if entry.requires not in caps:
        ok = [e.name for e in entries() if e.requires in caps]
        raise ConfigError(f"adaptation {entry.name!r} cannot run on method {label!r}: it needs "
                          f"{_NEEDS[entry.requires]}, which {label!r} lacks; compatible: {', '.join(ok)}")


def from_metatest(mt: Any, recipe: Any = None) -> Adaptation:
    """A preset's ``metatest`` section as the entry it names (``variant``: ``alg3`` or ``official``)
    with its K, lr and optimizer — how Table 2's "with meta-test" row and ``bench denoise`` adapt —
    following a trained model's ``recipe`` when one is given (``for_recipe``)."""
    entry = get(mt.variant).with_(steps=mt.steps, lr=mt.lr, optimizer=mt.optimizer)
    return entry if recipe is None else for_recipe(entry, recipe)


def bind(entry: Adaptation | str, method: str, recipe: Any = None) -> Adaptation:
    """The entry as it runs on a registered method: checked, and following ``recipe`` (default: the
    method's own; see ``for_recipe``)."""
    entry = get(entry) if isinstance(entry, str) else entry
    check_pairing(entry, method)
    import methods

    return for_recipe(entry, recipe if recipe is not None else methods.get(method).recipe)


def for_recipe(entry: Adaptation, recipe: Any) -> Adaptation:
    """The head entries follow a trained model's recipe (``inner_scope: all`` moves every restorer
    weight; ``aux_loss: rl`` uses the unmasked L_rec); other entries are returned unchanged."""
    changes: dict[str, Any] = {}
    if entry.moves in ("heads", "official-heads") and recipe.inner_scope == "all":
        changes["moves"] = "all"
    if entry.loss == "aux-mask" and recipe.aux_loss == "rl":
        changes["loss"] = "aux-rec"
    return replace(entry, **changes) if changes else entry


__all__ = ["Adaptation", "REGISTRY", "PLUGINS", "GROUP", "names", "get", "entries", "get_selectable", "describe",
           "compatible", "check_pairing", "capabilities", "has_aux_head", "bind", "for_recipe", "from_metatest",
           "check_plugin", "probe_moves", "refresh", "MOVES", "LOSSES", "OPTIMIZERS", "PREDICT_AFTER", "OVERRIDABLE",
           "FIXED_OPTIONS"]
