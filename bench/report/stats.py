"""Paired statistics over per-image results: is a difference between two rows distinguishable from
zero, or within a stated margin of it?

The paper reads +0.03 dB as a gain. Every "with vs without" pair it discusses gets the mean paired
difference with an interval and p at the level of the design (``hierarchical_test``: training seeds
crossed with photographs, tiles and noise draws inside a photograph, so 64 instances from 2
photographs do not count as 64 independent samples), Holm's adjustment over a table's cells, and a
two-one-sided equivalence test (TOST) against a margin. docs/statistics.md has the procedure, why,
and worked examples.

Which pairs: two rows of a study that differ in exactly one attribute (meta-test on/off, MRL vs
RL, MAXL vs random init, heads vs body+head in the inner loop, …; ``CONTRASTS``), plus the
paper's method against every supervised baseline.

Why one module of ~450 lines: the design test, TOST, Holm and the MDE share one record and one
document (docs/statistics.md), and are checked together by one simulation.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats as sps

from bench.data.base import instance_levels
from bench.report.runs import RowInfo

# field, value of A, value of B, label of "A − B" (A is the side the paper argues for)
CONTRASTS: tuple[tuple[str, Any, Any, str], ...] = (
    ("metatest", True, False, "meta-test gain (with − without)"),
    ("aux_loss", "mrl", "rl", "MRL − RL"),
    ("pretrain", "maxl", "none", "MAXL − RI"),
    ("pretrain", "maxl", "joint", "MAXL − joint training"),
    ("pretrain", "joint", "none", "joint training − RI"),
    ("inner_scope", "heads", "all", "heads − body+head"),
    ("pretrain_aux", "mrl", "rl", "L_MaskRec − L_rec"),
    ("grad_loss", True, False, "with − without L_G"),
    ("arch", "ours", "chi", "our architecture − Chi et al."),
)
SET_LABELS = {("finetune.first_order=true",): "second − first-order MTL"}  # a row's preset switch
ALPHA = 0.05
N_BOOT = 10_000


@dataclass(frozen=True)
class Pair:
    label: str
    a: str  # row names: the difference is a − b
    b: str


def find_pairs(rows: Iterable[RowInfo], base: str | None = None) -> list[Pair]:
    """The comparisons a study supports, in the study's row order; with ``base`` (an ablation
    study's first row) also the base against every other row."""
    rows = list(rows)
    keys = {r.name: r.key() for r in rows}
    out: list[Pair] = []
    for i, ra in enumerate(rows):
        for rb in rows[i + 1:]:
            ka, kb = keys[ra.name], keys[rb.name]
            diff = [f for f in ka if ka[f] != kb[f]]
            if "pretrain" in diff and "none" in (ka["pretrain"], kb["pretrain"]):
                diff = [f for f in diff if f not in ("pretrain_aux", "grad_loss")]  # RI has no pre-training loss
            if len(diff) != 1:
                continue
            f = diff[0]
            if f == "set" and not (ka["set"] and kb["set"]):  # a preset switch on one side only
                on, off = (ra, rb) if ka["set"] else (rb, ra)
                label = SET_LABELS.get(tuple(sorted(on.set)), f"without − with {', '.join(on.set)}")
                out.append(Pair(label, off.name, on.name))
                continue
            for field, va, vb, label in CONTRASTS:
                if field != f:
                    continue
                if (ka[f], kb[f]) == (va, vb):
                    out.append(Pair(label, ra.name, rb.name))
                elif (ka[f], kb[f]) == (vb, va):
                    out.append(Pair(label, rb.name, ra.name))
    # the paper's method (default recipe, adapting at test time) against every supervised baseline
    ours = [r for r in rows if r.arch == "ours" and r.stage == "finetune" and r.adapts and r.metatest
            and r.recipe.get("pretrain") == "maxl" and r.recipe.get("aux_loss") == "mrl"
            and r.recipe.get("inner_scope") == "heads"]
    if ours:
        for b in rows:
            if b.supervised:
                out.append(Pair(f"ours − {b.name}", ours[0].name, b.name))
    if base is not None:
        done = {frozenset((p.a, p.b)) for p in out}
        for r in rows:
            if r.name != base and frozenset((base, r.name)) not in done:
                out.append(Pair("base − ablated", base, r.name))
    return out


