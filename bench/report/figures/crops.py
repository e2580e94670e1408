"""Fig. 3: noisy, RIDNet, MIRNet, ours before and after adaptation, ground truth; the test image and
the crop where the shown methods differ most are chosen automatically."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.report.figures.common import (
    Computed,
    Models,
    Skip,
    StudyData,
    crop_size,
    crop_where,
    metatest_pairs,
    new_figure,
    off,
    pick_ours,
    psnr_of,
    row_run,
    save,
    title,
    to_hwc,
)
from bench.report.runs import RowInfo, StudyRuns

NAME, TITLE = "fig3_crops", "Fig. 3: qualitative crops"
BASELINES = (("ridnet", "RIDNet"), ("mirnet", "MIRNet"))


@dataclass
class Panel:
    label: str
    image: np.ndarray | None = None  # (H, W, 3) in [0, 1], the whole image
    psnr: float | None = None  # of the whole image, as the tables score it
    note: str = ""  # why there is no image


@dataclass
class Data(Computed):
    image: str = ""
    seed: int = 0
    noisy: np.ndarray | None = None  # (H, W, 3)
    panels: list[Panel] = field(default_factory=list)  # the noisy input, the methods, the ground truth
    corner: tuple[int, int] = (0, 0)  # top-left of the crop
    size: int = 0


def _baselines(rows: dict[str, RowInfo]) -> list[tuple[str, RowInfo | None]]:
    out: list[tuple[str, RowInfo | None]] = []
    for method, label in BASELINES:
        match = [r for r in rows.values() if r.supervised and r.method == method]
        out.append((label, match[0] if match else None))
    return out + [(r.name, r) for r in rows.values() if r.supervised and r.method not in dict(BASELINES)]


def compute(study: StudyRuns, data: StudyData, models: Models) -> Data:
    """Every shown method's prediction of the test image where their PSNRs differ most."""
    import torch

    from bench.adaptation.registry import from_metatest, get
    from bench.adaptation.run import adapt_image

    def predict(model, noisy, entry):
        return adapt_image(entry, model, noisy, diagnostics=False).prediction

    ours = pick_ours(study.rows)
    mt = study.row_preset(ours.name).metatest
    seed = row_run(study, ours.name).seed
    tidy = study.tidy
    test = tidy[(tidy.split == "test") & (tidy.metric == "psnr")]
    baselines = _baselines(study.rows)
    shown = [ours.name] + [r.name for _, r in baselines if r is not None]
    shown += [p.b for p in metatest_pairs(study) if p.a == ours.name]
    per = test[test.row.isin(shown)].groupby(["image", "row"])["value"].mean().unstack()
    if per.empty:
        raise Skip("no test images in the tidy rows")
    image = str((per.max(axis=1) - per.min(axis=1)).idxmax()) if per.shape[1] > 1 else str(per.index[0])
    noisy, clean = data.tensors("test", image)
    notes, preds = [], []  # preds: (label, tensor | None, note)
    with torch.no_grad():
        for label, r in baselines:
            if r is None:
                preds.append((label, None, f"no {label} row\nin this study"))
                notes.append(f"{label}: panel skipped (no {label} row in this study)")
                continue
            try:
                t = models.model(r.name, seed)
                preds.append((label, predict(t.model, noisy, get("none")), ""))
            except Skip as e:
                preds.append((label, None, str(e)))
                notes.append(f"{label}: panel skipped ({e})")
    t = models.model(ours.name, seed)
    before = predict(t.model, noisy, get("none"))
    after = predict(t.model, noisy, from_metatest(mt, t.recipe))
    preds += [("Ours, before adaptation", before, ""), (f"Ours, after adaptation (K={mt.steps})", after, "")]
    gt = to_hwc(clean)
    panels = [Panel(label, None, None, note) if p is None else Panel(label, to_hwc(p), psnr_of(p, clean))
              for label, p, note in preds]
    errs = [np.abs(p.image - gt).mean(axis=2) for p in panels if p.image is not None]
    panels = [Panel("Noisy input", to_hwc(noisy), psnr_of(noisy, clean)), *panels, Panel("Ground truth", gt)]
    size = crop_size(*gt.shape[:2])
    caption = (f"Test image {image} (where the shown rows' PSNRs differ most), {size}×{size} crop where "
               "their errors differ most. Captions: PSNR of the whole evaluation image (8-bit, as in "
               f"the tables). Ours = row {ours.name!r}, before and after meta-test.")
    return Data(caption, notes, image, seed, to_hwc(noisy), panels, crop_where(errs, size), size)


def draw(data: Data, folder: Path) -> list[Path]:
    from matplotlib.patches import Rectangle

    y, x = data.corner
    sl = (slice(y, y + data.size), slice(x, x + data.size))
    panels = data.panels
    fig = new_figure(1.6 * (len(panels) + 1), 2.3)
    axes = fig.subplots(1, len(panels) + 1)
    axes[0].imshow(data.noisy)
    axes[0].add_patch(Rectangle((x - 0.5, y - 0.5), data.size, data.size, fill=False, ec="#ffd400", lw=1.2))
    axes[0].set_title(f"{data.image}\n(full, crop boxed)")
    off(axes[0])
    for ax, p in zip(axes[1:], panels):
        if p.image is None:
            off(ax, p.note)
            ax.set_title(p.label)
            continue
        ax.imshow(p.image[sl])
        ax.set_title(p.label if p.psnr is None else f"{p.label}\n{p.psnr:.2f} dB")
        off(ax)
    title(fig, f"Fig. 3 — qualitative comparison on a test image (seed {data.seed}); PSNR of the whole image")
    return save(fig, folder, NAME)
