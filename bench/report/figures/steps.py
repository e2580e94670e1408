"""Fig. 7: the clean prediction after each of the K meta-test steps (``adaptation.run.adapt_image`` with
``trajectory=True``), with PSNR per step, for one test image and the PSNR change of every test image."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.report.figures.common import (
    MetaTestView,
    Models,
    Skip,
    StudyData,
    crop_size,
    crop_where,
    new_figure,
    off,
    pick_ours,
    psnr_of,
    row_run,
    save,
    title,
    to_hwc,
    trajectory_image,
)
from bench.report.runs import StudyRuns

NAME, TITLE = "fig7_steps", "Fig. 7: prediction after each meta-test step"


@dataclass
class Data(MetaTestView):
    clean: np.ndarray | None = None
    noisy_psnr: float = 0.0
    frames: list[np.ndarray] = field(default_factory=list)  # prediction before and after each step
    psnrs: list[float] = field(default_factory=list)  # of each frame
    curves: dict[str, list[float]] = field(default_factory=dict)  # test image → PSNR per step
    corner: tuple[int, int] = (0, 0)
    size: int = 0


def compute(study: StudyRuns, data: StudyData, models: Models, max_images: int = 8) -> Data:
    """The trajectory of the test image with the largest |meta-test gain|, and the PSNR per step of
    the first ``max_images`` test images."""
    from bench.adaptation.registry import from_metatest
    from bench.adaptation.run import adapt_image

    ours = pick_ours(study.rows)
    mt = study.row_preset(ours.name).metatest
    if mt.steps < 1:
        raise Skip("the preset's meta-test has 0 steps")
    t = models.model(ours.name)
    seed = row_run(study, ours.name).seed
    image = trajectory_image(study, ours, seed)

    entry = from_metatest(mt, t.recipe)

    def trajectory(noisy):
        return list(adapt_image(entry, t.model, noisy, trajectory=True, diagnostics=False).trajectory)

    noisy, clean = data.tensors("test", image)
    traj = trajectory(noisy)
    curves = {}
    for p in data.data.test[:max_images]:
        n, c = data.tensors("test", p.name)
        curves[p.name] = [psnr_of(q, c) for q in trajectory(n)]
    frames, gt = [to_hwc(p) for p in traj], to_hwc(clean)
    h, w = gt.shape[:2]
    size = crop_size(h, w)
    corner = crop_where([np.abs(frames[-1] - frames[0]).mean(axis=2), np.zeros((h, w))], size)
    caption = (f"Top: test image {image} (the largest |meta-test gain|), {size}×{size} crop, after each of the "
               f"K={mt.steps} steps, PSNR of the whole image. Middle: change from step 0. Bottom: PSNR gain "
               "per step for each test image (grey) and their mean.")
    return Data(caption, [], ours.name, seed, image, mt.steps, mt.lr, mt.optimizer, to_hwc(noisy), gt,
                psnr_of(noisy, clean), frames, [psnr_of(p, clean) for p in traj], curves, corner, size)


def draw(data: Data, folder: Path) -> list[Path]:
    y, x = data.corner
    sl = (slice(y, y + data.size), slice(x, x + data.size))
    k = len(data.frames)
    ncol = k + 2
    fig = new_figure(1.45 * ncol + 1.2, 6.0)
    sub_top, sub_bottom = fig.subfigures(2, 1, height_ratios=[2.1, 1.0])
    axes = sub_top.subplots(2, ncol, squeeze=False)
    top, mid = axes[0], axes[1, 1:k + 1]
    top[0].imshow(data.noisy[sl])
    top[0].set_title(f"noisy\n{data.noisy_psnr:.2f} dB")
    for j, frame in enumerate(data.frames):
        top[j + 1].imshow(frame[sl])
        top[j + 1].set_title(f"step {j}\n{data.psnrs[j]:.3f} dB")
    top[-1].imshow(data.clean[sl])
    top[-1].set_title("ground truth")
    for ax in top:
        off(ax)
    off(axes[1, 0], "change from\nstep 0 →")
    off(axes[1, -1])
    diffs = [(f - data.frames[0]).mean(axis=2)[sl] for f in data.frames]
    lim = max(max(float(np.abs(d).max()) for d in diffs), 1e-6)
    im = None
    for ax, d, j in zip(mid, diffs, range(k)):
        im = ax.imshow(d, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"step {j} − step 0")
        off(ax)
    sub_top.colorbar(im, ax=list(axes[1]), shrink=0.9, label="Δ intensity\n(mean over RGB)")
    ax = sub_bottom.subplots()
    steps = np.arange(k)
    for vals in data.curves.values():
        ax.plot(steps, np.array(vals) - vals[0], color="0.6", lw=0.8, marker=".", ms=3)
    mean = np.mean([np.array(v) - v[0] for v in data.curves.values()], axis=0)
    ax.plot(steps, mean, color="#d55e00", lw=2, marker="o", ms=4, label=f"mean over {len(data.curves)} test image(s)")
    ax.plot(steps, np.array(data.psnrs) - data.psnrs[0], color="#0173b2", lw=1.5, ls="--", label=data.image)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_xticks(steps)
    ax.set_xlabel("meta-test step")
    ax.set_ylabel("PSNR − PSNR at step 0 [dB]")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    title(fig, f"Fig. 7 — prediction after each meta-test step ({data.row}, seed {data.seed}, "
               f"lr {data.lr:g}, {data.optimizer})")
    return save(fig, folder, NAME)
