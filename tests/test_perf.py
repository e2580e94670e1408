"""`bench perf` and the fast paths it times: equal results, honest measurements, clean bad input."""
import json

import pytest
import torch
from official_loop import official_loop

import methods
from bench.adaptation.inner import meta_test, per_sample_mode
from bench.cli import main
from bench.core.errors import BenchError
from bench.perf import cases, measure, memmodel, reference, roofline


@pytest.fixture(autouse=True)
def _keep_threads():
    """`bench perf --quick` sets torch's thread count; leave the session's as it was."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# --------------------------------------------------------------------------- the fast paths


def test_per_sample_mode_is_scoped_and_validated():
    import bench.adaptation.inner as adapt

    with per_sample_mode("vmap"):
        assert adapt._per_sample_mode.value == "vmap"
        with pytest.raises(ValueError, match="per-sample mode"):
            with per_sample_mode("threads"):
                pass
        assert adapt._per_sample_mode.value == "vmap"
    assert adapt._per_sample_mode.value == "auto"


def test_fp32_is_the_default_and_bf16_is_opt_in_on_cpu():
    torch.manual_seed(0)
    model = methods.create("ours")
    x = torch.rand(2, 3, 16, 20)
    default = meta_test(model, x, steps=2, lr=1e-2)
    assert torch.equal(default, meta_test(model, x, steps=2, lr=1e-2, precision="fp32"))
    for mode in ("vmap", "loop"):  # autocast is off under a bare vmap: the final forward must not break
        with per_sample_mode(mode):
            bf = meta_test(model, x, steps=2, lr=1e-2, precision="bf16")
            traj = meta_test(model, x, steps=2, lr=1e-2, precision="bf16", trajectory=True)
        assert bf.dtype == x.dtype and bf.shape == x.shape and traj.shape == (3, *x.shape)
        assert (bf - default).abs().max() < 0.05  # bf16 has 8 bits of mantissa
        torch.testing.assert_close(traj[-1], bf)
    with pytest.raises(BenchError, match="not available on cpu"):
        meta_test(model, x, steps=1, lr=1e-2, precision="fp16")
    with pytest.raises(BenchError, match="expected one of fp32, bf16, fp16"):
        meta_test(model, x, steps=1, lr=1e-2, precision="fp8")


def test_fp16_loss_scale_keeps_gradients_in_range():
    from bench.adaptation.inner import fp16_loss_scale

    for size in (64, 1024, 2048):
        s = fp16_loss_scale(torch.zeros(1, 3, size, size))
        n = 3 * size * size
        assert s == 2 ** round(0.5 * torch.log2(torch.tensor(float(n))).item())
        assert s / n > 2**-14  # a per-pixel gradient (1/N of the scaled loss) is a normal fp16 number
        assert s < 2**13  # and a weight gradient (a sum over N pixels of O(1/√N)) stays far below 65504


# --------------------------------------------------------------------------- measurement


def test_interleaved_timing_and_speedup():
    calls = []
    fns = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    out = measure.interleaved(fns, repeats=3, warmup=1, device=torch.device("cpu"))
    assert calls == ["a", "b"] * 4  # warm-up, then A B A B A B
    assert out["a"]["timing"]["n"] == 3 and len(out["b"]["cpu_times"]) == 3
    sp = measure.speedup([2.0, 4.0, 6.0], [1.0, 1.0, 3.0])
    assert sp["median_of_ratios"] == 2.0 and sp["ratio_of_medians"] == 4.0
    assert measure.summary([1.0, 2.0, 3.0, 4.0, 5.0])["median"] == 3.0


def test_tensor_peak_counts_what_the_call_allocates():
    def work():
        a = torch.ones(2**20)  # 4 MiB
        b = torch.ones(2**20)  # 4 MiB more while a is alive
        del a, b
        return torch.ones(2**18)  # 1 MiB, after both were freed

    peak = measure.tensor_peak_mib(work, torch.device("cpu"))
    assert 8.0 <= peak < 8.5


def test_memory_model_fit_recovers_a_known_line():
    truth = {"c0_mib": 3.0, "a_bytes_per_px": 4000.0, "b_bytes_per_px_step": 9000.0, "c_mib_per_sample_step": 0.5}
    pts = [{"batch": b, "patch": p, "steps": k, "mib": memmodel.predict(truth, b, p, k)}
           for b in (1, 2) for p in (32, 64, 96) for k in (1, 3, 5)]
    fit = memmodel.fit(pts)
    for key, value in truth.items():
        assert fit[key] == pytest.approx(value, rel=1e-6)
    rows = memmodel.what_fits(fit)
    assert [r["gpu_gib"] for r in rows] == list(memmodel.GPU_GIB)
    assert all(a["max_steps"] < b["max_steps"] and a["max_patch"] <= b["max_patch"] for a, b in zip(rows, rows[1:]))
    # the largest patch really fits and 8 more pixels would not
    r = rows[-1]
    budget = (r["gpu_gib"] - memmodel.RESERVE_GIB) * 1024
    assert memmodel.predict(fit, 2, r["max_patch"], 5) <= budget < memmodel.predict(fit, 2, r["max_patch"] + 16, 5)


def test_memory_point_grows_with_steps():
    small = memmodel.measure_point((32, 16), 1, 16, 1, False, torch.device("cpu"))
    large = memmodel.measure_point((32, 16), 1, 16, 3, False, torch.device("cpu"))
    assert 0 < small < large


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_official_reference_freezes_and_computes_what_the_official_loop_does():
    torch.manual_seed(0)
    model = methods.create("ours")
    model.eval()
    noisy = torch.rand(1, 3, 24, 24)
    r = model.restorer
    expected, adapted = official_loop(r, model.mask_net, noisy, 3, 1e-3)
    frozen = [n for n, p in adapted.named_parameters() if not p.requires_grad]
    assert reference.official_frozen(r) == frozen
    names = [n for n, _ in r.named_parameters()]
    first_head = names[len(frozen) - 1]
    assert first_head.split(".", 1)[0] == r.head_names[0] and frozen == names[: names.index(first_head) + 1]
    out = reference.official_meta_test(model, noisy, steps=3, lr=1e-3)
    torch.testing.assert_close(out.clamp(0, 1), expected, rtol=0, atol=1e-6)

    entered = []  # the official loop's backward never enters the body; the slow naive loop's does
    hook = r.body.register_full_backward_hook(lambda *a: entered.append(1))
    try:
        reference.official_meta_test(model, noisy, steps=2, lr=1e-3)
        assert not entered
        reference.naive_meta_test(model, noisy, steps=1, lr=1e-3, freeze=False)
        assert entered
    finally:
        hook.remove()
    assert all(p.requires_grad for p in model.parameters())  # the model itself is left alone


def test_flop_count_and_rates():
    x, w = torch.rand(1, 4, 8, 8), torch.rand(4, 4, 3, 3)
    flops = roofline.count_flops(lambda: torch.nn.functional.conv2d(x, w, padding=1))
    assert flops == 2 * 4 * 4 * 9 * 8 * 8
    variants = {"a": {"timing": {"median": 0.5}}, "b": {"timing": {}}}
    roofline.add_rates(variants, {"a": 10**9, "b": 10**9})
    assert variants["a"]["gflop"] == 1 and variants["a"]["gflops_per_s"] == 2 and variants["b"]["gflops_per_s"] is None


# --------------------------------------------------------------------------- the command


def test_quick_perf_checks_every_fast_path(capsys, tmp_path):
    """What CI runs: `bench perf --device cpu --quick` — equal outputs asserted, timings only reported."""
    code = 0
    try:
        main(["perf", "--device", "cpu", "--quick", "--precision", "bf16", "--channels-last",
              "--out", str(tmp_path)])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr().out
    assert code in (0, None), out
    result = json.loads((tmp_path / "perf-cpu-quick.json").read_text())
    assert {c["case"] for c in result["cases"]} == {"mtl", "metatest-64", "metatest-batched", "maxl", "eval"}
    checks = [c for case in result["cases"] for c in case["checks"]]
    assert len(checks) >= 10 and all(c["ok"] for c in checks)
    mtl = next(c for c in result["cases"] if c["case"] == "mtl")
    naive = cases.NAIVE_MTL
    assert {naive, "ours", "ours, vmap", "ours, first order", "ours, channels-last"} <= mtl["variants"].keys()
    assert mtl["speedup"]["ours"][naive]["median_of_ratios"] > 0
    assert result["environment"]["torch"] == torch.__version__
    md = (tmp_path / "perf-cpu-quick.md").read_text()
    assert f"| MTL step, B=2, 64², K=2 | {naive} |" in md and "## Checks" in md
    # the roofline: measured peaks, and every timed variant's FLOPs and rate
    peak = result["roofline"]
    assert peak["matmul_gflops"] > 0 and peak["conv_gflops"] > 0
    meta = next(c for c in result["cases"] if c["case"] == "metatest-64")
    assert all(v["gflop"] > 0 and v["gflops_per_s"] > 0 for v in meta["variants"].values())
    assert any(h.startswith("roofline: measured peaks") for h in result["headlines"])
    assert "GFLOP/s (% of conv peak)" in md and "Roofline (measured in this run" in md
    # the headline meta-test ratios are of the paths users run against the official loop
    assert {cases.ALG3_ENTRY, cases.OFFICIAL_ENTRY} <= meta["speedup"].keys()
    assert meta["baseline"] == cases.OFFICIAL


def test_a_mismatch_exits_1(run_cli, tmp_path, monkeypatch):
    real = cases.naive_meta_test
    monkeypatch.setattr(cases, "naive_meta_test", lambda *a, **k: real(*a, **k) + 1e-2)
    code, out, _ = run_cli("perf", "--quick", "--only", "metatest", "--out", str(tmp_path))
    assert code == 1
    assert "check failed: metatest-64: output: ours (loop) vs naive" in out


@pytest.mark.parametrize("args,needle", [
    (["--device", "tpu"], "--device 'tpu'"),
    (["--precision", "fp8"], "precision 'fp8'"),
    (["--precision", "fp16"], "precision 'fp16' is not available on cpu"),
    (["--sizes", "a,b"], "--sizes"),
    (["--sizes", "4"], "at least 8"),
    (["--only", "mtl,nosuch"], "--only 'nosuch'"),
    (["--repeats", "0"], "--repeats 0"),
    (["--threads", "0"], "--threads 0"),
    (["--weights", "/nonexistent/w.pt"], "no such file"),
])
def test_bad_input_is_one_line_and_exit_2(run_cli, tmp_path, args, needle):
    code, _, err = run_cli("perf", "--quick", *args, "--out", str(tmp_path))
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clean_error(run_cli, tmp_path):
    code, _, err = run_cli("perf", "--device", "cuda", "--out", str(tmp_path))
    assert code == 2 and "CUDA is not available" in err
