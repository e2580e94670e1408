"""What the figures share: one style, saving, image helpers, crop choice, and the study's inputs
(evaluation images; trained networks through ``bench.inference.trained.load_model``)."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from bench.core.errors import BenchError
from bench.report.runs import RowInfo, RowRun, StudyRuns
from bench.report.stats import find_pairs, per_image

DPI = 150
RC = {"figure.dpi": 100, "savefig.dpi": DPI, "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
      "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 9,
      "image.interpolation": "nearest", "pdf.fonttype": 42}


class Skip(Exception):
    """A figure (or panel) whose inputs are not in this study; the message says why."""


@dataclass
class FigureOut:
    name: str
    title: str
    caption: str
    files: list[Path] = field(default_factory=list)  # PNG first, then PDF
    notes: list[str] = field(default_factory=list)


@dataclass
class Computed:
    """What every figure's ``compute`` returns besides its own data: the caption and notes."""

    caption: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class MetaTestView(Computed):
    """Figs. 7 and 8 look at one row's meta-test (K steps of ``optimizer`` at ``lr``) on one test image."""

    row: str = ""
    seed: int = 0
    image: str = ""
    steps: int = 0
    lr: float = 0.0
    optimizer: str = "sgd"
    noisy: np.ndarray | None = None  # (H, W, 3) in [0, 1]


# -- drawing ------------------------------------------------------------------------------------------

@contextmanager
def style() -> Iterator[None]:
    import matplotlib as mpl
    import seaborn as sns

    with mpl.rc_context(), sns.axes_style("ticks"), sns.plotting_context("paper"):
        mpl.rcParams.update(RC)
        yield


def new_figure(w: float, h: float):
    from matplotlib.figure import Figure  # no pyplot: no global state, any backend

    return Figure(figsize=(w, h), layout="constrained")


def title(fig, text: str) -> None:
    """The figure's title, wrapped to the figure's width (a study title is long: on one line it
    would be cut off at both edges of the PNG)."""
    import textwrap

    from matplotlib import rcParams
    from matplotlib.font_manager import FontProperties

    points = FontProperties(size=rcParams["figure.titlesize"]).get_size_in_points()
    chars = max(20, int(fig.get_figwidth() * 72 / (0.6 * points)))  # ~0.6 em per character
    fig.suptitle(textwrap.fill(text, chars))


