"""The layer rule of docs/architecture.md §Layers, checked on every .py file under bench/ and methods/.

The layer table is read from that doc (the one place it is written). Every import counts —
module level, inside functions and methods, under `if` and `if TYPE_CHECKING:` — relative imports
resolved. Three kinds of violation: (a) an import of a higher layer, or of another package on the
same layer; (b) `bench.perf` imported by anything but the command line; (c) an import cycle
between modules (its path is printed).
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = ("bench", "methods")  # the trees checked
COMMAND_LINE = 10  # the top layer; its packages form one unit, the only importer allowed for perf
PERF = "bench.perf"

# Violations accepted while they are being fixed, each with a comment saying why (none today).
# Entries: ("upward", importer module, imported module) or ("cycle", the modules of the cycle, sorted).
# Remove an entry once it is fixed: a stale entry fails test_known_violations_still_exist.
KNOWN_VIOLATIONS: set[tuple] = set()


# ---- the checker ------------------------------------------------------------------------------

def read_layers(doc: Path = DOC) -> dict[str, int]:
    """package -> layer, from the table in the doc's "## Layers" section."""
    text = doc.read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    layers = {m.group(2): int(m.group(1))
              for m in re.finditer(r"^\|\s*(\d+)\s*\|\s*`([\w.]+)`\s*\|", section, re.M)}
    assert layers, f"no layer table found in {doc}"
    return layers


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules_under(root: Path, packages=PACKAGES) -> dict[str, Path]:
    """module name -> file, for every .py file of the packages."""
    return {module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    in_function: bool
    external: bool  # True: a library outside bench/methods (target is its top-level name)


def imports_of(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import statement of the file, anywhere in it, resolved to a module name."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: list[Import] = []

    def add(target: str, line: int, in_fn: bool):
        top = target.split(".")[0]
        if top not in PACKAGES:
            found.append(Import(module, top, line, in_fn, True))
            return
        while target not in known and "." in target:  # `import bench.x.attr`: the deepest module
            target = target.rsplit(".", 1)[0]
        found.append(Import(module, target, line, in_fn, False))

    def visit(node: ast.AST, in_fn: bool):
        for child in ast.iter_child_nodes(node):
            fn = in_fn or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name, child.lineno, in_fn)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = module.split(".") if is_pkg else module.split(".")[:-1]
                    base = base[: len(base) - (child.level - 1)]
                    source = ".".join(base + ([child.module] if child.module else []))
                else:
                    source = child.module or ""
                for alias in child.names:  # `from pkg import sub`: sub may be a module
                    sub = f"{source}.{alias.name}"
                    add(sub if sub in known else source, child.lineno, in_fn)
            visit(child, fn)

    visit(tree, False)
    return found


def layer_of(module: str, layers: dict[str, int]) -> tuple[str, int] | None:
    """(package, layer) of a module: the longest package of the table that contains it."""
    best = None
    for pkg, layer in layers.items():
        covers_subs = not any(other.startswith(pkg + ".") for other in layers)  # `bench`: its __init__ only
        if (module == pkg or covers_subs and module.startswith(pkg + ".")) and (best is None or len(pkg) > len(best[0])):
            best = (pkg, layer)
    return best


def unit(package: str, layer: int) -> str:
    """The packages of the command line (layer 10) count as one."""
    return "command line" if layer == COMMAND_LINE else package


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle path (first module repeated at the end) per strongly connected component of
    more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = [0]

    def strong(v: str):  # recursive: the depth is the longest import chain, a few dozen modules
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)

    cycles = []
    for comp in components:  # a shortest cycle through the component's first module (BFS)
        start = min(comp)
        prev: dict[str, str] = {}
        queue, last = [start], None
        while last is None:
            v = queue.pop(0)
            for w in sorted(graph[v] & comp):
                if w == start:
                    last = v
                    break
                if w not in prev:
                    prev[w] = v
                    queue.append(w)
        path = [last]
        while path[-1] != start:
            path.append(prev[path[-1]])
        cycles.append(path[::-1] + [start])
    return sorted(cycles)


@dataclass(frozen=True)
class Violation:
    key: tuple  # what KNOWN_VIOLATIONS holds
    message: str


def check(root: Path = ROOT, layers: dict[str, int] | None = None) -> list[Violation]:
    """Every violation of the rule in the tree under root."""
    layers = read_layers() if layers is None else layers
    mods = modules_under(root)
    known = set(mods)
    out: list[Violation] = []
    graph: dict[str, set[str]] = {m: set() for m in mods}
    where: dict[tuple[str, str], str] = {}
    for mod, path in mods.items():
        rel = path.relative_to(root).as_posix()
        mine = layer_of(mod, layers)
        if mine is None:
            out.append(Violation(("unplaced", mod), f"{rel}: module {mod} is in no package of the layer table "
                                                    f"({DOC.relative_to(ROOT)})"))
            continue
        for imp in imports_of(mod, path, known):
            if imp.external or imp.target == mod:
                continue
            graph[mod].add(imp.target)
            where.setdefault((mod, imp.target), f"{rel}:{imp.line}")
            theirs = layer_of(imp.target, layers)
            if theirs is None:
                continue  # reported as unplaced above (or not a module of ours)
            if unit(*theirs) == unit(*mine):
                continue
            if theirs[0] == PERF and mine[1] != COMMAND_LINE:
                out.append(Violation(("upward", mod, imp.target),
                                     f"{rel}:{imp.line} imports {imp.target} (perf is imported by the "
                                     f"command line only)"))
            elif theirs[1] >= mine[1]:
                what = "same layer, other package" if theirs[1] == mine[1] else "higher layer"
                out.append(Violation(("upward", mod, imp.target),
                                     f"{rel}:{imp.line} imports {imp.target} (layer {theirs[1]} "
                                     f"{'>' if theirs[1] > mine[1] else '='} {mine[1]}: {what})"))
    for cyc in find_cycles(graph):
        steps = " -> ".join(f"{a} ({where[(a, b)]})" for a, b in zip(cyc, cyc[1:]))
        out.append(Violation(("cycle", tuple(sorted(set(cyc)))), f"cycle: {steps} -> {cyc[-1]}"))
    return out


