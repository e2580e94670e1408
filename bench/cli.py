"""The ``bench`` command line. Bad input: a one-line ``error:`` message and exit code 2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .datacli import data_app
from .errors import BenchError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="ttaid-bench: test-time adaptation for real image denoising, as reproducible studies.")
# Rich falls back to 80 columns when output is piped; tables read better wider.
console = Console(width=None if sys.stdout.isatty() else 150)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 400)

app.add_typer(data_app, name="data")

HomeOpt = typer.Option(None, "--home", help="Where studies, caches and the local MLflow store live "
                                            "(default: $BENCH_HOME or ./.bench).")


def _home(home: Optional[Path]) -> Path:
    from .studies import default_home

    return home or default_home()


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise BenchError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2") from None
    if not seeds or any(s < 0 for s in seeds):
        raise BenchError(f"--seeds {text!r}: expected one or more non-negative integers")
    return seeds


@app.command()
def run(
    study: str = typer.Argument(..., help="Study name (studies/<name>.yaml) or path to a study YAML."),
    preset: str = typer.Option("quick", help="smoke | quick | paper (studies/presets.yaml)."),
    set_: list[str] = typer.Option([], "--set", help="Override a preset value, e.g. finetune.epochs=3."),
    seeds: str = typer.Option("0", help="Comma-separated seeds; each row runs once per seed."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL (default: a journal file in --home)."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Root of the real data sets "
                                             "(paper preset; default $TTAID_DATA_ROOT or ./datasets)."),
    home: Optional[Path] = HomeOpt,
    workers: int = typer.Option(1, "--workers", help="Trials run at once, each in its own process."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run (or resume) a study and print its table. Finished rows are never retrained."""
    from .studies import load_study

    name, spec = load_study(study)
    _run_study(name, spec, preset, set_, seeds, device, storage, data_root, home, quiet, workers=workers)


def _check_device(device: str) -> None:
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise BenchError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BenchError(f"--device {device}: CUDA is not available on this machine; use --device cpu")


def _run_study(name, spec, preset, set_, seeds, device, storage, data_root, home, quiet, baseline=None,
               workers: int = 1) -> None:
    """Validate every option, run the study's pending rows, print its table."""
    from .config import load_preset
    from .report.console import print_table
    from .studies import StudyRunner

    cfg = load_preset(preset, [*set_, *([f"data.root={data_root}"] if data_root else [])])
    _check_device(device)
    if workers < 1:
        raise BenchError(f"--workers {workers}: expected a positive integer")
    start = time.perf_counter()
    runner = StudyRunner(name, spec, preset, cfg, _seeds(seeds), _home(home), storage, device, quiet)
    trials = runner.run(workers)
    records = runner.table(trials)
    print_table(f"{spec.title}  [{preset}]", records, cfg.data.source, console, baseline)
    console.print(f"study {runner.study_name}: {len(trials)} finished trial(s) in {time.perf_counter() - start:.0f} s; "
                  f"`bench ui` to browse the MLflow runs", style="dim")
    if any("failed" in r for r in records):
        raise typer.Exit(1)


