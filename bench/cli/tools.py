"""Commands around the studies: the method list, the MLflow UI, denoising photos, timing the fast paths."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import typer

from bench.cli.app import app, console, err_console, shown_path
from bench.cli.options import DEVICE, HOME, home_dir
from bench.core.errors import BenchError


@app.command("methods")
def methods_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the registered methods with their parameter counts and where each comes from (built-in, or
    the plugin distribution and version that registers it)."""
    import methods as registry

    try:
        rows = [registry.get(n).describe() for n in registry.names()]
    except registry.MethodError as e:  # a broken plugin: one line
        raise BenchError(str(e)) from None
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="Registered methods")
    for col in ("name", "restorer", "mask", "total", "adapted at test", "from", "description"):
        table.add_column(col, justify="left" if col in ("name", "from", "description") else "right")
    for r in rows:
        p = r["params"]
        table.add_row(r["name"], f"{p['restorer']:,}", f"{p['mask']:,}", f"{p['total']:,}",
                      f"{p['adapted']:,}" if p["adapted"] else "—", r["source"], r["description"])
    console.print(table)


@app.command("adaptations")
def adaptations_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the test-time adaptation entries (what moves, on which loss, optimizer, steps, lr, citation)
    and where each comes from (built-in, or the plugin distribution and version that registers it)."""
    from bench.adaptation.registry import describe

    rows = describe()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(title="Test-time adaptation entries (a study row's `adapt`, `bench denoise --adapt`)")
    for col in ("name", "moves", "loss", "optimizer", "steps", "lr", "needs", "from", "description"):
        table.add_column(col, justify="right" if col in ("steps", "lr") else "left")
    for r in rows:
        name = r["name"] + (" (evaluation only)" if r["evaluation_only"] else "")
        table.add_row(name, r["moves"], r["loss"], r["optimizer"] or "—", str(r["steps"]) if r["optimizer"] else "—",
                      f"{r['lr']:g}" if r["optimizer"] else "—", r["requires"], r["source"], r["description"])
    console.print(table)


@app.command("studies")
def studies_cmd(home: Optional[Path] = HOME,
                as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the studies `bench run NAME` finds: name, title, rows, where each is defined.

    The shipped studies, and your own in <home>/studies (one wins over a shipped study of its name)."""
    from bench.core.config import STUDIES_DIR
    from bench.studies.spec import NOT_STUDIES, read_study

    h = home_dir(home)
    shipped = {p.stem: p for p in sorted(STUDIES_DIR.glob("*.yaml")) if p.stem not in NOT_STUDIES}
    own = {p.stem: p for p in sorted(h.studies.glob("*.yaml"))} if h.studies.is_dir() else {}
    rows = []
    for name in sorted({*shipped, *own}):
        path = own.get(name, shipped.get(name))
        rec = {"name": name, "where": "home" if name in own else "shipped", "path": str(shown_path(path))}
        if name in own and name in shipped:
            rec["shadows"] = str(shown_path(shipped[name]))
        try:
            spec = read_study(path)
            rec.update(title=spec.title, description=spec.description.strip(), rows=len(spec.rows),
                       kind="tta" if spec.is_tta else "table")
        except BenchError as e:
            rec.update(title=None, description="", rows=None, kind=None, error=str(e))
        rows.append(rec)
    if as_json:
        typer.echo(json.dumps({"home": str(shown_path(h.root)), "shipped": str(shown_path(STUDIES_DIR)),
                               "studies": rows}, indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Studies (`bench run NAME`; --json for their descriptions)", title_justify="left",
                  caption=f"shipped: {shown_path(STUDIES_DIR)}; home: {shown_path(h.root)} (your studies: "
                          f"{shown_path(h.studies)})", caption_justify="left")
    for col in ("name", "title", "rows", "where"):
        table.add_column(col, justify="right" if col == "rows" else "left")
    for r in rows:
        where = r["where"] + (" (over the shipped one)" if "shadows" in r else "")
        if "error" in r:
            table.add_row(r["name"], Text(r["error"], style="red"), "—", where)
        else:
            table.add_row(Text(r["name"]), Text(r["title"]), str(r["rows"]), where)
    console.print(table)


@app.command("presets")
def presets_cmd(as_json: bool = typer.Option(False, "--json", help="Machine-readable output (every value).")) -> None:
    """List the presets `--preset` takes (studies/presets.yaml): name, data, training length, description."""
    from bench.core.config import PRESETS_FILE, load_preset, preset_names

    rows = []
    for name in preset_names():
        try:
            cfg = load_preset(name)
        except BenchError as e:
            rows.append({"name": name, "description": "", "error": str(e)})
            continue
        rows.append({"name": name, "description": cfg.description, "data": cfg.data.source,
                     "pretrain_epochs": cfg.pretrain.epochs, "finetune_epochs": cfg.finetune.epochs,
                     "values": cfg.model_dump(mode="json")})
    if as_json:
        typer.echo(json.dumps({"file": str(shown_path(PRESETS_FILE)), "presets": rows}, indent=2))
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title="Presets (`--preset NAME`; change one value with --set key=value)", title_justify="left",
                  caption=f"defined in {shown_path(PRESETS_FILE)}", caption_justify="left")
    for col in ("name", "data", "pre-train epochs", "MTL epochs", "description"):
        table.add_column(col, justify="right" if "epochs" in col else "left")
    for r in rows:
        if "error" in r:
            table.add_row(r["name"], "—", "—", "—", Text(r["error"], style="red"))
        else:
            table.add_row(r["name"], r["data"], str(r["pretrain_epochs"]), str(r["finetune_epochs"]),
                          Text(r["description"]))
    console.print(table)


