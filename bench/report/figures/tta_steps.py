"""The TTA study's gain per step: float PSNR after t updates minus the same method's no-adaptation
PSNR, mean over instances with its 95 % interval, one line per adaptation row and scenario."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.report.figures.common import Computed, Skip, new_figure, save, title
from bench.report.runs import StudyRuns
from bench.report.stats import paired_test
from bench.report.tta import NONE, row_adapts, scenarios_of

NAME, TITLE = "tta_steps", "TTA gain per step"


@dataclass
class Curve:
    row: str
    scenario: str
    steps: list[int]
    mean: list[float]
    lo: list[float]
    hi: list[float]


@dataclass
class Data(Computed):
    title: str = ""
    curves: list[Curve] = field(default_factory=list)


def step_gains(tidy, row: str, base: str, scenario: str, split: str = "test") -> dict[int, np.ndarray]:
    """Step t → the per-instance gain (seed-averaged) of ``row`` after t updates over ``base``."""
    t = tidy[(tidy["split"] == split) & (tidy["scenario"] == scenario)]
    ref = t[(t["row"] == base) & (t["metric"] == "psnr_float")].groupby(["seed", "image"])["value"].mean()
    mine = t[(t["row"] == row) & t["metric"].str.startswith("psnr@")]
    out = {}
    for metric, g in mine.groupby("metric"):
        v = g.groupby(["seed", "image"])["value"].mean()
        common = v.index.intersection(ref.index)
        if len(common):
            out[int(metric.split("@")[1])] = (v.loc[common] - ref.loc[common]).groupby(level="image").mean().to_numpy()
    return dict(sorted(out.items()))


def compute(study: StudyRuns, data=None, models=None) -> Data:
    if not scenarios_of(study):
        raise Skip("not a TTA study (no scenarios)")
    adapts, tidy = row_adapts(study.spec), study.tidy
    base = {m: r for r, (m, a) in adapts.items() if a == NONE}
    curves = []
    for row, (method, adapt) in adapts.items():
        if adapt == NONE or method not in base:
            continue
        for scenario in scenarios_of(study):
            gains = step_gains(tidy, row, base[method], scenario)
            if len(gains) < 2:
                continue
            tests = [paired_test(g) for g in gains.values()]
            curves.append(Curve(row, scenario, list(gains), [r["mean"] for r in tests], [r["lo"] for r in tests],
                                [r["hi"] for r in tests]))
    if not curves:
        raise Skip("no row with per-step PSNR (psnr@t columns)")
    caption = ("Float-PSNR gain over the same method without adaptation after t updates (test instances, "
               "seed-averaged per instance): mean and 95 % bootstrap interval; long runs are sampled at evenly "
               "spaced steps.")
    return Data(caption, [], study.title, curves)


def draw(data: Data, folder: Path) -> list[Path]:
    from matplotlib.ticker import MaxNLocator

    scenarios = list(dict.fromkeys(c.scenario for c in data.curves))
    fig = new_figure(3.2 * len(scenarios), 2.8)
    axes = fig.subplots(1, len(scenarios), squeeze=False)[0]
    for ax, scenario in zip(axes, scenarios):
        for c in (c for c in data.curves if c.scenario == scenario):
            line, = ax.plot(c.steps, c.mean, marker="o", ms=2, lw=1, label=c.row)
            ax.fill_between(c.steps, c.lo, c.hi, color=line.get_color(), alpha=0.15, lw=0)
        ax.axhline(0, color="0.4", lw=0.8)
        if max(max(c.steps) for c in data.curves) > 20:  # long runs (zs-n2n): a log axis past 10 updates
            ax.set_xscale("symlog", linthresh=10)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(scenario)
        ax.set_xlabel("updates t")
        ax.set_ylabel("gain over no adaptation [dB]")
        ax.legend(frameon=False, fontsize=6)
    title(fig, f"TTA gain per step — {data.title}")
    return save(fig, folder, NAME)
