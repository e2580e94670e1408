"""Tables 1–3 as files: the summary of the tidy per-image rows (``summary``) rendered as LaTeX, Markdown, HTML.

A table is first built as a small format-free document (``TableDoc``: header groups, cells that
know their number, notes), so bold placement and numbers are identical in every format. Our cells
are mean ± sample std (ddof=1) over seeds of each seed's mean over images; the paper's numbers get
their own columns, labelled as the paper's, and are compared (Δ column) only when the run used the
paper's data.
"""
from __future__ import annotations

import html
import math
import re
import unicodedata
from dataclasses import dataclass, field

import pandas as pd

from bench.report.runs import RowInfo
from bench.report.stats import ALPHA, levels_phrase, scope_by
from bench.report.summary import COLUMNS, fmt_params

DIGITS = {"psnr": 2, "ssim": 4, "ssim_gauss": 4}
DIFF_DIGITS = {"psnr": 3, "ssim": 4, "ssim_gauss": 4}
UNITS = {"psnr": "dB", "ssim": "", "ssim_gauss": ""}
DATA_SOURCES = {
    "embedded": "the embedded data (scikit-image photographs with simulated camera noise)",
    "paper": "the paper's data (SIDD-Small + PolyU val, Nam test)",
}


# -- numbers ---------------------------------------------------------------------------------------

