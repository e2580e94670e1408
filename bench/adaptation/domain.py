"""The domain oracle: what a handful of labelled images of the target domain would buy.

An entry with ``scope: domain`` does not adapt per image. Its parameters (the heads, for the
built-in ``domain-oracle``) are fitted once per scenario on that scenario's clean *validation*
pairs, on the entry's loss (L_pri against the clean image), and the fitted network is then applied
unchanged to the scenario's test images. Per-image TTA that falls short of it is leaving on the
table what a few labelled target images give; one that beats it adapts to the image, not only to
the domain.

How long to fit is chosen on validation too: the validation tiles are split into a fitting half and
a held-out half (every other tile; a tile's noise draws stay on one side), the fit runs up to the
entry's ``steps`` full-batch updates, and the iterate with the lowest held-out L1 (checked every
``CHECK_EVERY`` updates) is the one applied to test. The test split plays no part.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn

from bench.adaptation.families import restorer_of
from bench.adaptation.inner import Params, run_steps
from bench.adaptation.registry import Adaptation
from bench.core.errors import ConfigError
from bench.core.images import to_tensor
from bench.core.losses import l1
from bench.data.base import ImagePair, instance_levels

CHECK_EVERY = 10


@dataclass
class DomainFit:
    """A fitted copy of the model and how it was chosen."""

    model: nn.Module
    steps: int  # the update count chosen on the held-out half (0: the fit never helped)
    heldout_l1: float  # at that iterate
    heldout_l1_start: float  # before any update
    fit_tiles: int
    heldout_tiles: int
    seconds: float

    def record(self) -> dict:
        return {"steps": self.steps, "heldout_l1": self.heldout_l1, "heldout_l1_start": self.heldout_l1_start,
                "fit_tiles": self.fit_tiles, "heldout_tiles": self.heldout_tiles, "seconds": self.seconds}


def tile_of(name: str) -> tuple[str, str]:
    """(photograph, tile) of an instance (``bench.data.base.instance_levels``): its noise draws share it."""
    photo, tile, _ = instance_levels(name)
    return photo, tile


def split_tiles(pairs: Sequence[ImagePair]) -> tuple[list[ImagePair], list[ImagePair]]:
    """(fit, held-out): every other tile held out; with a single tile nothing is held out."""
    tiles = sorted({tile_of(p.name) for p in pairs})
    held = set(tiles[1::2]) if len(tiles) > 1 else set()
    return [p for p in pairs if tile_of(p.name) not in held], [p for p in pairs if tile_of(p.name) in held]


def first_tiles(pairs: Sequence[ImagePair], n: int | None) -> list[ImagePair]:
    """The instances of the first ``n`` tiles of each photograph (every noise draw of a kept tile);
    ``None`` keeps all: how a preset caps what a ``select:`` grid scores (``tta.select_tiles``)."""
    if n is None:
        return list(pairs)
    kept: dict[str, set[tuple[str, str]]] = {}
    for p in pairs:
        tile = tile_of(p.name)
        tiles = kept.setdefault(tile[0], set())
        if tile in tiles or len(tiles) < n:
            tiles.add(tile)
    return [p for p in pairs if (tile := tile_of(p.name)) in kept[tile[0]]]


def _batch(pairs: Sequence[ImagePair], device: torch.device) -> tuple[Tensor, Tensor]:
    shapes = {p.noisy.shape for p in pairs}
    if len(shapes) != 1:
        raise ConfigError(f"domain fit: validation instances differ in size ({sorted(shapes)}); "
                          "the domain oracle needs equal-sized tiles")
    noisy = torch.cat([to_tensor(p.noisy, device) for p in pairs])
    clean = torch.cat([to_tensor(p.clean, device) for p in pairs])
    return noisy, clean


def fit_domain(entry: Adaptation, model: nn.Module, pairs: Sequence[ImagePair], device: torch.device,
               seed: int = 0) -> DomainFit:
    """Fit ``entry``'s parameters on ``pairs`` (one scenario's validation instances) as the module
    docstring says; the model itself is left unchanged."""
    if not pairs:
        raise ConfigError(f"adaptation {entry.name!r}: no validation instances to fit the domain on")
    fit, held = split_tiles(pairs)
    start = time.perf_counter()
    with torch.no_grad():
        noisy, clean = _batch(fit, device)
        moved = entry.mover.start(model, noisy, seed)
        loss_fn = entry.objective.bind(entry, model, moved, clean)
        check = None
        if held:
            held_noisy, held_clean = _batch(held, device)
            held_moved = entry.mover.start(model, held_noisy, seed)
            check = lambda p: float(l1(held_moved.predict(p), held_clean))  # noqa: E731
        best: dict = {}

        def consider(t: int, p: Params) -> None:
            value = check(p) if check else -float(t)  # nothing held out: the last iterate
            if not best or value < best["value"]:
                best.update(t=t, value=value, params=p)
            best.setdefault("start", value)

        def on_step(t: int, p: Params, value: Tensor, g: Params) -> None:
            if t % CHECK_EVERY == 0:
                consider(t, p)

        last = run_steps(loss_fn, moved.params, steps=entry.steps, lr=entry.lr, optimizer=entry.optimizer,
                         on_step=on_step, halve_lr_at=entry.halve_lr_at, keep="last")[0]
        consider(entry.steps, last)
        fitted = copy.deepcopy(model)
        restorer = restorer_of(fitted)
        for name, value in best["params"].items():
            restorer.get_parameter(name).copy_(value)
    return DomainFit(fitted, best["t"], best["value"] if check else float("nan"),
                     best["start"] if check else float("nan"), len({tile_of(p.name) for p in fit}),
                     len({tile_of(p.name) for p in held}), time.perf_counter() - start)


__all__ = ["DomainFit", "fit_domain", "first_tiles", "split_tiles", "tile_of", "CHECK_EVERY"]
