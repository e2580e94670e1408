"""The one results path: per-image rows → a summary per row × split × metric → a study table's records.

Every table — ``bench run``, ``bench ablate``, ``bench report`` on the console and in its files — is
a query over the tidy rows the runs logged (``images.csv``, see ``runs.StudyRuns.tidy``): each
seed's mean over the images, then the mean and sample std (ddof=1) over seeds, and the number of
seeds. The column list and the parameter formatter live here too, so no two tables can disagree.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bench.report.runs import StudyRuns

# split, metric, label, digits: the columns of every study table
COLUMNS = (("val", "psnr", "val PSNR", 2), ("val", "ssim", "val SSIM", 4),
           ("test", "psnr", "test PSNR", 2), ("test", "ssim", "test SSIM", 4))


def summarize(tidy: pd.DataFrame, rows: list[str] | None = None) -> pd.DataFrame:
    """Per row × split × metric: ``mean`` and ``std`` (ddof=1; NaN for one seed) over seeds of the
    per-seed mean over images, and ``n`` seeds. Index (row, split, metric), rows in ``rows`` order."""
    per_seed = tidy.groupby(["row", "seed", "split", "metric"], sort=False)["value"].mean()
    g = per_seed.groupby(level=["row", "split", "metric"], sort=False)
    out = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1), "n": g.count()})
    if rows is not None:
        out = out[out.index.get_level_values("row").isin(rows)]
        order = {r: i for i, r in enumerate(rows)}
        out = out.iloc[np.argsort([order[r] for r in out.index.get_level_values("row")], kind="stable")]
    return out


def fmt_params(p: dict | None) -> str:
    """Total (and adapted-at-test-time) parameter counts in millions."""
    if not p or "total" not in p:
        return "—"
    total = f"{p['total'] / 1e6:.2f} M"
    return total + (f" / {p['adapted'] / 1e6:.3f} M" if p.get("adapted") else "")


def row_order(study: StudyRuns) -> list[str]:
    """The reference row first, then the study's rows in its file's order (rows with runs only in the store last)."""
    names = [s["name"] for s in study.spec.get("rows", [])]
    names += [n for n in study.rows if n not in names]
    return ([study.reference_row] if study.reference_row else []) + names


def study_summary(study: StudyRuns) -> pd.DataFrame:
    """The summary of a study's rows and of its reference row, in ``row_order``."""
    return summarize(pd.concat([study.reference_tidy, study.tidy], ignore_index=True), row_order(study))


def study_records(study: StudyRuns, summary: pd.DataFrame, failed: dict[str, str] | None = None) -> list[dict]:
    """One record per row for the console table: ``row``, ``n`` seeds, ``split/metric`` → (mean, std),
    ``params`` and ``paper`` (study rows only); a row with no finished run but a failure: ``failed``."""
    failed = failed or {}
    present = set(summary.index.get_level_values("row"))
    out = []
    for name in row_order(study):
        if name not in present:
            if name in failed:
                out.append({"row": name, "n": 0, "failed": failed[name]})
            continue
        rec: dict = {"row": name}
        if name != study.reference_row:
            info = study.rows.get(name)
            rec["params"] = (info.params if info is not None else None) or None
        ns = []
        for split, metric, _, _ in COLUMNS:
            try:
                s = summary.loc[(name, split, metric)]
            except KeyError:
                continue
            rec[f"{split}/{metric}"] = (float(s["mean"]), 0.0 if math.isnan(s["std"]) else float(s["std"]))
            ns.append(int(s["n"]))
        rec["n"] = max(ns) if ns else 0
        if name in study.paper and name != study.reference_row:
            rec["paper"] = study.paper[name]
        out.append(rec)
    return out
