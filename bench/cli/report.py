"""``bench report``: tables, paired tests and figures from finished runs."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer

from bench.cli.app import app, console, err_console, shown_path
from bench.cli.options import HOME, home_dir, preset_choices
from bench.core.errors import BenchError
from bench.studies.spec import study_names


@app.command()
def report(
    table: str = typer.Argument("all", help=f"{' | '.join([*study_names(), 'ablate', 'all'])}, or any study name "
                                            "in the store."),
    latex: bool = typer.Option(False, "--latex", help="Write OUT/<table>.tex (booktabs; \\input it)."),
    markdown: bool = typer.Option(False, "--markdown", help="Write OUT/<table>.md."),
    html: bool = typer.Option(False, "--html", help="Write one self-contained OUT/report.html with all tables "
                                                    "and figures."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Draw the figures (PNG + PDF in "
                                                                      "OUT/figures/<table>/)."),
    out: Path = typer.Option(Path("reports"), "--out", help="Output folder."),
    preset: Optional[str] = typer.Option(None, help=f"Use the study run under this preset ({preset_choices()}; "
                                                    "default: the most recent)."),
    run_id: list[str] = typer.Option([], "--run-id", help="Use exactly these parent runs (repeatable) instead of the "
                                                         "latest finished run of each row × seed."),
    device: str = typer.Option("cpu", help="Device for the figures that run a network (cpu | cuda | cuda:N)."),
    log: bool = typer.Option(True, "--log/--no-log", help="Also log tables and figures to a 'report' run in each "
                                                          "study's MLflow experiment."),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", help="MLflow tracking URI (default: "
                                               "$MLFLOW_TRACKING_URI, else the store in --home)."),
    margin: float = typer.Option(0.02, "--margin", min=0.0, help="Equivalence margin in dB for PSNR differences: "
                                 "a TOST inside ± this much reads \"equivalent to no adaptation\"."),
    ssim_margin: float = typer.Option(0.0005, "--ssim-margin", min=0.0, help="Equivalence margin for SSIM "
                                      "differences."),
    home: Optional[Path] = HOME,
) -> None:
    """Rebuild the paper's tables and figures from finished runs: mean ± std over seeds beside the
    paper's numbers, paired tests per image, figures. Without a format flag: --latex --markdown."""
    from bench.core.device import check_device

    if device == "auto":  # the figures need a concrete device
        raise BenchError(f"--device {device!r}: expected cpu, cuda or cuda:N")
    check_device(device)
    from bench.report.build import build_reports
    from bench.report.console import console_text, study_table
    from bench.report.stats import scope_by
    start = time.perf_counter()
    rep = build_reports(table, out, latex=latex, markdown=markdown, html=html, figures=figures, preset=preset,
                        run_ids=run_id, home=home_dir(home), home_opt=home, tracking_uri=tracking_uri, device=device,
                        log=log, margins={"psnr": margin, "psnr_float": margin, "ssim": ssim_margin,
                                          "ssim_gauss": ssim_margin})
    from rich.table import Table

    for r in rep.studies:
        s = r.study
        if r.tta:  # a TTA study: the gain tables
            from bench.report.console import tta_table
            from bench.report.tta import GAIN_METRICS

            for metric, label, digits in GAIN_METRICS:
                console.print(tta_table(f"{s.title}: {label}  [{s.preset_name}]", r.tta, metric, digits))
        base = next(iter(s.rows), None) if s.is_ablation else None  # the ablation's base row
        if not r.tta:
            console.print(study_table(f"{s.title}  [{s.preset_name}]", r.records, s.data_source, base))
        if len(r.comparisons):
            inference = scope_by(r.comparisons.to_dict("records"), "split")
            t = Table(title="paired differences (A − B)", title_justify="left",
                      caption=f"n = seeds × photographs × tiles × draws; inference {inference}; Holm over the table; "
                              "docs/statistics.md")
            for col in ("comparison", "A − B", "split", "metric", "n", "mean Δ", "95% CI", "p", "Holm p", "TOST p",
                        "verdict"):
                t.add_column(col, justify="left" if col in ("comparison", "A − B", "split", "metric", "verdict")
                             else "right")
            for c in r.comparisons.itertuples():
                d = 3 if c.metric == "psnr" else 4
                t.add_row(console_text(c.comparison), console_text(f"{c.a} − {c.b}"), c.split, c.metric,
                          f"{c.seeds}×{c.photos}×{c.tiles}×{c.draws}", f"{c.mean:+.{d}f}",
                          f"[{c.lo:+.{d}f}, {c.hi:+.{d}f}]", f"{c.p:.3g}", f"{c.p_holm:.3g}", f"{c.p_tost:.3g}",
                          console_text(c.verdict))
            console.print(t)
        for note in r.skipped:
            console.print(console_text(note, "yellow"))
    for w in rep.warnings:
        err_console.print(console_text(f"warning: {w}", "yellow"))
    logged = f"; logged to MLflow run(s) {', '.join(rep.logged.values())}" if rep.logged else ""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        from bench.runtime.urls import mask_secret

        source = f"runs from {mask_secret(uri)}"
    else:
        source = f"runs from home {shown_path(home_dir(home).root)}"
    console.print(f"wrote {len(rep.written)} file(s) to {rep.out}/ in {time.perf_counter() - start:.0f} s; "
                  f"{source}{logged}", style="dim", highlight=False, soft_wrap=True)