def save(fig, folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=DPI, metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    return paths


def palette(names: list[str]) -> dict[str, tuple]:
    import seaborn as sns

    return dict(zip(names, sns.color_palette("colorblind", max(len(names), 1))))


def off(ax, text: str | None = None) -> None:
    """No ticks or frame; ``text`` in the middle (a panel that could not be drawn says why)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if text:
        ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=7, color="0.35",
                transform=ax.transAxes)


# -- images -------------------------------------------------------------------------------------------

def to_hwc(t) -> np.ndarray:
    """(1,3,H,W) tensor → (H,W,3) float array in [0,1]."""
    return t[0].permute(1, 2, 0).detach().cpu().float().clamp(0, 1).numpy()


def psnr_of(pred, clean) -> float:
    """PSNR in dB of one image, as the tables score it (``bench.core.metrics.psnr``)."""
    from bench.core.metrics import psnr

    return float(psnr(pred, clean)[0])


def crop_where(maps: list[np.ndarray], size: int) -> tuple[int, int]:
    """Top-left corner of the ``size``² window where the per-pixel maps disagree the most
    (largest mean spread across maps); the centre when there is nothing to compare."""
    from scipy.ndimage import uniform_filter

    h, w = maps[0].shape
    size = min(size, h, w)
    if len(maps) < 2:
        return (h - size) // 2, (w - size) // 2
    score = uniform_filter(np.stack(maps).std(axis=0), size=size, mode="constant")
    half = size // 2
    valid = score[half:h - size + half + 1, half:w - size + half + 1]
    y, x = np.unravel_index(int(np.argmax(valid)), valid.shape)
    return int(y), int(x)


def crop_size(h: int, w: int) -> int:
    return int(min(h, w, max(24, min(min(h, w) // 3, 160))))


# -- the study's rows -----------------------------------------------------------------------------------

def pick_ours(rows: dict[str, RowInfo]) -> RowInfo:
    """The row that stands for the paper's method: adapts at test time, default recipe if present."""
    cands = [r for r in rows.values() if r.adapts and r.stage == "finetune" and r.arch == "ours"]
    if not cands:
        raise Skip("no row of this study adapts at test time (no MTL-trained multi-task network)")

    def score(r: RowInfo) -> tuple:
        return (r.metatest, r.recipe.get("pretrain") == "maxl", r.recipe.get("aux_loss") == "mrl",
                r.recipe.get("inner_scope") == "heads")

    return max(cands, key=score)


def metatest_pairs(study: StudyRuns):
    """The pairs of rows with and without meta-test (``stats.find_pairs``)."""
    return [p for p in find_pairs(study.rows.values()) if p.label.startswith("meta-test")]


def row_run(study: StudyRuns, row: str, seed: int | None = None) -> RowRun:
    """The finished run of ``row`` (of ``seed`` when there is one, else the lowest seed)."""
    runs = sorted((r for r in study.runs if r.row == row), key=lambda r: r.seed)
    if seed is not None:
        runs = [r for r in runs if r.seed == seed] or runs
    if not runs:
        raise Skip(f"no finished run of row {row!r}")
    return runs[0]


def trajectory_image(study: StudyRuns, ours: RowInfo, seed: int) -> str:
    """The test image with the largest |meta-test gain| for ``seed`` (else the first test image)."""
    tidy = study.tidy
    for pair in metatest_pairs(study):
        if pair.a == ours.name:
            a, b = per_image(tidy, pair.a, [seed]), per_image(tidy, pair.b, [seed])
            if ("test", "psnr") in a.index.droplevel("image") and ("test", "psnr") in b.index.droplevel("image"):
                d = a.loc[("test", "psnr")] - b.loc[("test", "psnr")]
                if len(d.dropna()):
                    return str(d.abs().idxmax())
    images = tidy[(tidy.split == "test") & (tidy.row == ours.name)]["image"]
    if images.empty:
        raise Skip(f"row {ours.name!r} has no test images")
    return str(images.iloc[0])


class StudyData:
    """The study's evaluation images (the preset in its ``config.json``), loaded once on demand."""

    def __init__(self, study: StudyRuns, device: str = "cpu") -> None:
        self.study, self.device = study, device
        self._data = None

    @property
    def data(self):
        if self._data is None:
            from bench.data import load_data

            try:
                self._data = load_data(self.study.preset.data)
            except BenchError as e:
                raise Skip(f"the study's data cannot be loaded here ({e})") from None
        return self._data

    def pair(self, split: str, image: str):
        from bench.data.base import as_float

        for p in self.data.test if split == "test" else self.data.val:
            if p.name == image:
                return as_float(p.noisy), as_float(p.clean)
        raise Skip(f"image {image!r} is not in the study's {split} data")

    def tensors(self, split: str, image: str):
        from bench.core.images import to_tensor

        noisy, clean = self.pair(split, image)
        return to_tensor(noisy, self.device), to_tensor(clean, self.device)


class Models:
    """The trained network of each row run (``bench.inference.trained.load_model``), loaded once each."""

    def __init__(self, study: StudyRuns, device: str = "cpu") -> None:
        self.study, self.device = study, device
        self._models: dict[str, object] = {}

    def model(self, row: str, seed: int | None = None):
        """A ``TrainedModel`` (network in eval mode on the device, its recipe) of a row's checkpoint:
        the file the run recorded when it is on this machine, else the artifact of the stage run."""
        from bench.inference.trained import load_model

        run = row_run(self.study, row, seed)
        if run.id not in self._models:
            try:
                if run.checkpoint.is_file():
                    trained = load_model(checkpoint=run.checkpoint)
                else:
                    trained = load_model(run_id=run.id, client=self.study.client)
            except BenchError as e:
                raise Skip(f"checkpoint of {row!r} cannot be loaded ({e})") from None
            trained.model.to(self.device).eval()
            self._models[run.id] = trained
        return self._models[run.id]
