"""The TTA table: a query over the same tidy per-image rows as every other table.

Rows are a TTA study's adaptation rows, columns its scenarios. Each cell is the gain of a row over
the ``none`` row of the same method on the same instances (float PSNR, and SSIM): per seed the mean
over instances of the paired difference, then mean ± std (ddof=1) over seeds; the paired 95 %
bootstrap interval and the Wilcoxon p over instances (each instance's difference averaged over the
seeds), the minimum detectable effect (``stats.mde``) and n; the captured fraction = the gain / the
oracle's gain (same method and scenario, rows that move the oracle's parameters; only where the oracle's gain is positive and resolved); and the cost, mean adaptation seconds per instance and
peak MiB. A gain whose interval covers zero is "not resolved".
"""
from __future__ import annotations

import math

import pandas as pd

from bench.adaptation.registry import get as get_adaptation
from bench.report.runs import StudyRuns
from bench.report.stats import mde, paired_test

GAIN_METRICS = (("psnr_float", "Δ PSNR (float, dB)", 3), ("ssim", "Δ SSIM", 4))
NONE, ORACLE = "none", "oracle"


def row_adapts(spec: dict) -> dict[str, tuple[str, str]]:
    """Row name → (method, adaptation) of a TTA study spec (``adapt`` unset = ``none``)."""
    return {r["name"]: (r["method"], r.get("adapt") or NONE) for r in spec.get("rows", [])}


def scenarios_of(study: StudyRuns) -> list[str]:
    return list(study.spec.get("scenarios") or [])


def _by_row(tidy: pd.DataFrame, row: str, split: str, scenario: str, metric: str) -> pd.Series:
    """(seed, image) → value of one row on one split, scenario and metric."""
    t = tidy[(tidy["row"] == row) & (tidy["split"] == split) & (tidy["scenario"] == scenario)
             & (tidy["metric"] == metric)]
    return t.groupby(["seed", "image"])["value"].mean()


def paired_gain(tidy: pd.DataFrame, row: str, base: str, split: str, scenario: str, metric: str) -> dict:
    """The gain of ``row`` over ``base`` on the instances and seeds both have (see the module docstring)."""
    a, b = _by_row(tidy, row, split, scenario, metric), _by_row(tidy, base, split, scenario, metric)
    common = a.index.intersection(b.index)
    diff = (a.loc[common] - b.loc[common]).astype(float)
    if diff.empty:
        return {"seeds": 0, "n": 0, "gain": math.nan, "gain_sd": math.nan, "lo": math.nan, "hi": math.nan,
                "p": math.nan, "mde": math.nan, "resolved": False}
    per_seed = diff.groupby(level="seed").mean()
    per_instance = diff.groupby(level="image").mean().to_numpy()
    res = paired_test(per_instance)
    return {"seeds": len(per_seed), "n": res["n"], "gain": float(per_seed.mean()),
            "gain_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
            "lo": res["lo"], "hi": res["hi"], "p": res["p"], "mde": mde(per_instance),
            "resolved": bool(res["lo"] > 0 or res["hi"] < 0)}


def cost(tidy: pd.DataFrame, row: str, split: str, scenario: str) -> dict:
    """Mean adaptation seconds per instance and the largest peak MiB of one row on one scenario."""
    t = tidy[(tidy["row"] == row) & (tidy["split"] == split) & (tidy["scenario"] == scenario)]
    sec = t.loc[t["metric"] == "seconds", "value"].dropna()
    mib = t.loc[t["metric"] == "peak_mib", "value"].dropna()
    return {"seconds": float(sec.mean()) if len(sec) else math.nan, "peak_mib": float(mib.max()) if len(mib) else math.nan}


def same_parameters(adapt: str, other: str) -> bool:
    """Whether two adaptation entries move the same parameters (an oracle bounds only those)."""
    return get_adaptation(adapt).moves == get_adaptation(other).moves


