"""The oldest Python the project claims (pyproject's requires-python) is one it runs on (issue 30).

- Every module parses under that version's grammar and imports no standard-library module or
  name added after it (a short explicit list of the likely ones; the grammar check is the ast
  module's own ``feature_version``, which a newer parser applies only in part, so where a real
  interpreter of that version is on the machine the files are compiled with it too).
- ``scripts/setup.sh`` refuses an older interpreter with one line and exit status 1 before it
  builds anything, and ``--check`` passes on this interpreter (and on a real floor interpreter).
- The cached environment's key follows the dependency text and constraints/torch.txt, not comments.
- pyproject keeps a torch range that holds the exact pair constraints/torch.txt pins.

setup.sh runs on a copy of its inputs in a temporary folder, with the cache there too, so nothing
is built and the checkout is not touched; each run takes a fraction of a second.
"""
from __future__ import annotations

import ast
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETUP_INPUTS = ("scripts/setup.sh", "pyproject.toml", "constraints/torch.txt")
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def _floor() -> tuple[int, int]:
    m = re.search(r'^requires-python\s*=\s*">=\s*(\d+)\.(\d+)"', PYPROJECT, re.M)
    assert m, "pyproject.toml must say requires-python = \">=X.Y\" (scripts/setup.sh reads it)"
    return int(m[1]), int(m[2])


FLOOR = _floor()
FLOOR_TEXT = "%d.%d" % FLOOR

# Standard-library modules and names added after 3.10 that code is likely to reach for.
NEWER_MODULES = {"tomllib": (3, 11), "wsgiref.types": (3, 11)}
NEWER_NAMES = {
    "typing": {(3, 11): {"Self", "Never", "LiteralString", "NotRequired", "Required", "TypeVarTuple", "Unpack",
                         "assert_never", "assert_type", "reveal_type", "dataclass_transform", "get_overloads",
                         "clear_overloads"},
               (3, 12): {"override", "TypeAliasType"}, (3, 13): {"ReadOnly", "TypeIs", "NoDefault"}},
    "enum": {(3, 11): {"StrEnum", "ReprEnum", "verify", "member", "nonmember", "global_enum", "EnumCheck",
                       "FlagBoundary"}},
    "datetime": {(3, 11): {"UTC"}},
    "hashlib": {(3, 11): {"file_digest"}},
    "contextlib": {(3, 11): {"chdir"}},
    "asyncio": {(3, 11): {"TaskGroup", "timeout", "Runner"}},
    "operator": {(3, 11): {"call"}},
    "math": {(3, 11): {"cbrt", "exp2"}, (3, 12): {"sumprod"}},
    "itertools": {(3, 12): {"batched"}},
    "os": {(3, 13): {"process_cpu_count"}},
    "copy": {(3, 13): {"replace"}},
    "warnings": {(3, 13): {"deprecated"}},
}


def _sources() -> list[Path]:
    return sorted(p for d in ("bench", "methods", "tests") for p in (ROOT / d).rglob("*.py")
                  if "__pycache__" not in p.parts)


def newer_stdlib_uses(tree: ast.AST, floor: tuple[int, int]) -> list[str]:
    """``module`` / ``module.name`` (line, version) uses in ``tree`` newer than ``floor``."""
    def newer(module: str, name: str | None) -> tuple[int, int] | None:
        if name is None:
            v = NEWER_MODULES.get(module)
            return v if v and v > floor else None
        return next((v for v, names in NEWER_NAMES.get(module, {}).items() if v > floor and name in names), None)

    found, bound = [], {}  # bound: local name -> module, from `import module [as name]`
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                bound[a.asname or a.name] = a.name
                if v := newer(a.name, None):
                    found.append(f"line {node.lineno}: import {a.name} (Python {v[0]}.{v[1]})")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if v := newer(node.module, None):
                found.append(f"line {node.lineno}: from {node.module} (Python {v[0]}.{v[1]})")
            for a in node.names:
                if (v := newer(node.module, a.name)) or (v := newer(f"{node.module}.{a.name}", None)):
                    found.append(f"line {node.lineno}: {node.module}.{a.name} (Python {v[0]}.{v[1]})")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
            module = bound[node.value.id]
            if v := newer(module, node.attr):
                found.append(f"line {node.lineno}: {module}.{node.attr} (Python {v[0]}.{v[1]})")
    return found


