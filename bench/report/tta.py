"""The TTA table: a query over the same tidy per-image rows as every other table.

Rows are a TTA study's adaptation rows, columns its scenarios. Each cell is the gain of a row over
the ``none`` row of the same method on the same instances (float PSNR, and SSIM): per seed the mean
over instances of the paired difference, then mean ± std (ddof=1) over seeds. Its 95 % interval, p
and TOST p against the equivalence margin come from ``stats.hierarchical_test`` (training seeds
crossed with photographs, tiles and draws inside them: docs/statistics.md), with Holm's adjustment
over the table's cells; the MDE from the oracle's comparison with the same reference; n per level.
Captured = the gain / the oracle's gain (same method and scenario, rows that move the oracle's
parameters; only where the oracle's gain is positive and resolved), also at the row's own number of
updates (the oracle's ``psnr@K``); the cost: mean adaptation seconds per instance and peak MiB.
"""
from __future__ import annotations

import json
import math

import pandas as pd

from bench.adaptation.registry import get as get_adaptation
from bench.report.runs import StudyRuns
from bench.report.stats import (
    MARGINS,
    design_mde,
    equivalent,
    hierarchical_test,
    resolved,
    verdict,
    with_holm,
)
from bench.studies.spec import reference_rows

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


def paired_gain(tidy: pd.DataFrame, row: str, base: str, split: str, scenario: str, metric: str,
                margin: float = math.nan) -> dict:
    """The gain of ``row`` over ``base`` on the instances and seeds both have (see the module docstring)."""
    a, b = _by_row(tidy, row, split, scenario, metric), _by_row(tidy, base, split, scenario, metric)
    common = a.index.intersection(b.index)
    return gain_of((a.loc[common] - b.loc[common]).astype(float), margin)


def gain_of(diff: pd.Series, margin: float = math.nan) -> dict:
    """A gain record from paired differences indexed by (seed, image): mean ± std over seeds, and the
    interval, p and TOST p of ``stats.hierarchical_test``."""
    if diff.empty:
        return {"seeds": 0, "photos": 0, "tiles": 0, "draws": 0, "n": 0, "unit": "", "gain": math.nan,
                "gain_sd": math.nan, "se": math.nan, "df": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan,
                "p_tost": math.nan, "margin": margin, "mde": math.nan, "resolved": False, "equivalent": False}
    per_seed = diff.groupby(level=0).mean()
    res = hierarchical_test(diff, margin)
    return {"seeds": res["seeds"], "photos": res["photos"], "tiles": res["tiles"], "draws": res["draws"],
            "n": res["n"], "unit": res["unit"], "gain": float(per_seed.mean()),
            "gain_sd": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
            "se": res["se"], "df": res["df"], "lo": res["lo"], "hi": res["hi"], "p": res["p"],
            "p_tost": res["p_tost"], "margin": margin, "mde": math.nan, "resolved": resolved(res),
            "equivalent": equivalent(res)}


def row_steps(tidy: pd.DataFrame, row: str, split: str, scenario: str) -> int:
    """The updates behind a row's prediction (median over its instances; 0 when it has none)."""
    t = tidy[(tidy["row"] == row) & (tidy["split"] == split) & (tidy["scenario"] == scenario)
             & (tidy["metric"] == "updates")]["value"].dropna()
    return round(float(t.median())) if len(t) else 0


def oracle_at(tidy: pd.DataFrame, oracle: str, base: str, split: str, scenario: str, k: int,
              margin: float = math.nan) -> dict | None:
    """The oracle's float-PSNR gain after ``k`` updates (its ``psnr@k`` column), or None when it did
    not record that step."""
    a = _by_row(tidy, oracle, split, scenario, f"psnr@{k}")
    if a.empty:
        return None
    b = _by_row(tidy, base, split, scenario, "psnr_float")
    common = a.index.intersection(b.index)
    return gain_of((a.loc[common] - b.loc[common]).astype(float), margin)


def cost(tidy: pd.DataFrame, row: str, split: str, scenario: str) -> dict:
    """Mean adaptation seconds per instance and the largest peak MiB of one row on one scenario."""
    t = tidy[(tidy["row"] == row) & (tidy["split"] == split) & (tidy["scenario"] == scenario)]
    sec = t.loc[t["metric"] == "seconds", "value"].dropna()
    mib = t.loc[t["metric"] == "peak_mib", "value"].dropna()
    return {"seconds": float(sec.mean()) if len(sec) else math.nan, "peak_mib": float(mib.max()) if len(mib) else math.nan}


def bounded_by(adapt: str, other: str) -> bool:
    """Whether ``other`` (an oracle) moves the parameters ``adapt`` moves, or more: an oracle bounds
    only the entries whose parameters it moves too (``official``'s subset of the heads included)."""
    mine, theirs = get_adaptation(adapt), get_adaptation(other)
    return mine.moves == theirs.moves or theirs.moves in getattr(mine.mover, "within", ())


def references(spec: dict, present: set[str] | None = None) -> dict[str, str]:
    """Method → its reference row of a logged study spec (``bench.studies.spec.reference_rows``)."""
    return reference_rows(((row, method, adapt) for row, (method, adapt) in row_adapts(spec).items()), present)


