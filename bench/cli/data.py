"""``bench data check`` and ``bench data preview``: what data a preset needs, and how it looks."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bench.cli.app import shown_path
from bench.cli.options import preset_option
from bench.core.errors import BenchError, DataError

data_app = typer.Typer(no_args_is_help=True, help="Inspect the data sets a preset uses.")
console = Console(width=None if __import__("sys").stdout.isatty() else 150)

DataRootOpt = typer.Option(None, "--data-root", help="Root of the real data sets "
                                                       "(default: $TTAID_DATA_ROOT or ./datasets).")
PAPER_SETS = ("div2k-train", "div2k-valid", "sidd-small", "polyu", "nam")


def _fmt(hw) -> str:
    return "—" if hw is None else f"{hw[0]}×{hw[1]}"


@data_app.command("check")
def check(names: Optional[list[str]] = typer.Argument(None, help="Real data sets to check (div2k-train, "
                                                      "div2k-valid, sidd-small, polyu, nam); default: the preset's."),
          preset: str = preset_option("quick", "Preset whose data to check"),
          data_root: Optional[Path] = DataRootOpt,
          verify: bool = typer.Option(False, "--verify", help="Also re-hash every file of a fetched set against "
                                      "the hashes recorded when `bench data fetch` installed it.")) -> None:
    """List each data set the preset needs: found, pairs against the published count, sizes, and where
    a missing one goes (`bench data fetch NAME` gets it)."""
    from bench.core.config import load_preset

    cfg = load_preset(preset).data  # before the data modules (and torch) load
    from bench.data import camera, embedded
    from bench.data.fetch import ARCHIVES, has_manifest
    from bench.data.fetch import verify as verify_set
    from bench.data.real import check as check_real
    from bench.data.real import data_root as resolve_root

    real_sets = list(names or []) or (list(PAPER_SETS) if cfg.source != "embedded" or verify else [])
    title = f"data for preset {preset!r} ({cfg.source})" if not names else "real data sets"
    table = Table(title=title, title_justify="left")
    for col in ("set", "status", "pairs", "smallest", "largest", "noise / where"):
        table.add_column(col, justify="right" if col in ("pairs", "smallest", "largest") else "left")
    missing = 0
    if not real_sets:
        noise = {"pretrain": cfg.pretrain_noise, "train": ", ".join(cfg.train_noise),
                 "val": ", ".join(cfg.train_noise), "test": cfg.test_noise}
        for split in embedded.SPLITS:
            pairs = embedded.clean_images(split)
            sizes = sorted((p.clean.shape[:2] for p in pairs), key=lambda hw: hw[0] * hw[1])
            table.add_row(f"embedded/{split}", "[green]bundled[/]", str(len(pairs)), _fmt(sizes[0]),
                          _fmt(sizes[-1]), f"{noise[split]}: {', '.join(p.name for p in pairs)}")
        from bench.data.scenarios import scenario_names

        table.caption = (f"camera profiles: {', '.join(camera.profiles())}; scenarios: {', '.join(scenario_names())} "
                         "(bench data scenarios); `bench data preview NAME` to look")
    else:
        root = resolve_root(data_root or cfg.root)
        for row in check_real(root, real_sets):
            expected = ARCHIVES[row["name"]].expected if row["name"] in ARCHIVES else None
            ok = row["found"] and not row["error"]
            where = row["path"] if ok else row["error"]
            status = "[green]found[/]" if ok else ("[red]missing[/]" if not row["found"] else "[red]broken[/]")
            if ok and expected is not None and row["pairs"] < expected:
                ok, status = False, "[red]incomplete[/]"
                where = f"{row['pairs']} of the {expected} published; `bench data fetch {row['name']} --force`"
            if ok and verify:
                if has_manifest(row["name"], root):
                    problem = verify_set(row["name"], root)
                    ok, status = (True, "[green]verified[/]") if problem is None else (False, "[red]modified[/]")
                    where = where if problem is None else problem
                else:
                    where = f"{where} (not installed by `bench data fetch`: no hashes to verify)"
            if not row["found"]:
                where = f"{where}; `bench data fetch {row['name']}`"
            missing += not ok
            count = f"{row['pairs']}/{expected}" if expected is not None else str(row["pairs"])
            table.add_row(row["name"], status, count, _fmt(row["min_size"]), _fmt(row["max_size"]), where)
        table.caption = f"data root: {shown_path(root)} (layouts and sources: datasets/README.md)"
    console.print(table)
    if missing:
        raise typer.Exit(1)


@data_app.command("fetch")
def fetch_cmd(names: Optional[list[str]] = typer.Argument(None, help="div2k-train, div2k-valid, sidd-small, polyu, nam, "
                                                "or all."),
              data_root: Optional[Path] = DataRootOpt,
              mirror: Optional[str] = typer.Option(None, "--mirror", help="Base URL that serves the archives "
                                                   "under their file names (default: $TTAID_DATA_MIRROR, else "
                                                   "the official sources)."),
              force: bool = typer.Option(False, "--force", help="Download and install again a set that is there."),
              keep_archive: bool = typer.Option(False, "--keep-archive", help="Keep the downloaded archive "
                                                "under <root>/.fetch/downloads/."),
              quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
              as_json: bool = typer.Option(False, "--json", help="Machine-readable list of the sets' sources, "
                                           "file names, sizes and checksums; downloads nothing.")) -> None:
    """Download real data sets from their official sources, verify them and lay them out as the
    loaders read them (see datasets/README.md). Resumes a partial download; installs all or nothing."""
    from bench.data import fetch as F
    from bench.data.real import SETS
    from bench.data.real import data_root as resolve_root

    if as_json:
        import json

        typer.echo(json.dumps(F.describe(), indent=2))
        return
    archives = F.expand(names or [])
    root = resolve_root(data_root)
    base = F.mirror_base(mirror)
    for archive in archives:
        res = F.fetch(archive, root, base, force=force, keep_archive=keep_archive, quiet=quiet)
        if res.skipped:
            console.print(f"{archive.name}: already in {shown_path(res.path)} (--force to fetch it again)",
                          highlight=False)
        else:
            console.print(f"{archive.name}: {res.count} {'pairs' if SETS[archive.name].paired else 'images'}"
                          f" in {shown_path(res.path)}; SHA-256 {res.sha256[:16]}… {res.hash_source}",
                          highlight=False)


ScenariosOpt = typer.Option(None, "--scenarios", help="A YAML of scenarios merged over the defaults "
                                                       "(studies/scenarios.yaml).")


@data_app.command("preview")
def preview(name: str = typer.Argument(..., help="An embedded split (pretrain, train, val, test), "
                                                 "'profiles', a scenario (in-distribution, camera-shift, "
                                                 "strong-shift …) or a real set name (sidd-small, polyu, nam …)."),
            preset: str = preset_option("quick", "Preset whose data settings to use"),
            n: int = typer.Option(4, min=1, max=16, help="Number of pairs to show."),
            crop: int = typer.Option(128, min=16, help="Size of the center crop shown."),
            out: Optional[Path] = typer.Option(None, help="PNG to write (default reports/preview-NAME.png)."),
            data_root: Optional[Path] = DataRootOpt,
            split: str = typer.Option("test", help="For a scenario: its val or test instances."),
            scenarios_file: Optional[Path] = ScenariosOpt) -> None:
    """Write a PNG grid of noisy / clean pairs (or of every camera profile on one image).

    For a scenario: n of its paired instances spread over the photographs, tiles and draws, each
    with its camera and the noisy input's PSNR."""
    from bench.core.config import load_preset

    cfg = load_preset(preset).data  # before matplotlib and the data modules (torch) load
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bench.data import camera, center_crop, embedded, load_data
    from bench.data.base import as_float
    from bench.data.real import SETS
    from bench.data.real import data_root as resolve_root
    from bench.data.scenarios import instances, load_scenarios

    scenarios = load_scenarios(scenarios_file, with_plugins=True)
    rng = np.random.default_rng(cfg.eval_seed)
    if name == "profiles":
        clean = center_crop(embedded.clean_images("test")[0].clean, crop)
        panels = [("clean", clean, "")] + [
            (p, camera.simulate(clean, p, rng), "") for p in camera.profiles()]
        rows = [panels]
    else:
        if name in embedded.SPLITS:
            if name in ("val", "test"):
                data = load_data(cfg)
                pairs = getattr(data, name)
            else:
                noise = cfg.pretrain_noise if name == "pretrain" else cfg.train_noise[0]
                from bench.data.noise import noise_model

                pairs = [type(p)(f"{p.name}/{noise}", p.clean, noise_model(noise)(center_crop(p.clean, 10**6), rng))
                         for p in embedded.clean_images(name)]
        elif name in scenarios:
            sc = scenarios[name].rooted(data_root or cfg.root)
            if sc.kind == "pairs":  # cut as the preset's TTA study cuts it: real photographs can be large
                from bench.data.scenarios import sized

                sc = sized(sc, load_preset(preset).tta)
            every = instances(sc, split, cfg.eval_seed)
            pairs = [every[i] for i in sorted({int(i) for i in np.round(np.linspace(0, len(every) - 1, n))})]
            cams = {p.name: ("real noise" if sc.kind == "pairs" else sc.camera(int(p.name.rsplit("/d", 1)[1])).name)
                    for p in pairs}
        elif name in SETS:
            pairs = SETS[name].load(resolve_root(data_root or cfg.root))
        else:
            raise BenchError(f"bench data preview {name!r}: unknown name; expected one of "
                             f"{', '.join([*embedded.SPLITS, 'profiles', *scenarios, *SETS])}")
        rows = []
        for p in pairs[:n]:
            c = as_float(center_crop(p.clean, crop))
            if p.noisy is None:
                from bench.data.noise import noise_model

                z = noise_model(cfg.pretrain_noise)(c, rng)
            else:
                z = as_float(center_crop(p.noisy, crop))
            psnr = 10 * np.log10(1.0 / max(float(np.mean((z - c) ** 2)), 1e-12))
            cam = f"{cams[p.name]}, " if name in scenarios else ""
            rows.append([(f"{p.name} noisy", z, f"{cam}{psnr:.2f} dB"), (f"{p.name} clean", c, "")])
    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), cols, figsize=(2.6 * cols, 2.8 * len(rows)), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(row):
                title, img, sub = row[c]
                ax.imshow(np.clip(img, 0, 1))
                ax.set_title(f"{title}\n{sub}" if sub else title, fontsize=8)
    where = f"{split}, {len(every)} instances" if name in scenarios else f"preset {preset}"
    fig.suptitle(f"bench data preview {name} ({where}, center crop {crop})", fontsize=10)
    fig.tight_layout()
    path = out or Path("reports") / f"preview-{name}.png"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    except OSError as e:
        raise BenchError(f"--out {path}: cannot write ({e.strerror})") from None
    finally:
        plt.close(fig)
    if name in SETS and name not in embedded.SPLITS and name not in scenarios:
        root = f" (data root {shown_path(resolve_root(data_root or cfg.root))})"
    elif cfg.source == "paper" and name in ("val", "test"):  # load_data reads the preset's root
        root = f" (data root {shown_path(resolve_root(cfg.root))})"
    else:
        root = ""
    console.print(f"wrote {path}{root}", highlight=False)


