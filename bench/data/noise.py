"""Noise models by name: ``noise_model(name)(clean_hwc, rng) -> noisy_hwc``.

``synthetic-mix`` is the paper's pre-training noise; every camera profile of
``bench.data.camera`` (``sidd-like``, ``polyu-like``, ``nam-like`` …) is a camera-pipeline simulator.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from bench.core.errors import ConfigError
from bench.data import camera

NoiseFn = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def noise_names() -> list[str]:
    return ["synthetic-mix", *camera.profiles()]


def noise_model(name: str) -> NoiseFn:
    if name == "synthetic-mix":
        return camera.synthetic_mix
    if name in camera.profiles():
        return partial(_simulate, profile=camera.get_profile(name))
    raise ConfigError(f"unknown noise model {name!r}; known: {', '.join(noise_names())}")


def _simulate(clean: np.ndarray, rng: np.random.Generator, profile) -> np.ndarray:
    return camera.simulate(clean, profile, rng)
