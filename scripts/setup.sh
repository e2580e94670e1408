#!/usr/bin/env bash
# Creates or reuses the virtual environment and installs ttaid-bench into it (editable).
#
# The environment (~6 GB: torch is a CUDA build) is cached outside the checkout, keyed by a hash of
# the dependency list in pyproject.toml, so fresh clones on the same machine reuse it; `.venv` in
# the checkout is a link to it. Override the cache folder with TTAID_VENV_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
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
    pip_quiet "$venv/bin/python" -m pip install -q -e ".[test]"
    touch "$venv/.complete"
else
    # Dependencies are cached; only point the editable install at this checkout (seconds).
    pip_quiet "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
fi
ln -sfn "$venv" .venv
echo "setup: ready ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))" >&2
