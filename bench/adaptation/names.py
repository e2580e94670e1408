"""The built-in adaptation entries' names, importable without torch, so that the command line can
refuse an unknown ``--adapt`` before any heavy library loads (``bench.adaptation.registry`` holds
the entries themselves; a test checks the two lists agree)."""
from __future__ import annotations

from bench.core import plugins
from bench.core.errors import ConfigError

BUILT_IN = ("none", "ensemble8", "alg3", "official", "oracle", "domain-oracle", "lan-offset", "ssl-finetune", "zs-n2n",
            "nlm", "bm3d")
EVALUATION_ONLY = ("oracle", "domain-oracle")
GROUP = plugins.GROUPS["adaptations"]


def check_selectable(name: str) -> None:
    """A one-line ConfigError for a name no built-in entry or declared plugin has, or for the
    evaluation-only oracle (it reads the clean image)."""
    known = [n for n in BUILT_IN if n not in EVALUATION_ONLY] + [n for n in plugins.names(GROUP) if n not in BUILT_IN]
    if name in EVALUATION_ONLY:
        raise ConfigError(f"adaptation {name!r} is evaluation-only (it reads the clean image); "
                          f"choose one of {', '.join(known)}")
    if name not in known:
        raise ConfigError(f"unknown adaptation {name!r}; known adaptations: {', '.join(known)}")
