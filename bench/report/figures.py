"""The paper's figures, rebuilt from a finished study (PNG + PDF, one style).

- ``curves``: training curves (losses, validation PSNR per epoch) of every row, from the nested
  stage runs' metric histories.
- ``metatest_gain``: per-image PSNR with vs without meta-test (scatter) and the gain (histogram).
- ``fig3_crops``: noisy, RIDNet, MIRNet, ours before and after adaptation, ground truth; the test
  image and the crop where the methods differ most are chosen automatically.
- ``fig5_6_masks``: the mask of fixed validation images across MTL epochs, MAXL-pretrained vs RI,
  from the mask PNGs the MTL trainer logs.
- ``fig7_steps``: the clean prediction after each of the K meta-test steps, with PSNR per step.
- ``fig8_features``: the primary head's last-layer feature maps before and after adaptation,
  their difference, and the mask.

Figures that need a network (3, 7, 8) load the row's checkpoint (the parent run's ``checkpoint``
tag) and the study's evaluation data (the preset in the run's ``config.json``). A panel or figure
whose inputs do not exist (no RIDNet row, no checkpoint on this machine, …) is skipped with a note.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import BenchError
from ..tracking import artifact_name
from .runs import RowInfo, RowRun, StudyRuns
from .stats import find_pairs, paired_test, per_image

DPI = 150
RC = {"figure.dpi": 100, "savefig.dpi": DPI, "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8,
      "xtick.labelsize": 7, "ytick.labelsize": 7, "legend.fontsize": 7, "figure.titlesize": 9,
      "image.interpolation": "nearest", "pdf.fonttype": 42}
BASELINES = (("ridnet", "RIDNet"), ("mirnet", "MIRNet"))


class Skip(Exception):
    """A figure (or panel) whose inputs are not in this study; the message says why."""


@dataclass
class FigureOut:
    name: str
    title: str
    caption: str
    files: list[Path] = field(default_factory=list)  # PNG first, then PDF
    notes: list[str] = field(default_factory=list)


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


def save(fig, folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png", folder / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=DPI, metadata={"CreationDate": None} if p.suffix == ".pdf" else None)
    return paths


def palette(names: list[str]) -> dict[str, tuple]:
    import seaborn as sns

    return dict(zip(names, sns.color_palette("colorblind", max(len(names), 1))))


def _img(t) -> np.ndarray:
    """(1,3,H,W) tensor → (H,W,3) float array in [0,1]."""
    return t[0].permute(1, 2, 0).detach().cpu().float().clamp(0, 1).numpy()


def _psnr(pred, clean) -> float:
    from ..metrics import psnr

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


def _off(ax, text: str | None = None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)
    if text:
        ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=7, color="0.35",
                transform=ax.transAxes)


# -- models and data ---------------------------------------------------------------------------------

class Models:
    """Loads a study's checkpoints and evaluation data on demand (once each)."""

    def __init__(self, study: StudyRuns, device: str = "cpu") -> None:
        self.study, self.device = study, device
        self._data = None
        self._models: dict[str, tuple] = {}

    @property
    def data(self):
        if self._data is None:
            from ..data import load_data
            from ..errors import BenchError

            try:
                self._data = load_data(self.study.preset.data)
            except BenchError as e:
                raise Skip(f"the study's data cannot be loaded here ({e})") from None
        return self._data

    def run(self, row: str, seed: int | None = None) -> RowRun:
        runs = sorted((r for r in self.study.runs if r.row == row), key=lambda r: r.seed)
        if seed is not None:
            runs = [r for r in runs if r.seed == seed] or runs
        if not runs:
            raise Skip(f"no finished run of row {row!r}")
        return runs[0]

    def model(self, row: str, seed: int | None = None):
        """(model in eval mode, resolved MethodSpec) of a row's checkpoint."""
        import torch

        from ..pipeline import resolve_method

        run = self.run(row, seed)
        if run.id in self._models:
            return self._models[run.id]
        path = run.checkpoint
        if not path.is_file():  # another machine's cache: the stage run that trained it logged it too
            try:
                path = self.study.download(run.trained_in, f"checkpoints/{path.name}")
            except BenchError:
                raise Skip(f"checkpoint of {row!r} is neither on this machine ({run.checkpoint}) nor an "
                           f"artifact of run {run.trained_in}") from None
        info = self.study.rows[row]
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            spec = resolve_method(run.method).with_recipe(**info.recipe)
            model = spec.create(**(ckpt.get("payload", {}).get("arch_kwargs") or {}))
            model.load_state_dict(ckpt["model"])
        except (KeyError, TypeError, RuntimeError, OSError) as e:
            raise Skip(f"checkpoint of {row!r} cannot be loaded ({str(e).splitlines()[0][:120]})") from None
        model.to(self.device).eval()
        self._models[run.id] = (model, spec)
        return model, spec

    def pair(self, split: str, image: str):
        from ..data.base import as_float

        pairs = self.data.test if split == "test" else self.data.val
        for p in pairs:
            if p.name == image:
                return as_float(p.noisy), as_float(p.clean)
        raise Skip(f"image {image!r} is not in the study's {split} data")

    def tensors(self, split: str, image: str):
        from ..evaluate import to_tensor

        noisy, clean = self.pair(split, image)
        return to_tensor(noisy, self.device), to_tensor(clean, self.device)


