"""The study table on the console (``bench run``, ``bench ablate``, ``bench report``): ours beside the paper's numbers."""
from __future__ import annotations

import math

from rich.console import Console
from rich.table import Table
from rich.text import Text

from bench.report.stats import levels_phrase, scope_by
from bench.report.summary import COLUMNS, fmt_params


def console_text(text: object, style: str = "") -> Text:
    """Any user string (row name, study title, a failure's reason) as console text that prints
    literally: ``[bold]`` or ``[link=…]`` in it is neither Rich markup nor an error."""
    return Text(str(text), style=style)


def _cell(value: tuple[float, float] | None, digits: int, n: int) -> str:
    if value is None:
        return "—"
    mean, std = value
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")


def study_table(title: str, records: list[dict], data_source: str, baseline: str | None = None) -> Table:
    """The study's rows (``summary.study_records``); with ``baseline``, two more columns: each row's
    PSNR minus the baseline's."""
    table = Table(title=console_text(title), title_justify="left")
    table.add_column("row", no_wrap=True)
    for _, _, label, _ in COLUMNS:
        table.add_column(label, justify="right")
    table.add_column("params (total / adapted)", justify="right")
    table.add_column("seeds", justify="right")
    base = next((r for r in records if r["row"] == baseline), None)
    if base:
        table.add_column("Δ val PSNR", justify="right")
        table.add_column("Δ test PSNR", justify="right")
    has_paper = any("paper" in r for r in records)
    if has_paper:
        table.add_column("paper test PSNR / SSIM", justify="right", style="dim")
    for r in records:
        if "failed" in r:  # a row whose every trial failed: the reason, never a number
            table.add_row(console_text(r["row"]), console_text(f"failed: {r['failed']}", "red"),
                          *[""] * (len(table.columns) - 2))
            continue
        cells = [_cell(r.get(f"{split}/{metric}"), d, r["n"]) for split, metric, _, d in COLUMNS]
        row = [console_text(r["row"]), *cells, fmt_params(r.get("params")), str(r["n"]) if "params" in r else "—"]
        if base:
            row += [f"{r[k][0] - base[k][0]:+.2f}" if r is not base and "params" in r else ""
                    for k in ("val/psnr", "test/psnr")]
        if has_paper:
            p = r.get("paper")
            row.append(f"{p['test/psnr']:.2f} / {p['test/ssim']:.4f}" if p else "")
        table.add_row(*row)
    if has_paper:
        where = "the same data" if data_source == "paper" else "its real data (SIDD/PolyU/Nam), not this data"
        table.caption = f"paper columns: the paper's own numbers on {where}; a reference, not a comparison"
    return table


def print_table(title: str, records: list[dict], data_source: str, console: Console | None = None,
                baseline: str | None = None) -> None:
    (console or Console()).print(study_table(title, records, data_source, baseline))


def tta_table(title: str, records: list[dict], metric: str, digits: int) -> Table:
    """The TTA table on the console: one column per scenario, each cell gain ± std over seeds, its
    interval and verdict, p (Holm) and TOST p, the MDE and the captured fraction of the oracle's gain
    (also at the row's own K); then the cost. The caption gives n per level and the margin."""
    recs = [r for r in records if r["metric"] == metric]
    scenarios = list(dict.fromkeys(r["scenario"] for r in recs))
    table = Table(title=console_text(title), title_justify="left", show_lines=True)
    table.add_column("row", no_wrap=True)
    for s in scenarios:
        n = "/".join(str(x) for x in sorted({r["n"] for r in recs if r["scenario"] == s}))
        table.add_column(console_text(f"{s} (n = {n})"), justify="right")
    table.add_column("s / instance", justify="right")
    table.add_column("peak MiB", justify="right")
    for row in dict.fromkeys(r["row"] for r in recs):
        mine = {r["scenario"]: r for r in recs if r["row"] == row}
        cells = []
        for s in scenarios:
            r = mine.get(s)
            if r is None:
                cells.append("—")
                continue
            sd = "" if r["gain_sd"] != r["gain_sd"] else f" ± {r['gain_sd']:.{digits}f}"
            cell = console_text(f"{r['gain']:+.{digits}f}{sd}\n[{r['lo']:+.{digits}f}, {r['hi']:+.{digits}f}]\n")
            style = "green" if r["resolved"] else ("cyan" if r["equivalent"] else "yellow")
            cell.append(r["verdict"], style=style)
            mde = "—" if math.isnan(r["mde"]) else f"{r['mde']:.{digits}f}"
            cell.append(f"\np {_p(r['p'])} · Holm {_p(r['p_holm'])}\nTOST p {_p(r['p_tost'])} · MDE {mde}")
            for line in captured_lines(r, digits):
                cell.append(f"\n{line}")
            cells.append(cell)
        secs = [r["seconds"] for r in mine.values() if r["seconds"] == r["seconds"]]
        mibs = [r["peak_mib"] for r in mine.values() if r["peak_mib"] == r["peak_mib"]]
        table.add_row(console_text(row), *cells, f"{sum(secs) / len(secs):.3f}" if secs else "—",
                      f"{max(mibs):.1f}" if mibs else "—")
    if recs:
        design = "; ".join(f"{s}: {levels_phrase(next(r for r in recs if r['scenario'] == s))}" for s in scenarios)
        table.caption = console_text(f"Inference {scope_by(recs, 'scenario')}; n: {design}. Equivalent: TOST within "
                                     f"±{recs[0]['margin']:g} of no adaptation. Holm over the table's cells. "
                                     "docs/statistics.md")
    return table


def _p(p: float) -> str:
    return "—" if math.isnan(p) else f"{p:.2g}"


def captured_lines(r: dict, digits: int) -> list[str]:
    """The captured fraction of the oracle's gain, and the oracle's gain at the row's own K."""
    out = []
    if not math.isnan(r["captured"]):
        out.append(f"{round(100 * r['captured'])} % of oracle")
    at = r.get("oracle_at_k", float("nan"))
    if not math.isnan(at):
        cap = r.get("captured_at_k", float("nan"))
        out.append(f"oracle at K = {r['steps']}: {at:+.{digits}f}"
                   + ("" if math.isnan(cap) else f" ({round(100 * cap)} %)"))
    return out
