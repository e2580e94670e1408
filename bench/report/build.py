"""``bench report``: finished studies → tables (LaTeX, Markdown), paired tests, figures, one HTML page.

Everything is written to a temporary folder inside ``--out`` first and moved into place only when
the whole report is built, so a failure leaves the previous report untouched. Each study's tables
and figures also go to a ``report`` run in the study's MLflow experiment (tag ``bench_report``).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from mlflow.tracking import MlflowClient

from bench.core.errors import BenchError
from bench.core.home import Home, HomeLike
from bench.report import page
from bench.report.figures import FigureOut, make_figures
from bench.report.runs import StudyRuns, find_study, studies_from_run_ids, study_names_in_store
from bench.report.stats import compare, find_pairs
from bench.report.summary import study_records, study_summary
from bench.report.tables import md_escape, pairs_table, study_table, to_html, to_latex, to_markdown, tta_table
from bench.report.tta import GAIN_METRICS, chosen_values, reference_levels, report_split, scenarios_of, study_tta
from bench.runtime import tags

TABLES = ("table1", "table2", "table3", "tta", "ablate")


@dataclass
class StudyReport:
    study: StudyRuns
    summary: object
    comparisons: object
    records: list[dict]
    figures: list[FigureOut] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # kind → text
    tta: list[dict] = field(default_factory=list)  # a TTA study's gain records (``report.tta.tta_records``)


@dataclass
class Report:
    out: Path
    studies: list[StudyReport]
    written: list[Path]
    logged: dict[str, str]  # experiment → report run id
    warnings: list[str]


def tracking_client(home: HomeLike, tracking_uri: str | None) -> tuple[MlflowClient | None, str]:
    """A client for ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else the store in ``home``
    (None when that store does not exist: reading must not create one)."""
    from bench.runtime.tracking import follow_home, mask_secret

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri is None:
        home = Home.of(home)
        uri = home.tracking_uri
        if not home.tracking_db.exists():
            return None, uri
        follow_home(home)  # a copied home: its own artifacts, never the original's
    try:
        return MlflowClient(tracking_uri=uri), uri
    except Exception as e:
        raise BenchError(f"MLflow tracking store {mask_secret(uri)} cannot be opened: "
                         f"{str(e).splitlines()[0][:160]}") from None


def _study_name(table: str) -> str:
    p = Path(table)
    return p.stem if p.suffix in (".yaml", ".yml") else table


def _run_hint(name: str, preset: str | None, home: Path | None) -> str:
    return f"`bench run {name} --preset {preset or 'quick'}" + (f" --home {home}" if home else "") + "`"


def resolve_studies(table: str, client: MlflowClient | None, uri: str, preset: str | None, run_ids: list[str],
                    home_opt: Path | None, home: HomeLike | None = None) -> list[StudyRuns]:
    from bench.runtime.tracking import mask_secret
    from bench.studies.spec import study_names

    name = _study_name(table)
    in_store = study_names_in_store(client) if client is not None else []
    known = {"all", *TABLES, *study_names(home), *in_store}
    if name not in known and Path(table).suffix not in (".yaml", ".yml"):
        raise BenchError(f"unknown table {table!r}; expected one of: {', '.join(['all', *TABLES])}"
                         + (f", or a study in the store: {', '.join(in_store)}" if in_store else ""))
    where = mask_secret(uri)
    if run_ids:
        if client is None:
            raise BenchError(f"--run-id: no MLflow store at {where}")
        found = studies_from_run_ids(client, run_ids)
        for s in found:
            if name not in ("all", "ablate") and s.study != name or name == "ablate" and not s.is_ablation:
                raise BenchError(f"--run-id {s.runs[0].id}: belongs to study {s.study!r} "
                                 f"(experiment {s.experiment_name}), not {name!r}")
        return found
    if name == "all":
        names = list(in_store)
    elif name == "ablate":  # every `bench ablate` study (named ablate-<base>-<flags>)
        names = [n for n in in_store if n.startswith("ablate-")]
    else:
        names = [name]
    found = []
    for n in names:
        s = find_study(client, n, preset) if client is not None else None
        if s is not None:
            found.append(s)
    if not found:
        pre = f" under preset {preset!r}" if preset else ""
        if name == "all":
            raise BenchError(f"no finished study runs{pre} in {where}; "
                             f"{_run_hint('table2', preset, home_opt)} (or table1, table3) produces them")
        if name == "ablate":
            raise BenchError(f"no finished ablation studies{pre} in {where}; "
                             f"`bench ablate --no-pretrain --preset {preset or 'quick'}"
                             + (f" --home {home_opt}" if home_opt else "") + "` produces one")
        raise BenchError(f"no finished runs of study {name!r}{pre} in {where}; "
                         f"{_run_hint(table, preset, home_opt)} produces them")
    return found


def _prepare_out(out: Path) -> Path:
    try:
        out.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    except OSError as e:
        raise BenchError(f"--out {out}: cannot be written ({e.strerror or e})") from None


def build_study(study: StudyRuns, tmp: Path, figures: bool, device: str,
                margins: dict[str, float] | None = None) -> StudyReport:
    """One study's tables (and figures); ``margins``: equivalence margins per metric (``stats.MARGINS``)."""
    rows = list(study.rows.values())
    tidy = study.tidy
    summary = study_summary(study)  # the study's rows and its "Noisy input" reference row
    base = rows[0].name if study.is_ablation and rows else None
    title = f"{study.title} [{study.preset_name}]"
    if scenarios_of(study):  # a TTA study: its table is the gain over each method's none row, per scenario
        rep = StudyReport(study, summary, compare(tidy, []), study_records(study, summary))
        rep.tta = study_tta(study, margins=margins)
        levels = reference_levels(tidy, study.spec, report_split(tidy))
        chosen = chosen_values(study)
        docs = [tta_table(f"{study.study}-{metric}", f"{title}: {label}", rep.tta, metric, label, digits, levels,
                          study.experiment_name, chosen) for metric, label, digits in GAIN_METRICS]
    else:
        comparisons = compare(tidy, find_pairs(rows, base), paper=study.paper, margins=margins)
        rep = StudyReport(study, summary, comparisons, study_records(study, summary))
        docs = [study_table(study.study, title, summary, rows, study.paper, study.data_source, study.preset_name,
                            study.experiment_name),
                pairs_table(f"{study.study}-pairs", f"{study.title}: paired differences per image", comparisons)]
    rep.files["tex"] = "\n".join(to_latex(d, study.experiment_name) for d in docs)
    rep.files["html"] = "\n".join(to_html(d) for d in docs)
    (tmp / "data").mkdir(parents=True, exist_ok=True)
    tidy.to_csv(tmp / "data" / f"{study.study}.csv", index=False)
    if figures:
        rep.figures, rep.skipped = make_figures(study, tmp / "figures" / study.study, device)
    md = [f"# {md_escape(title)}", "", f"Experiment `{study.experiment_name}`, {len(study.runs)} run(s); "
          f"tidy per-image rows: [data/{study.study}.csv](data/{study.study}.csv).", "",
          *[to_markdown(d) for d in docs]]
    for f in rep.figures:
        png = next(p for p in f.files if p.suffix == ".png")
        md += [f"## {f.title}", "", f"![{f.title}](figures/{study.study}/{png.name})", "", f.caption, ""]
        md += [f"- {n}" for n in f.notes] + ([""] if f.notes else [])
    if rep.skipped:
        md += ["## Figures not drawn", ""] + [f"- {n}" for n in rep.skipped] + [""]
    rep.files["md"] = "\n".join(md)
    return rep


