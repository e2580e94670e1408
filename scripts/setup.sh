#!/usr/bin/env bash
# Creates or reuses the dependencies and installs this checkout of ttaid-bench (editable) in .venv.
#
# The dependencies (~6 GB: torch is a CUDA build) live in one environment cached outside the
# checkout, keyed by a hash of the dependency list in pyproject.toml, so fresh clones on the same
# machine reuse it. Each checkout gets its own small `.venv` that sees those packages through a
# .pth file and holds only its own editable install, so two clones never point `bench` at each
# other's code. Override the cache folder with TTAID_VENV_CACHE.
#
# `--test` (the README's test command) also installs the outside tools the browser, LaTeX and
# dashboard tests need (scripts/test-tools.sh); the main job never asks for them.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
    "") test_tools=0 ;;
    --test) test_tools=1 ;;
    *) echo "error: setup.sh: unknown option '$1' (expected nothing or --test)" >&2; exit 2 ;;
esac
py=${PYTHON:-python3}
key=$("$py" - <<'PY'
import hashlib, json, tomllib
p = tomllib.load(open("pyproject.toml", "rb"))["project"]
deps = {"d": p["dependencies"], "o": p.get("optional-dependencies", {}), "py": __import__("sys").version}
print(hashlib.sha256(json.dumps(deps, sort_keys=True).encode()).hexdigest()[:12])
PY
)
# This machine's pip config names index folders that do not exist for every package; drop that noise.
pip_quiet() { "$@" 2> >(grep -v -e "is ignored: it is neither a file nor a directory" -e "^ *$" >&2); }
cache=${TTAID_VENV_CACHE:-$HOME/.cache/ttaid-bench}
venv="$cache/venv-$key"
mkdir -p "$cache"
exec 9>"$cache/.lock-$key"
flock 9  # two clones setting up at once must not build the same venv twice
if [ ! -f "$venv/.complete" ]; then
    echo "setup: building $venv (first time only, a few minutes)" >&2
    rm -rf "$venv"
    "$py" -m venv "$venv"
    pip_quiet "$venv/bin/python" -m pip install -q --upgrade "pip>=24" "setuptools>=64" wheel
    pip_quiet "$venv/bin/python" -m pip install -q ".[test]"
    # Only the dependencies stay; each checkout installs itself in its own .venv below.
    "$venv/bin/python" -m pip uninstall -q -y ttaid-bench
    touch "$venv/.complete"
fi
exec 9>&-
[ -L .venv ] && rm .venv  # older set-ups linked .venv to the shared environment
[ -x .venv/bin/python ] || "$py" -m venv --without-pip .venv
purelib() { "$1" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
purelib "$venv/bin/python" > "$(purelib .venv/bin/python)/_ttaid_shared.pth"
# The shared environment's own commands a user runs from the checkout (README: the Optuna dashboard).
for tool in optuna-dashboard; do
    if [ -x "$venv/bin/$tool" ]; then ln -sf "$venv/bin/$tool" ".venv/bin/$tool"; fi
done
if [ ! -x .venv/bin/bench ]; then  # pip's output is noise unless it fails
    log=$(mktemp)
    .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
    rm -f "$log"
fi
if [ "$test_tools" = 1 ]; then bash scripts/test-tools.sh; fi
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))" >&2
