"""The paper's data (``data.source: paper``): DIV2K, SIDD-Small + PolyU, Nam (docs/design.md §5).

Pre-training: DIV2K train with the synthetic mix (Table 1's val: DIV2K valid, same noise, fixed).
MTL: SIDD-Small + PolyU pairs minus a held-out validation split (every ``1/val_fraction``-th pair
by sorted name, from each set) — the official code validates on its training images, which we do
not; test: every Nam ``.mat``. All under the data root (see datasets/README.md).
"""
from __future__ import annotations

import zlib

import numpy as np

from bench.core.config import DataConfig, stable_hash
from bench.data.base import ImagePair, as_float, as_uint8, center_crop
from bench.data.noise import noise_model
from bench.data.real import data_root, load_div2k, load_nam, load_polyu, load_sidd_small
from bench.data.sampler import DataBundle, Source


def _crop_float(pairs: list[ImagePair], size: int) -> list[ImagePair]:
    return [ImagePair(p.name, as_float(center_crop(p.clean, size)),
                      None if p.noisy is None else as_float(center_crop(p.noisy, size))) for p in pairs]


def _synthetic_eval(pairs: list[ImagePair], cfg: DataConfig) -> list[ImagePair]:
    out = []
    for p in _crop_float(pairs, cfg.eval_crop):
        rng = np.random.default_rng([cfg.eval_seed, zlib.crc32(p.name.encode())])
        out.append(ImagePair(p.name, p.clean, noise_model(cfg.pretrain_noise)(p.clean, rng).astype(np.float32)))
    return out


def split_heldout(pairs: list[ImagePair], fraction: float) -> tuple[list[ImagePair], list[ImagePair]]:
    """(train, val): every k-th pair by name goes to val, k = round(1 / fraction)."""
    ordered = sorted(pairs, key=lambda p: p.name)
    k = max(2, round(1 / fraction))
    return ([p for i, p in enumerate(ordered) if i % k != k - 1], [p for i, p in enumerate(ordered) if i % k == k - 1])


def load_paper_data(cfg: DataConfig):
    root = data_root(cfg.root)
    div2k = [as_uint8(p) for p in load_div2k(root, "train")]
    train, val = [], []
    for pairs in (load_sidd_small(root), load_polyu(root)):
        t, v = split_heldout(pairs, cfg.val_fraction)
        train += [as_uint8(p) for p in t]
        val += v
    return DataBundle(
        pretrain=Source(div2k, [noise_model(cfg.pretrain_noise)], cfg.sampler),
        train=Source(train, sampler=cfg.sampler),
        val=_crop_float(val, cfg.eval_crop),
        test=_crop_float(load_nam(root), cfg.eval_crop),
        val_synthetic=_synthetic_eval(load_div2k(root, "valid"), cfg),
        key=stable_hash({"paper": str(root.resolve()), "n": [len(div2k), len(train), len(val)],
                         "cfg": cfg.model_dump(mode="json")}),
    )