@app.command()
def ablate(
    base: str = typer.Option("ours", help="The method to ablate (a registered, meta-learned method)."),
    no_pretrain: bool = typer.Option(False, "--no-pretrain", help="Random init instead of MAXL."),
    no_mask: bool = typer.Option(False, "--no-mask", help="L_rec instead of L_MaskRec everywhere."),
    no_grad_loss: bool = typer.Option(False, "--no-grad-loss", help="No L_G in MAXL."),
    body_and_head: bool = typer.Option(False, "--body-and-head", help="Inner loop updates body + heads."),
    no_metatest: bool = typer.Option(False, "--no-metatest", help="No test-time adaptation."),
    first_order: bool = typer.Option(False, "--first-order", help="First-order MTL."),
    preset: str = typer.Option("quick", help="smoke | quick | paper."),
    set_: list[str] = typer.Option([], "--set", help="Override a preset value, e.g. finetune.epochs=3."),
    seeds: str = typer.Option("0", help="Comma-separated seeds."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL."),
    data_root: Optional[Path] = typer.Option(None, "--data-root", help="Root of the real data sets."),
    home: Optional[Path] = HomeOpt,
    workers: int = typer.Option(1, "--workers", help="Trials run at once, each in its own process."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run a base method beside its ablated variants (one flag = one component off) and print the differences."""
    from .ablate import ablation_study

    flags = [f for f, on in (("no-pretrain", no_pretrain), ("no-mask", no_mask), ("no-grad-loss", no_grad_loss),
                             ("body-and-head", body_and_head), ("no-metatest", no_metatest),
                             ("first-order", first_order)) if on]
    name, spec = ablation_study(base, flags)
    _run_study(name, spec, preset, set_, seeds, device, storage, data_root, home, quiet,
               baseline=spec.rows[0].name, workers=workers)


@app.command()
def tune(
    method: str = typer.Argument("ours", help="A registered meta-learned method."),
    preset: str = typer.Option("quick", help="smoke | quick | paper."),
    set_: list[str] = typer.Option([], "--set", help="Override a preset value (fixed during the search)."),
    trials: int = typer.Option(20, "--trials", min=1, help="Trials to run (added to earlier ones)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting new trials after this many seconds."),
    seed: int = typer.Option(0, help="Training seed of every trial, and the sampler's seed."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    storage: Optional[str] = typer.Option(None, help="Optuna storage URL."),
    out: Optional[Path] = typer.Option(None, help="Study YAML to write the best config to "
                                                  "(default studies/tuned-METHOD.yaml)."),
    home: Optional[Path] = HomeOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Search MTL and meta-test hyper-parameters (validation PSNR, median pruning); save the best as a study."""
    from .config import load_preset
    from .tune import Tuner, default_out, write_best

    cfg = load_preset(preset, set_)
    _check_device(device)
    tuner = Tuner(method, preset, cfg, seed, _home(home), storage, device, quiet)
    study = tuner.tune(trials, timeout)
    states = [t.state.name for t in study.trials]
    path = write_best(study, method, preset, out or default_out(method))
    best = study.best_trial
    console.print(f"{len(states)} trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned; "
                  f"best val PSNR {best.value:.3f} dB (trial {best.number})")
    for k, v in best.params.items():
        console.print(f"  {k} = {v}")
    console.print(f"wrote {path}; reproduce with: bench run {path} --preset {preset}")


@app.command("methods")
def methods_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered methods with their parameter counts."""
    import methods as registry

    rows = [registry.get(n).describe() for n in registry.names()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="Registered methods")
    for col in ("name", "restorer", "mask", "total", "adapted at test", "description"):
        table.add_column(col, justify="left" if col in ("name", "description") else "right")
    for r in rows:
        p = r["params"]
        table.add_row(r["name"], f"{p['restorer']:,}", f"{p['mask']:,}", f"{p['total']:,}",
                      f"{p['adapted']:,}" if p["adapted"] else "—", r["description"])
    console.print(table)


@app.command()
def ui(
    port: int = typer.Option(5000, help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Open the MLflow UI on the tracking store that `bench run` writes to."""
    from .tracking import tracking_uri

    home_dir = _home(home)
    home_dir.mkdir(parents=True, exist_ok=True)
    uri = tracking_uri(home_dir)
    console.print(f"MLflow UI for {uri} at http://{host}:{port} (Ctrl-C to stop)")
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
           "--port", str(port), "--workers", "1"]
    try:
        raise typer.Exit(subprocess.call(cmd, env=env))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def denoise(
    inputs: list[str] = typer.Argument(..., help="Image files, folders or glob patterns (PNG, JPEG, TIFF)."),
    model: Optional[str] = typer.Option(None, "--model", help="MLflow run id of a `bench run` row (or stage) run."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A .pt checkpoint file."),
    study: Optional[str] = typer.Option(None, "--study", help="Study name or YAML; with --row: its best finished run."),
    row: Optional[str] = typer.Option(None, "--row", help="Row of --study, e.g. \"Ours with meta-test\"."),
    preset: Optional[str] = typer.Option(None, "--preset", help="With --study: only runs of this preset."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Architecture of a bare state-dict --checkpoint (default ours)."),
    adapt_steps: Optional[int] = typer.Option(None, "--adapt-steps", "-k",
                                              help="Meta-test steps K per image (0: none; default: the checkpoint's)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Meta-test step size α (default: the checkpoint's)."),
    out: Path = typer.Option(Path("denoised"), "--out", help="Output folder: <name>.png per input."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N."),
    tile: Optional[int] = typer.Option(None, "--tile", help="Tile size in px (0: never tile; default: from --max-memory)."),
    overlap: int = typer.Option(64, "--overlap", help="Tile overlap in px."),
    adapt_per: str = typer.Option("image", "--adapt-per", help="Tiled images: adapt once per image or per tile."),
    max_memory: float = typer.Option(4.0, "--max-memory", help="Working-memory budget in GiB that sizes the tiles."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Clean image, or folder of same-named ones: "
                                                                      "prints PSNR/SSIM before/after adaptation."),
    save_mask: bool = typer.Option(False, "--save-mask", help="Also write the mask as <name>.mask.png."),
    save_steps: bool = typer.Option(False, "--save-steps", help="Also write the prediction after each step (Fig. 7)."),
    home: Optional[Path] = HomeOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Adapt a trained model to each of your photos and write the denoised PNGs."""
    from .denoise import DenoiseOptions, denoise_files

    opts = DenoiseOptions(inputs=inputs, model=model, checkpoint=checkpoint, study=study, row=row, preset=preset,
                          arch=arch, steps=adapt_steps, lr=lr, out=out, device=device, tile=tile, overlap=overlap,
                          adapt_per=adapt_per, max_memory=max_memory, reference=reference, save_mask=save_mask,
                          save_steps=save_steps, home=_home(home), quiet=quiet)
    denoise_files(opts, console)


@app.command()
def report(
    table: str = typer.Argument("all", help="table1 | table2 | table3 | ablate | all, or any study name in the store."),
    latex: bool = typer.Option(False, "--latex", help="Write OUT/<table>.tex (booktabs; \\input it)."),
    markdown: bool = typer.Option(False, "--markdown", help="Write OUT/<table>.md."),
    html: bool = typer.Option(False, "--html", help="Write one self-contained OUT/report.html with all tables "
                                                    "and figures."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the figures (PNG + PDF in "
                                                                      "OUT/figures/<table>/)."),
    out: Path = typer.Option(Path("reports"), "--out", help="Output folder."),
    preset: Optional[str] = typer.Option(None, help="Use the study run under this preset (default: the most recent)."),
    run_id: list[str] = typer.Option([], "--run-id", help="Use exactly these parent runs (repeatable) instead of the "
                                                         "latest finished run of each row × seed."),
    device: str = typer.Option("cpu", help="Device for the figures that run a network (cpu | cuda | cuda:N)."),
    log: bool = typer.Option(True, "--log/--no-log", help="Also log tables and figures to a 'report' run in each "
                                                          "study's MLflow experiment."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: "
                                               "$MLFLOW_TRACKING_URI, else the store in --home)."),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Rebuild the paper's tables and figures from finished runs: mean ± std over seeds beside the
    paper's numbers, paired tests per image, figures. Without a format flag: --latex --markdown."""
    from .report.build import build_reports
    from .report.console import study_table

    if device != "cpu" and not device.startswith("cuda"):
        raise BenchError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    start = time.perf_counter()
    rep = build_reports(table, out, latex=latex, markdown=markdown, html=html, figures=figures, preset=preset,
                        run_ids=run_id, home=_home(home), home_opt=home, tracking_uri=tracking_uri, device=device,
                        log=log)
    from rich.table import Table

    for r in rep.studies:
        s = r.study
        base = r.records[0]["row"] if s.is_ablation and r.records else None
        console.print(study_table(f"{s.title}  [{s.preset_name}]", r.records, s.data_source, base))
        if len(r.comparisons):
            t = Table(title="paired differences per image (A − B)", title_justify="left")
            for col in ("comparison", "A − B", "split", "metric", "images", "mean Δ", "95% CI", "Wilcoxon p",
                        "≠ 0?"):
                t.add_column(col, justify="left" if col in ("comparison", "A − B", "split", "metric") else "right")
            for c in r.comparisons.itertuples():
                d = 3 if c.metric == "psnr" else 4
                t.add_row(c.comparison, f"{c.a} − {c.b}", c.split, c.metric, str(c.n), f"{c.mean:+.{d}f}",
                          f"[{c.lo:+.{d}f}, {c.hi:+.{d}f}]", f"{c.p:.3g}", "yes" if c.distinguishable else "no")
            console.print(t)
        for note in r.skipped:
            console.print(note, style="yellow", highlight=False)
    for w in rep.warnings:
        err_console.print(f"warning: {w}", style="yellow", highlight=False)
    logged = f"; logged to MLflow run(s) {', '.join(rep.logged.values())}" if rep.logged else ""
    console.print(f"wrote {len(rep.written)} file(s) to {rep.out}/ in {time.perf_counter() - start:.0f} s{logged}",
                  style="dim", highlight=False)


@app.command()
def perf(
    device: str = typer.Option("cpu", help="cpu | cuda | cuda:N."),
    quick: bool = typer.Option(False, "--quick", help="Tiny sizes, one round: checks that every fast path "
                               "equals its naive reference (exit 1 if not); timings are reported, never asserted."),
    precision: str = typer.Option("auto", help="Meta-test precisions beside fp32, comma-separated: bf16, fp16 "
                                  "(auto: bf16,fp16 on CUDA; none on CPU, where bf16 is opt-in)."),
    sizes: Optional[str] = typer.Option(None, help="Meta-test image sizes (default 256,512,1024; quick: 64)."),
    only: Optional[str] = typer.Option(None, help="Cases to run, comma-separated: mtl,metatest,batched,maxl,eval "
                                       "(default: all of them), memmodel (the memory model alone)."),
    repeats: Optional[int] = typer.Option(None, help="Timed rounds per case (default 5; quick: 1)."),
    warmup: Optional[int] = typer.Option(None, help="Untimed rounds first (default 1; quick: 0)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="Also time channels-last variants."),
    compile_: bool = typer.Option(False, "--compile", help="Also time a torch.compile'd meta-test."),
    first_order: bool = typer.Option(True, "--first-order/--no-first-order", help="Also time first-order MTL."),
    memory: bool = typer.Option(True, "--memory/--no-memory", help="Tensor peak per variant (one more run each)."),
    memory_model: bool = typer.Option(False, "--memory-model", help="Also fit MTL memory vs K, batch, patch "
                                      "(the memmodel case; minutes on CPU)."),
    wide: bool = typer.Option(False, "--wide", help="Time the 2× wider network (base 64, scale 32)."),
    weights: Optional[Path] = typer.Option(None, help="A state_dict (or pipeline checkpoint) for the network; "
                                           "makes the PSNR columns meaningful."),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (default: torch's choice; quick: 1, "
                                          "which keeps the smoke fast on a busy machine)."),
    out: Path = typer.Option(Path("reports/perf"), help="Where perf-<device>[-quick].json and .md go."),
) -> None:
    """Time the fast paths beside naive references (MTL, meta-test, MAXL, evaluation); JSON + Markdown."""
    from .perf import failed_checks, make_config, run_perf, write_report
    from .perf.suite import headers, table_rows

    if threads is not None and threads < 1:
        raise BenchError(f"--threads {threads}: expected an integer ≥ 1")
    if threads is not None or quick:
        import torch

        torch.set_num_threads(threads or 1)
    cfg = make_config(device=device, quick=quick, precision=precision, sizes=sizes, only=only, repeats=repeats,
                      warmup=warmup, channels_last=channels_last, compile=compile_, first_order=first_order,
                      memory=memory, memory_model=memory_model, wide=wide,
                      weights=None if weights is None else str(weights))
    result = run_perf(cfg, log=lambda s: err_console.print(s, style="dim", highlight=False, markup=False))
    js, md = write_report(result, out)
    from rich.table import Table

    table = Table(title=f"bench perf ({result['environment']['device']}, {result['seconds']:.0f} s)")
    for h in headers(result):
        table.add_column(h, justify="left" if h in ("case", "variant") else "right")
    for row in table_rows(result):
        table.add_row(*(c.replace("**", "") for c in row))
    console.print(table)
    bad = failed_checks(result)
    for c in bad:
        console.print(f"check failed: {c['case']}: {c['what']} = {c['value']:.3g} (tolerance {c['tol']:g})", style="red")
    console.print(f"wrote {js} and {md}", style="dim")
    if bad:
        raise typer.Exit(1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: turns bad input into one line on stderr and exit code 2."""
    try:
        code = app(args=argv, standalone_mode=False)  # an Exit(n) inside a command comes back as n
        if isinstance(code, int) and code:
            sys.exit(code)
    except BenchError as e:
        err_console.print(f"error: {e}", style="red", highlight=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted", style="red")
        sys.exit(130)
    except typer.TyperException as e:  # usage errors: unknown option, missing argument, bad type
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        err_console.print(f"error: {' '.join(msg.split())}", style="red", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
