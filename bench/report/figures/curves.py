"""Training curves: losses and validation PSNR per epoch of every stage, one line per training."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from bench.report.figures.common import Computed, Skip, new_figure, palette, save, title
from bench.report.runs import StudyRuns
from bench.runtime import tags

NAME, TITLE = "curves", "Training curves"


@dataclass
class Line:
    label: str  # the rows that share this training
    row: str  # the first of them (its colour)
    seed: int
    points: list[tuple[int, float]]  # (epoch, value)


@dataclass
class Data(Computed):
    title: str = ""
    rows: list[str] = field(default_factory=list)  # the study's rows, in order (colours)
    seeds: list[int] = field(default_factory=list)
    panels: list[tuple[str, list[Line]]] = field(default_factory=list)  # "stage/metric" → its lines


def compute(study: StudyRuns, data=None, models=None) -> Data:
    """The nested stage runs' metric histories, a training drawn once however many rows reuse it."""
    lines: dict[str, dict] = {}  # stage_key → {rows, seed, run, metrics}
    links = []  # (row, the stage key its fine-tuning started from)
    for run in study.runs:
        if run.row not in study.rows:
            continue
        for child in study.nested(run.id):
            key = child.data.tags.get(tags.STAGE_KEY, child.info.run_id)
            rec = lines.setdefault(key, {"rows": set(), "seed": run.seed, "run": child.info.run_id,
                                         "metrics": sorted(k for k in child.data.metrics
                                                           if not k.endswith("/best_epoch"))})
            rec["rows"].add(run.row)
            links.append((run.row, child.data.params.get("init", "")))
    for row, init in links:  # a row that reused a cached fine-tuning still descends from its pre-training
        if init in lines:
            lines[init]["rows"].add(row)
    order = list(study.rows)
    for rec in lines.values():
        rec["rows"] = sorted(rec["rows"], key=order.index)
        kind = study.rows[rec["rows"][0]].recipe.get("finetune", "")
        # the MTL outer loss (λ_out·Σ over the batch) and the supervised L1 are on different scales
        rec["panels"] = {m: (f"{m.partition('/')[0]} ({kind})/{m.partition('/')[2]}"
                             if m.startswith("finetune/") and m.endswith("loss") else m) for m in rec["metrics"]}
    keys = sorted({p for rec in lines.values() for p in rec["panels"].values()},
                  key=lambda k: (not k.startswith("pretrain"), "val" in k, k))
    if not keys:
        raise Skip("no per-epoch metrics were logged by the stage runs")
    panels = []
    for key in keys:
        drawn = []
        for rec in lines.values():
            metric = next((m for m, p in rec["panels"].items() if p == key), None)
            points = study.history(rec["run"], metric) if metric else []
            if points:
                drawn.append(Line(" / ".join(rec["rows"]), rec["rows"][0], rec["seed"], points))
        panels.append((key, drawn))
    seeds = sorted({rec["seed"] for rec in lines.values()})
    style_note = f"; line style = seed ({', '.join(map(str, seeds))})" if len(seeds) > 1 else ""
    caption = ("Per-epoch training losses and validation PSNR of each stage (MAXL pre-training, MTL or "
               f"supervised fine-tuning); rows that share a training are drawn once{style_note}.")
    return Data(caption, [], study.title, order, seeds, panels)


def draw(data: Data, folder: Path) -> list[Path]:
    from matplotlib.ticker import MaxNLocator

    colors = palette(data.rows)
    dashes = ["-", "--", ":", "-."]
    ncol = min(3, len(data.panels))
    nrow = math.ceil(len(data.panels) / ncol)
    fig = new_figure(3.0 * ncol, 2.2 * nrow + 0.5)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    handles = {}
    for ax, (key, lines) in zip(axes, data.panels):
        epochs = set()
        for line in lines:
            (ln,) = ax.plot([s for s, _ in line.points], [v for _, v in line.points],
                            dashes[data.seeds.index(line.seed) % 4], color=colors[line.row], marker="o", ms=2.5,
                            lw=1.2, label=line.label)
            handles.setdefault(line.label, ln)
            epochs |= {s for s, _ in line.points}
        stage, _, metric = key.partition("/")
        ax.set_title(f"{stage}: {metric.replace('_', ' ')}")
        ax.set_xlabel("epoch")
        if 0 < len(epochs) <= 12:
            ax.set_xticks(sorted(epochs))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("PSNR [dB]" if "psnr" in metric else "loss")
        ax.grid(alpha=0.3)
    for ax in axes[len(data.panels):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(3, len(handles)),
               frameon=False)
    title(fig, f"Training curves — {data.title}")
    return save(fig, folder, NAME)