def pick_ours(rows: dict[str, RowInfo]) -> RowInfo:
    """The row that stands for the paper's method: adapts at test time, default recipe if present."""
    cands = [r for r in rows.values() if r.adapts and r.stage == "finetune" and r.arch == "ours"]
    if not cands:
        raise Skip("no row of this study adapts at test time (no MTL-trained multi-task network)")

    def score(r: RowInfo) -> tuple:
        return (r.metatest, r.recipe.get("pretrain") == "maxl", r.recipe.get("aux_loss") == "mrl",
                r.recipe.get("inner_scope") == "heads")

    return max(cands, key=score)


def _metatest_pairs(study: StudyRuns):
    return [p for p in find_pairs(study.rows.values()) if p.label.startswith("meta-test")]


def _adapted_params(model, noisy, spec, mt):
    """The heads after each meta-test step (Alg. 3), as ``bench.adapt.meta_test`` computes them."""
    from ..adapt import meta_test_iterates

    return meta_test_iterates(model, noisy, steps=mt.steps, lr=mt.lr, scope=spec.recipe.inner_scope,
                              aux=spec.recipe.aux_loss, optimizer=mt.optimizer)


# -- figures ------------------------------------------------------------------------------------------

def fig_curves(study: StudyRuns, folder: Path) -> FigureOut:
    """Loss and validation PSNR per epoch of each stage, one line per training (seeds: line styles)."""
    lines: dict[str, dict] = {}  # stage_key → {rows, seed, run, metrics}
    links = []  # (row, the stage key its fine-tuning started from)
    for run in study.runs:
        if run.row not in study.rows:
            continue
        for child in study.nested(run.id):
            key = child.data.tags.get("stage_key", child.info.run_id)
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
    from matplotlib.ticker import MaxNLocator

    colors = palette(order)
    seeds = sorted({rec["seed"] for rec in lines.values()})
    dashes = ["-", "--", ":", "-."]
    ncol = min(3, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    fig = new_figure(3.0 * ncol, 2.2 * nrow + 0.5)
    axes = fig.subplots(nrow, ncol, squeeze=False).ravel()
    handles = {}
    for ax, key in zip(axes, keys):
        epochs = set()
        for rec in lines.values():
            metric = next((m for m, p in rec["panels"].items() if p == key), None)
            h = study.history(rec["run"], metric) if metric else []
            if not h:
                continue
            label = " / ".join(rec["rows"])
            (ln,) = ax.plot([s for s, _ in h], [v for _, v in h], dashes[seeds.index(rec["seed"]) % 4],
                            color=colors[rec["rows"][0]], marker="o", ms=2.5, lw=1.2, label=label)
            handles.setdefault(label, ln)
            epochs |= {s for s, _ in h}
        stage, _, metric = key.partition("/")
        ax.set_title(f"{stage}: {metric.replace('_', ' ')}")
        ax.set_xlabel("epoch")
        if 0 < len(epochs) <= 12:
            ax.set_xticks(sorted(epochs))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("PSNR [dB]" if "psnr" in metric else "loss")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(3, len(handles)),
               frameon=False)
    style_note = f"; line style = seed ({', '.join(map(str, seeds))})" if len(seeds) > 1 else ""
    fig.suptitle(f"Training curves — {study.title}")
    out = FigureOut("curves", "Training curves",
                    "Per-epoch training losses and validation PSNR of each stage (MAXL pre-training, MTL or "
                    f"supervised fine-tuning); rows that share a training are drawn once{style_note}.")
    out.files = save(fig, folder, out.name)
    return out


