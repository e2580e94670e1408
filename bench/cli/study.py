"""``bench run``, ``bench ablate`` and ``bench tune``: run studies and print their tables."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from bench.cli.app import app, console, shown_path
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
from bench.core.errors import ConfigError
from bench.runtime.urls import check_storage
from bench.studies.ablate import ABLATIONS


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
    cfg, seeds = opts.check()  # light too: preset, --set, --seeds, --storage, --workers
    chosen_rows(opts, spec)  # and --rows
    from bench.studies.plan import check_study

    check_study(spec, str(path))
    run_study(opts, path.stem, spec, cfg, seeds)


@app.command()
@study_options
@ablation_flags
def ablate(
    base: str = typer.Option("ours", help="The method to ablate: a registered, meta-learned method "
                                          "(`bench methods`; the error for another lists them)."),
    flags: list[str] = (),
    opts: StudyOptions = StudyOptions(),
) -> None:
    """Run a base method beside its ablated variants (one flag = one component off) and print the differences."""
    if not flags:
        raise ConfigError(f"bench ablate: give at least one of --{', --'.join(ABLATIONS)}")
    cfg, seeds = opts.check()
    check_meta_learned(base, "bench ablate --base", "its components cannot be ablated")
    from bench.studies.ablate import ablation_study

    name, spec = ablation_study(base, flags)
    run_study(opts, name, spec, cfg, seeds, baseline=spec.rows[0].name)


def check_meta_learned(method: str, what: str, why: str) -> None:
    """``method`` is a registered meta-learned method; else one line listing those there are (loads torch:
    the method registry builds networks)."""
    import methods

    from bench.studies.plan import meta_learned_method

    def meta(name: str) -> bool:
        try:
            meta_learned_method(name, "")
        except ConfigError:
            return False
        return True

    if meta(method):
        return
    bases = ", ".join(n for n in methods.names() if meta(n))
    if method in methods.names():
        raise ConfigError(f"{what} {method!r}: not a meta-learned method, so {why}; expected one of: {bases}")
    raise ConfigError(f"{what} {method!r}: unknown method {method!r}; expected a meta-learned method, one of: {bases}")


def where_line(home, data_root=None) -> str:
    """``home /abs/.bench`` (and ``; data root /abs/datasets``): where a command read and wrote, absolute."""
    return f"home {shown_path(home)}" + (f"; data root {shown_path(data_root)}" if data_root is not None else "")


def data_root_of(cfg):
    """The data root a preset reads (None for the embedded data, which needs none)."""
    if cfg.data.source != "paper":
        return None
    from bench.data.real import data_root

    return data_root(cfg.data.root)


def chosen_rows(opts: StudyOptions, spec) -> list[str] | None:
    """The rows ``--rows`` picks with the references they need (None: all), or a one-line error; light."""
    names = opts.row_list()
    return spec.chosen_rows(names) if names else None


def run_study(opts: StudyOptions, name: str, spec, cfg, seeds: list[int], baseline: str | None = None) -> None:
    """Run the study's pending rows (``cfg``, ``seeds``: ``opts.check()``; ``--rows`` picks some),
    print its table from the runs' rows."""
    rows = chosen_rows(opts, spec)
    from mlflow.tracking import MlflowClient

    from bench.report.console import print_table
    from bench.report.runs import open_study
    from bench.report.summary import study_records, study_summary
    from bench.studies.runner import StudyRunner

    start = time.perf_counter()
    runner = StudyRunner(name, spec, opts.preset, cfg, seeds, opts.home_dir(), opts.storage, opts.device, opts.quiet,
                         rows=rows)
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
                  f"{where_line(opts.home_dir(), data_root_of(cfg))}; `bench ui` to browse the MLflow runs",
                  style="dim", highlight=False, soft_wrap=True)
    if any("failed" in r for r in records):
        raise typer.Exit(1)


@app.command()
def tune(
    method: str = typer.Argument("ours", help="A registered meta-learned method (`bench methods`; the error for "
                                 "another lists them)."),
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

    cfg = load_preset(preset, set_)  # the light checks first
    check_storage(storage)
    check_device(device)
    check_meta_learned(method, "bench tune", "the search space (MTL's and meta-test's) does not apply")
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
    console.print(where_line(home_dir(home), data_root_of(cfg)), style="dim", highlight=False, soft_wrap=True)
    home_arg = f" --home {home}" if home else ""
    console.print(f"wrote {path}; reproduce with: bench run {path} --preset {preset}{home_arg}")
