"""Registered denoising methods: ``methods.create(name)``, ``methods.names()``, ``methods.get(name)``."""
from .registry import (
    GROUP,
    REGISTRY,
    SUPERVISED,
    MethodError,
    MethodSpec,
    Recipe,
    check_contract,
    create,
    get,
    names,
    refresh,
)

__all__ = ["GROUP", "REGISTRY", "SUPERVISED", "MethodError", "MethodSpec", "Recipe", "check_contract", "create", "get",
           "names", "refresh"]
