#!/usr/bin/env bash
# Creates or reuses the dependencies and installs this checkout of ttaid-bench (editable) in .venv.
#
# The dependencies (~6 GB: torch is a CUDA build) live in one environment cached outside the
# checkout, keyed by a hash of the dependency list in pyproject.toml and constraints/torch.txt, so
# fresh clones on the same machine reuse it. Each checkout gets its own small `.venv` that sees
# those packages through a .pth file and holds only its own editable install, so two clones never
# point `bench` at each other's code. Override the cache folder with TTAID_VENV_CACHE.
#
# The exact torch/torchvision pair comes from constraints/torch.txt (`pip install -c`): pyproject.toml
# holds only a range, so that `pip install -e .` into an existing environment keeps its torch.
#
# PYTHON picks the interpreter (default python3); it must meet pyproject's requires-python.
# `--test` (the README's test command) also installs the outside tools the browser, LaTeX and
# dashboard tests need (scripts/test-tools.sh); the main job never asks for them. `--check` only
# checks the interpreter and prints the environment key, building nothing. A failed check is one
# line on stderr and exit status 1.
set -euo pipefail
cd "$(dirname "$0")/.."
test_tools=0
check_only=0
case "${1:-}" in
    "") ;;
    --test) test_tools=1 ;;
    --check) check_only=1 ;;
    *) echo "error: setup.sh: unknown option '$1' (expected nothing, --test or --check)" >&2; exit 2 ;;
esac
fail() { echo "setup: $*" >&2; exit 1; }
py=${PYTHON:-python3}
floor=$(sed -n 's/^requires-python *= *">= *\([0-9][0-9]*\.[0-9][0-9]*\)".*/\1/p' pyproject.toml)
[ -n "$floor" ] || fail "cannot read requires-python = \">=X.Y\" from pyproject.toml"
# This probe runs on any Python, 2.7 included; anything else prints no version.
found=$("$py" -c 'import sys; print("%d.%d.%d" % tuple(sys.version_info[:3]))' 2>/dev/null) || found=
[[ $found =~ ^([0-9]+)\.([0-9]+)\.[0-9]+$ ]] ||
    fail "no working Python at '$py'; ttaid-bench needs Python >= $floor (set PYTHON=/path/to/python3)"
major=${BASH_REMATCH[1]} minor=${BASH_REMATCH[2]}
if (( major < ${floor%%.*} || (major == ${floor%%.*} && minor < ${floor#*.}) )); then
    fail "Python $found found ($py); ttaid-bench needs Python >= $floor (set PYTHON=/path/to/python3.X)"
fi
"$py" -c 'import ensurepip, venv' 2>/dev/null ||
    fail "Python $found ($py) cannot make virtual environments (Debian/Ubuntu: apt-get install python$major.$minor-venv)"
# The key hashes the dependency text of pyproject.toml (requires-python, dependencies, the optional
# dependencies; comments and blank lines left out), constraints/torch.txt and the interpreter's
# version. Read as text: tomllib is Python >= 3.11 only.
key=$("$py" - <<'PY'
import hashlib, json, sys


def clean(line):
    """The line without its comment, stripped, and its change in [ ] depth outside quotes."""
    quote, depth = None, 0
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "#":
            return line[:i].strip(), depth
        else:
            depth += (c == "[") - (c == "]")
    return line.strip(), depth


table, depth, project = None, 0, []
with open("pyproject.toml", encoding="utf-8") as f:
    for raw in f:
        line, change = clean(raw)
        if not line:
            continue
        if depth == 0 and line.startswith("["):
            table = line.replace(" ", "")
            continue
        name = line.split("=")[0].strip().strip("\"'") if depth == 0 else None
        if table == "[project.optional-dependencies]" or (
                table == "[project]" and (depth > 0 or name in ("dependencies", "requires-python"))):
            project.append(line)
        depth += change
with open("constraints/torch.txt", encoding="utf-8") as f:
    constraints = [line for line in (clean(raw)[0] for raw in f) if line]
deps = {"project": project, "constraints": constraints, "py": sys.version}
print(hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()[:12])
PY
)
if [ "$check_only" = 1 ]; then
    echo "setup: checks passed: Python $found ($py), environment key $key" >&2
    exit 0
fi
# This machine's pip config names index folders that do not exist for every package; drop that noise.
pip_quiet() { "$@" 2> >(grep -v -e "is ignored: it is neither a file nor a directory" -e "^ *$" >&2); }
cache=${TTAID_VENV_CACHE:-$HOME/.cache/ttaid-bench}
venv="$cache/venv-$key"
mkdir -p "$cache"
exec 9>"$cache/.lock-$key"
# Two clones setting up at once must not build the same venv twice (flock: util-linux, not on macOS).
if command -v flock >/dev/null; then flock 9; fi
if [ ! -f "$venv/.complete" ]; then
    echo "setup: building $venv (first time only, a few minutes)" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    pip_quiet "$venv/bin/python" -m pip install -q --upgrade "pip>=24" "setuptools>=64" wheel
    pip_quiet "$venv/bin/python" -m pip install -q -c constraints/torch.txt ".[test]"
    # Only the dependencies stay; each checkout installs itself in its own .venv below.
    "$venv/bin/python" -m pip uninstall -q -y ttaid-bench
    touch "$venv/.complete"
fi
exec 9>&-
[ -L .venv ] && rm .venv  # older set-ups linked .venv to the shared environment
# A .venv left by another interpreter version cannot read this one's packages: make it anew.
if [ -x .venv/bin/python ] && [ "$(.venv/bin/python -c 'import sys; print("%d.%d.%d" % tuple(sys.version_info[:3]))' 2>/dev/null)" != "$found" ]; then
    rm -rf .venv
fi
[ -x .venv/bin/python ] || "$py" -m venv --without-pip .venv
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
purelib "$venv/bin/python" > "$(purelib .venv/bin/python)/_ttaid_shared.pth"
# The shared environment's own commands a user runs from the checkout (README: the Optuna dashboard, mkdocs).
for tool in optuna-dashboard mkdocs; do
    if [ -x "$venv/bin/$tool" ]; then ln -sf "$venv/bin/$tool" ".venv/bin/$tool"; fi
done
if [ ! -x .venv/bin/bench ]; then  # pip's output is noise unless it fails
    log=$(mktemp)
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    rm -f "$log"
fi
if [ "$test_tools" = 1 ]; then bash scripts/test-tools.sh; fi
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))" >&2