def fmt(x: float, digits: int, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "—"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


# -- a format-free table ------------------------------------------------------------------------------

@dataclass
class Cell:
    text: str = ""  # plain text; for mean ± std cells the mean part
    value: float | None = None  # what "best" compares (None: never bold)
    std: str | None = None  # the ± part, if any
    bold: bool = False

    def plain(self) -> str:
        return self.text + (f" ± {self.std}" if self.std else "")


@dataclass
class TableDoc:
    label: str  # e.g. "table2" (LaTeX label, HTML id)
    title: str
    header: list[str]
    rows: list[list[Cell]]
    align: str  # one of l/r/c per column
    groups: list[tuple[str, int]] = field(default_factory=list)  # header groups: (label, span)
    notes: list[str] = field(default_factory=list)
    best: list[int] = field(default_factory=list)  # columns where the highest value is bold
    latex_align: str | None = None  # LaTeX column spec when it differs from ``align`` (wrapping p{} columns)

    def mark_best(self) -> TableDoc:
        for c in self.best:
            vals = [r[c].value for r in self.rows if r[c].value is not None and not math.isnan(r[c].value)]
            if len(vals) < 2:
                continue
            top = max(vals)
            for r in self.rows:
                r[c].bold = r[c].value is not None and r[c].value == top
        return self


def _rounded(x: float, digits: int) -> float:
    return round(float(x), digits)


def study_table(label: str, title: str, summary: pd.DataFrame, rows: list[RowInfo],
                paper: dict[str, dict[str, float]], data_source: str, preset: str, experiment: str) -> TableDoc:
    """Our mean ± std over seeds beside the paper's numbers (own columns, labelled as the paper's)."""
    names = [r.name for r in rows if r.name in set(summary.index.get_level_values("row"))]
    has_paper = any(n in paper for n in names)
    same_data = data_source == "paper"
    header = ["Row", *[c[2] for c in COLUMNS], "Params", "Seeds"]
    groups = [("", 1), ("this run (mean ± std over seeds)", len(COLUMNS)), ("", 2)]
    align = "l" + "r" * len(COLUMNS) + "rr"
    best = list(range(1, 1 + len(COLUMNS)))
    if has_paper:
        start = len(header)
        header += [c[2] for c in COLUMNS]
        groups.append(("the paper (same data sets)" if same_data else "the paper (its data; reference)", len(COLUMNS)))
        align += "r" * len(COLUMNS)
        best += list(range(start, start + len(COLUMNS)))
        if same_data:
            header.append("Δ test PSNR (this − paper)")
            groups.append(("", 1))
            align += "r"
    info = {r.name: r for r in rows}
    body = []
    for name in names:
        cells = [Cell(name)]
        ns = set()
        for split, metric, _, d in COLUMNS:
            try:
                s = summary.loc[(name, split, metric)]
            except KeyError:
                cells.append(Cell("—"))
                continue
            n = int(s["n"])
            ns.add(n)
            std = None if n < 2 or math.isnan(s["std"]) else fmt(s["std"], d)
            cells.append(Cell(fmt(s["mean"], d), _rounded(s["mean"], d), std))
        cells.append(Cell(fmt_params(info[name].params)))
        cells.append(Cell("/".join(str(n) for n in sorted(ns)) or "0"))
        if has_paper:
            p = paper.get(name, {})
            for split, metric, _, d in COLUMNS:
                v = p.get(f"{split}/{metric}")
                cells.append(Cell(fmt(v, d), _rounded(v, d)) if v is not None else Cell("—"))
            if same_data:
                v = p.get("test/psnr")
                try:
                    ours = summary.loc[(name, "test", "psnr"), "mean"]
                except KeyError:
                    ours = float("nan")
                cells.append(Cell(fmt(ours - v, 2, sign=True) if v is not None else "—"))
        body.append(cells)
    notes = [f"Experiment {experiment} (preset {preset}) on {DATA_SOURCES.get(data_source, data_source)}. "
             "Cells: mean ± sample standard deviation (ddof=1) over seeds of each seed's mean over the "
             "images; Seeds = number of seeds; Params = total / adapted at test time. Bold: the best value in "
             "each column.",
             "SSIM: the paper's convention (scikit-image defaults, 7×7 uniform window)."]
    if has_paper:
        notes.append("Paper columns: the paper's published numbers on the same data sets; Δ = this run − paper."
                     if same_data else
                     "Paper columns: the paper's published numbers on its own data (SIDD/PolyU val, Nam test). "
                     "This run used other data, so they are shown as a reference, not compared.")
    return TableDoc(label, title, header, body, align, groups, notes, best, "p{3.4cm}" + align[1:]).mark_best()


def levels_text(r) -> str:
    """seeds × photographs × tiles × draws of one record (a dict or a row tuple)."""
    get = r.get if isinstance(r, dict) else lambda k: getattr(r, k)
    return " × ".join(str(int(get(k))) for k in ("seeds", "photos", "tiles", "draws"))


def stats_notes(margin_text: str, where: str) -> list[str]:
    """The notes every table with paired statistics carries (docs/statistics.md in one paragraph)."""
    return [(f"95% CI and p: Student t on the mean {where}, its variance from training seeds crossed with "
            "photographs (ANOVA, Satterthwaite degrees of freedom), tiles and noise draws entering through each "
            "seed × photograph mean — so instances of one photograph or one seed are not independent samples "
            f"(docs/statistics.md). Holm p: Holm's adjustment over the table's cells. Resolved: the interval "
            f"excludes 0 and p < {ALPHA}. TOST p: two one-sided tests against the margin {margin_text}; "
            f"\"equivalent\" when TOST p < {ALPHA}. n: seeds × photographs × tiles per photograph × draws per tile.")]


def pairs_table(label: str, title: str, comparisons: pd.DataFrame) -> TableDoc:
    """The paired statistics: mean difference, its interval, p, Holm p, TOST p and the verdict."""
    header = ["Comparison", "A − B", "Split", "Metric", "n", "Mean Δ", "95% CI", "p", "Holm p", "TOST p",
              "Verdict", "Paper's Δ"]
    body = []
    for r in comparisons.itertuples():
        d = DIFF_DIGITS.get(r.metric, 4)
        metric = r.metric.upper() if r.metric == "psnr" else r.metric.upper().replace("_GAUSS", " (gauss)")
        unit = UNITS.get(r.metric, "")
        body.append([Cell(r.comparison), Cell(f"{r.a} − {r.b}"), Cell(r.split),
                     Cell(metric + (f" [{unit}]" if unit else "")), Cell(levels_text(r)),
                     Cell(fmt(r.mean, d, sign=True)),
                     Cell(f"[{fmt(r.lo, d, sign=True)}, {fmt(r.hi, d, sign=True)}]"), Cell(fmt_p(r.p)),
                     Cell(fmt_p(r.p_holm)), Cell(fmt_p(r.p_tost)), Cell(r.verdict),
                     Cell(fmt(r.paper_diff, d, sign=True))])
    margins = ", ".join(f"±{m:g} {UNITS.get(k, '') or k.upper()}".replace(" dB", " dB (PSNR)")
                        for k, m in comparisons.groupby("metric")["margin"].first().items()) \
        if len(comparisons) else ""
    notes = [("Δ = A − B on the same images, paired within each training seed both rows have. Paper's Δ: the "
              "same difference in the paper's table (its data)."), *stats_notes(margins, "Δ"),
             f"Inference {scope_by(comparisons.to_dict('records'), 'split')}."]
    if not body:
        notes = ["No pair of rows in this study differs in exactly one attribute the paper discusses "
                 "(meta-test, MRL/RL, MAXL/RI, heads/body+head, ours vs a baseline)."]
    align = "llllrrrrrrlr"
    return TableDoc(label, title, header, body, align, [], notes, [], "p{2.4cm}p{3.4cm}" + align[2:])


# -- LaTeX -----------------------------------------------------------------------------------------

_LATEX_SPECIALS = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
                   "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}",
                   "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_LATEX_UNICODE = {"—": "---", "–": "--", "±": r"$\pm$", "×": r"$\times$", "−": "$-$", "Δ": r"$\Delta$",
                  "θ": r"$\theta$", "λ": r"$\lambda$", "α": r"$\alpha$", "β": r"$\beta$", "≠": r"$\neq$",
                  "≤": r"$\leq$", "≥": r"$\geq$", "→": r"$\rightarrow$", "·": r"$\cdot$", "⊙": r"$\odot$",
                  "’": "'", "‘": "`", "“": "``", "”": "''", "…": r"\ldots{}", "²": r"$^2$",
                  "†": r"$^\dagger$",
                  "\u00a0": "~"}


