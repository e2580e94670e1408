"""Meta-test gain per image: PSNR with vs without meta-test (scatter) and the gain (histogram)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.report.figures.common import Computed, Skip, metatest_pairs, new_figure, save, title
from bench.report.runs import StudyRuns
from bench.report.stats import paired_test, per_image

NAME, TITLE = "metatest_gain", "Meta-test gain per image"
COLORS = {"val": "#0173b2", "test": "#de8f05"}


@dataclass
class Pair:
    a: str  # the row with meta-test
    b: str  # the same row without
    points: dict[str, tuple[np.ndarray, np.ndarray]]  # split → (PSNR without, PSNR with), per image
    test: dict  # ``stats.paired_test`` of the test gains (all splits' gains if no test split)

    def gains(self, split: str) -> np.ndarray:
        without, with_ = self.points[split]
        return with_ - without


@dataclass
class Data(Computed):
    title: str = ""
    pairs: list[Pair] = field(default_factory=list)


def compute(study: StudyRuns, data=None, models=None) -> Data:
    """Each pair's seed-averaged per-image PSNRs over the seeds both rows ran."""
    pairs = metatest_pairs(study)
    if not pairs:
        raise Skip("no pair of rows with and without meta-test in this study")
    tidy = study.tidy
    out, notes = [], []
    for pair in pairs:
        seeds = sorted(set(tidy.loc[tidy.row == pair.a, "seed"]) & set(tidy.loc[tidy.row == pair.b, "seed"]))
        a, b = per_image(tidy, pair.a, seeds), per_image(tidy, pair.b, seeds)
        points = {}
        for split in ("val", "test"):
            try:
                sa, sb = a.loc[(split, "psnr")], b.loc[(split, "psnr")]
            except KeyError:
                continue
            common = sa.index.intersection(sb.index)
            points[split] = (sb.loc[common].to_numpy(), sa.loc[common].to_numpy())
        p = Pair(pair.a, pair.b, points, {})
        allv = np.concatenate([p.gains(s) for s in points]) if points else np.array([])
        p.test = paired_test(p.gains("test") if "test" in points else allv)
        res = p.test
        if res["n"]:
            notes.append(f"{pair.a} − {pair.b}: test mean {res['mean']:+.4f} dB, 95% CI [{res['lo']:+.4f}, "
                         f"{res['hi']:+.4f}], Wilcoxon p = {res['p']:.3g} (n = {res['n']} images)")
        out.append(p)
    caption = ("Left: each evaluation image's PSNR with vs without test-time adaptation (seed-averaged); "
               "points above the diagonal gained. Right: histogram of the per-image gain, with the "
               "test mean and its 95% bootstrap interval.")
    return Data(caption, notes, study.title, out)


def draw(data: Data, folder: Path) -> list[Path]:
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(6.4, 2.6 * len(data.pairs) + 0.3)
    axes = fig.subplots(len(data.pairs), 2, squeeze=False)
    for (ax1, ax2), pair in zip(axes, data.pairs):
        for split, (without, with_) in pair.points.items():
            ax1.scatter(without, with_, s=14, color=COLORS[split], label=split, alpha=0.8, edgecolor="none")
        lo = min(ax1.get_xlim()[0], ax1.get_ylim()[0])
        hi = max(ax1.get_xlim()[1], ax1.get_ylim()[1])
        ax1.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", zorder=0)
        ax1.set_xlim(lo, hi)
        ax1.set_ylim(lo, hi)
        ax1.set_aspect("equal")
        ax1.set_xlabel(f"PSNR without meta-test [dB]\n({pair.b})")
        ax1.set_ylabel(f"PSNR with meta-test [dB]\n({pair.a})")
        ax1.legend(frameon=False, loc="upper left")
        allv = np.concatenate([pair.gains(s) for s in pair.points]) if pair.points else np.array([])
        span = max(np.abs(allv).max() if len(allv) else 0, 1e-4)
        bins = np.linspace(-span * 1.05, span * 1.05, 21)
        for split in pair.points:
            ax2.hist(pair.gains(split), bins=bins, color=COLORS[split], alpha=0.6, label=split)
        res = pair.test
        ax2.axvline(0, color="0.3", lw=0.8)
        if res["n"]:
            ax2.axvline(res["mean"], color="#d55e00", lw=1.2, label=f"test mean {res['mean']:+.3f} dB")
            ax2.axvspan(res["lo"], res["hi"], color="#d55e00", alpha=0.15, label="95% bootstrap CI")
        ax2.set_xlabel("meta-test gain per image [dB]")
        ax2.set_ylabel("images")
        ax2.xaxis.set_major_locator(MaxNLocator(5))
        ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.legend(frameon=False, fontsize=6)
    title(fig, f"Meta-test gain per image — {data.title}")
    return save(fig, folder, NAME)