def test_every_module_parses_under_the_oldest_python_pyproject_claims():
    bad = []
    for path in _sources():
        try:
            ast.parse(path.read_text(encoding="utf-8"), str(path), feature_version=FLOOR)
        except SyntaxError as e:
            bad.append(f"{path.relative_to(ROOT)}:{e.lineno}: {e.msg}")
    assert not bad, f"syntax Python {FLOOR_TEXT} (requires-python) cannot read:\n" + "\n".join(bad)


def test_no_module_uses_a_standard_library_module_or_name_newer_than_the_floor():
    bad = []
    for path in _sources():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        except SyntaxError:
            continue  # the test above reports it
        bad += [f"{path.relative_to(ROOT)} {use}" for use in newer_stdlib_uses(tree, FLOOR)]
    assert not bad, f"newer than Python {FLOOR_TEXT} (requires-python):\n" + "\n".join(bad)


def test_the_newer_stdlib_check_finds_what_it_lists():
    src = ("import tomllib\nimport datetime as dt\nfrom typing import Self, Optional\nfrom enum import StrEnum\n"
           "import itertools\nx = dt.UTC\ny = itertools.batched\nz = itertools.pairwise\n")
    found = newer_stdlib_uses(ast.parse(src), (3, 10))
    assert [f.split(" (")[0] for f in found] == [
        "line 1: import tomllib", "line 3: typing.Self", "line 4: enum.StrEnum", "line 6: datetime.UTC",
        "line 7: itertools.batched"]
    assert newer_stdlib_uses(ast.parse(src), (3, 11)) == ["line 7: itertools.batched (Python 3.12)"]


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d %d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return tuple(int(x) for x in out.stdout.split()) if out.returncode == 0 and out.stdout.strip() else None


def _pythons() -> dict[tuple[int, int], str]:
    """Real interpreters on this machine (PATH, pyenv), one per minor version."""
    found = {}
    names = [shutil.which(f"python{major}.{minor}") for major, minor in ((2, 7), *((3, m) for m in range(6, 15)))]
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for python in [*filter(None, names), *sorted(glob.glob(os.path.join(pyenv, "versions", "*", "bin", "python")))]:
        if (v := _version_of(python)) and v not in found:
            found[v] = python
    return found


PYTHONS = _pythons()


