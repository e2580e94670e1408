"""The fast paths equal the plain ones: the channels-last layout of the inner loops (and of the
baselines), passive OpenMP waiting set before torch loads, the thread choice, batched evaluation."""
import os
import subprocess
import sys

import pytest
import torch

import methods
from bench.adaptation.inner import memory_layout, meta_test, mtl_loss

HP = dict(inner_lr=0.05, lambda_in=10.0, lambda_out=10.0)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(3)
    model = methods.create("ours")
    noisy = torch.rand(2, 3, 12, 10)
    clean = (noisy + 0.1 * torch.randn_like(noisy)).clamp(0, 1)
    return model, noisy, clean


def grads_of(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_channels_last_meta_test_equals_todays_layout(setup, optimizer):
    model, noisy, _ = setup
    kw = dict(steps=3, lr=1e-2 if optimizer == "sgd" else 1e-3, optimizer=optimizer, trajectory=True)
    with memory_layout("contiguous"):
        ref = meta_test(model, noisy, **kw)
    with memory_layout("channels_last"):
        out = meta_test(model, noisy, **kw)
    assert out.is_contiguous() and out.shape == ref.shape
    moved = (ref[-1] - ref[0]).abs().max().item()
    assert moved > 1e-3  # the adaptation changes the output far beyond the tolerance below
    assert (out - ref).abs().max().item() <= 1e-5
    with memory_layout("auto"):  # meta-test's auto keeps the caller's layout: bit for bit the NCHW path
        assert torch.equal(meta_test(model, noisy, **kw), ref)


@pytest.mark.parametrize("first_order", [False, True])
def test_channels_last_mtl_gradients_equal_todays_layout(setup, first_order):
    model, noisy, clean = setup
    kw = dict(steps=3, first_order=first_order, **HP)
    with memory_layout("contiguous"):
        ref = grads_of(model, lambda: mtl_loss(model, noisy, clean, **kw))
    with memory_layout("channels_last"):
        fast = grads_of(model, lambda: mtl_loss(model, noisy, clean, **kw))
    assert fast.keys() == ref.keys() and len(ref) > 0
    for k in ref:
        assert (fast[k] - ref[k]).abs().max() <= 1e-4 * ref[k].abs().max().clamp_min(1e-12), k


def test_memory_layout_is_scoped_and_validated(setup):
    model, noisy, _ = setup
    with memory_layout("channels_last"):
        cl = meta_test(model, noisy, steps=1, lr=1e-2)
    with memory_layout("contiguous"):
        nchw = meta_test(model, noisy, steps=1, lr=1e-2)
    assert not torch.equal(cl, nchw)  # the layouts sum in different orders: the check below can tell them apart
    assert torch.equal(meta_test(model, noisy, steps=1, lr=1e-2), nchw)  # back to auto after the block
    noisy2, clean2 = noisy[:1], noisy[:1].flip(-1)
    with memory_layout("channels_last"):
        g_cl = grads_of(model, lambda: mtl_loss(model, noisy2, clean2, steps=1, **HP))
    g_auto = grads_of(model, lambda: mtl_loss(model, noisy2, clean2, steps=1, **HP))
    assert all(torch.equal(g_cl[k], g_auto[k]) for k in g_cl)  # MTL's auto on CPU is channels-last
    with pytest.raises(ValueError, match="memory layout 'nhwc'"):
        with memory_layout("nhwc"):
            pass


def test_perf_headline_names_the_ratio_against_the_official_loop():
    from bench.perf.cases import ALG3_ENTRY, NAIVE_MTL, OFFICIAL, OFFICIAL_ENTRY
    from bench.perf.suite import headlines

    sp = {"median_of_ratios": 2.5, "cpu_time": {"median_of_ratios": 3.0}}
    case = {"case": "metatest-256", "title": "meta-test 256², K=5", "variants": {OFFICIAL: {}, "ours": {}},
            "speedup": {ALG3_ENTRY: {OFFICIAL: sp}, OFFICIAL_ENTRY: {OFFICIAL: dict(sp, median_of_ratios=2.25)},
                        "ours, NHWC loop": {OFFICIAL: sp}}}  # not a default path: no headline
    mtl = {"case": "mtl", "title": "MTL step", "variants": {NAIVE_MTL: {}}, "speedup": {"ours": {NAIVE_MTL: sp}}}
    assert headlines({"cases": [case, mtl]}) == [
        (f"meta-test 256², K=5 vs official loop: {ALG3_ENTRY} 2.50× (CPU time 3.00×); {OFFICIAL_ENTRY} 2.25× "
         "(CPU time 3.00×)"),
        "MTL step vs naive chained loop (slow by design): ours 2.50× (CPU time 3.00×)"]


def _env_after_import(env: dict[str, str]) -> str:
    code = "import bench, os; print(os.environ.get('OMP_WAIT_POLICY'))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_openmp_waits_passively_on_a_busy_machine_unless_told_otherwise():
    import bench

    assert bench.wait_policy("auto", lambda: True) == "PASSIVE"
    assert bench.wait_policy("auto", lambda: False) is None  # idle: OpenMP's default (spinning) is faster
    assert bench.wait_policy("passive", lambda: False) == "PASSIVE"
    assert bench.wait_policy("active", lambda: True) is None
    assert bench.machine_busy(read=lambda: "0.5 0.4 0.3 1/300 99\n") is False  # only this process runs
    assert bench.machine_busy(read=lambda: "0.5 0.4 0.3 3/300 99\n") is True
    assert bench.machine_busy(read=lambda: "garbled") is True  # unknown: the safe choice
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "BENCH_OMP_WAIT")}
    assert _env_after_import(base | {"BENCH_OMP_WAIT": "passive"}) == "PASSIVE"
    assert _env_after_import(base | {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"  # the user's value wins
    assert _env_after_import(base | {"BENCH_OMP_WAIT": "active"}) == "None"


def test_vmap_runs_in_nchw_even_when_channels_last_is_asked(setup):
    from bench.adaptation.inner import per_sample_mode

    model, noisy, clean = setup
    kw = dict(steps=2, **HP)
    with memory_layout("contiguous"), per_sample_mode("loop"):
        ref = grads_of(model, lambda: mtl_loss(model, noisy, clean, **kw))
    with memory_layout("channels_last"), per_sample_mode("vmap"):
        got = grads_of(model, lambda: mtl_loss(model, noisy, clean, **kw))
    for k in ref:
        assert (got[k] - ref[k]).abs().max() <= 1e-4 * ref[k].abs().max().clamp_min(1e-12), k


def test_free_threads_from_fake_loads():
    from bench.runtime.workers import free_threads

    assert free_threads(2, 0.0) == 2  # idle machine: every core
    assert free_threads(2, 1.0) == 1  # one busy process beside us
    assert free_threads(2, 6.0) == 1  # never fewer than one
    assert free_threads(8, 2.4) == 6 and free_threads(8, 2.6) == 5
    assert free_threads(4, -1.0) == 4


def test_runnable_others_reads_the_instant_count_less_itself():
    from bench.runtime.workers import runnable_others

    lines = iter(["0.50 0.40 0.30 3/200 99", "9.00 9.00 9.00 1/200 99", "0.1 0.1 0.1 3/201 99"])
    assert runnable_others(samples=3, interval=0, read=lambda: next(lines)) == 2.0  # median of 2, 0, 2
    assert runnable_others(samples=1, interval=0, read=lambda: "garbage") is None


def test_stage_threads_only_with_bench_threads_auto(monkeypatch):
    from bench.runtime import workers

    before = torch.get_num_threads()
    monkeypatch.delenv("BENCH_THREADS", raising=False)
    assert workers.stage_threads() is None and torch.get_num_threads() == before
    monkeypatch.setenv("BENCH_THREADS", "auto")
    monkeypatch.setattr(workers, "runnable_others", lambda: 5.0)
    monkeypatch.setattr(workers, "usable_cores", lambda: 2)
    try:
        assert workers.stage_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["ridnet", "mirnet"])
def test_baselines_run_channels_last_and_agree_with_todays_layout(name):
    """The supervised baselines' weights are channels-last (faster on CPU); their outputs and a
    training step's gradients agree with the contiguous layout to float rounding (1e-5 relative)."""
    torch.manual_seed(3)
    fast = methods.create(name)
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    plain = methods.get(name).build()
    plain.load_state_dict(fast.state_dict())
    assert all(p.is_contiguous() for p in plain.parameters())
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert (fast(x) - plain(x)).abs().max().item() < 1e-5
    grads = []
    for m in (fast, plain):
        m.zero_grad()
        (m(x) - y).abs().mean().backward()
        grads.append({k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None})
    for k, g in grads[1].items():
        assert (grads[0][k] - g).abs().max().item() <= 1e-5 * max(1.0, g.abs().max().item()), k
    assert methods.get(name).describe()["layout"] == "channels_last" and methods.get("ours").layout == "contiguous"

# `bench run <unknown study>` must answer before the heavy libraries load: the CLI is
# light, and the study lookup lives in bench/studies/spec.py, which imports none of them at the top.
IMPORT_CHECK = """
import sys
from bench.cli import main
heavy = ("torch", "mlflow", "optuna", "pandas")
print(",".join(m for m in heavy if m in sys.modules))
try:
    main(["run", "no-such-study"])
except SystemExit as e:
    print(e.code)
print(",".join(m for m in heavy if m in sys.modules))
"""


def _import_check() -> list[str]:
    out = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=300)
    return out.stdout.splitlines()


def test_the_cli_loads_no_heavy_library_before_a_command_runs():
    lines = _import_check()
    assert lines[0] == "" and lines[1] == "2", lines


def test_an_unknown_study_is_reported_before_torch_mlflow_optuna_pandas_load():
    lines = _import_check()
    assert lines[1] == "2" and lines[2] == "", lines
