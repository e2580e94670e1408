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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run (or resume) a study and print its table. Finished rows are never retrained."""
    from .config import load_preset
    from .report.console import print_table
    from .studies import StudyRunner, load_study

    name, spec = load_study(study)
    cfg = load_preset(preset, [*set_, *([f"data.root={data_root}"] if data_root else [])])
    if device not in ("auto", "cpu") and not device.startswith("cuda"):
        raise BenchError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BenchError(f"--device {device}: CUDA is not available on this machine; use --device cpu")
    start = time.perf_counter()
    runner = StudyRunner(name, spec, preset, cfg, _seeds(seeds), _home(home), storage, device, quiet)
    trials = runner.run()
    print_table(f"{spec.title}  [{preset}]", runner.table(trials), cfg.data.source, console)
    console.print(f"study {runner.study_name}: {len(trials)} finished trial(s) in {time.perf_counter() - start:.0f} s; "
                  f"`bench ui` to browse the MLflow runs", style="dim")


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