def fig_metatest_gain(study: StudyRuns, folder: Path) -> FigureOut:
    """Per-image PSNR with vs without meta-test, and the histogram of the gain."""
    from matplotlib.ticker import MaxNLocator

    pairs = _metatest_pairs(study)
    if not pairs:
        raise Skip("no pair of rows with and without meta-test in this study")
    tidy = study.tidy
    fig = new_figure(6.4, 2.6 * len(pairs) + 0.3)
    axes = fig.subplots(len(pairs), 2, squeeze=False)
    colors = {"val": "#0173b2", "test": "#de8f05"}
    notes = []
    for (ax1, ax2), pair in zip(axes, pairs):
        seeds = sorted(set(tidy.loc[tidy.row == pair.a, "seed"]) & set(tidy.loc[tidy.row == pair.b, "seed"]))
        a, b = per_image(tidy, pair.a, seeds), per_image(tidy, pair.b, seeds)
        diffs = []
        for split in ("val", "test"):
            try:
                sa, sb = a.loc[(split, "psnr")], b.loc[(split, "psnr")]
            except KeyError:
                continue
            common = sa.index.intersection(sb.index)
            ax1.scatter(sb.loc[common], sa.loc[common], s=14, color=colors[split], label=split, alpha=0.8,
                        edgecolor="none")
            d = (sa.loc[common] - sb.loc[common]).to_numpy()
            diffs.append((split, d))
        lo = min(ax1.get_xlim()[0], ax1.get_ylim()[0])
        hi = max(ax1.get_xlim()[1], ax1.get_ylim()[1])
        ax1.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--", zorder=0)
        ax1.set_xlim(lo, hi)
        ax1.set_ylim(lo, hi)
        ax1.set_aspect("equal")
        ax1.set_xlabel(f"PSNR without meta-test [dB]\n({pair.b})")
        ax1.set_ylabel(f"PSNR with meta-test [dB]\n({pair.a})")
        ax1.legend(frameon=False, loc="upper left")
        allv = np.concatenate([d for _, d in diffs]) if diffs else np.array([])
        span = max(np.abs(allv).max() if len(allv) else 0, 1e-4)
        bins = np.linspace(-span * 1.05, span * 1.05, 21)
        for split, d in diffs:
            ax2.hist(d, bins=bins, color=colors[split], alpha=0.6, label=split)
        test = dict(diffs).get("test", allv)
        res = paired_test(test)
        ax2.axvline(0, color="0.3", lw=0.8)
        if res["n"]:
            ax2.axvline(res["mean"], color="#d55e00", lw=1.2, label=f"test mean {res['mean']:+.3f} dB")
            ax2.axvspan(res["lo"], res["hi"], color="#d55e00", alpha=0.15, label="95% bootstrap CI")
            notes.append(f"{pair.a} − {pair.b}: test mean {res['mean']:+.4f} dB, 95% CI [{res['lo']:+.4f}, "
                         f"{res['hi']:+.4f}], Wilcoxon p = {res['p']:.3g} (n = {res['n']} images)")
        ax2.set_xlabel("meta-test gain per image [dB]")
        ax2.set_ylabel("images")
        ax2.xaxis.set_major_locator(MaxNLocator(5))
        ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax2.legend(frameon=False, fontsize=6)
    fig.suptitle(f"Meta-test gain per image — {study.title}")
    out = FigureOut("metatest_gain", "Meta-test gain per image",
                    "Left: each evaluation image's PSNR with vs without test-time adaptation (seed-averaged); "
                    "points above the diagonal gained. Right: histogram of the per-image gain, with the "
                    "test mean and its 95% bootstrap interval.", notes=notes)
    out.files = save(fig, folder, out.name)
    return out


