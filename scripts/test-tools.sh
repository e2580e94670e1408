#!/usr/bin/env bash
# Installs the outside tools the browser, LaTeX and dashboard tests drive: headless Chromium, a
# minimal TeX with booktabs (pdflatex) and poppler (pdftotext). Only the test path runs this
# (`bash scripts/setup.sh --test`); the main job never needs them.
#
# Idempotent: when every tool is already there it returns at once without touching apt. It needs
# root or password-less sudo and apt-get (Debian/Ubuntu). When it cannot install, it prints one line
# and fails under CI=true (CI must run those tests); elsewhere it goes on and the tests skip with
# their reason.
set -euo pipefail

# tool -> Debian package (booktabs.sty is in texlive-latex-recommended)
missing=()
command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || missing+=(chromium)
command -v pdflatex >/dev/null 2>&1 || missing+=(texlive-latex-base)
{ command -v kpsewhich >/dev/null 2>&1 && kpsewhich booktabs.sty >/dev/null 2>&1; } || missing+=(texlive-latex-recommended)
command -v pdftotext >/dev/null 2>&1 || missing+=(poppler-utils)
[ ${#missing[@]} -eq 0 ] && exit 0

give_up() {  # one line; CI must run those tests, elsewhere they skip with their reason
    local ci=${CI:-}
    if [ "${ci,,}" = "true" ]; then
        echo "error: setup: cannot install test tools (${missing[*]}): $1" >&2
        exit 1
    fi
    echo "setup: cannot install test tools (${missing[*]}): $1; the tests that need them will skip" >&2
    exit 0
}

command -v apt-get >/dev/null 2>&1 || give_up "no apt-get here; install them with your package manager"
if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    give_up "not root and no password-less sudo; run: sudo apt-get install ${missing[*]}"
fi

echo "setup: installing test tools with apt-get: ${missing[*]} (first time only, a few minutes)" >&2
log=$(mktemp)
export DEBIAN_FRONTEND=noninteractive
if ! { "${as_root[@]}" apt-get update -q \
       && "${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    give_up "apt-get failed ($(grep -E '^(E|W): ' "$log" | tail -n 1 || true); full log: $log)"
fi
rm -f "$log"
