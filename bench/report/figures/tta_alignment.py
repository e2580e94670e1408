"""The TTA study's gain against alignment: each instance's float-PSNR gain over the same method
without adaptation against cos(∇L_self, ∇L_pri) at step 0 (seed-averaged), per row and scenario.

The cosine is the one over the parameters L_pri moves (``alignment_pri``: for the head entries the
primary head, since L_pri has no gradient on the auxiliary head, which would only dilute it); a run
recorded before that column existed falls back to the cosine over every adapted parameter
(``alignment``), and the axis label says which one the figure shows."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.report.figures.common import Computed, Skip, new_figure, save, title
from bench.report.runs import StudyRuns
from bench.report.tta import NONE, row_adapts, scenarios_of

NAME, TITLE = "tta_alignment", "TTA gain against gradient alignment"
MARKERS = "os^Dvx"
PRIMARY, ALL = "alignment_pri", "alignment"  # the cosine over the parameters L_pri moves; over all adapted ones
LABELS = {PRIMARY: "cos(∇L_self, ∇L_pri) over the parameters L_pri moves, step 0",
          ALL: "cos(∇L_self, ∇L_pri) over all adapted parameters, step 0"}


@dataclass
class Points:
    row: str
    scenario: str
    alignment: np.ndarray
    gain: np.ndarray
    metric: str = PRIMARY  # which cosine ``alignment`` holds (PRIMARY, or ALL for an older run)


@dataclass
class Data(Computed):
    title: str = ""
    points: list[Points] = field(default_factory=list)


def _per_image(t, row: str, metric: str):
    return t[(t["row"] == row) & (t["metric"] == metric)].groupby("image")["value"].mean()


def compute(study: StudyRuns, data=None, models=None) -> Data:
    if not scenarios_of(study):
        raise Skip("not a TTA study (no scenarios)")
    adapts, tidy = row_adapts(study.spec), study.tidy
    base = {m: r for r, (m, a) in adapts.items() if a == NONE}
    out, notes = [], []
    for row, (method, adapt) in adapts.items():
        if adapt == NONE or method not in base:
            continue
        for scenario in scenarios_of(study):
            t = tidy[(tidy["split"] == "test") & (tidy["scenario"] == scenario)]
            metric = PRIMARY if (t[(t["row"] == row) & (t["metric"] == PRIMARY)]["value"].notna().any()) else ALL
            align = _per_image(t, row, metric).dropna()
            gain = (_per_image(t, row, "psnr_float") - _per_image(t, base[method], "psnr_float")).dropna()
            common = align.index.intersection(gain.index)
            if len(common) == 0:
                continue
            a, g = align.loc[common].to_numpy(), gain.loc[common].to_numpy()
            out.append(Points(row, scenario, a, g, metric))
            if len(a) > 2 and np.std(a) > 0 and np.std(g) > 0:
                notes.append(f"{row} on {scenario}: Pearson r({metric}, gain) = {np.corrcoef(a, g)[0, 1]:+.2f} "
                             f"(n = {len(a)})")
    if not out:
        raise Skip("no row with an alignment column (learned adaptations only)")
    older = sorted({p.row for p in out if p.metric == ALL})
    caption = ("Each test instance's float-PSNR gain over the same method without adaptation against the cosine "
               "between the adaptation's own loss gradient and the clean-image loss gradient at step 0, over the "
               "parameters the clean-image loss moves (the primary head for the head entries; seed-averaged). "
               "Colour: row; marker: scenario.")
    if older:
        caption += (f" Rows recorded without that column ({', '.join(older)}) show the cosine over every adapted "
                    "parameter instead.")
    return Data(caption, notes, study.title, out)


def draw(data: Data, folder: Path) -> list[Path]:
    from matplotlib.lines import Line2D

    fig = new_figure(5.0, 3.8)
    ax = fig.subplots()
    rows = list(dict.fromkeys(p.row for p in data.points))
    scenarios = list(dict.fromkeys(p.scenario for p in data.points))
    colors = {r: f"C{i % 10}" for i, r in enumerate(rows)}
    for p in data.points:
        ax.scatter(p.alignment, p.gain, s=10, color=colors[p.row], marker=MARKERS[scenarios.index(p.scenario) % 6],
                   alpha=0.7, edgecolor="none")
    ax.axhline(0, color="0.4", lw=0.8)
    ax.axvline(0, color="0.4", lw=0.8)
    metrics = {p.metric for p in data.points}
    ax.set_xlabel(LABELS[metrics.pop()] if len(metrics) == 1 else
                  "cos(∇L_self, ∇L_pri) at step 0 (over the parameters L_pri moves; all adapted ones for older runs)")
    ax.set_ylabel("gain over no adaptation [dB]")
    # one key for colour (row) and one for marker (scenario), below the axes: rows × scenarios
    # entries inside the axes would cover the data
    key = [Line2D([], [], ls="", marker="o", ms=4, color=colors[r], label=r) for r in rows]
    key += [Line2D([], [], ls="", marker=MARKERS[i % 6], ms=4, color="0.35", label=s) for i, s in enumerate(scenarios)]
    fig.legend(handles=key, loc="outside lower center", ncol=min(4, len(key)), frameon=False, fontsize=6)
    title(fig, f"TTA gain against alignment — {data.title}")
    return save(fig, folder, NAME)