def fig_masks(study: StudyRuns, folder: Path, models: Models | None = None, max_epochs: int = 8) -> FigureOut:
    """Figs. 5/6: the mask of fixed validation images across MTL epochs, MAXL-pretrained vs RI."""
    from matplotlib.image import imread

    groups: dict[str, RowInfo] = {}
    for r in study.rows.values():
        if r.stage != "finetune" or not r.adapts or r.recipe.get("aux_loss") != "mrl":
            continue
        g = "MAXL-pretrained" if r.recipe.get("pretrain") == "maxl" else (
            "RI" if r.recipe.get("pretrain") == "none" else f"{r.recipe.get('pretrain')}-pretrained")
        best = groups.get(g)
        if best is None or (r.recipe.get("inner_scope") == "heads" and best.recipe.get("inner_scope") != "heads"):
            groups[g] = r
    if not groups:
        raise Skip("no MTL row with the masked auxiliary loss (MRL) in this study")
    order = sorted(groups, key=lambda g: (g != "MAXL-pretrained", g != "RI", g))
    panels = []  # (group, row, image, [(epoch, array)])
    notes = []
    for g in order:
        row = groups[g]
        run = (models or Models(study)).run(row.name)
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
                epoch = int(Path(f).stem.split("_")[-1])
                arr = imread(str(study.download(src, f)))
                frames.append((epoch, arr[..., 0] if arr.ndim == 3 else arr))
            panels.append((g, row.name, image, frames))
    if not panels:
        raise Skip("; ".join(notes) or "no mask images were logged")
    noisy: dict[str, np.ndarray] = {}
    if models is not None:
        try:
            for p in models.data.val:
                noisy[artifact_name(p.name)] = p.noisy  # the name the MTL trainer logged it under
        except Skip as e:
            notes.append(f"noisy inputs not shown: {e}")
    ncol = 1 + max(len(f) for *_, f in panels)
    fig = new_figure(max(5.0, 1.25 * ncol + 1.0), 1.35 * len(panels) + 0.5)
    axes = fig.subplots(len(panels), ncol, squeeze=False)
    im = None
    for i, (ax_row, (g, row, image, frames)) in enumerate(zip(axes, panels)):
        if image in noisy:
            ax_row[0].imshow(np.clip(noisy[image], 0, 1))
            _off(ax_row[0])
        else:
            _off(ax_row[0], "noisy input\nnot available")
            if noisy:
                notes.append(f"noisy input of {image} not found among the validation images")
        ax_row[0].set_ylabel(f"{g}\n{image}", fontsize=6)
        ax_row[0].set_title("noisy input" if i == 0 else "")
        for j, ax in enumerate(ax_row[1:]):
            if j < len(frames):
                epoch, arr = frames[j]
                im = ax.imshow(arr, cmap="magma", vmin=0, vmax=1)
                ax.set_title(f"epoch {epoch}")
                _off(ax)
            else:
                ax.set_visible(False)
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.6, label="mask M (0 … 1)")
    missing = [g for g in ("MAXL-pretrained", "RI") if g not in groups]
    if missing:
        notes.append(f"no {' / '.join(missing)} row with MRL in this study: its masks are not shown")
    fig.suptitle("Figs. 5/6 — masks of fixed validation images across MTL epochs")
    out = FigureOut("fig5_6_masks", "Figs. 5/6: masks across MTL epochs",
                    "The mask network's output on fixed validation images after each validated MTL epoch "
                    "(logged by the MTL trainer), for the MAXL-pretrained and the randomly initialised (RI) "
                    "network; brighter = the auxiliary loss weighs that pixel more.", notes=notes)
    out.files = save(fig, folder, out.name)
    return out


