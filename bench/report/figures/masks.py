"""Figs. 5/6: the mask of fixed validation images across MTL epochs, MAXL-pretrained vs RI, from the
mask PNGs the MTL trainer logs (no network is run)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.report.figures.common import Computed, Skip, StudyData, new_figure, off, row_run, save, title
from bench.report.runs import RowInfo, StudyRuns
from bench.runtime.tracking import artifact_name

NAME, TITLE = "fig5_6_masks", "Figs. 5/6: masks across MTL epochs"


@dataclass
class Panel:
    group: str  # MAXL-pretrained | RI | <init>-pretrained
    row: str
    image: str  # the name the MTL trainer logged the image under
    frames: list[tuple[int, np.ndarray]]  # (epoch, mask (H, W) in [0, 1])
    noisy: np.ndarray | None = None  # the validation image itself, when the study's data loads here


@dataclass
class Data(Computed):
    panels: list[Panel] = field(default_factory=list)


def _groups(study: StudyRuns) -> dict[str, RowInfo]:
    """One MTL row with the masked loss per initialisation (heads-only adaptation preferred)."""
    groups: dict[str, RowInfo] = {}
    for r in study.rows.values():
        if r.stage != "finetune" or not r.adapts or r.recipe.get("aux_loss") != "mrl":
            continue
        g = "MAXL-pretrained" if r.recipe.get("pretrain") == "maxl" else (
            "RI" if r.recipe.get("pretrain") == "none" else f"{r.recipe.get('pretrain')}-pretrained")
        best = groups.get(g)
        if best is None or (r.recipe.get("inner_scope") == "heads" and best.recipe.get("inner_scope") != "heads"):
            groups[g] = r
    return groups


def compute(study: StudyRuns, data: StudyData | None = None, models=None, max_epochs: int = 8) -> Data:
    """The logged masks (at most ``max_epochs`` per image, spread evenly) and each image's noisy input."""
    from matplotlib.image import imread

    groups = _groups(study)
    if not groups:
        raise Skip("no MTL row with the masked auxiliary loss (MRL) in this study")
    panels, notes = [], []
    for g in sorted(groups, key=lambda g: (g != "MAXL-pretrained", g != "RI", g)):
        row = groups[g]
        run = row_run(study, row.name)
        src = run.trained_in or run.id
        images = [p.rsplit("/", 1)[-1] for p in study.list_artifacts(src, "masks")]
        if not images:
            notes.append(f"{g} ({row.name}): no mask images logged by run {src}")
            continue
        for image in sorted(images):
            files = sorted(p for p in study.list_artifacts(src, f"masks/{image}") if p.endswith(".png"))
            if len(files) > max_epochs:
                idx = np.unique(np.linspace(0, len(files) - 1, max_epochs).round().astype(int))
                files = [files[i] for i in idx]
            frames = []
            for f in files:
                arr = imread(str(study.download(src, f)))
                frames.append((int(Path(f).stem.split("_")[-1]), arr[..., 0] if arr.ndim == 3 else arr))
            panels.append(Panel(g, row.name, image, frames))
    if not panels:
        raise Skip("; ".join(notes) or "no mask images were logged")
    if data is not None:
        try:
            noisy = {artifact_name(p.name): p.noisy for p in data.data.val}  # the names the trainer logged
            for p in panels:
                p.noisy = noisy.get(p.image)
                if p.noisy is None and noisy:
                    notes.append(f"noisy input of {p.image} not found among the validation images")
        except Skip as e:
            notes.append(f"noisy inputs not shown: {e}")
    missing = [g for g in ("MAXL-pretrained", "RI") if g not in groups]
    if missing:
        notes.append(f"no {' / '.join(missing)} row with MRL in this study: its masks are not shown")
    caption = ("The mask network's output on fixed validation images after each validated MTL epoch "
               "(logged by the MTL trainer), for the MAXL-pretrained and the randomly initialised (RI) "
               "network; brighter = the auxiliary loss weighs that pixel more.")
    return Data(caption, notes, panels)


def draw(data: Data, folder: Path) -> list[Path]:
    ncol = 1 + max(len(p.frames) for p in data.panels)
    fig = new_figure(max(5.0, 1.25 * ncol + 1.0), 1.35 * len(data.panels) + 0.5)
    axes = fig.subplots(len(data.panels), ncol, squeeze=False)
    im = None
    for i, (ax_row, p) in enumerate(zip(axes, data.panels)):
        if p.noisy is not None:
            ax_row[0].imshow(np.clip(p.noisy, 0, 1))
            off(ax_row[0])
        else:
            off(ax_row[0], "noisy input\nnot available")
        ax_row[0].set_ylabel(f"{p.group}\n{p.image}", fontsize=6)
        ax_row[0].set_title("noisy input" if i == 0 else "")
        for j, ax in enumerate(ax_row[1:]):
            if j < len(p.frames):
                epoch, arr = p.frames[j]
                im = ax.imshow(arr, cmap="magma", vmin=0, vmax=1)
                ax.set_title(f"epoch {epoch}")
                off(ax)
            else:
                ax.set_visible(False)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="mask M (0 … 1)")
    title(fig, "Figs. 5/6 — masks of fixed validation images across MTL epochs")
    return save(fig, folder, NAME)
