"""Data behind one small interface: ``load_data(cfg) -> DataBundle``.

A bundle holds the training sources (pre-training, MTL) and the fixed evaluation pairs (val, test).
Evaluation noise is drawn once from ``cfg.eval_seed`` and the image name, so every row and seed of
a study is scored on exactly the same noisy images.
"""
from __future__ import annotations

import zlib

import numpy as np

from bench.core.config import DataConfig, stable_hash
from bench.core.errors import ConfigError
from bench.data import camera, embedded
from bench.data.base import ImagePair, center_crop
from bench.data.noise import noise_model
from bench.data.sampler import DataBundle, PatchSampler, Source


def _eval_pairs(pairs, noise_names, cfg: DataConfig) -> list[ImagePair]:
    out = []
    for pair in pairs:
        clean = center_crop(pair.clean, cfg.eval_crop)
        for noise_name in noise_names:
            for r in range(cfg.eval_repeats):
                tag = f"{pair.name}/{noise_name}" + (f"#{r}" if cfg.eval_repeats > 1 else "")
                rng = np.random.default_rng([cfg.eval_seed, zlib.crc32(tag.encode())])
                noisy = noise_model(noise_name)(clean, rng).astype(np.float32)
                out.append(ImagePair(tag, clean, noisy))
    return out


def load_data(cfg: DataConfig) -> DataBundle:
    if cfg.source == "paper":
        from bench.data.paper import load_paper_data  # real data sets, see datasets/README.md

        return load_paper_data(cfg)
    if cfg.source != "embedded":
        raise ConfigError(f"unknown data source {cfg.source!r}; expected embedded or paper")
    train_noise = [noise_model(n) for n in cfg.train_noise]
    return DataBundle(
        pretrain=Source(embedded.clean_images("pretrain", cfg.grey_images), [noise_model(cfg.pretrain_noise)],
                        cfg.sampler),
        train=Source(embedded.clean_images("train", cfg.grey_images), train_noise, cfg.sampler),
        val=_eval_pairs(embedded.clean_images("val"), cfg.train_noise, cfg),
        test=_eval_pairs(embedded.clean_images("test"), [cfg.test_noise], cfg),
        val_synthetic=_eval_pairs(embedded.clean_images("val"), [cfg.pretrain_noise], cfg),
        key=stable_hash({"embedded": embedded.SPLITS, "cfg": cfg.model_dump(mode="json"),
                         "profiles": repr(sorted(camera.profiles().items())), "v": 1}),
    )


__all__ = ["DataBundle", "ImagePair", "PatchSampler", "Source", "load_data", "center_crop"]