def tta_records(tidy: pd.DataFrame, spec: dict, split: str = "test",
                margins: dict[str, float] | None = None) -> list[dict]:
    """One record per row × scenario × gain metric, against its method's reference row (see
    ``references``; rows whose method has none are left out; the references are not rows of the table).

    Per metric (one table) the p-values get Holm's adjustment over all its cells; the MDE of every
    row of a method and scenario comes from the oracle's comparison with the reference (its spread
    over seeds, photographs and tiles), never from the row's own."""
    margins = {**MARGINS, **(margins or {})}
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
                margin = margins.get(metric, math.nan)
                g = paired_gain(tidy, row, base[method], split, scenario, metric, margin)
                captured = captured_k = oracle_k = math.nan
                k = row_steps(tidy, row, split, scenario)
                mde_from = ""
                if method in oracle:
                    og = paired_gain(tidy, oracle[method], base[method], split, scenario, metric)
                    g["mde"], mde_from = design_mde(og["se"], og["df"]), oracle[method]
                    # Only rows that move what the oracle moves (the heads) have it as their bound; and
                    # only against an oracle gain that is resolved and positive.
                    if row != oracle[method] and bounded_by(adapt, ORACLE):
                        captured = g["gain"] / og["gain"] if og["resolved"] and og["gain"] > 0 else math.nan
                        at = oracle_at(tidy, oracle[method], base[method], split, scenario, k) \
                            if metric == "psnr_float" and k > 0 else None
                        if at is not None:
                            oracle_k = at["gain"]
                            captured_k = g["gain"] / at["gain"] if at["resolved"] and at["gain"] > 0 else math.nan
                out.append({"row": row, "method": method, "adapt": adapt, "reference": base[method],
                            "scenario": scenario, "split": split, "metric": metric, **g, "mde_from": mde_from,
                            "steps": k, "captured": captured, "oracle_at_k": oracle_k, "captured_at_k": captured_k,
                            **c})
    for metric, _, _ in GAIN_METRICS:
        with_holm([r for r in out if r["metric"] == metric])
    for r in out:
        r["verdict"] = verdict(r, "none")
    return out


def reference_levels(tidy: pd.DataFrame, spec: dict, split: str = "test") -> list[dict]:
    """Each ``none`` row's absolute float PSNR per scenario (mean over seeds of the mean over
    instances), over the seeds the gains pair it with (those another row of its method has there),
    and which seeds those are."""
    out = []
    adapts = row_adapts(spec)
    refs = set(references(spec).values())
    for row, (method, adapt) in adapts.items():
        if row not in refs:
            continue
        for scenario in spec.get("scenarios") or []:
            v = _by_row(tidy, row, split, scenario, "psnr_float")
            paired = {s for other, (m, _) in adapts.items() if m == method and other != row
                      for s in _by_row(tidy, other, split, scenario, "psnr_float").index.get_level_values("seed")}
            if paired:
                v = v[v.index.get_level_values("seed").isin(paired)]
            if len(v):
                per_seed = v.groupby(level="seed").mean()
                out.append({"row": row, "method": method, "scenario": scenario,
                            "psnr_float": float(per_seed.mean()), "seeds": sorted(int(x) for x in per_seed.index)})
    return out


def chosen_values(study: StudyRuns) -> list[str]:
    """One line per row whose values were chosen on validation (``select:``): the choice of each seed."""
    picks: dict[str, list[str]] = {}
    for run in sorted(study.runs, key=lambda r: r.seed):
        p = run.run.data.params
        if "adapt_choice" in p:  # the grid's keys, and where the choice sits on a grid edge
            choice = json.loads(p["adapt_choice"])
            edge = choice.pop("edge", "")
            text = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in choice.items())
            picks.setdefault(run.row, []).append(f"seed {run.seed}: {text}" + (f" [on the grid's edge: {edge}]"
                                                                               if edge else ""))
        elif "adapt_select" in p and "adapt_lr" in p:
            picks.setdefault(run.row, []).append(f"seed {run.seed}: {p.get('adapt_optimizer')} lr "
                                                 f"{float(p['adapt_lr']):g}, K {p.get('adapt_steps')}")
    return [f"{row}: {'; '.join(v)}" for row, v in picks.items()]


def report_split(tidy: pd.DataFrame) -> str:
    """The split a TTA table reports: test, or val for a study that scored validation only
    (``--set tta.splits=[val]``, e.g. the quick-choices study)."""
    splits = set(tidy["split"].unique()) if "split" in tidy else set()
    return "test" if "test" in splits or not splits else "val"


def study_tta(study: StudyRuns, split: str | None = None, margins: dict[str, float] | None = None) -> list[dict]:
    """``tta_records`` of a finished TTA study (empty when the study has no scenarios)."""
    if not scenarios_of(study):
        return []
    return tta_records(study.tidy, study.spec, split or report_split(study.tidy), margins)


__all__ = ["GAIN_METRICS", "chosen_values", "cost", "gain_of", "oracle_at", "paired_gain", "reference_levels",
           "references", "report_split", "row_adapts", "row_steps", "scenarios_of", "study_tta", "tta_records"]
