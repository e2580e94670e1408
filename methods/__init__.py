"""Registered denoising methods: ``methods.create(name)``, ``methods.names()``, ``methods.get(name)``."""
from .registry import REGISTRY, MethodSpec, Recipe, create, get, names

__all__ = ["REGISTRY", "MethodSpec", "Recipe", "create", "get", "names"]
