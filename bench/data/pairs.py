"""Folders of real noisy/clean pairs, and folders of clean photographs, as a scenario's images.

A researcher's real pairs come in a few common layouts; each is a *rule* that pairs a noisy file with
its clean twin by name:

- ``sidd``: ``NOISY_<id>.<ext>`` with ``GT_<id>.<ext>`` in the same folder (SIDD, any depth);
- ``polyu``: ``<id>_real.<ext>`` (noisy) with ``<id>_mean.<ext>`` (clean) in the same folder (PolyU, CC15);
- ``subfolders``: ``noisy/<name>`` with ``clean/<name>`` (same stem), e.g. a user's own camera;
- ``auto``: ``subfolders`` where both sub-folders exist, else whichever of the other two matches.

Finding pairs reads names and image headers only; pixels are decoded once, when instances are cut,
and kept per file. Every problem is one DataError naming the file and the rule it broke.
"""
from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.core.errors import DataError
from bench.data.io import image_size, read_image

RULES: dict[str, str] = {
    "sidd": "NOISY_<id> pairs with GT_<id> in the same folder",
    "polyu": "<id>_real (noisy) pairs with <id>_mean (clean) in the same folder",
    "subfolders": "noisy/<name> pairs with clean/<name> (same name)",
}
MATCH_RULES = ("auto", *RULES)
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DATA_ROOT_TOKEN = "{data_root}"

_SIDD = re.compile(r"^(GT|NOISY)_(.+)$", re.IGNORECASE)
_POLYU = re.compile(r"^(.+)_(real|mean)$", re.IGNORECASE)


@dataclass(frozen=True)
class PairFiles:
    """A noisy file and its clean twin, named by what they share (``scene/SRGB_010``, ``chair_11``)."""

    name: str
    clean: Path
    noisy: Path


def fill_root(path: str, root: str | os.PathLike[str] | None = None) -> str:
    """``path`` with ``{data_root}`` replaced by the data root (``bench.data.real.data_root(root)``:
    ``root`` — a command's ``--data-root``, a preset's ``data.root`` — else $TTAID_DATA_ROOT, else
    ./datasets)."""
    if DATA_ROOT_TOKEN not in path:
        return path
    from bench.data.real import data_root

    return path.replace(DATA_ROOT_TOKEN, str(data_root(root)))


def resolve(path: str, base: Path | None = None) -> Path:
    """A scenario's folder: ``{data_root}`` replaced by the data root (when the scenario was not
    ``Scenario.rooted`` already), ``~`` expanded, a relative path taken from ``base`` (the folder of
    the YAML file that names it)."""
    p = Path(os.path.expanduser(fill_root(path)))
    return p if p.is_absolute() or base is None else base / p


def _images(folder: Path, recursive: bool = True) -> list[Path]:
    walk = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in walk if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith("."))


def _folder(folder: Path, what: str) -> Path:
    if not folder.is_dir():
        from bench.data.real import data_root

        hint = ""
        if not folder.exists() and folder.resolve().is_relative_to(data_root().resolve()):
            hint = f" under the data root {data_root().resolve()} (`bench data fetch NAME` lays out the real sets there)"
        raise DataError(f"{folder}: {what} folder not found{hint}" if not folder.exists()
                        else f"{folder}: not a folder; expected a folder of {what}")
    return folder


def _by_pattern(folder: Path, rule: str) -> list[PairFiles]:
    pattern, noisy_key, clean_key = (_SIDD, "noisy", "gt") if rule == "sidd" else (_POLYU, "real", "mean")
    found: dict[tuple[Path, str], dict[str, Path]] = {}
    for p in _images(folder):
        m = pattern.match(p.stem)
        if m:
            kind, ident = (m.group(1), m.group(2)) if rule == "sidd" else (m.group(2), m.group(1))
            slot = found.setdefault((p.parent, ident), {})
            if kind.lower() in slot:
                raise DataError(f"{p}: a second {kind} file for {ident!r} beside {slot[kind.lower()].name} "
                                f"(rule {rule}: {RULES[rule]})")
            slot[kind.lower()] = p
    out = []
    for (parent, ident), files in sorted(found.items()):
        for have, lack in ((noisy_key, clean_key), (clean_key, noisy_key)):
            if lack not in files:
                twin = (f"{lack.upper()}_{ident}.*" if rule == "sidd" else f"{ident}_{lack}.*")
                role = "noisy" if have == noisy_key else "clean"
                raise DataError(f"{files[have]}: {role} image without its twin {twin} "
                                f"(rule {rule}: {RULES[rule]})")
        rel = (parent.relative_to(folder) / ident).as_posix()
        out.append(PairFiles(rel, files[clean_key], files[noisy_key]))
    return out


def _by_subfolders(folder: Path) -> list[PairFiles]:
    noisy_dir, clean_dir = folder / "noisy", folder / "clean"
    for d in (noisy_dir, clean_dir):
        if not d.is_dir():
            raise DataError(f"{d}: folder not found (rule subfolders: {RULES['subfolders']})")
    noisy = {p.relative_to(noisy_dir).with_suffix("").as_posix(): p for p in _images(noisy_dir)}
    clean = {p.relative_to(clean_dir).with_suffix("").as_posix(): p for p in _images(clean_dir)}
    for name, p in noisy.items():
        if name not in clean:
            raise DataError(f"{p}: noisy image without a clean image named {name}.* in {clean_dir} "
                            f"(rule subfolders: {RULES['subfolders']})")
    for name, p in clean.items():
        if name not in noisy:
            raise DataError(f"{p}: clean image without a noisy image named {name}.* in {noisy_dir} "
                            f"(rule subfolders: {RULES['subfolders']})")
    return [PairFiles(name, clean[name], noisy[name]) for name in sorted(noisy)]


