"""The body of ``bench denoise``: options, per-file checks and outputs, the summary line.

Heavy (torch): ``bench.cli.tools`` imports it inside the command, after the options parse.
"""
from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.core.errors import BenchError, DataError
from bench.core.images import to_tensor
from bench.core.metrics import image_metrics
from bench.data.io import image_size, write_png
from bench.data.photos import check_suffix, collect_inputs, match_references, read_photo, write_photo
from bench.inference.denoise import DEFAULT_BUDGET_GIB, DEFAULT_OVERLAP, Denoiser, entry_for
from bench.inference.trained import load_model


@dataclass
class DenoiseOptions:
    inputs: list[str]
    model: str | None = None
    checkpoint: Path | None = None
    study: str | None = None
    row: str | None = None
    preset: str | None = None
    arch: str | None = None
    steps: int | None = None
    lr: float | None = None
    out: Path = Path("denoised")
    device: str = "auto"
    tile: int | None = None
    overlap: int = DEFAULT_OVERLAP
    adapt_per: str = "image"
    max_memory: float = DEFAULT_BUDGET_GIB
    reference: Path | None = None
    save_mask: bool = False
    save_steps: bool = False
    home: Path | None = None
    quiet: bool = False
    adapt: str | None = None  # an adaptation entry (``bench adaptations``); None: the model's meta-test


def open_denoiser(opts: DenoiseOptions) -> Denoiser:
    """The model named by exactly one of --model / --checkpoint / --study (+ --row)."""
    trained = load_model(checkpoint=opts.checkpoint, run_id=opts.model, study=opts.study, row=opts.row,
                         preset=opts.preset, arch=opts.arch, home=opts.home)
    den = Denoiser.of(trained, opts.device, opts.max_memory)
    if opts.adapt is not None:
        den.use(entry_for(opts.adapt, opts.steps, opts.lr))
    return den