@data_app.command("scenarios")
def scenarios_cmd(strength: bool = typer.Option(False, "--strength", help="Also measure each scenario's noise "
                                                "against the training cameras on the same tiles (seconds)."),
                  split: str = typer.Option("test", help="Split whose instances --strength measures (val or test)."),
                  preset: str = preset_option("quick", "Preset whose eval_seed fixes the noise and whose tta "
                                                       "section sizes the instances (as bench run tta)"),
                  scenarios_file: Optional[Path] = ScenariosOpt,
                  data_root: Optional[Path] = DataRootOpt,
                  as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List the scenarios of the TTA study: cameras, paired instances per split and, with --strength,
    how far each one's noise lies from the training cameras' and how correlated it is between
    neighbouring pixels (lag-1; demosaicked camera noise is, which hurts pixel-neighbour losses)."""
    import dataclasses
    import json

    from bench.core.config import load_preset

    cfg = load_preset(preset)  # before the data modules (torch) load
    from bench.data.scenarios import (
        instance_count,
        load_scenarios,
        shift_strength,
        sized,
    )

    scenarios = load_scenarios(scenarios_file, with_plugins=True)
    eval_seed = cfg.data.eval_seed
    records, training = [], {}
    for sc in (sized(s.rooted(data_root or cfg.data.root), cfg.tta) for s in scenarios.values()):
        rec = {"name": sc.name, "description": sc.description, "kind": sc.kind,
               "cameras": [s.label() for s in sc.noise] or [sc.source_label()],
               "tile": sc.tile, "tiles": sc.tiles, "draws": sc.draws}
        try:
            rec["instances"] = {s: instance_count(sc, s) for s in ("val", "test")}
        except DataError as e:  # a folder scenario whose images are not there (yet): listed, not fatal
            rec.update(instances={"val": 0, "test": 0}, error=str(e))
            records.append(rec)
            continue
        if strength:
            own, *train = shift_strength(sc, split, eval_seed)
            noisiest = max(train, key=lambda t: t.noise_std)
            rec["strength"] = dataclasses.asdict(own)
            rec["training"] = [dataclasses.asdict(t) for t in train]
            rec["noise_std_ratio"] = own.noise_std / noisiest.noise_std  # against the noisiest training camera
            rec["psnr_drop_db"] = noisiest.psnr_mean - own.psnr_mean
            for t in train:
                training.setdefault((t.label, t.n, round(t.psnr_mean, 6)), t)
        records.append(rec)
    if as_json:
        typer.echo(json.dumps({"split": split, "eval_seed": eval_seed, "scenarios": records}, indent=2))
        return
    table = Table(title="scenarios" + (f" ({split}, eval_seed {eval_seed})" if strength else ""),
                  title_justify="left")
    cols = ["scenario", "cameras", "val", "test"]
    cols += ["input PSNR dB", "noise std (grey)", "noise lag-1 corr", "vs noisiest training camera"] if strength \
        else ["description"]
    numeric = ("val", "test", "input PSNR dB", "noise std (grey)", "noise lag-1 corr")
    for col in cols:
        table.add_column(col, justify="right" if col in numeric else "left")
    for rec in records:
        row = [rec["name"], ", ".join(rec["cameras"]), str(rec["instances"]["val"]), str(rec["instances"]["test"])]
        if "error" in rec:
            row += ["", "", "", "[red]not available[/]"] if strength else []
            if not strength:
                row.append(f"[red]{escape(rec['error'])}[/]")
        elif strength:
            s = rec["strength"]
            row += [f"{s['psnr_mean']:.2f} ± {s['psnr_sd']:.2f}",
                    f"{s['noise_std']:.1f} [{s['noise_std_min']:.1f}, {s['noise_std_max']:.1f}]",
                    f"{s['noise_lag1_corr']:.2f}",
                    f"{rec['noise_std_ratio']:.2f}× std, {-rec['psnr_drop_db']:+.2f} dB"]
        else:
            row.append(rec["description"])
        table.add_row(*row)
    for t in training.values():
        n_val, n_test = (str(t.n), "") if split == "val" else ("", str(t.n))
        table.add_row(f"[dim]{t.label}[/]", ", ".join(t.cameras), n_val, n_test,
                      f"{t.psnr_mean:.2f} ± {t.psnr_sd:.2f}", f"{t.noise_std:.1f} [{t.noise_std_min:.1f}, {t.noise_std_max:.1f}]",
                      f"{t.noise_lag1_corr:.2f}", "[dim]reference[/]")
    if strength:
        table.caption = ("noisy input vs clean over each scenario's instances; training cameras on the same tiles, "
                         "draws and random streams; noise lag-1 corr: the mean autocorrelation of noisy − clean "
                         "between neighbouring pixels (horizontal and vertical; 0 for white noise)")
    console.print(table)