def _move_into(tmp: Path, out: Path, studies: list[str]) -> list[Path]:
    """Move the built files into ``out``; a study's figure folder is replaced as a whole."""
    written = []
    for s in studies:
        src = tmp / "figures" / s
        if src.exists():
            dst = out / "figures" / s
            if dst.exists():
                shutil.rmtree(dst)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            written += sorted(dst.iterdir())
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        dst = out / path.relative_to(tmp)
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, dst)
        written.append(dst)
    return written


def _log(study: StudyRuns, out: Path, written: list[Path], html_page: Path | None) -> str:
    client = study.client
    found = client.search_runs([study.experiment_id], f"tags.{tags.REPORT} = 'true'", max_results=1,
                               order_by=["attributes.start_time DESC"])
    if found:
        run_id = found[0].info.run_id
    else:
        run = client.create_run(study.experiment_id, run_name="report",
                                tags={tags.REPORT: "true", tags.STUDY: study.experiment_name})
        run_id = run.info.run_id
    client.set_tag(run_id, "report_runs", ",".join(r.id for r in study.runs)[:5000])
    mine = {out / f"{study.study}.tex", out / f"{study.study}.md", out / "data" / f"{study.study}.csv"}
    if html_page is not None:
        mine.add(html_page)
    for p in written:
        if p in mine:
            client.log_artifact(run_id, str(p), "report")
        elif p.parent == out / "figures" / study.study:
            client.log_artifact(run_id, str(p), "report/figures")
    client.set_terminated(run_id)
    return run_id


def build_reports(table: str, out: Path, *, latex: bool = False, markdown: bool = False, html: bool = False,
                  figures: bool = True, preset: str | None = None, run_ids: list[str] = (),
                  home: HomeLike, home_opt: Path | None = None, tracking_uri: str | None = None,
                  device: str = "cpu", log: bool = True, margins: dict[str, float] | None = None) -> Report:
    if not (latex or markdown or html):
        latex = markdown = True
    client, uri = tracking_client(home, tracking_uri)
    studies = resolve_studies(table, client, uri, preset, list(run_ids), home_opt, home)
    tmp = _prepare_out(out)
    reports: list[StudyReport] = []
    try:
        for s in studies:
            rep = build_study(s, tmp, figures, device, margins)
            if latex:
                (tmp / f"{s.study}.tex").write_text(rep.files["tex"])
            if markdown:
                (tmp / f"{s.study}.md").write_text(rep.files["md"])
            reports.append(rep)
        if html:
            sections = [{"study": r.study.study, "title": f"{r.study.title} [{r.study.preset_name}]",
                         "experiment": r.study.experiment_name, "tables": [r.files["html"]],
                         "figures": r.figures, "skipped": r.skipped} for r in reports]
            (tmp / "report.html").write_text(page.render(sections))
        written = _move_into(tmp, out, [r.study.study for r in reports])
        for r in reports:  # the figure objects now live in ``out``
            for f in r.figures:
                f.files = [out / "figures" / r.study.study / p.name for p in f.files]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logged, warnings = {}, []
    if log:
        for r in reports:
            try:
                logged[r.study.experiment_name] = _log(r.study, out, written, out / "report.html" if html else None)
            except Exception as e:  # the files are written; a store that refuses artifacts is not fatal
                warnings.append(f"{r.study.experiment_name}: not logged to MLflow ({str(e).splitlines()[0][:160]})")
    for r in reports:
        r.study.close()
    return Report(out, reports, written, logged, warnings)


__all__ = ["build_reports", "resolve_studies", "tracking_client", "TABLES"]