def fig_crops(study: StudyRuns, folder: Path, models: Models) -> FigureOut:
    """Fig. 3: qualitative crops; the test image and the crop where the methods differ most."""
    import torch

    from ..evaluate import predict

    ours = pick_ours(study.rows)
    rows = study.rows
    mt = study.row_preset(ours.name).metatest
    seed = models.run(ours.name).seed
    tidy = study.tidy
    test = tidy[(tidy.split == "test") & (tidy.metric == "psnr")]
    baselines: list[tuple[str, RowInfo | None]] = []
    for method, label in BASELINES:
        match = [r for r in rows.values() if r.supervised and r.method == method]
        baselines.append((label, match[0] if match else None))
    baselines += [(r.name, r) for r in rows.values() if r.supervised and r.method not in dict(BASELINES)]
    # the image where the rows we show differ most (seed-averaged PSNR spread)
    shown = [ours.name] + [r.name for _, r in baselines if r is not None]
    shown += [p.b for p in _metatest_pairs(study) if p.a == ours.name]
    per = test[test.row.isin(shown)].groupby(["image", "row"])["value"].mean().unstack()
    if per.empty:
        raise Skip("no test images in the tidy rows")
    image = str((per.max(axis=1) - per.min(axis=1)).idxmax()) if per.shape[1] > 1 else str(per.index[0])
    noisy, clean = models.tensors("test", image)
    notes = []
    preds: list[tuple[str, object]] = []  # (label, tensor | note)
    with torch.no_grad():
        for label, r in baselines:
            if r is None:
                preds.append((label, f"no {label} row\nin this study"))
                notes.append(f"{label}: panel skipped (no {label} row in this study)")
                continue
            try:
                m, spec = models.model(r.name, seed)
                preds.append((label, predict(m, noisy, spec.recipe, mt, False)))
            except Skip as e:
                preds.append((label, str(e)))
                notes.append(f"{label}: panel skipped ({e})")
    model, spec = models.model(ours.name, seed)
    with torch.no_grad():
        before = predict(model, noisy, spec.recipe, mt, False)
    after = predict(model, noisy, spec.recipe, mt, True)
    preds += [("Ours, before adaptation", before), (f"Ours, after adaptation (K={mt.steps})", after)]
    real = [(lbl, p) for lbl, p in preds if not isinstance(p, str)]
    gt = _img(clean)
    errs = [np.abs(_img(p) - gt).mean(axis=2) for _, p in real]
    h, w = gt.shape[:2]
    size = crop_size(h, w)
    y, x = crop_where(errs, size)
    sl = (slice(y, y + size), slice(x, x + size))
    panels = [("Noisy input", noisy)] + preds + [("Ground truth", None)]
    fig = new_figure(1.6 * (len(panels) + 1), 2.3)
    axes = fig.subplots(1, len(panels) + 1)
    from matplotlib.patches import Rectangle

    axes[0].imshow(_img(noisy))
    axes[0].add_patch(Rectangle((x - 0.5, y - 0.5), size, size, fill=False, ec="#ffd400", lw=1.2))
    axes[0].set_title(f"{image}\n(full, crop boxed)")
    _off(axes[0])
    for ax, (label, p) in zip(axes[1:], panels):
        if isinstance(p, str):
            _off(ax, p)
            ax.set_title(label)
            continue
        arr = gt if p is None else _img(p)
        ax.imshow(arr[sl])
        title = label if p is None else f"{label}\n{_psnr(p, clean):.2f} dB"
        ax.set_title(title)
        _off(ax)
    fig.suptitle(f"Fig. 3 — qualitative comparison on a test image (seed {seed}); PSNR of the whole image")
    out = FigureOut("fig3_crops", "Fig. 3: qualitative crops",
                    f"Test image {image} (where the shown rows' PSNRs differ most), {size}×{size} crop where "
                    "their errors differ most. Captions: PSNR of the whole evaluation image (8-bit, as in "
                    f"the tables). Ours = row {ours.name!r}, before and after meta-test.", notes=notes)
    out.files = save(fig, folder, out.name)
    return out


def _trajectory_image(study: StudyRuns, ours: RowInfo, seed: int) -> str:
    """The test image with the largest |meta-test gain| for ``seed`` (else the first test image)."""
    tidy = study.tidy
    for pair in _metatest_pairs(study):
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