# ---- the tests ---------------------------------------------------------------------------------

def _report(violations: list[Violation]) -> str:
    return "\n".join(v.message for v in violations)


def test_every_package_is_in_the_table():
    layers = read_layers()
    packages = {module_name(p.parent, ROOT) for p in (ROOT / "bench").glob("*/__init__.py")}
    missing = sorted(p for p in packages if p not in layers)
    assert not missing, f"packages missing from the layer table of {DOC}: {missing}"


def test_no_new_layer_violations():
    new = [v for v in check() if v.key not in KNOWN_VIOLATIONS]
    assert not new, (f"{len(new)} layer violation(s) (rule and table: docs/architecture.md §Layers):\n"
                     + _report(new))


def test_known_violations_still_exist():
    """A fixed violation left in KNOWN_VIOLATIONS would let it come back unnoticed."""
    stale = KNOWN_VIOLATIONS - {v.key for v in check()}
    assert not stale, f"fixed, remove from KNOWN_VIOLATIONS: {sorted(stale)}"


@pytest.mark.xfail(bool(KNOWN_VIOLATIONS), strict=False,
                   reason="violations listed in KNOWN_VIOLATIONS are being fixed")
def test_no_layer_violations_at_all():
    found = check()
    assert not found, _report(found)


# ---- the checker checks itself, on a small tree --------------------------------------------------

SYNTHETIC_LAYERS = {"bench.core": 1, "methods": 1, "bench.runtime": 2, "bench.perf": 9, "bench.cli": 10, "bench": 10}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in {"bench/__init__.py": "", "methods/__init__.py": "", **files}.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_checker_passes_a_clean_tree(tmp_path):
    root = _tree(tmp_path, {
        "bench/core/__init__.py": "", "bench/core/a.py": "import os\nfrom .b import x\n", "bench/core/b.py": "x = 1\n",
        "bench/runtime/__init__.py": "", "bench/runtime/r.py": "from bench.core import a\n",
        "bench/cli/__init__.py": "def f():\n    from bench.perf import p\n",
        "bench/perf/__init__.py": "", "bench/perf/p.py": "from ..runtime.r import y\n",
    })
    assert check(root, SYNTHETIC_LAYERS) == []


def test_checker_catches_an_upward_import_in_a_function(tmp_path):
    root = _tree(tmp_path, {
        "bench/core/__init__.py": "",
        "bench/core/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bench.runtime import r\n",
        "bench/runtime/__init__.py": "",
        "bench/runtime/r.py": "def f():\n    import bench.perf.p\n",
        "bench/perf/__init__.py": "", "bench/perf/p.py": "",
        "methods/m.py": "class M:\n    def g(self):\n        from bench.core.a import z\n",
    })
    got = {v.key: v.message for v in check(root, SYNTHETIC_LAYERS)}
    assert set(got) == {("upward", "bench.core.a", "bench.runtime.r"), ("upward", "bench.runtime.r", "bench.perf.p"),
                        ("upward", "methods.m", "bench.core.a")}
    assert got[("upward", "bench.core.a", "bench.runtime.r")] == \
        "bench/core/a.py:3 imports bench.runtime.r (layer 2 > 1: higher layer)"
    assert "command line only" in got[("upward", "bench.runtime.r", "bench.perf.p")]
    assert "same layer" in got[("upward", "methods.m", "bench.core.a")]


def test_checker_catches_a_cycle_through_a_function_import(tmp_path):
    root = _tree(tmp_path, {
        "bench/core/__init__.py": "",
        "bench/core/a.py": "from bench.core import b\n",
        "bench/core/b.py": "from . import c\n",
        "bench/core/c.py": "def f():\n    from .a import x\n",
    })
    found = check(root, SYNTHETIC_LAYERS)
    assert [v.key for v in found] == [("cycle", ("bench.core.a", "bench.core.b", "bench.core.c"))]
    assert found[0].message == ("cycle: bench.core.a (bench/core/a.py:1) -> bench.core.b (bench/core/b.py:1) -> "
                                "bench.core.c (bench/core/c.py:2) -> bench.core.a")


def test_checker_reads_the_doc_table():
    layers = read_layers()
    assert layers["bench.core"] == layers["methods"] == 1
    assert layers["bench.cli"] == COMMAND_LINE and layers[PERF] == COMMAND_LINE - 1


LONG_MODULE = 400


def test_long_modules_say_why():
    """A module in bench/ over 400 lines says in its docstring why it is one module."""
    silent = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > LONG_MODULE and "Why one module" not in (ast.get_docstring(ast.parse(text)) or ""):
            silent.append(f"{path.relative_to(ROOT)} ({text.count(chr(10))} lines)")
    assert not silent, "over 400 lines without a 'Why one module' line in the docstring: " + ", ".join(silent)