def _check_files(inputs: list[Path], out: Path) -> None:
    """Every input is an image whose header reads, --out is a folder, and no two inputs write the
    same file or over an input."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out}: an existing file; expected a folder for the denoised images")
    for p in inputs:
        check_suffix(p)
        image_size(p)
    stems: dict[str, Path] = {}
    for p in inputs:
        if p.stem in stems:
            raise DataError(f"{p} and {stems[p.stem]} would both be written to {out / (p.stem + '.png')}; "
                            "denoise them into separate --out folders")
        stems[p.stem] = p
        if (out / f"{p.stem}.png").resolve() == p.resolve():
            raise DataError(f"{p}: --out {out} would overwrite this input; choose another --out folder")


def _fmt_gain(after: float, before: float) -> str:
    return f"{after - before:+.4f}"


def _say(console, text: str, **kw: Any) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True, **kw)


def denoise_files(opts: DenoiseOptions, console) -> dict[str, Any]:
    """``bench denoise``: returns the summary (images, seconds, per-image rows, mean PSNR gain).

    Bad options or inputs stop before anything is written (BenchError). A file that fails on its
    own (too small, undecodable pixels, a reference of another size) gets one ``error:`` line on
    stderr and the batch goes on; the command then exits 1 (``typer.Exit``).
    """
    if opts.adapt is not None:  # checked before any file or model is read
        entry_for(opts.adapt, opts.steps, opts.lr)
    inputs = collect_inputs(opts.inputs)
    _check_files(inputs, opts.out)
    refs = match_references(inputs, opts.reference) if opts.reference is not None else {}
    for r in refs.values():
        image_size(r)
    den = open_denoiser(opts)
    e = den.settings(opts.steps, opts.lr, opts.tile, opts.overlap, opts.adapt_per)
    adapting = e.takes_steps
    k, lr = (e.updates_behind_prediction if opts.adapt is not None else e.steps), e.lr
    if opts.adapt is not None:
        how = f"adaptation {e.name} ({e.moves}, {e.loss}" + (f", {e.optimizer} lr {e.lr:g} × {e.steps})" if e.learns
                                                                else ")")
    elif den.adapts:
        how = f"meta-test K={k}, lr {lr:g}, {e.optimizer}" if k > 0 else "no adaptation (K=0)"
    else:
        how = "plain forward pass: this network has no auxiliary head to adapt"
        if opts.steps:
            how += f" (--adapt-steps {opts.steps} ignored)"
    home = ""
    if opts.checkpoint is None:  # a run or a study row: found in the home's store (or $MLFLOW_TRACKING_URI's)
        from bench.core.home import Home

        home = f"; home {Home.resolve(opts.home).root.expanduser().resolve()}"
    _say(console, f"model: {den.arch} from {den.source}; {how}; device {den.device}{home}")
    for flag, wanted, ok in (("--save-mask", opts.save_mask, den.has_mask),
                             ("--save-steps", opts.save_steps, adapting)):
        if wanted and not ok:
            _say(console, f"note: {flag} ignored: {'no mask network in this model' if flag == '--save-mask' else 'no adaptation steps'}",
                 style="yellow")
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    start = time.perf_counter()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}")]
    with Progress(*cols, console=console, transient=True, disable=opts.quiet or not console.is_terminal) as bar:
        task = bar.add_task("denoising", total=len(inputs), info="")
        for path in inputs:
            bar.update(task, info=path.name)
            try:
                rows.append(_denoise_one(den, opts, path, refs.get(path), k, lr, adapting, bar, task))
            except DataError as e:
                failed.append(str(e))
                print(f"error: {e}", file=sys.stderr, flush=True)
            bar.update(task, advance=1)
    seconds = time.perf_counter() - start
    summary: dict[str, Any] = {"images": len(rows), "seconds": seconds, "rows": rows, "out": str(opts.out),
                               "failed": failed}
    line = f"{len(rows)} image(s) in {seconds:.1f} s"
    if refs and rows:
        before = float(np.mean([r["before_psnr"] for r in rows]))
        after = float(np.mean([r["after_psnr"] for r in rows]))
        summary.update(before_psnr=before, after_psnr=after, gain=after - before)
        line += f"; mean PSNR {before:.4f} → {after:.4f} dB, gain {_fmt_gain(after, before)} dB"
        _write_csv(opts.out / "metrics.csv", rows)
    line += f"; written to {opts.out}/" + (" (per-image numbers in metrics.csv)" if refs and rows else "")
    if failed:
        line += f"; {len(failed)} file(s) failed (see the error lines)"
    _say(console, line)
    if failed:
        import typer

        raise typer.Exit(1)
    return summary


def _denoise_one(den: Denoiser, opts: DenoiseOptions, path: Path, ref: Path | None, k: int, lr: float,
                 adapting: bool, bar, task) -> dict[str, Any]:
    """Denoise one file and write its outputs; its row of metrics.csv. ``adapting``: whether the
    call's entry takes any step (only then are the steps saved)."""
    t0 = time.perf_counter()
    photo = read_photo(path)
    clean = None
    if ref is not None:
        clean = read_photo(ref).rgb
        if clean.shape != photo.rgb.shape:
            raise DataError(f"{ref}: reference is {clean.shape[1]}×{clean.shape[0]}, "
                            f"input {path} is {photo.rgb.shape[1]}×{photo.rgb.shape[0]}; expected the same size")

    def on_tile(done: int, total: int) -> None:
        bar.update(task, info=f"{path.name}: tile {done}/{total}")

    res = den.run(photo, steps=opts.steps, lr=opts.lr, tile=opts.tile, overlap=opts.overlap, adapt=opts.adapt_per,
                  before=clean is not None, trajectory=opts.save_steps and adapting,
                  mask=opts.save_mask, on_tile=on_tile)
    write_photo(opts.out / f"{path.stem}.png", res.image, photo)
    if res.mask is not None:
        write_png(opts.out / f"{path.stem}.mask.png", res.mask, photo.bits)
    if res.steps is not None and opts.save_steps:
        for s, img in enumerate(res.steps):
            write_photo(opts.out / f"{path.stem}.steps" / f"step_{s}.png", img, photo)
    row: dict[str, Any] = {"image": path.name, "height": photo.rgb.shape[0], "width": photo.rgb.shape[1],
                           "tiles": res.tiles, "steps": k if res.adapted else 0, "lr": lr}
    if clean is not None:
        ct = to_tensor(clean)
        for label, img in (("noisy", photo.rgb), ("before", res.before), ("after", res.image)):
            for m, v in image_metrics(to_tensor(img), ct).items():
                row[f"{label}_{m}"] = v[0]
        _say(bar.console, f"{path.name}: PSNR {row['before_psnr']:.4f} → {row['after_psnr']:.4f} dB "
             f"({_fmt_gain(row['after_psnr'], row['before_psnr'])}), SSIM {row['before_ssim']:.4f} → "
             f"{row['after_ssim']:.4f}  (noisy input {row['noisy_psnr']:.4f} dB)")
    row["seconds"] = time.perf_counter() - t0
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: repr(v) if isinstance(v, float) else v for k, v in r.items()})


__all__ = ["denoise_files", "DenoiseOptions", "open_denoiser"]
