"""Third-party entries found through Python entry points, and objects named ``pkg.module:attr``.

A package adds methods, adaptation entries or scenarios to the harness by declaring entry points in
the groups of ``GROUPS`` (its pyproject's ``[project.entry-points."ttaid_bench.methods"]``), so a
user's network or loss needs no edit of the harness. Every problem — an entry point that fails to
import, a name defined twice, an object of the wrong kind — is one ConfigError line naming the
plugin (its name, distribution and version) and what is wrong; the command line exits 2 on it.

``methods`` (layer 1, beside this module) cannot import this loader: it reads its own group with
the standard library (``methods.registry``), raising its own one-line errors.
"""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

from bench.core.errors import ConfigError

GROUPS = {"methods": "ttaid_bench.methods", "adaptations": "ttaid_bench.adaptations",
          "scenarios": "ttaid_bench.scenarios"}
KINDS = {group: kind[:-1] for kind, group in GROUPS.items()}  # group -> "method" | "adaptation" | "scenario"
BUILT_IN = "built-in"


@dataclass(frozen=True)
class Declared:
    """An entry point as declared (not imported yet)."""

    name: str
    value: str  # "pkg.module:attr"
    dist: str  # the distribution that declares it ("" when unknown)
    version: str
    group: str

    @property
    def source(self) -> str:
        """The "distribution version" the listings show."""
        return f"{self.dist} {self.version}".strip() or "unknown distribution"

    def where(self) -> str:
        """How error lines name it: "adaptation 'x' (plugin dist 1.0, pkg.mod:attr)"."""
        return f"{KINDS.get(self.group, 'entry')} {self.name!r} (plugin {self.source}, {self.value})"


@dataclass(frozen=True)
class Plugin:
    """One loaded entry point: its declaration and the object it names."""

    declared: Declared
    obj: Any

    @property
    def name(self) -> str:
        return self.declared.name

    @property
    def source(self) -> str:
        return self.declared.source

    def where(self) -> str:
        return self.declared.where()


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


@functools.cache
def declared(group: str) -> tuple[Declared, ...]:
    """Every entry point of ``group`` in the environment, sorted by name; the same declaration seen
    twice (a distribution found on two paths) counts once."""
    seen: dict[tuple[str, str, str], Declared] = {}
    for ep in metadata.entry_points(group=group):
        dist = getattr(ep, "dist", None)
        name = dist.metadata["Name"] if dist is not None else ""
        version = dist.version if dist is not None else ""
        seen.setdefault((ep.name, ep.value, name or ""), Declared(ep.name, ep.value, name or "", version or "", group))
    return tuple(sorted(seen.values(), key=lambda d: (d.name, d.dist)))


def refresh() -> None:
    """Forget what was discovered (after installing a plugin into the running process)."""
    declared.cache_clear()


def names(group: str) -> list[str]:
    """The plugin names of ``group``, without importing anything."""
    return sorted({d.name for d in declared(group)})


def resolve(ref: str, what: str = "object") -> Any:
    """The object a ``pkg.module:attr`` reference names; a one-line ConfigError when it does not import."""
    module, sep, attr = ref.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(f"{what} {ref!r}: expected a reference pkg.module:attr")
    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as e:  # noqa: BLE001 - any failure of third-party code is one line
        raise ConfigError(f"{what} {ref!r}: fails to import ({first_line(e)})") from None
    return obj


def load_one(group: str, name: str, *, reserved: Iterable[str] = (),
             check: Callable[[Plugin], None] | None = None) -> Plugin:
    """The plugin ``name`` of ``group``: imported and checked. ConfigError when it is not declared,
    declared twice, takes a ``reserved`` (built-in) name, fails to import or fails ``check``."""
    kind = KINDS.get(group, "entry")
    found = [d for d in declared(group) if d.name == name]
    if not found:
        raise ConfigError(f"no plugin {kind} {name!r} (entry-point group {group})")
    if len(found) > 1:
        raise ConfigError(f"{kind} {name!r}: defined twice, by plugins "
                          + " and ".join(d.source for d in found) + "; uninstall one")
    d = found[0]
    if name in set(reserved):
        raise ConfigError(f"{d.where()}: the name {name!r} is taken by a built-in {kind}; rename the plugin")
    try:
        obj = metadata.EntryPoint(d.name, d.value, group).load()
    except Exception as e:  # noqa: BLE001 - third-party import failures become one line
        raise ConfigError(f"{d.where()}: fails to import ({first_line(e)})") from None
    plugin = Plugin(d, obj)
    if check is not None:
        check(plugin)
    return plugin


def load(group: str, *, reserved: Iterable[str] = (), check: Callable[[Plugin], None] | None = None) -> list[Plugin]:
    """Every plugin of ``group``, loaded and checked (``load_one``), sorted by name."""
    reserved = set(reserved)
    return [load_one(group, n, reserved=reserved, check=check) for n in names(group)]


def expect(plugin: Plugin, kind: type | tuple[type, ...], expected: str) -> None:
    """A ConfigError unless the plugin's object is an instance of ``kind`` ("expected ..., got ...")."""
    if not isinstance(plugin.obj, kind):
        raise ConfigError(f"{plugin.where()}: expected {expected}, got {type(plugin.obj).__name__}")


__all__ = ["GROUPS", "KINDS", "BUILT_IN", "Plugin", "Declared", "declared", "refresh", "names", "resolve", "load_one", "load",
           "expect", "first_line"]