def paired_test(diff: np.ndarray, n_boot: int = N_BOOT, seed: int = 0) -> dict[str, float]:
    """Mean of per-image differences, its 95 % bootstrap interval, and the Wilcoxon p-value, every
    image counted as independent: a figure's descriptive spread, not a table's inference
    (``hierarchical_test``)."""
    d = np.asarray(diff, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n == 0:
        return {"n": 0, "mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "p": float("nan")}
    rng = np.random.default_rng(seed)
    boot = d[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return {"n": n, "mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "p": wilcoxon_p(d)}


def wilcoxon_p(d: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (scipy's default method); 1.0 when every difference is 0."""
    d = np.asarray(d, dtype=float)
    if not np.any(d != 0):
        return 1.0
    return float(sps.wilcoxon(d).pvalue)


POWER = 0.8


def mde(diffs: Iterable[float], alpha: float = ALPHA, power: float = POWER,
        dist: Literal["t", "normal"] = "t") -> float:
    """Minimum detectable effect of a paired comparison, from the observed per-instance spread.

    The smallest true mean difference a two-sided test at level ``alpha`` detects with probability
    ``power``: ``(q(1 − α/2) + q(power)) · sd(diffs, ddof=1) / sqrt(n)``, with ``q`` the standard
    normal quantile (``dist="normal"``, the textbook approximation) or Student's t with n − 1
    degrees of freedom (``dist="t"``, the usual small-sample correction of the same formula).

    The report uses ``"t"`` (the default): with few instances the normal version promises more than
    the data can deliver (n = 4: 4.16 · sd/√n against 2.80, 49 % more), while from n = 64 on the two
    agree within 2 % (2.845 against 2.802), so the t version is honest at every size. A mean
    difference below the MDE is not evidence of "no effect", only of "not measurable here".
    NaNs are dropped; fewer than two differences give NaN.
    """
    d = np.asarray(list(diffs), dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    if n < 2:
        return float("nan")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"mde: alpha {alpha} and power {power} must lie in (0, 1)")
    if dist == "normal":
        q = sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power)
    elif dist == "t":
        q = sps.t.ppf(1 - alpha / 2, n - 1) + sps.t.ppf(power, n - 1)
    else:
        raise ValueError(f"mde: dist {dist!r} must be 't' or 'normal'")
    return float(q * d.std(ddof=1) / np.sqrt(n))


def min_p(n: int) -> float:
    """The smallest two-sided p an exact Wilcoxon test on ``n`` non-zero differences can give."""
    return min(1.0, 2.0 / 2 ** n) if n > 0 else 1.0


# -- inference at the level of the design (docs/statistics.md) ------------------------------------

MARGINS = {"psnr": 0.02, "psnr_float": 0.02, "ssim": 0.0005, "ssim_gauss": 0.0005}
"""Default equivalence margins (± this much counts as "no effect"): 0.02 dB, 0.0005 SSIM."""

@dataclass(frozen=True)
class Levels:
    """How many units each level of the design has: seeds, photographs, tiles per photograph, draws
    per tile (the largest count where they differ), and instances."""

    seeds: int
    photos: int
    tiles: int
    draws: int
    n: int


def levels_phrase(rec: dict[str, Any]) -> str:
    """``3 seeds × 2 photographs × 16 tiles × 2 draws`` from a record carrying those counts."""
    words = (("seeds", "seed"), ("photos", "photograph"), ("tiles", "tile"), ("draws", "draw"))
    return " × ".join(f"{int(rec[k])} {w}{'' if int(rec[k]) == 1 else 's'}" for k, w in words)


def levels_of(diff: pd.Series) -> Levels:
    """The design behind differences indexed by (seed, image)."""
    parsed = [instance_levels(i) for i in diff.index.get_level_values(1)]
    tiles: dict[str, set[str]] = {}
    draws: dict[tuple[str, str], set[str]] = {}
    for p, t, d in parsed:
        tiles.setdefault(p, set()).add(t)
        draws.setdefault((p, t), set()).add(d)
    return Levels(len(set(diff.index.get_level_values(0))), len(tiles),
                  max((len(v) for v in tiles.values()), default=0), max((len(v) for v in draws.values()), default=0),
                  len(set(diff.index.get_level_values(1))))


def cell_table(diff: pd.Series) -> tuple[np.ndarray, str]:
    """Seeds × units table of mean differences, and the unit: photographs when there are two or more,
    else the one photograph's tiles, else its draws (a tile's draws always stay together in its cell).

    Units missing for some seed are left out, so the table is complete (balanced)."""
    frame = pd.DataFrame({"seed": diff.index.get_level_values(0), "value": diff.to_numpy(dtype=float)})
    parsed = [instance_levels(i) for i in diff.index.get_level_values(1)]
    keys = {"photograph": [p for p, _, _ in parsed], "tile": [f"{p}/{t}" for p, t, _ in parsed],
            "draw": [f"{p}/{t}/{d}" for p, t, d in parsed]}
    unit = next((u for u, k in keys.items() if len(set(k)) >= 2), "draw")
    frame["unit"] = keys[unit]
    table = frame.groupby(["seed", "unit"])["value"].mean().unstack("unit").dropna(axis=1)
    return table.to_numpy(dtype=float), unit


def crossed_variance(table: np.ndarray) -> tuple[float, float]:
    """Variance of the grand mean of a seeds × units table with random seeds, units and their
    interaction (a two-way crossed random-effects model, ANOVA estimates clipped at zero), and its
    Satterthwaite degrees of freedom. One seed or one unit: that level is held fixed."""
    s, u = table.shape
    if s * u < 2:
        return math.nan, math.nan
    if s == 1 or u == 1:
        v = table.ravel()
        return float(v.var(ddof=1) / len(v)), float(len(v) - 1)
    grand = table.mean()
    rows, cols = table.mean(axis=1), table.mean(axis=0)
    ms_s = u * ((rows - grand) ** 2).sum() / (s - 1)
    ms_u = s * ((cols - grand) ** 2).sum() / (u - 1)
    ms_e = ((table - rows[:, None] - cols[None, :] + grand) ** 2).sum() / ((s - 1) * (u - 1))
    # s·u·Var = max(MS_S − MS_E, 0) + max(MS_U − MS_E, 0) + MS_E: a combination of mean squares
    c_s, c_u = float(ms_s > ms_e), float(ms_u > ms_e)
    terms = [(ms_s, s - 1, c_s), (ms_u, u - 1, c_u), (ms_e, (s - 1) * (u - 1), 1.0 - c_s - c_u)]
    total = sum(c * m for m, _, c in terms)
    denom = sum((c * m) ** 2 / df for m, df, c in terms)
    df = total ** 2 / denom if denom > 0 else math.inf
    return float(total / (s * u)), float(max(df, 1.0))


def tost_p(mean: float, se: float, df: float, margin: float) -> float:
    """Two one-sided t tests of |true mean| ≥ margin: the larger of the two p-values (small = equivalent)."""
    if not (np.isfinite(mean) and np.isfinite(se)) or margin <= 0:
        return math.nan
    if se == 0:
        return 0.0 if abs(mean) < margin else 1.0
    lower = sps.t.sf((mean + margin) / se, df)  # H0: mean ≤ −margin
    upper = sps.t.cdf((mean - margin) / se, df)  # H0: mean ≥ +margin
    return float(max(lower, upper))


def hierarchical_test(diff: pd.Series, margin: float = math.nan, alpha: float = ALPHA) -> dict[str, Any]:
    """Mean paired difference over (seed, image) with its interval, p and TOST p at the level of the design.

    Cells are seed × photograph means (see ``cell_table``), the variance is ``crossed_variance``'s,
    the interval and p are Student t with its degrees of freedom, so "interval excludes zero" and
    "p < α" agree. ``margin``: the equivalence margin of ``tost_p`` (NaN: no test)."""
    diff = diff[np.isfinite(diff.to_numpy(dtype=float))]
    lv = levels_of(diff) if len(diff) else Levels(0, 0, 0, 0, 0)
    out: dict[str, Any] = {"seeds": lv.seeds, "photos": lv.photos, "tiles": lv.tiles, "draws": lv.draws,
                           "n": lv.n, "unit": "", "mean": math.nan, "se": math.nan, "df": math.nan,
                           "lo": math.nan, "hi": math.nan, "p": math.nan, "p_tost": math.nan, "margin": margin}
    if not len(diff):
        return out
    table, unit = cell_table(diff)
    mean = float(table.mean()) if table.size else math.nan
    var, df = crossed_variance(table)
    se = math.sqrt(var) if np.isfinite(var) else math.nan
    out.update(unit=unit, mean=mean, se=se, df=df)
    if not np.isfinite(se):
        return out
    if se == 0:
        out.update(lo=mean, hi=mean, p=1.0 if mean == 0 else 0.0)
    else:
        q = sps.t.ppf(1 - alpha / 2, df)
        out.update(lo=mean - q * se, hi=mean + q * se, p=float(2 * sps.t.sf(abs(mean) / se, df)))
    out["p_tost"] = tost_p(mean, se, df, margin)
    return out


def design_mde(se: float, df: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true difference a two-sided t test at ``alpha`` detects with ``power``, given the
    standard error and degrees of freedom of a comparison: ``(t(1 − α/2) + t(power)) · se``."""
    if not (np.isfinite(se) and np.isfinite(df)) or df <= 0:
        return math.nan
    return float((sps.t.ppf(1 - alpha / 2, df) + sps.t.ppf(power, df)) * se)


def holm(pvalues: Iterable[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (NaNs stay NaN and do not count)."""
    p = np.asarray(list(pvalues), dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = len(ok)
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def resolved(res: dict[str, Any], alpha: float = ALPHA) -> bool:
    """The interval excludes zero and p < α."""
    return bool(res["p"] < alpha and (res["lo"] > 0 or res["hi"] < 0))


def equivalent(res: dict[str, Any], alpha: float = ALPHA) -> bool:
    """TOST: the difference lies within ± the margin at level α."""
    return bool(res.get("p_tost", math.nan) < alpha)


def verdict(rec: dict[str, Any], nothing: str = "zero") -> str:
    """One phrase per cell: resolved (and whether it holds after Holm), equivalent to ``nothing``
    within the margin, or neither."""
    m = f"±{rec['margin']:g}"
    if rec.get("resolved") and rec.get("equivalent"):
        return f"resolved, within {m}"
    if rec.get("resolved"):
        return "resolved" if rec.get("resolved_holm") else "resolved (not after Holm)"
    if rec.get("equivalent"):
        return f"equivalent to {nothing} ({m})"
    return "not resolved"


def scope(levels: Iterable[dict[str, Any]]) -> str:
    """What the inference is conditional on, from records carrying ``seeds`` and ``photos``: a level
    with one unit is held fixed (its variation cannot be estimated)."""
    levels = list(levels)
    fixed, partly = [], []
    for key, what in (("seeds", "the one training seed"), ("photos", "the one photograph (its tiles are the units)")):
        ones = [r for r in levels if r[key] == 1]
        if ones and len(ones) == len(levels):
            fixed.append(what)
        elif ones:  # only some rows (e.g. one a run has reached on one seed so far): say which
            rows = ", ".join(sorted({str(r.get("row", "?")) for r in ones}))
            partly.append(f"{what} for {rows}")
    if not fixed:
        out = "over training seeds and photographs (both random)"
        return f"{out}; conditional on {' and '.join(partly)}" if partly else out
    out = "conditional on " + " and ".join(fixed)
    return f"{out}; also on {' and '.join(partly)}" if partly else out


def scope_by(records: Iterable[dict[str, Any]], key: str) -> str:
    """``scope`` of the records, once when every group (``split``, ``scenario``) has the same, else per group."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r[key], []).append(r)
    phrases = {k: scope(v) for k, v in groups.items()}
    if len(set(phrases.values())) <= 1:
        return next(iter(phrases.values()), scope([]))
    return "; ".join(f"{k}: {v}" for k, v in phrases.items())


def flat_bootstrap(diff: np.ndarray, n_boot: int = 2000, seed: int = 0) -> np.ndarray:
    """Percentile intervals of the mean treating every instance as independent, for many data sets at
    once (``diff``: data sets × instances); the procedure ``hierarchical_test`` replaces."""
    d = np.atleast_2d(np.asarray(diff, dtype=float))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.shape[1], size=(n_boot, d.shape[1]))
    boot = d[:, idx].mean(axis=2)
    return np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)], axis=1).T


def hierarchical_bootstrap(values: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean of a seeds × photographs × tiles × draws array, resampling
    seeds, photographs and the tiles within each chosen photograph (a tile's draws kept together):
    the bootstrap the docs compare ``hierarchical_test`` with."""
    v = np.asarray(values, dtype=float)
    s, p, t, _ = v.shape
    rng = np.random.default_rng(seed)
    tiles = v.mean(axis=3)  # seeds × photos × tiles: draws stay together
    bp = rng.integers(0, p, (n_boot, p))
    bt = rng.integers(0, t, (n_boot, p, t))
    per_seed = tiles[:, bp[:, :, None], bt].mean(axis=(2, 3))  # seeds × boot
    bs = rng.integers(0, s, (n_boot, s))
    boot = per_seed[bs, np.arange(n_boot)[:, None]].mean(axis=1)
    lo, hi = np.percentile(boot, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(lo), float(hi)


def per_image(tidy: pd.DataFrame, row: str, seeds: Iterable[int] | None = None) -> pd.DataFrame:
    """(split, metric, image) → value of ``row``, averaged over ``seeds``."""
    t = tidy[tidy["row"] == row]
    if seeds is not None:
        t = t[t["seed"].isin(list(seeds))]
    return t.groupby(["split", "metric", "image"])["value"].mean().sort_index()


def paired_differences(tidy: pd.DataFrame, a: str, b: str, split: str, metric: str) -> pd.Series:
    """(seed, image) → value of row ``a`` − row ``b`` on the seeds and images both have."""
    def one(row: str) -> pd.Series:
        t = tidy[(tidy["row"] == row) & (tidy["split"] == split) & (tidy["metric"] == metric)]
        return t.groupby(["seed", "image"])["value"].mean()
    sa, sb = one(a), one(b)
    common = sa.index.intersection(sb.index)
    return (sa.loc[common] - sb.loc[common]).astype(float)


def with_holm(records: list[dict], alpha: float = ALPHA) -> list[dict]:
    """Adds ``p_holm`` (Holm over the records, one table's cells) and ``resolved_holm`` to each record."""
    for r, ph in zip(records, holm(r["p"] for r in records)):
        r["p_holm"] = ph
        r["resolved_holm"] = bool(r.get("resolved") and ph < alpha)
    return records


COMPARE_COLUMNS = ["comparison", "a", "b", "split", "metric", "seeds", "photos", "tiles", "draws", "n", "unit",
                   "mean", "se", "df", "lo", "hi", "p", "p_holm", "p_tost", "margin", "distinguishable",
                   "resolved_holm", "equivalent", "verdict", "paper_diff"]


def compare(tidy: pd.DataFrame, pairs: list[Pair], metrics: tuple[str, ...] = ("psnr", "ssim"),
            splits: tuple[str, ...] = ("val", "test"), paper: dict | None = None,
            margins: dict[str, float] | None = None) -> pd.DataFrame:
    """One record per pair × split × metric: the design's n per level, the mean difference and its
    interval, p and Holm p (over the whole table) from ``hierarchical_test``, TOST p against the
    metric's margin (``MARGINS`` unless given), and the verdicts."""
    recs = []
    paper = paper or {}
    margins = {**MARGINS, **(margins or {})}
    for pair in pairs:
        for split in splits:
            for metric in metrics:
                diff = paired_differences(tidy, pair.a, pair.b, split, metric)
                if diff.empty:
                    continue
                res = hierarchical_test(diff, margins.get(metric, math.nan))
                key = f"{split}/{metric}"
                pa, pb = paper.get(pair.a, {}).get(key), paper.get(pair.b, {}).get(key)
                recs.append({"comparison": pair.label, "a": pair.a, "b": pair.b, "split": split, "metric": metric,
                             **res, "distinguishable": resolved(res), "resolved": resolved(res),
                             "equivalent": equivalent(res),
                             "paper_diff": (pa - pb) if pa is not None and pb is not None else float("nan")})
    for r in with_holm(recs):
        r["verdict"] = verdict(r)
    return pd.DataFrame(recs, columns=COMPARE_COLUMNS)
