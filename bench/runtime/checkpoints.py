"""Checkpoint files: reading one, and the network it holds (architecture, weights, recipe, meta-test).

The one reader of ``.pt`` files, for the stage cache (``bench.training.stages``) and ``bench.inference.trained``
alike, so a corrupt or foreign file gets the same one-line error everywhere. ``bench run`` writes
``{"model": state_dict, "payload": {"arch", "arch_kwargs", "recipe", "metatest", ...}, ...}``.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from pydantic import ValidationError
from torch import Tensor, nn

import methods
from bench.core.config import MetaTestConfig
from bench.core.errors import ConfigError, DataError
from methods import Recipe


def first_line(exc: BaseException) -> str:
    """An exception's first line (at most 200 characters), or its type when it has no message."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def read_checkpoint(path: str | Path, *, weights_only: bool = True,
                    hint: str = "expected a .pt file written by `bench run`") -> object:
    """``torch.load`` onto the CPU; a missing, unreadable or corrupt file raises one DataError.

    ``weights_only=False`` only for the harness's own files (the stage cache keeps RNG states);
    ``hint`` ends the error message (what the user should do).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: checkpoint not found" if not p.exists() else f"{p}: not a file; expected a .pt checkpoint")
    try:
        return torch.load(p, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # torch raises many types for corrupt or foreign files
        raise DataError(f"{p}: cannot load checkpoint ({first_line(exc)}); {hint}") from None


def model_from_checkpoint(path: str | Path, arch: str | None = None) -> tuple[nn.Module, Recipe, MetaTestConfig, str]:
    """Build the network a checkpoint names and load its weights; (model in eval mode on the CPU,
    recipe, meta-test defaults, architecture name).

    Accepts what ``bench run`` writes and bare state dicts (then ``arch``, default ``ours``, says
    what they are). Weights that do not fit raise DataError.
    """
    p = Path(path)
    obj = read_checkpoint(p)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state, payload = obj["model"], obj.get("payload") or {}
    elif isinstance(obj, dict) and obj and all(isinstance(v, Tensor) for v in obj.values()):
        state, payload = obj, {}
    else:
        raise DataError(f"{p}: not a model checkpoint (holds a {type(obj).__name__}); "
                        "expected a dict with 'model' weights as `bench run` writes, or a state dict")
    saved = payload.get("arch")
    if arch and saved and arch != saved:
        raise DataError(f"{p}: checkpoint of architecture {saved!r}, not {arch!r}")
    name = arch or saved or "ours"
    try:
        spec = methods.get(name)
    except KeyError as e:
        raise ConfigError(f"{p}: {e.args[0]}") from None
    try:
        model = spec.create(**(payload.get("arch_kwargs") or {}))
    except TypeError as e:
        raise DataError(f"{p}: architecture {name!r} rejects the checkpoint's arch_kwargs ({first_line(e)})") from None
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        example = (missing or unexpected or shapes)[0]
        raise DataError(f"{p}: weights do not fit architecture {name!r} ({len(missing)} missing, {len(unexpected)} "
                        f"unexpected, {len(shapes)} mis-shaped tensors, e.g. {example!r}); "
                        "expected a checkpoint of that architecture")
    model.load_state_dict(state)
    model.eval()
    fields = Recipe.__dataclass_fields__
    saved_recipe = {k: v for k, v in (payload.get("recipe") or {}).items() if k in fields}
    if "aux_loss" not in saved_recipe and "pretrain_aux" in saved_recipe:  # a pre-training checkpoint
        saved_recipe["aux_loss"] = saved_recipe["pretrain_aux"]
    recipe = replace(spec.recipe, **saved_recipe)
    try:
        mt = MetaTestConfig.model_validate(payload.get("metatest") or {})
    except ValidationError:
        mt = MetaTestConfig()
    return model, recipe, mt, name
