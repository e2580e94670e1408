"""Fingerprints of code, so that a cache keyed on them notices when the code that made an entry changed.

What is hashed is the module's syntax tree with its docstrings removed, written out node by node
(field names and values, no line numbers, no empty fields): comments, docstrings, blank lines and
layout do not change a fingerprint; any change to what the code does does. A file that does not
parse is hashed as raw text. docs/caching.md says what each stage key hashes.

Also here: the project's git commit (and whether the work tree is dirty) and the plugin
distributions installed, for the tags every MLflow run carries.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
import os
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

PLUGIN_GROUPS = ("ttaid_bench.methods", "ttaid_bench.adaptations", "ttaid_bench.scenarios")
"""The entry-point groups a plugin distribution registers in."""

DIGEST_CHARS = 12  # hex digits kept: enough to tell versions of one file apart


def canonical(node: Any) -> Any:
    """A syntax tree as nested lists, independent of the Python version's ``ast.dump`` layout
    (fields that are None or empty are left out, as newer Pythons add such fields)."""
    if isinstance(node, ast.AST):
        fields = {}
        for name in node._fields:
            value = getattr(node, name, None)
            if value is None or value == []:
                continue
            fields[name] = canonical(value)
        return [type(node).__name__, fields]
    if isinstance(node, list):
        return [canonical(v) for v in node]
    return [type(node).__name__, repr(node)]


def strip_docstrings(tree: ast.AST) -> ast.AST:
    """Remove the docstring of the module and of every class and function (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def source_digest(source: str) -> str:
    """The fingerprint of Python source: its docstring-free syntax tree, or its text if it does not parse."""
    try:
        text = repr(canonical(strip_docstrings(ast.parse(source))))
    except SyntaxError:
        text = "raw:" + source
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


@functools.lru_cache(maxsize=512)
def _file_digest(path: str, mtime_ns: int, size: int) -> str:
    return source_digest(Path(path).read_text(encoding="utf-8", errors="replace"))


def module_file(name: str) -> Path | None:
    """The source file of module ``name`` (without importing it when it is not imported yet)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") and os.path.isfile(origin) else None


def module_digest(name: str) -> str:
    """The fingerprint of module ``name``'s source as it is on disk now; ``absent`` if it has none."""
    path = module_file(name)
    if path is None:
        return "absent"
    st = path.stat()
    return _file_digest(str(path), st.st_mtime_ns, st.st_size)


def function_digest(fn: Callable) -> str | None:
    """The fingerprint of one function's source; None when it has no readable source (a builtin, a partial)."""
    try:
        return source_digest(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError):
        return None


def module_label(name: str) -> str:
    """How a module is named to users: its file relative to its package root (``methods/ours.py``)."""
    path = module_file(name)
    tail = name.replace(".", "/")
    if path is not None and path.name == "__init__.py":
        return f"{tail}/__init__.py"
    return f"{tail}.py"


@functools.lru_cache(maxsize=1)
def _top_level_dists() -> dict[str, tuple[str, ...]]:
    try:
        return {k: tuple(v) for k, v in importlib.metadata.packages_distributions().items()}
    except Exception:  # a broken metadata folder must not stop a run
        return {}


def distribution_of(module: str) -> tuple[str, str] | None:
    """(distribution, version) that installed the top-level package of ``module``; None for a
    module no distribution installed (a file on ``sys.path``) or one of this project's own."""
    top = module.split(".", 1)[0]
    own = set(_top_level_dists().get("bench", ()))
    for dist in _top_level_dists().get(top, ()):
        if dist in own:
            return None
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def plugin_versions() -> dict[str, str]:
    """``distribution → version`` of every distribution with an entry point in a ``PLUGIN_GROUPS`` group."""
    out: dict[str, str] = {}
    try:
        eps = importlib.metadata.entry_points()
        for group in PLUGIN_GROUPS:
            for ep in eps.select(group=group):
                dist = getattr(ep, "dist", None)
                if dist is not None:
                    out[dist.metadata["Name"]] = dist.version
    except Exception:  # broken metadata: report none rather than fail a run
        return out
    return dict(sorted(out.items()))


PROJECT_ROOT = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=4)
def git_state(root: str = str(PROJECT_ROOT)) -> dict[str, str]:
    """``{"commit", "dirty"}`` of the work tree at ``root``, or ``{"git": why not}`` when git or
    the repository is not there (an installed wheel, a copied folder). Never raises."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    try:
        top = git("rev-parse", "--show-toplevel")
        if Path(top).resolve() != Path(root).resolve():  # e.g. an installed copy inside some other repository
            return {"git": "unavailable: the package is not the root of a git work tree"}
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except FileNotFoundError:
        return {"git": "unavailable: git is not installed"}
    except subprocess.TimeoutExpired:
        return {"git": "unavailable: git did not answer"}
    except subprocess.CalledProcessError as e:
        why = (e.stderr or "").strip().splitlines()
        return {"git": f"unavailable: {why[0][:120] if why else 'not a git repository'}"}
    except OSError as e:
        return {"git": f"unavailable: {e.strerror or e}"}
    return {"commit": commit, "dirty": "true" if dirty else "false"}


__all__ = [
    "PLUGIN_GROUPS",
    "PROJECT_ROOT",
    "canonical",
    "distribution_of",
    "function_digest",
    "git_state",
    "module_digest",
    "module_file",
    "module_label",
    "plugin_versions",
    "source_digest",
    "strip_docstrings",
]