def rule_for(folder: Path, match: str = "auto") -> str:
    """The rule ``match`` stands for in ``folder`` (``auto`` looks at the names)."""
    if match not in MATCH_RULES:
        raise DataError(f"match: {match!r} is not a rule; expected one of {', '.join(MATCH_RULES)}")
    if match != "auto":
        return match
    if (folder / "noisy").is_dir() and (folder / "clean").is_dir():
        return "subfolders"
    stems = [p.stem for p in _images(folder)]
    hits = [r for r, pat in (("sidd", _SIDD), ("polyu", _POLYU)) if any(pat.match(s) for s in stems)]
    if len(hits) > 1:
        raise DataError(f"{folder}: names fit both the sidd and the polyu rule; set match: sidd or match: polyu")
    if not hits:
        raise DataError(f"{folder}: no noisy/clean pairs found; expected one of the layouts "
                        + "; ".join(f"{r}: {d}" for r, d in RULES.items()))
    return hits[0]


def find_pairs(folder: Path, match: str = "auto") -> tuple[str, list[PairFiles]]:
    """(the rule used, every pair) of ``folder``, by name only."""
    _folder(folder, "noisy/clean pairs")
    rule = rule_for(folder, match)
    pairs = _by_subfolders(folder) if rule == "subfolders" else _by_pattern(folder, rule)
    if not pairs:
        raise DataError(f"{folder}: no pairs (rule {rule}: {RULES[rule]})")
    return rule, pairs


def pair_size(pair: PairFiles, rule: str) -> tuple[int, int]:
    """(H, W) from the headers; a DataError where the twins differ in size."""
    clean, noisy = image_size(pair.clean), image_size(pair.noisy)
    if tuple(clean[:2]) != tuple(noisy[:2]):
        raise DataError(f"{pair.noisy}: {noisy[0]}x{noisy[1]}, its clean twin {pair.clean.name} is "
                        f"{clean[0]}x{clean[1]} (rule {rule}: a pair's images have the same size)")
    return int(clean[0]), int(clean[1])


def find_photos(folder: Path) -> list[tuple[str, Path]]:
    """(name, file) of every clean photograph in ``folder`` (recursive; names are paths without suffix)."""
    _folder(folder, "clean photographs")
    photos = [(p.relative_to(folder).with_suffix("").as_posix(), p) for p in _images(folder)]
    if not photos:
        raise DataError(f"{folder}: no image files ({', '.join(SUFFIXES)}); expected clean photographs")
    names = [n for n, _ in photos]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{folder}: {twice[0]!r} exists with two suffixes; names must be unique without suffix")
    return photos


def split(names: Sequence[str], val: Sequence[str] | None, test: Sequence[str] | None, val_fraction: float,
          seed: int, where: Path) -> tuple[list[str], list[str]]:
    """Disjoint (validation, test) image names: the ones named, else a seeded split by image.

    Naming only one side gives the other every remaining image. A DataError where a name is unknown,
    named twice, or a side would be empty."""
    known = set(names)
    for side, chosen in (("val", val), ("test", test)):
        for n in chosen or ():
            if n not in known:
                raise DataError(f"{where}: {side}: no image {n!r} (known: {', '.join(sorted(known)[:6])}"
                                f"{', …' if len(known) > 6 else ''})")
    if val and test:
        both = sorted(set(val) & set(test))
        if both:
            raise DataError(f"{where}: {both[0]!r} is in both val and test; validation and test images must differ")
        v, t = list(val), list(test)
    elif val:
        v, t = list(val), [n for n in sorted(names) if n not in set(val)]
    elif test:
        t, v = list(test), [n for n in sorted(names) if n not in set(test)]
    else:
        order = [sorted(names)[i] for i in np.random.default_rng(seed).permutation(len(names))]
        k = min(max(1, round(len(order) * val_fraction)), len(order) - 1)
        v, t = sorted(order[:k]), sorted(order[k:])
    if len(names) < 2 or not v or not t:
        raise DataError(f"{where}: {len(names)} image(s); a scenario needs at least 2 — one or more for "
                        "validation and, disjoint from them, one or more for test")
    return v, t


@functools.lru_cache(maxsize=4)  # full-size photographs are large; instances keep only their tiles
def _decoded(path: str, stamp: tuple[int, int]) -> np.ndarray:
    return read_image(path)


def decode(path: Path) -> np.ndarray:
    """The image as float32 (H, W, 3), decoded once per file version (path, size, mtime)."""
    st = path.stat() if path.exists() else None
    return _decoded(str(path), (st.st_size, st.st_mtime_ns) if st else (0, 0))


__all__ = ["MATCH_RULES", "RULES", "PairFiles", "decode", "find_pairs", "find_photos", "pair_size", "resolve",
           "rule_for", "split"]