@app.command()
def ui(
    port: int = typer.Option(5000, help="Port to serve on."),
    host: str = typer.Option("127.0.0.1", help="Address to bind (loopback by default)."),
    home: Optional[Path] = HOME,
) -> None:
    """Open the MLflow UI on the tracking store that `bench run` writes to."""
    from bench.runtime.tracking import local_store, setup

    if not 0 < port < 65536:
        raise BenchError(f"--port {port}: expected a port number from 1 to 65535")
    check_port(host, port)
    uri = setup(home_dir(home))
    if os.environ.get("MLFLOW_TRACKING_URI"):
        from bench.runtime.urls import mask_secret

        store = f"the tracking store {mask_secret(uri)} ($MLFLOW_TRACKING_URI)"
    else:
        local_store(home_dir(home))  # whole, and at home, before the server reads it
        store = f"home {shown_path(home_dir(home).root)} (store {uri})"
    console.print(f"MLflow UI for {store} at http://{host}:{port} (Ctrl-C to stop)", highlight=False,
                  soft_wrap=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host,
           "--port", str(port), "--workers", "1", "--uvicorn-opts", "--log-level warning"]
    # Its own process group, stderr through us: Ctrl-C (or a SIGTERM) reaches this process only,
    # which stops the server's processes (uvicorn, job consumers) with their shutdown chatter muted.
    from bench.runtime.workers import parent_death_signal

    proc = subprocess.Popen(cmd, env=env, process_group=0, stderr=subprocess.PIPE, text=True, errors="replace",
                            preexec_fn=lambda: parent_death_signal(signal.SIGINT))
    muted = threading.Event()

    def forward() -> None:
        for line in proc.stderr:
            if not muted.is_set():
                sys.stderr.write(line)
                sys.stderr.flush()
    threading.Thread(target=forward, daemon=True).start()

    def interrupt(*_) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)
    try:
        code = proc.wait()
    except KeyboardInterrupt:
        muted.set()
        _stop_group(proc)
        raise
    raise typer.Exit(code)


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a server and every process it started (one process group): Ctrl-C first, then SIGKILL."""
    for sig, wait in ((signal.SIGINT, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            time.sleep(0.5)  # its children stop a moment after it
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # any child that outlived it
    except ProcessLookupError:
        pass


def check_port(host: str, port: int) -> None:
    """One line, before any server starts, when ``host:port`` cannot be listened on (taken, or no such address)."""
    import socket

    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will: TIME_WAIT is free
            s.bind((host, port))
    except OSError as e:
        raise BenchError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e}); "
                         f"stop what uses it or pass another --port") from None


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
    device: str = DEVICE,
    tile: Optional[int] = typer.Option(None, "--tile", help="Tile size in px (0: never tile; default: from --max-memory)."),
    overlap: int = typer.Option(64, "--overlap", help="Tile overlap in px."),
    adapt_per: str = typer.Option("image", "--adapt-per", help="Tiled images: adapt once per image or per tile."),
    max_memory: float = typer.Option(4.0, "--max-memory", help="Working-memory budget in GiB that sizes the tiles."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Clean image, or folder of same-named ones: "
                                                                      "prints PSNR/SSIM before/after adaptation."),
    save_mask: bool = typer.Option(False, "--save-mask", help="Also write the mask as <name>.mask.png."),
    save_steps: bool = typer.Option(False, "--save-steps", help="Also write the prediction after each step (Fig. 7)."),
    adapt: Optional[str] = typer.Option(None, "--adapt", help="An adaptation entry (`bench adaptations`; not the "
                                        "evaluation-only oracle) instead of the model's meta-test; --adapt-steps "
                                        "and --lr override its steps and lr."),
    home: Optional[Path] = HOME,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Adapt a trained model to each of your photos and write the denoised PNGs."""
    if adapt is not None:  # before torch loads
        from bench.adaptation.names import check_selectable

        check_selectable(adapt)
    from bench.cli.denoise import DenoiseOptions, denoise_files

    opts = DenoiseOptions(inputs=inputs, model=model, checkpoint=checkpoint, study=study, row=row, preset=preset,
                          arch=arch, steps=adapt_steps, lr=lr, out=out, device=device, tile=tile, overlap=overlap,
                          adapt_per=adapt_per, max_memory=max_memory, reference=reference, save_mask=save_mask,
                          save_steps=save_steps, home=home, quiet=quiet, adapt=adapt)
    denoise_files(opts, console)


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
    from bench.perf import failed_checks, make_config, run_perf, write_report
    from bench.perf.suite import headers, table_rows

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
