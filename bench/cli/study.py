"""``bench run``, ``bench ablate`` and ``bench tune``: run studies and print their tables."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from bench.cli.app import app, console
from bench.cli.options import (
    DEVICE,
    HOME,
    PRESET,
    QUIET,
    STORAGE,
    StudyOptions,
    ablation_flags,
    home_dir,
    study_options,
)
from bench.core.errors import BenchError


@app.command()
@study_options
def run(
    study: str = typer.Argument(..., help="Study name (shipped, or <home>/studies/<name>.yaml) or path to a YAML."),
    opts: StudyOptions = StudyOptions(),
) -> None:
    """Run (or resume) a study and print its table. Finished rows are never retrained."""
    from bench.studies.spec import find_study, read_study

    path = find_study(study, opts.home_dir())  # light: an unknown or malformed study answers before torch loads
    spec = read_study(path)
    from bench.studies.plan import check_study

    check_study(spec, str(path))
    run_study(opts, path.stem, spec)


@app.command()
@study_options
@ablation_flags
def ablate(
    base: str = typer.Option("ours", help="The method to ablate (a registered, meta-learned method)."),
    flags: list[str] = (),
    opts: StudyOptions = StudyOptions(),
) -> None:
    """Run a base method beside its ablated variants (one flag = one component off) and print the differences."""
    from bench.studies.ablate import ablation_study

    name, spec = ablation_study(base, flags)
    run_study(opts, name, spec, baseline=spec.rows[0].name)


def run_study(opts: StudyOptions, name: str, spec, baseline: str | None = None) -> None:
    """Validate every option, run the study's pending rows, print its table from the runs' rows."""
    from bench.core.config import load_preset
    from bench.core.device import check_device

    cfg = load_preset(opts.preset, opts.overrides())
    check_device(opts.device)
    if opts.workers < 1:
        raise BenchError(f"--workers {opts.workers}: expected a positive integer")
    seeds = opts.seed_list()

    from mlflow.tracking import MlflowClient

    from bench.report.console import print_table
    from bench.report.runs import open_study
    from bench.report.summary import study_records, study_summary
    from bench.studies.runner import StudyRunner

    start = time.perf_counter()
    runner = StudyRunner(name, spec, opts.preset, cfg, seeds, opts.home_dir(), opts.storage, opts.device, opts.quiet)
    trials = runner.run(opts.workers)
    results = open_study(MlflowClient(), runner.study_name, [t.user_attrs["mlflow_run_id"] for t in trials],
                         {"study": spec.model_dump(), "preset": cfg.model_dump(mode="json")})
    try:
        records = study_records(results, study_summary(results), runner.failed(trials))
        if spec.is_tta:
            from bench.report.console import console_text, tta_table
            from bench.report.tta import GAIN_METRICS, chosen_values, study_tta

            gains, chosen = study_tta(results), chosen_values(results)
    finally:
        results.close()
    if spec.is_tta:
        for metric, label, digits in GAIN_METRICS:
            console.print(tta_table(f"{spec.title}: {label}  [{opts.preset}]", gains, metric, digits))
        for line in chosen:
            console.print(console_text(f"chosen on validation — {line}", "dim"))
        for r in records:
            if "failed" in r:
                console.print(f"row {r['row']}: failed: {r['failed']}", style="red", highlight=False)
    else:
        print_table(f"{spec.title}  [{opts.preset}]", records, cfg.data.source, console, baseline)
    console.print(f"study {runner.study_name}: {len(trials)} finished trial(s) in {time.perf_counter() - start:.0f} s; "
                  f"`bench ui` to browse the MLflow runs", style="dim")
    if any("failed" in r for r in records):
        raise typer.Exit(1)


@app.command()
def tune(
    method: str = typer.Argument("ours", help="A registered meta-learned method."),
    preset: str = PRESET,
    set_: list[str] = typer.Option([], "--set", help="Override a preset value (fixed during the search)."),
    target: str = typer.Option("psnr", "--target", help="psnr: MTL and meta-test values by validation PSNR "
                               "(retrains per trial); gain: Alg. 3's optimizer, lr and K on the trained network by "
                               "the validation gain over no adaptation on the TTA study's scenarios."),
    trials: int = typer.Option(20, "--trials", min=1, help="Trials to run (added to earlier ones)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Stop starting new trials after this many seconds."),
    seed: int = typer.Option(0, help="Training seed of every trial, and the sampler's seed."),
    device: str = DEVICE,
    storage: Optional[str] = STORAGE,
    out: Optional[Path] = typer.Option(None, help="Study YAML to write the best config to "
                                                  "(default <home>/studies/tuned-METHOD.yaml)."),
    home: Optional[Path] = HOME,
    quiet: bool = QUIET,
) -> None:
    """Search MTL and meta-test hyper-parameters (validation PSNR, median pruning); save the best as a study."""
    from bench.core.config import load_preset
    from bench.core.device import check_device

    cfg = load_preset(preset, set_)
    check_device(device)
    from bench.studies.tune import Tuner, default_out, reference_value, write_best

    tuner = Tuner(method, preset, cfg, seed, home_dir(home), storage, device, quiet, target=target)
    study = tuner.tune(trials, timeout)
    states = [t.state.name for t in study.trials]
    path = write_best(study, method, preset, out or default_out(method, home_dir(home), target), tuner)
    best = study.best_trial
    ref = reference_value(study) if target == "gain" else None
    gain = f", {best.value - ref:+.4f} dB over no adaptation (trial 0)" if ref is not None else ""
    console.print(f"{len(states)} trials: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned; "
                  f"best val {'float ' if target == 'gain' else ''}PSNR {best.value:.3f} dB (trial {best.number}){gain}")
    for k, v in best.params.items():
        console.print(f"  {k} = {v}")
    home_arg = f" --home {home}" if home else ""
    console.print(f"wrote {path}; reproduce with: bench run {path} --preset {preset}{home_arg}")