def latex_escape(text: str) -> str:
    """Escape LaTeX specials and map the non-ASCII characters our labels use (pdflatex-safe)."""
    out = []
    text = str(text)
    for i, ch in enumerate(text):
        if ch == "-" and text[i + 1:i + 2] == "-":
            out.append("-{}")  # "--set" stays two hyphens, not an en dash
        elif ch in _LATEX_SPECIALS:
            out.append(_LATEX_SPECIALS[ch])
        elif ch in _LATEX_UNICODE:
            out.append(_LATEX_UNICODE[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            out.append(unicodedata.normalize("NFKD", ch).encode("ascii", "ignore").decode() or "?")
    return re.sub(r"(^|[\s\[(])-(?=\d)", r"\1$-$", "".join(out))  # a minus sign, not a hyphen


def _latex_cell(c: Cell) -> str:
    if c.std is not None:
        body = f"{latex_escape(c.text)} $\\pm$ {latex_escape(c.std)}"
    else:
        body = latex_escape(c.text)
    return f"\\textbf{{{body}}}" if c.bold else body


def to_latex(doc: TableDoc, source: str = "") -> str:
    """A ``table`` float with a booktabs ``tabular`` (needs ``\\usepackage{booktabs,graphicx}``), for ``\\input``."""
    ncol = len(doc.header)
    lines = [f"% Generated by `bench report`{' from ' + source if source else ''}; do not edit by hand.",
             "% Needs \\usepackage{booktabs,graphicx} in the preamble (a wide table is scaled to \\linewidth).",
             "\\begin{table}[htbp]", "\\centering", "\\scriptsize", "\\setlength{\\tabcolsep}{3pt}",
             f"\\caption{{{latex_escape(doc.title)}}}", f"\\label{{tab:{re.sub(r'[^A-Za-z0-9:-]', '-', doc.label)}}}",
             "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%",
             f"\\begin{{tabular}}{{{doc.latex_align or doc.align}}}", "\\toprule"]
    if any(g for g, _ in doc.groups):
        cells, rules, col = [], [], 1
        for g, span in doc.groups:
            cells.append(f"\\multicolumn{{{span}}}{{c}}{{{latex_escape(g)}}}" if g and span > 1 else latex_escape(g))
            if g:
                rules.append(f"\\cmidrule(lr){{{col}-{col + span - 1}}}")
            col += span
        lines.append(" & ".join(cells) + " \\\\")
        lines.append(" ".join(rules))
    lines.append(" & ".join(latex_escape(h) for h in doc.header) + " \\\\")
    lines.append("\\midrule")
    wrap = [t.startswith("p") for t in re.findall(r"p\{[^}]*\}|[lrc]", doc.latex_align or doc.align)]
    for row in doc.rows:  # \raggedright in a wrapping (never the last) column: no stretched word gaps
        lines.append(" & ".join(("\\raggedright " if w else "") + _latex_cell(c) for c, w in zip(row, wrap))
                     + " \\\\")
    lines.append("\\bottomrule")
    lines.append("\\end{tabular}}")
    if doc.notes:
        lines.append("\\par\\smallskip")
        notes = " ".join(latex_escape(n) for n in doc.notes)
        lines.append(f"\\parbox{{\\linewidth}}{{\\footnotesize\\raggedright {notes}}}")
    lines.append("\\end{table}")
    assert all(len(r) == ncol for r in doc.rows)
    return "\n".join(lines) + "\n"


# -- Markdown --------------------------------------------------------------------------------------

def md_escape(text: str) -> str:
    """Any text as literal Markdown on one line: no raw HTML (``<script>``), no emphasis, link or
    code span, no ``|`` that splits a table cell, no newline that ends a table row."""
    s = " ".join(str(text).splitlines())
    s = re.sub(r"&(?=#?\w+;)", "&amp;", s).replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r"([\\`*_\[\]|~#])", r"\\\1", s)


def _md_cell(c: Cell) -> str:
    body = md_escape(c.plain())
    return f"**{body}**" if c.bold else body


def to_markdown(doc: TableDoc) -> str:
    header = list(doc.header)
    if any(g for g, _ in doc.groups):  # fold the header groups into the column names
        i = 0
        for g, span in doc.groups:
            if g.startswith("the paper"):
                for j in range(i, i + span):
                    header[j] = f"paper: {header[j]}"
            i += span
    lines = [f"**{md_escape(doc.title)}**", "",
             "| " + " | ".join(md_escape(h) for h in header) + " |",
             "|" + "|".join(":---" if a == "l" else ("---:" if a == "r" else ":---:") for a in doc.align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in doc.rows]
    if doc.notes:
        lines.append("")
        lines += [f"*{md_escape(n)}*  " for n in doc.notes]
    return "\n".join(lines) + "\n"


# -- HTML ------------------------------------------------------------------------------------------

def to_html(doc: TableDoc) -> str:
    e = html.escape
    out = [f'<table id="{e(doc.label)}"><caption>{e(doc.title)}</caption><thead>']
    if any(g for g, _ in doc.groups):
        out.append("<tr>" + "".join(f'<th colspan="{span}" class="group">{e(g)}</th>' for g, span in doc.groups)
                   + "</tr>")
    out.append("<tr>" + "".join(f'<th class="{a}">{e(h)}</th>' for h, a in zip(doc.header, doc.align)) + "</tr>")
    out.append("</thead><tbody>")
    for row in doc.rows:
        cells = []
        for c, a in zip(row, doc.align):
            body = e(c.plain())
            cells.append(f'<td class="{a}">' + (f"<b>{body}</b>" if c.bold else body) + "</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    if doc.notes:
        out.append('<p class="notes">' + "<br>".join(e(n) for n in doc.notes) + "</p>")
    return "\n".join(out)


# -- the TTA table (records: ``report.tta.tta_records``) ------------------------------------------------

TTA_SUB = ("gain", "95 % CI", "p (Holm)", "TOST p", "MDE", "captured")


def captured_text(r: dict, digits: int) -> str:
    """The captured fraction of the oracle's gain; the oracle's gain at the row's own K (and that fraction)."""
    parts = [] if math.isnan(r["captured"]) else [f"{round(100 * r['captured'])} %"]
    at = r.get("oracle_at_k", math.nan)
    if not math.isnan(at):
        cap = r.get("captured_at_k", math.nan)
        parts.append(f"oracle at K = {r['steps']}: {fmt(at, digits, True)}"
                     + ("" if math.isnan(cap) else f" ({round(100 * cap)} %)"))
    return "; ".join(parts) or "—"


def tta_table(label: str, title: str, records: list[dict], metric: str, metric_label: str, digits: int,
              levels: list[dict], experiment: str, chosen: list[str] = ()) -> TableDoc:
    """One gain metric: a group of columns per scenario (gain mean ± std over seeds, interval and
    verdict, p with its Holm adjustment, TOST p, MDE, captured fraction of the oracle's gain), then
    the cost per instance (mean over scenarios)."""
    recs = [r for r in records if r["metric"] == metric]
    scenarios = list(dict.fromkeys(r["scenario"] for r in recs))
    rows = list(dict.fromkeys(r["row"] for r in recs))
    header = ["Row", *[s for _ in scenarios for s in TTA_SUB], "s / instance", "peak MiB"]
    ns = {s: sorted({r["n"] for r in recs if r["scenario"] == s}) for s in scenarios}
    groups = [("", 1), *[(f"{s} (n = {'/'.join(map(str, ns[s]))})", len(TTA_SUB)) for s in scenarios], ("cost", 2)]
    body = []
    for row in rows:
        cells = [Cell(row)]
        mine = {r["scenario"]: r for r in recs if r["row"] == row}
        for s in scenarios:
            r = mine.get(s)
            if r is None:
                cells += [Cell("—") for _ in TTA_SUB]
                continue
            std = None if math.isnan(r["gain_sd"]) else fmt(r["gain_sd"], digits)
            ci = f"[{fmt(r['lo'], digits, True)}, {fmt(r['hi'], digits, True)}]"
            cells += [Cell(fmt(r["gain"], digits, True), None, std), Cell(f"{ci} {r['verdict']}"),
                      Cell(f"{fmt_p(r['p'])} ({fmt_p(r['p_holm'])})"), Cell(fmt_p(r["p_tost"])),
                      Cell(fmt(r["mde"], digits)), Cell(captured_text(r, digits))]
        secs = [r["seconds"] for r in mine.values() if not math.isnan(r["seconds"])]
        mibs = [r["peak_mib"] for r in mine.values() if not math.isnan(r["peak_mib"])]
        cells += [Cell(fmt(sum(secs) / len(secs), 3) if secs else "—"), Cell(fmt(max(mibs), 1) if mibs else "—")]
        body.append(cells)
    lv = "; ".join(f"{x['row']} on {x['scenario']}: {x['psnr_float']:.2f} dB"
                   + (f" (seeds {', '.join(map(str, x['seeds']))})" if x.get("seeds") else "") for x in levels)
    split = recs[0]["split"] if recs else "test"
    margin = recs[0]["margin"] if recs else math.nan
    design = "; ".join(f"{s}: {levels_phrase(next(r for r in recs if r['scenario'] == s))}" for s in scenarios)
    mde_from = sorted({r["mde_from"] for r in recs if r.get("mde_from")})
    notes = [(f"Experiment {experiment}. {metric_label} of each row over the reference row (no adaptation) of "
              f"the same method on the same {split} instances: gain = mean ± std over seeds of each seed's mean "
              "paired difference."),
             *stats_notes(f"±{margin:g}", "gain"),
             f"Inference {scope_by(recs, 'scenario')}; n: {design}.",
             (f"MDE = the smallest gain this design detects (α = {ALPHA}, power 0.8), from the spread of the "
             f"oracle's comparison with the same reference ({', '.join(mde_from) or 'no oracle row: —'}), not the "
             "row's own. Captured = gain / the oracle's gain (same method and scenario; — where the oracle's gain is "
             "not positive and resolved), then at the row's own number of updates K (the oracle after K updates). "
             "Cost: adaptation seconds per instance (diagnostics excluded), mean over the scenarios, and the "
             "largest peak memory growth over them."),
             *([f"Reference (no adaptation) float PSNR: {lv}."] if lv else []),
             *([f"Chosen on validation (best mean paired validation gain over the row's grid): {'; '.join(chosen)}."]
               if chosen else [])]
    align = "l" + "r" * (len(header) - 1)
    return TableDoc(label, title, header, body, align, groups, notes, [])