def test_every_module_compiles_with_a_real_interpreter_of_the_floor_version():
    python = PYTHONS.get(FLOOR)
    if python is None:
        pytest.skip(f"no Python {FLOOR_TEXT} on this machine (pyenv or python{FLOOR_TEXT} on PATH)")
    code = ("import sys\nbad = []\nfor p in sys.argv[1:]:\n    try:\n        compile(open(p, encoding='utf-8').read(), p, "
            "'exec')\n    except SyntaxError as e:\n        bad.append('%s:%s: %s' % (p, e.lineno, e.msg))\n"
            "print('\\n'.join(bad))\nsys.exit(1 if bad else 0)\n")
    out = subprocess.run([python, "-c", code, *map(str, _sources())], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, f"Python {FLOOR_TEXT} ({python}) cannot compile:\n{out.stdout}{out.stderr}"


@pytest.fixture
def setup_copy(tmp_path):
    """A folder with setup.sh's inputs, and a runner ``(args, python) -> CompletedProcess``."""
    for name in SETUP_INPUTS:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    cache = tmp_path / "cache"

    def run(*args: str, python: str = sys.executable) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHON": python, "TTAID_VENV_CACHE": str(cache)}
        return subprocess.run(["bash", str(tmp_path / "scripts" / "setup.sh"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
    run.root, run.cache = tmp_path, cache
    return run


def _fake_python(folder: Path, version: str | None) -> Path:
    """A stand-in interpreter that reports ``version`` to any command (or fails), and logs each call."""
    fake = folder / "fake-python"
    body = f'echo "{version}"' if version else "echo 'fake-python: broken' >&2; exit 127"
    fake.write_text(f'#!/bin/sh\necho "$@" >> "{folder}/fake-python.calls"\n{body}\n')
    fake.chmod(0o755)
    return fake


def _assert_refused_before_building(run, out, pattern: str):
    assert out.returncode == 1, out
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and re.fullmatch(pattern, lines[0]), out.stderr
    assert "Traceback" not in out.stderr
    assert not run.cache.exists() and not (run.root / ".venv").exists(), "setup built something after refusing"


@pytest.mark.parametrize("args", [(), ("--test",), ("--check",)])
def test_setup_refuses_an_interpreter_below_the_floor_with_one_line(setup_copy, args):
    major, minor = FLOOR
    old = f"{major}.{minor - 1}.18" if minor else f"{major - 1}.99.0"
    fake = _fake_python(setup_copy.root, old)
    out = setup_copy(*args, python=str(fake))
    _assert_refused_before_building(
        setup_copy, out, rf"setup: Python {re.escape(old)} found \({re.escape(str(fake))}\); "
                         rf"ttaid-bench needs Python >= {re.escape(FLOOR_TEXT)} \(set PYTHON=\S+\)")
    assert len((setup_copy.root / "fake-python.calls").read_text().splitlines()) == 1  # only the version probe


def test_setup_refuses_a_missing_or_broken_interpreter_with_one_line(setup_copy):
    for python in (str(setup_copy.root / "no-such-python"), str(_fake_python(setup_copy.root, None))):
        out = setup_copy(python=python)
        _assert_refused_before_building(setup_copy, out, rf"setup: no working Python at '{re.escape(python)}'; "
                                                         rf"ttaid-bench needs Python >= {re.escape(FLOOR_TEXT)} .*")


def test_setup_refuses_real_older_interpreters(setup_copy):
    older = sorted(v for v in PYTHONS if v < FLOOR)[-2:]  # the nearest two: a 2.7 probe must work too
    older += [v for v in PYTHONS if v[0] == 2 and v not in older][:1]
    if not older:
        pytest.skip(f"no Python older than {FLOOR_TEXT} on this machine")
    for v in older:
        out = setup_copy("--check", python=PYTHONS[v])
        _assert_refused_before_building(setup_copy, out, rf"setup: Python {v[0]}\.{v[1]}\.\d+ found .*; "
                                                         rf"ttaid-bench needs Python >= {re.escape(FLOOR_TEXT)} .*")


def _key(run, python: str = sys.executable) -> str:
    out = run("--check", python=python)
    assert out.returncode == 0, out
    m = re.fullmatch(r"setup: checks passed: Python \S+ \(.*\), environment key ([0-9a-f]{12})\n", out.stderr)
    assert m and out.stdout == "", out.stderr
    assert not run.cache.exists() and not (run.root / ".venv").exists(), "--check built something"
    return m[1]


def test_setup_check_passes_on_a_real_interpreter_of_the_floor_version(setup_copy):
    """The check and the key run on the floor's own interpreter (tomllib is not there before 3.11)."""
    if FLOOR not in PYTHONS:
        pytest.skip(f"no Python {FLOOR_TEXT} on this machine")
    _key(setup_copy, PYTHONS[FLOOR])


def test_the_environment_key_follows_the_dependencies_and_constraints_not_comments(setup_copy):
    pyproject, constraints = setup_copy.root / "pyproject.toml", setup_copy.root / "constraints" / "torch.txt"
    key = _key(setup_copy)

    def edited(path: Path, old: str, new: str) -> str:
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        try:
            return _key(setup_copy)
        finally:
            path.write_text(text, encoding="utf-8")

    assert edited(pyproject, "dependencies = [\n", "dependencies = [\n    # a new comment\n\n") == key
    assert edited(pyproject, '"bench.cli:main"', '"bench.cli:other"') == key  # [project.scripts]
    assert edited(pyproject, '"numpy>=1.26"', '"numpy>=2"') != key
    assert edited(pyproject, 'dashboard = ["optuna-dashboard', 'dashboard = ["optuna-dashboard>0.20", "x') != key
    assert edited(constraints, "torch==2.", "torch==2.0") != key
    assert edited(constraints, "\ntorch", "\n# a comment\ntorch") == key


def test_pyproject_keeps_a_torch_range_holding_the_pinned_pair():
    """An exact pin in pyproject would make `pip install -e .` replace an existing env's torch."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    def reqs(lines):
        return [Requirement(s) for s in lines]
    deps = reqs(re.findall(r'^\s*"([^"]+)",?\s*(?:#.*)?$',
                           PYPROJECT.split("dependencies = [", 1)[1].split("\n]", 1)[0], re.M))
    pins = reqs(line for line in (ROOT / "constraints" / "torch.txt").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#"))
    ranges = {r.name: r for r in deps if r.name in ("torch", "torchvision")}
    assert set(ranges) == {"torch", "torchvision"}
    assert not any(s.operator == "==" for r in ranges.values() for s in r.specifier), ranges
    assert {p.name for p in pins} == {"torch", "torchvision"}
    for pin in pins:
        (spec,) = pin.specifier
        assert spec.operator == "==" and Version(spec.version) in ranges[pin.name].specifier, (pin, ranges[pin.name])
