#!/usr/bin/env bash
# Regenerate README's figures (docs/img/*.png) from the finished quick runs in a bench home:
#   bash scripts/readme-figures.sh [HOME]        (HOME defaults to .bench)
# after `bench run table2 --seeds 0,1,2` and `bench run tta --seeds 0,1,2` (quick preset). The
# figures come from `bench report` (nothing is trained); the camera-profile preview needs no runs.
set -euo pipefail
cd "$(dirname "$0")/.."
home=${1:-.bench}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/bench report table2 --preset quick --home "$home" --out "$tmp" --markdown --no-log
.venv/bin/bench report tta --preset quick --home "$home" --out "$tmp" --markdown --no-log
.venv/bin/bench data preview profiles --out "$tmp/preview-profiles.png"
cp "$tmp"/figures/table2/{fig3_crops,fig5_6_masks,fig7_steps,curves,metatest_gain}.png docs/img/
cp "$tmp"/figures/tta/{tta_steps,tta_alignment}.png docs/img/
cp "$tmp/preview-profiles.png" docs/img/
echo "docs/img: figures of table2 and tta (quick preset) from $home" >&2