def fig_steps(study: StudyRuns, folder: Path, models: Models, max_images: int = 8) -> FigureOut:
    """Fig. 7: the clean prediction after each meta-test step, with PSNR per step."""
    import torch
    from torch.func import functional_call

    ours = pick_ours(study.rows)
    mt = study.row_preset(ours.name).metatest
    if mt.steps < 1:
        raise Skip("the preset's meta-test has 0 steps")
    model, spec = models.model(ours.name)
    seed = models.run(ours.name).seed
    image = _trajectory_image(study, ours, seed)

    def trajectory(noisy):
        iterates, features, _ = _adapted_params(model, noisy, spec, mt)
        kw = {} if features is None else {"features": features}
        with torch.no_grad():
            return [functional_call(model.restorer, p, (noisy,), kw)[0] for p in iterates]

    noisy, clean = models.tensors("test", image)
    traj = trajectory(noisy)
    psnrs = [_psnr(p, clean) for p in traj]
    # every test image's PSNR change per step (capped), for the curve
    curves = {}
    for p in models.data.test[:max_images]:
        n, c = models.tensors("test", p.name)
        curves[p.name] = [_psnr(q, c) for q in trajectory(n)]
    gt = _img(clean)
    h, w = gt.shape[:2]
    size = crop_size(h, w)
    change = [np.abs(_img(traj[-1]) - _img(traj[0])).mean(axis=2), np.zeros((h, w))]
    y, x = crop_where(change, size)
    sl = (slice(y, y + size), slice(x, x + size))
    k = len(traj)
    ncol = k + 2
    fig = new_figure(1.45 * ncol + 1.2, 6.0)
    sub_top, sub_bottom = fig.subfigures(2, 1, height_ratios=[2.1, 1.0])
    axes = sub_top.subplots(2, ncol, squeeze=False)
    top, mid = axes[0], axes[1, 1:k + 1]
    top[0].imshow(_img(noisy)[sl])
    top[0].set_title(f"noisy\n{_psnr(noisy, clean):.2f} dB")
    for j, p in enumerate(traj):
        top[j + 1].imshow(_img(p)[sl])
        top[j + 1].set_title(f"step {j}\n{psnrs[j]:.3f} dB")
    top[-1].imshow(gt[sl])
    top[-1].set_title("ground truth")
    for ax in top:
        _off(ax)
    _off(axes[1, 0], "change from\nstep 0 →")
    _off(axes[1, -1])
    diffs = [(_img(p) - _img(traj[0])).mean(axis=2)[sl] for p in traj]
    lim = max(max(float(np.abs(d).max()) for d in diffs), 1e-6)
    im = None
    for ax, d, j in zip(mid, diffs, range(k)):
        im = ax.imshow(d, cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_title(f"step {j} − step 0")
        _off(ax)
    sub_top.colorbar(im, ax=list(axes[1]), shrink=0.9, label="Δ intensity\n(mean over RGB)")
    ax = sub_bottom.subplots()
    steps = np.arange(k)
    for name, vals in curves.items():
        ax.plot(steps, np.array(vals) - vals[0], color="0.6", lw=0.8, marker=".", ms=3)
    mean = np.mean([np.array(v) - v[0] for v in curves.values()], axis=0)
    ax.plot(steps, mean, color="#d55e00", lw=2, marker="o", ms=4,
            label=f"mean over {len(curves)} test image(s)")
    ax.plot(steps, np.array(psnrs) - psnrs[0], color="#0173b2", lw=1.5, ls="--", label=image)
    ax.axhline(0, color="0.3", lw=0.6)
    ax.set_xticks(steps)
    ax.set_xlabel("meta-test step")
    ax.set_ylabel("PSNR − PSNR at step 0 [dB]")
    ax.legend(frameon=False)
    ax.grid(alpha=0.3)
    fig.suptitle(f"Fig. 7 — prediction after each meta-test step ({ours.name}, seed {seed}, "
                 f"lr {mt.lr:g}, {mt.optimizer})")
    out = FigureOut("fig7_steps", "Fig. 7: prediction after each meta-test step",
                    f"Top: test image {image} (the largest |meta-test gain|), {size}×{size} crop, after each of the "
                    f"K={mt.steps} steps, PSNR of the whole image. Middle: change from step 0. Bottom: PSNR gain "
                    "per step for each test image (grey) and their mean.")
    out.files = save(fig, folder, out.name)
    return out


def fig_features(study: StudyRuns, folder: Path, models: Models, channels: int = 4) -> FigureOut:
    """Fig. 8: primary head's last-layer feature maps before / after adaptation, difference, mask."""
    import torch
    from torch.func import functional_call

    ours = pick_ours(study.rows)
    mt = study.row_preset(ours.name).metatest
    model, spec = models.model(ours.name)
    restorer = model.restorer
    head = getattr(restorer, "primary_head", None)
    if head is None or not hasattr(head, "blocks"):
        raise Skip(f"row {ours.name!r} has no primary head with a last feature layer")
    image = _trajectory_image(study, ours, models.run(ours.name).seed)
    noisy, _ = models.tensors("test", image)
    iterates, features, mask = _adapted_params(model, noisy, spec, mt)
    captured: list = []
    hook = head.blocks.register_forward_hook(lambda mod, inp, out: captured.append(out.detach()))
    try:
        kw = {} if features is None else {"features": features}
        with torch.no_grad():
            for p in (iterates[0], iterates[-1]):
                functional_call(restorer, p, (noisy,), kw)
    finally:
        hook.remove()
    before, after = captured[0][0].cpu().numpy(), captured[1][0].cpu().numpy()  # (C, H, W)
    diff = after - before
    order = np.argsort(-np.abs(diff).mean(axis=(1, 2)))[:channels]
    with torch.no_grad():
        m = mask if mask is not None else (model.mask_net(noisy) if hasattr(model, "mask_net") else None)
    fig = new_figure(1.7 * (len(order) + 1) + 0.8, 5.4)
    axes = fig.subplots(3, len(order) + 1, squeeze=False)
    vmin = float(min(before[order].min(), after[order].min()))
    vmax = float(max(before[order].max(), after[order].max()))
    lim = max(float(np.abs(diff[order]).max()), 1e-8)
    ims = {}
    for j, c in enumerate(order):
        for i, (arr, kind) in enumerate(((before, "before"), (after, "after"), (diff, "diff"))):
            ax = axes[i, j]
            if kind == "diff":
                ims[kind] = ax.imshow(arr[c], cmap="RdBu_r", vmin=-lim, vmax=lim)
            else:
                ims[kind] = ax.imshow(arr[c], cmap="viridis", vmin=vmin, vmax=vmax)
            ax.set_title(f"ch {c}: {kind if kind != 'diff' else 'after − before'}")
            _off(ax)
    fig.colorbar(ims["before"], ax=axes[:2, :len(order)].ravel().tolist(), shrink=0.8, label="activation")
    fig.colorbar(ims["diff"], ax=axes[2, :len(order)].ravel().tolist(), shrink=0.8, label="Δ activation")
    axm = axes[0, -1]
    if m is not None:
        imm = axm.imshow(m[0, 0].cpu().numpy(), cmap="magma", vmin=0, vmax=1)
        axm.set_title("mask M" + ("" if spec.recipe.aux_loss == "mrl" else "\n(not used: L_rec)"))
        fig.colorbar(imm, ax=axm, shrink=0.8, label="mask")
        _off(axm)
    else:
        _off(axm, "no mask network")
    axes[1, -1].imshow(_img(noisy))
    axes[1, -1].set_title("noisy input")
    _off(axes[1, -1])
    _off(axes[2, -1], f"{len(iterates) - 1} steps\nlr {mt.lr:g}")
    fig.suptitle(f"Fig. 8 — primary head's last feature maps before / after meta-test ({image})")
    out = FigureOut("fig8_features", "Fig. 8: feature maps before and after adaptation",
                    f"The {before.shape[0]}-channel output of the primary head's last ResBlocks (the input of its "
                    f"final conv) on test image {image}, before and after the K={mt.steps} meta-test steps, for the "
                    f"{len(order)} channels that change most; their difference; and the mask.")
    out.files = save(fig, folder, out.name)
    return out


FIGURES: tuple[tuple[str, Callable, bool], ...] = (  # name, builder, needs a model
    ("curves", fig_curves, False),
    ("metatest_gain", fig_metatest_gain, False),
    ("fig5_6_masks", fig_masks, False),
    ("fig3_crops", fig_crops, True),
    ("fig7_steps", fig_steps, True),
    ("fig8_features", fig_features, True),
)


def make_figures(study: StudyRuns, folder: Path, device: str = "cpu") -> tuple[list[FigureOut], list[str]]:
    """Every figure this study supports; returns them and one note per skipped figure."""
    models = Models(study, device)
    made, skipped = [], []
    with style():
        for name, build, needs_model in FIGURES:
            try:
                if name == "fig5_6_masks":
                    made.append(build(study, folder, models))
                else:
                    made.append(build(study, folder, models) if needs_model else build(study, folder))
            except (Skip, BenchError) as e:
                skipped.append(f"{name}: skipped — {e}")
    return made, skipped


__all__ = ["make_figures", "FigureOut", "Skip", "crop_where", "pick_ours"]