def references(spec: dict, present: set[str] | None = None) -> dict[str, str]:
    """Method → its reference row: the first ``none`` row of that method (a later ``none`` row of the
    same method, e.g. one trained with other ``set:`` values, is a row of the table compared to it)."""
    out: dict[str, str] = {}
    for row, (method, adapt) in row_adapts(spec).items():
        if adapt == NONE and (present is None or row in present):
            out.setdefault(method, row)
    return out


def tta_records(tidy: pd.DataFrame, spec: dict, split: str = "test") -> list[dict]:
    """One record per row × scenario × gain metric, against its method's reference row (see
    ``references``; rows whose method has none are left out; the references are not rows of the table)."""
    adapts = row_adapts(spec)
    present = set(tidy["row"].unique())
    base = references(spec, present)
    oracle = {m: r for r, (m, a) in adapts.items() if a == ORACLE and r in present}
    out = []
    for row, (method, adapt) in adapts.items():
        if row not in present or method not in base or row == base[method]:
            continue
        for scenario in spec.get("scenarios") or []:
            c = cost(tidy, row, split, scenario)
            for metric, _, _ in GAIN_METRICS:
                g = paired_gain(tidy, row, base[method], split, scenario, metric)
                captured = math.nan
                # Only rows that move what the oracle moves (the heads) have it as their bound; and
                # only against an oracle gain that is resolved and positive.
                if method in oracle and row != oracle[method] and same_parameters(adapt, ORACLE):
                    og = paired_gain(tidy, oracle[method], base[method], split, scenario, metric)
                    captured = g["gain"] / og["gain"] if og["resolved"] and og["gain"] > 0 else math.nan
                out.append({"row": row, "method": method, "adapt": adapt, "reference": base[method],
                            "scenario": scenario, "split": split, "metric": metric, **g, "captured": captured, **c})
    return out


def reference_levels(tidy: pd.DataFrame, spec: dict, split: str = "test") -> list[dict]:
    """Each ``none`` row's absolute float PSNR per scenario (mean over seeds of the mean over instances)."""
    out = []
    refs = set(references(spec).values())
    for row, (method, adapt) in row_adapts(spec).items():
        if row not in refs:
            continue
        for scenario in spec.get("scenarios") or []:
            v = _by_row(tidy, row, split, scenario, "psnr_float")
            if len(v):
                out.append({"row": row, "method": method, "scenario": scenario,
                            "psnr_float": float(v.groupby(level="seed").mean().mean())})
    return out


def chosen_values(study: StudyRuns) -> list[str]:
    """One line per row whose values were chosen on validation (``select:``): the choice of each seed."""
    picks: dict[str, list[str]] = {}
    for run in study.runs:
        p = run.run.data.params
        if "adapt_select" in p and "adapt_lr" in p:
            picks.setdefault(run.row, []).append(f"seed {run.seed}: {p.get('adapt_optimizer')} lr "
                                                 f"{float(p['adapt_lr']):g}, K {p.get('adapt_steps')}")
    return [f"{row}: {'; '.join(v)}" for row, v in picks.items()]


def report_split(tidy: pd.DataFrame) -> str:
    """The split a TTA table reports: test, or val for a study that scored validation only
    (``--set tta.splits=[val]``, e.g. the quick-choices study)."""
    splits = set(tidy["split"].unique()) if "split" in tidy else set()
    return "test" if "test" in splits or not splits else "val"


def study_tta(study: StudyRuns, split: str | None = None) -> list[dict]:
    """``tta_records`` of a finished TTA study (empty when the study has no scenarios)."""
    if not scenarios_of(study):
        return []
    return tta_records(study.tidy, study.spec, split or report_split(study.tidy))


__all__ = ["GAIN_METRICS", "chosen_values", "references", "report_split", "row_adapts", "scenarios_of", "paired_gain", "cost", "tta_records", "reference_levels",
           "study_tta"]
