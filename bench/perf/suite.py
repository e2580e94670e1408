"""Run the `bench perf` cases, and write what they measured as JSON and Markdown."""
from __future__ import annotations

import datetime as _dt
import functools
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import torch

from bench.core.device import parse_device
from bench.core.errors import BenchError
from bench.perf.cases import (ALG3_ENTRY, NAIVE_MTL, OFFICIAL, OFFICIAL_ENTRY, case_batched, case_eval, case_maxl,
                              case_metatest, case_mtl, check_precisions)
from bench.perf.harness import TOL_GRAD, TOL_IMAGE, TOL_PSNR_DB, Bench, PerfConfig
from bench.perf.measure import environment, load_average
from bench.perf.roofline import peaks

CASES = ("mtl", "metatest", "batched", "maxl", "eval", "memmodel", "contention")


def _csv(text: str, what: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise BenchError(f"{what} {text!r}: expected a comma-separated list")
    return items


def make_config(*, device: str = "cpu", quick: bool = False, precision: str = "auto", sizes: str | None = None,
                only: str | None = None, repeats: int | None = None, warmup: int | None = None,
                channels_last: bool = False, compile: bool = False, first_order: bool = True,
                memory: bool = True, memory_model: bool = False, wide: bool = False,
                weights: str | None = None, seed: int = 0, roofline: bool = True) -> PerfConfig:
    """A validated PerfConfig from command-line values; BenchError on anything unusable."""
    dev = parse_device(device)
    if precision == "auto":
        precisions = ("fp32", "bf16", "fp16") if dev.type == "cuda" else ("fp32",)
    else:
        precisions = tuple(dict.fromkeys(["fp32", *_csv(precision, "--precision")]))
    check_precisions(precisions, dev)
    kw: dict[str, Any] = dict(device=str(dev), precisions=precisions, channels_last=channels_last,
                              compile=compile, first_order=first_order,
                              width=(64, 32) if wide else (32, 16), weights=weights, seed=seed)
    if sizes is not None:
        try:
            parsed = tuple(int(s) for s in _csv(sizes, "--sizes"))
        except ValueError:
            raise BenchError(f"--sizes {sizes!r}: expected comma-separated integers, e.g. 256,512,1024") from None
        if any(s < 8 for s in parsed):
            raise BenchError(f"--sizes {sizes!r}: every size must be at least 8")
        kw["sizes"] = parsed
    if only is not None:
        cases = tuple(_csv(only, "--only"))
        unknown = [c for c in cases if c not in CASES]
        if unknown:
            raise BenchError(f"--only {unknown[0]!r}: unknown case; known: {', '.join(CASES)}")
        kw["cases"] = cases
    if memory_model and "memmodel" not in kw.get("cases", ()):
        kw["cases"] = (*kw.get("cases", PerfConfig.cases), "memmodel")
    for name, value, low in (("--repeats", repeats, 1), ("--warmup", warmup, 0)):
        if value is not None and value < low:
            raise BenchError(f"{name} {value}: expected an integer ≥ {low}")
    if repeats is not None:
        kw["repeats"] = repeats
    if warmup is not None:
        kw["warmup"] = warmup
    if not memory:
        kw["memory"] = False
    if not roofline:
        kw["roofline"] = False
    if weights is not None and not Path(weights).is_file():
        raise BenchError(f"--weights {weights}: no such file")
    return PerfConfig.quick_config(**kw) if quick else PerfConfig(**kw)


def run_perf(cfg: PerfConfig, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Every requested case, in one process; the result is what the JSON holds."""
    start = time.perf_counter()
    device = torch.device(cfg.device)
    result: dict[str, Any] = {
        "config": asdict(cfg), "environment": environment(device), "load_average_start": load_average(),
        "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["perf"] else None,
        "tolerances": {"grad_rel": TOL_GRAD, "image_abs": TOL_IMAGE, "psnr_db": TOL_PSNR_DB},
        "cases": [],
    }
    b = Bench(cfg, log)
    if cfg.roofline:
        log("roofline: the machine's matrix-product and convolution peaks")
        result["roofline"] = peaks(device, seconds=0.2 if cfg.quick else 2.0)
    jobs: list[tuple[str, Callable[[], Any]]] = []
    if "mtl" in cfg.cases:
        jobs.append(("MTL step", lambda: case_mtl(b)))
    if "metatest" in cfg.cases:
        jobs += [(f"meta-test {s}²", functools.partial(case_metatest, b, s)) for s in cfg.sizes]
    if "batched" in cfg.cases:
        jobs.append(("batched meta-test", lambda: case_batched(b)))
    if "maxl" in cfg.cases:
        jobs.append(("MAXL step", lambda: case_maxl(b)))
    if "eval" in cfg.cases:
        jobs.append(("evaluation", lambda: case_eval(b)))
    for title, job in jobs:
        log(title)
        result["cases"].append(job().as_dict())
    if "memmodel" in cfg.cases:
        from bench.perf.memmodel import memory_model

        log("memory model")
        result["memory_model"] = memory_model(device, log, cfg.seed)
    if "contention" in cfg.cases:
        from bench.perf.contention import measure

        log("training stage alone and beside a busy process")
        result["contention"] = measure(log=log) if not cfg.quick else measure(steps=1, batch=2, patch=32, log=log)
    result["load_average_end"] = load_average()
    result["seconds"] = time.perf_counter() - start
    result["headlines"] = headlines(result)
    for line in result["headlines"]:
        log(line)
    return result


# (case prefix, reference, variants): the ratios with a speed target, one line per case — the paths
# users run (each preset's meta-test entry, the default layout) against the reference they beat
HEADLINES = (("metatest-", OFFICIAL, (ALG3_ENTRY, OFFICIAL_ENTRY, "ours")),
             ("mtl", NAIVE_MTL, ("ours",)))


def headlines(result: dict[str, Any]) -> list[str]:
    """One line per case with a target: 'meta-test 256², K=5 vs official: ours, adam 2.91× (CPU time 2.95×); …'."""
    lines = []
    for case in result["cases"]:
        for prefix, base, names in HEADLINES:
            if not case["case"].startswith(prefix) or base not in case["variants"]:
                continue
            parts = []
            for name in names:
                sp = case["speedup"].get(name, {}).get(base)
                if not sp:
                    continue
                cpu = sp.get("cpu_time", {}).get("median_of_ratios")
                parts.append(f"{name} {sp['median_of_ratios']:.2f}×" + ("" if cpu is None else f" (CPU time {cpu:.2f}×)"))
            if parts:
                lines.append(f"{case['title']} vs {base}: " + "; ".join(parts))
    if "roofline" in result:
        lines.append(roofline_line(result))
    if "contention" in result:
        c = result["contention"]
        lines.append(f"{c['stage']}, beside a busy process / alone: " + "; ".join(
            f"{name} {r['ratio']:.2f}× ({r['beside']['seconds']:.1f} / {r['alone']['seconds']:.1f} s)"
            for name, r in c["settings"].items()))
    return lines


def roofline_line(result: dict[str, Any]) -> str:
    """'roofline: peaks … GFLOP/s; achieved: <case> <variant> … GFLOP/s (…% of the conv peak); …'
    for each headline variant of each case."""
    peak = result["roofline"]
    parts = []
    for case in result["cases"]:
        names = next((names for prefix, _, names in HEADLINES if case["case"].startswith(prefix)), ())
        for name in names:
            rate = case["variants"].get(name, {}).get("gflops_per_s")
            if rate:
                parts.append(f"{case['title']} {name} {rate:.3g} GFLOP/s ({rate / peak['conv_gflops']:.0%} of conv)")
    return (f"roofline: measured peaks {peak['matmul_gflops']:.3g} GFLOP/s fp32 matmul, {peak['conv_gflops']:.3g} "
            f"GFLOP/s 3×3 conv" + ("; achieved: " + "; ".join(parts) if parts else ""))


def failed_checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for case in result["cases"] for c in case["checks"] if not c["ok"]]


# --------------------------------------------------------------------------- reports


def _t(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    return f"{seconds:.2f} s" if seconds >= 10 else f"{seconds * 1e3:.4g} ms"


def _mib(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:.1f}"


def _ratio_cell(case: dict[str, Any], name: str, key: str | None) -> str:
    """'2.31×' against the headline baseline, then '(1.52× vs <other baseline>)'."""
    if name == case["baseline"]:
        return "1 (baseline)"
    parts = []
    for i, base in enumerate(case["baselines"]):
        sp = case["speedup"].get(name, {}).get(base)
        sp = sp if key is None else (sp or {}).get(key)
        if not sp or name == base:
            continue
        r = f"{sp['median_of_ratios']:.2f}×"
        parts.append(f"**{r}**" if i == 0 else f"({r} vs {base})")
    return " ".join(parts)


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per case × variant: the cells of the Markdown and console tables."""
    cuda = result["environment"]["device"] == "cuda"
    rows = []
    for case in result["cases"]:
        for name, v in case["variants"].items():
            t, mem = v["timing"], v.get("memory", {})
            ips = v.get("images_per_s")
            row = [case["title"], name + (f" ({ips:.3g} img/s)" if ips else ""), _t(t.get("median")),
                   f"{_t(t.get('q1'))} – {_t(t.get('q3'))}", f"{_t(t.get('min'))} – {_t(t.get('max'))}",
                   _ratio_cell(case, name, None)]
            if not cuda:
                row += [_t(v.get("cpu_timing", {}).get("median")), _ratio_cell(case, name, "cpu_time")]
            row += [_mib(mem.get("tensor_peak_mib")), _mib(mem.get("cuda_peak_mib") if cuda else mem.get("rss_peak_mib"))]
            if "roofline" in result:
                row += _roofline_cells(v, result["roofline"])
            rows.append(row)
    return rows


def _roofline_cells(v: dict[str, Any], peak: dict[str, Any]) -> list[str]:
    """GFLOP per call, and achieved GFLOP/s with its share of the measured convolution peak."""
    gflop, rate = v.get("gflop"), v.get("gflops_per_s")
    if gflop is None:
        return ["—", "—"]
    return [f"{gflop:.3g}", "—" if not rate else f"{rate:.3g} ({rate / peak['conv_gflops']:.0%})"]


def headers(result: dict[str, Any]) -> list[str]:
    cuda = result["environment"]["device"] == "cuda"
    return ["case", "variant", "median", "IQR", "min – max", "speed-up",
            *([] if cuda else ["CPU time (median)", "CPU-time speed-up"]), "tensor peak MiB",
            "CUDA max alloc. MiB" if cuda else "RSS peak MiB",
            *(["GFLOP", "GFLOP/s (% of conv peak)"] if "roofline" in result else [])]


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def to_markdown(result: dict[str, Any]) -> str:
    env, cfg = result["environment"], result["config"]
    where = env.get("gpu") if env["device"] == "cuda" else f"{env['cpu']}, {env['threads']} thread(s)"
    out = [f"# bench perf — {env['device']} ({where})", "",
           f"torch {env['torch']}, Python {env['python']}; {result['started']}; "
           f"{cfg['repeats']} timed round(s) after {cfg['warmup']} warm-up, variants interleaved; "
           f"load average {result['load_average_start']} → {result['load_average_end']}.",
           f"Network: ours, base {cfg['width'][0]}, scale {cfg['width'][1]}"
           f"{', weights ' + cfg['weights'] if cfg['weights'] else ', random initialisation (seed ' + str(cfg['seed']) + ')'}"
           f". Command: `{result['command'] or 'bench perf'}`", "",
           "Speed-up: median over rounds of (baseline time / variant time), against the case's first row "
           "(in parentheses: against another reference). CPU time: the process's CPU time (all threads) of "
           "the call, which other processes do not inflate. Tensor peak: memory the call allocated on top of what existed before "
           "(CUDA: max allocated − allocated before; CPU: PyTorch profiler, live tensor bytes).", "",
           *(["Headline ratios (median of per-round ratios, same run):", "",
              *[f"- {h}" for h in result.get("headlines", [])], ""] if result.get("headlines") else []),
           *([roofline_markdown(result["roofline"]), ""] if "roofline" in result else []),
           _md_table(headers(result), table_rows(result)), "", "## Checks", "",
           _md_table(["case", "check", "value", "tolerance", "effect guarded", "ok"],
                     [[c["case"], c["what"], f"{c['value']:.3g}", f"{c['tol']:g}",
                       "—" if c["effect"] is None else f"{c['effect']:.3g}", "yes" if c["ok"] else "**NO**"]
                      for case in result["cases"] for c in case["checks"]])]
    notes = [f"- {case['title']}: {n}" for case in result["cases"] for n in case["notes"]]
    if notes:
        out += ["", "## Notes", "", *notes]
    if "memory_model" in result:
        out += ["", memory_markdown(result["memory_model"])]
    if "contention" in result:
        out += ["", contention_markdown(result["contention"])]
    return "\n".join(out) + "\n"


def roofline_markdown(peak: dict[str, Any]) -> str:
    return (f"Roofline (measured in this run, best of short runs): {peak['matmul_gflops']:.3g} GFLOP/s for a "
            f"{peak['matmul']}, {peak['conv_gflops']:.3g} GFLOP/s for a {peak['conv']}. GFLOP: convolutions and "
            "matrix products of one call (torch.utils.flop_counter; element-wise work not counted); GFLOP/s: "
            "that over the median time, with its share of the convolution peak.")


def memory_markdown(mm: dict[str, Any]) -> str:
    out = ["## Memory model of an MTL step", "", f"`{mm['formula']}` (B batch, P patch, K inner steps), "
           "fitted to the measured tensor peaks below.", "",
           _md_table(["network", "c0 MiB", "a B/px", "b B/px/step", "c MiB/sample/step", "R²", "max fit err",
                      "held-out point: measured → predicted", "B=2, 128², K=5 (fit)"],
                     [[n["name"], f"{n['fit']['c0_mib']:.1f}", f"{n['fit']['a_bytes_per_px']:,.0f}",
                       f"{n['fit']['b_bytes_per_px_step']:,.0f}", f"{n['fit']['c_mib_per_sample_step']:.2f}",
                       f"{n['fit']['r2']:.5f}", f"{n['fit']['max_rel_residual']:.1%}",
                       f"B={n['held_out']['batch']}, {n['held_out']['patch']}², K={n['held_out']['steps']}: "
                       f"{n['held_out']['measured_mib']:,.0f} → {n['held_out']['predicted_mib']:,.0f} MiB "
                       f"({n['held_out']['rel_error']:+.1%})", f"{n['paper_setting_mib']:,.0f} MiB"]
                      for n in mm["networks"]]), "",
           f"What fits (tensor memory; {mm['reserve_gib']:g} GiB of each GPU kept for the CUDA context and "
           "workspaces): largest K at B=2, 128²; largest patch at B=2, K=5; largest batch at 128², K=5.", ""]
    rows = []
    for n in mm["networks"]:
        for w in n["what_fits"]:
            rows.append([n["name"], f"{w['gpu_gib']} GiB", w["max_steps"], w["max_patch"], w["max_batch"]])
    out.append(_md_table(["network", "GPU", "max K", "max patch", "max batch"], rows))
    out += ["", "Measured points (MiB):", "",
            _md_table(["network", "B", "P", "K", "MiB"],
                      [[n["name"], q["batch"], q["patch"], q["steps"], f"{q['mib']:.1f}"]
                       for n in mm["networks"] for q in n["points"]])]
    return "\n".join(out)


def contention_markdown(c: dict[str, Any]) -> str:
    """The contention case: a training stage alone and beside a busy process, per OpenMP setting."""
    rows = [[name, _t(r["alone"]["seconds"]), _t(r["beside"]["seconds"]), f"**{r['ratio']:.2f}×**",
             f"{r['alone']['cpu_seconds']:.1f} → {r['beside']['cpu_seconds']:.1f} s"]
            for name, r in c["settings"].items()]
    return "\n".join(["## A training stage beside a CPU-bound process", "",
                      f"{c['stage']}, {c['cpu_count']} cores, each in a fresh process; beside = a busy loop in "
                      f"another process (load average at the end {c['load_average']}).", "",
                      _md_table(["OpenMP waiting", "alone", "beside a busy process", "ratio", "CPU time"], rows)])


def write_report(result: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"perf-{result['environment']['device']}" + ("-quick" if result["config"]["quick"] else "")
    js, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    js.write_text(json.dumps(result, indent=1, default=str) + "\n")
    md.write_text(to_markdown(result))
    return js, md
