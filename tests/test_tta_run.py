"""adapt_image runs every registry entry: its own loss falls, nothing frozen moves, diagnostics add up."""
import copy
import math

import pytest
import torch

import methods
from bench.adaptation import registry as R
from bench.adaptation.inner import meta_test
from bench.adaptation.run import adapt_image
from bench.core.errors import ConfigError
from bench.core.losses import l1
from bench.core.metrics import psnr_float

K = 3
# Test budgets: K steps each, and where the published lr moves a random tiny model too little to see
# the loss fall in K steps (SGD 1e-5 on the heads, Adam 5e-6 on all weights), a larger lr.
BUDGET = {"alg3": dict(lr=0.05), "official": dict(lr=1e-3), "oracle": dict(lr=0.05), "lan-offset": dict(lr=5e-3),
          "ssl-finetune": dict(lr=1e-3), "zs-n2n": dict(halve_lr_at=2)}
LEARNED = ["alg3", "official", "oracle", "lan-offset", "ssl-finetune", "zs-n2n"]


def entry(name, **changes):
    e = R.get(name)
    return e.with_(**{"steps": K, **BUDGET.get(name, {}), **changes}) if e.learns else e


@pytest.fixture(scope="module")
def ours():
    torch.manual_seed(2)
    return methods.create("ours", base=8, scale=4, mask_base=8).double()


@pytest.fixture(scope="module")
def ridnet():
    torch.manual_seed(2)
    return methods.create("ridnet", n_feats=16, n_blocks=1).double()


@pytest.fixture(scope="module")
def image():
    g = torch.Generator().manual_seed(5)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16, dtype=torch.float64), torch.linspace(0, 1, 16, dtype=torch.float64),
                            indexing="ij")
    clean = torch.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.2 * xx * yy])[None]
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    return noisy, clean


def state(model):
    return copy.deepcopy(model.state_dict())


def assert_unchanged(before, model):
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("name", LEARNED)
def test_own_loss_falls_and_the_model_stays_bit_identical(ours, image, name):
    noisy, clean = image
    before = state(ours)
    r = adapt_image(entry(name), ours, noisy, clean, trajectory=True)
    assert_unchanged(before, ours)
    assert len(r.losses) == K + 1 and r.losses[-1] < r.losses[0], r.losses
    assert len(r.delta_grey) == K and all(d > 0 for d in r.delta_grey)
    assert len(r.psnr) == K + 1 and all(math.isfinite(p) for p in r.psnr)
    assert r.alignment is not None and -1 - 1e-9 <= r.alignment <= 1 + 1e-9
    assert r.trajectory.shape == (K + 1, 1, 3, 16, 16)
    assert torch.equal(r.trajectory[r.updates], r.prediction)
    assert r.psnr[r.updates] == float(psnr_float(r.prediction[0], clean[0]))
    assert 0 < r.seconds <= r.seconds_total and r.memory_kind
    with torch.no_grad():
        assert not torch.equal(r.prediction, ours(noisy))  # it did adapt


@pytest.mark.parametrize("name", ["lan-offset", "ssl-finetune", "zs-n2n"])
def test_restorer_agnostic_entries_run_on_a_baseline(ridnet, image, name):
    noisy, _ = image
    before = state(ridnet)
    r = adapt_image(entry(name), ridnet, noisy)
    assert_unchanged(before, ridnet)
    assert r.losses[-1] < r.losses[0] and r.psnr == [] and r.alignment is None
    assert r.prediction.shape == noisy.shape


def test_oracle_lowers_l_pri_and_is_aligned_with_itself(ours, image):
    noisy, clean = image
    r = adapt_image(entry("oracle"), ours, noisy, clean)
    with torch.no_grad():
        base = l1(ours(noisy), clean).item()
    assert r.losses[0] == pytest.approx(base, rel=1e-12)  # its loss is L_pri
    assert l1(r.prediction, clean).item() < base
    assert r.psnr[-1] > r.psnr[0]
    assert r.alignment == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="clean"):
        adapt_image(entry("oracle"), ours, noisy)


def test_official_predicts_after_k_minus_one_updates(ours, image):
    noisy, _ = image
    official = adapt_image(entry("official"), ours, noisy)
    same = adapt_image(entry("official", steps=K - 1, predict_after="last"), ours, noisy)
    assert official.updates == K - 1 and torch.equal(official.prediction, same.prediction)
    soft = adapt_image(entry("official", steps=K - 1, predict_after="last", mask_threshold=None), ours, noisy)
    assert not torch.equal(official.prediction, soft.prediction)  # the 0.5 threshold matters
    heads = adapt_image(entry("alg3", optimizer="adam", lr=1e-3, mask_threshold=0.5, steps=K - 1), ours, noisy)
    assert not torch.equal(official.prediction, heads.prediction)  # the frozen first head conv matters


def test_alg3_equals_bench_adapt_meta_test(ours, image):
    noisy, _ = image
    for optimizer, lr in (("sgd", 0.05), ("adam", 1e-3)):
        r = adapt_image(entry("alg3", optimizer=optimizer, lr=lr), ours, noisy)
        assert torch.equal(r.prediction, meta_test(ours, noisy, steps=K, lr=lr, optimizer=optimizer))


def test_what_each_entry_moves(ours, ridnet, image):
    noisy, _ = image
    heads = {k for k, _ in ours.restorer.named_parameters() if k.startswith(("primary_head.", "aux_head."))}
    for name in ("alg3", "oracle"):
        r = adapt_image(entry(name), ours, noisy, image[1])
        assert set(r.moved) == heads  # never the body, never the mask network
    # the official loop freezes by parameter order through the first head parameter
    assert set(adapt_image(entry("official"), ours, noisy).moved) == heads - {"primary_head.blocks.0.conv1.weight"}
    assert adapt_image(entry("lan-offset"), ridnet, noisy).moved == ["offset"]
    assert set(adapt_image(entry("ssl-finetune"), ridnet, noisy).moved) == {k for k, _ in ridnet.restorer.named_parameters()}
    assert set(adapt_image(entry("zs-n2n"), ridnet, noisy).moved) == {f"conv{i}.{p}" for i in (1, 2, 3) for p in ("weight", "bias")}
    # LAN starts from φ = 0: its first iterate is the frozen network's own output
    lan = adapt_image(entry("lan-offset"), ours, noisy, trajectory=True)
    with torch.no_grad():
        assert torch.equal(lan.trajectory[0], ours(noisy))


def test_none_and_nlm(ours, ridnet, image):
    noisy, clean = image
    for model in (ours, ridnet):
        r = adapt_image(R.get("none"), model, noisy, clean)
        with torch.no_grad():
            assert torch.equal(r.prediction, model(noisy))
        assert r.updates == 0 and r.losses == [] and len(r.psnr) == 1
    r = adapt_image(R.get("nlm"), ridnet, noisy, clean, trajectory=True)
    assert r.extra["sigma"] > 0 and r.prediction.dtype == noisy.dtype and r.trajectory.shape == (1, 1, 3, 16, 16)
    assert r.psnr[0] > float(psnr_float(noisy[0], clean[0]))  # it denoises


def test_impossible_pairing_and_bad_shape(ridnet, image):
    noisy, _ = image
    with pytest.raises(ConfigError, match="'alg3' cannot run on method 'SingleTaskModel'"):
        adapt_image(entry("alg3"), ridnet, noisy)
    with pytest.raises(ValueError, match="one image"):
        adapt_image(R.get("none"), ridnet, noisy.expand(2, -1, -1, -1))


def test_zero_steps_predict_the_starting_point(ours, image):
    noisy, clean = image
    r = adapt_image(R.get("official").with_(steps=0), ours, noisy, clean)
    with torch.no_grad():
        assert torch.equal(r.prediction, ours(noisy))
    assert r.updates == 0 and len(r.losses) == 1 and r.delta_grey == [] and r.alignment is not None


def test_diagnostics_off_gives_the_same_prediction(ours, image):
    noisy, clean = image
    for name in ("official", "lan-offset"):
        on = adapt_image(entry(name), ours, noisy, clean)
        off = adapt_image(entry(name), ours, noisy, clean, diagnostics=False)
        assert torch.equal(on.prediction, off.prediction) and on.losses == off.losses
        assert off.delta_grey == [] and off.psnr == [] and off.trajectory is None


# ---- ×8 self-ensembling (no learning) -------------------------------------------------------------

def _d4_by_hand(x):
    """The 8 flips/rotations written with transposes and flips (not the module's rot90s), each with
    its inverse: the identity, the three flips, and the transpose followed by each of them."""
    out = []
    for t in (False, True):
        for dims in ((), (-1,), (-2,), (-2, -1)):
            def fwd(y, t=t, dims=dims):
                y = y.transpose(-2, -1) if t else y
                return y.flip(dims) if dims else y

            def inv(y, t=t, dims=dims):
                y = y.flip(dims) if dims else y
                return y.transpose(-2, -1) if t else y

            out.append((fwd, inv))
    return out


def test_ensemble8_is_the_mean_of_the_eight_mapped_back_outputs_on_a_non_square_image():
    torch.manual_seed(4)
    model = methods.create("ours", base=4, scale=2, mask_base=4).double()
    g = torch.Generator().manual_seed(1)
    noisy = torch.rand(1, 3, 16, 24, generator=g, dtype=torch.float64)
    clean = (noisy + 0.05 * torch.randn(noisy.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    before = state(model)
    r = adapt_image(R.get("ensemble8"), model, noisy, clean, trajectory=True)
    assert_unchanged(before, model)
    with torch.no_grad():
        outs = [inv(model(fwd(noisy))) for fwd, inv in _d4_by_hand(noisy)]
        plain = model(noisy)
    assert all(o.shape == noisy.shape for o in outs) and r.prediction.shape == noisy.shape
    torch.testing.assert_close(r.prediction, torch.stack(outs).mean(0), rtol=0, atol=1e-12)
    assert not torch.allclose(r.prediction, plain)  # the tiny network is not equivariant
    assert (r.updates, r.losses, r.extra, r.alignment, r.alignment_pri) == (0, [], {"transforms": 8}, None, None)
    assert len(r.psnr) == 1 and r.trajectory.shape == (1, 1, 3, 16, 24) and R.get("ensemble8").requires == "restorer"


def test_ensemble8_of_an_equivariant_network_is_its_plain_output():
    from methods.blocks import SingleTaskModel

    torch.manual_seed(0)
    pointwise = SingleTaskModel(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 1)))
    pointwise = pointwise.double()  # 1×1 convolutions commute with every flip and rotation
    noisy = torch.rand(1, 3, 10, 14, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = adapt_image(R.get("ensemble8"), pointwise, noisy)
    with torch.no_grad():
        torch.testing.assert_close(r.prediction, pointwise(noisy), rtol=0, atol=1e-12)


# ---- step-0 alignment on the primary head, and L_pri over the first update ----------------------

def _head_grads(model, noisy, clean):
    """By plain autograd on a copy: ∇L_MaskRec (soft mask) and ∇L_pri over the two heads at θ0."""
    from bench.core.losses import aux_loss

    m = copy.deepcopy(model)
    heads = {n: p for n, p in m.restorer.named_parameters() if n.startswith(("primary_head.", "aux_head."))}
    with torch.no_grad():
        mask = m.mask_net(noisy)
    rec = m.restorer(noisy)[1]
    g_self = torch.autograd.grad(aux_loss(rec, noisy, mask), list(heads.values()))
    g_pri = torch.autograd.grad(l1(m.restorer(noisy)[0], clean), list(heads.values()), allow_unused=True)
    zeros = [torch.zeros_like(p) if g is None else g for g, p in zip(g_pri, heads.values())]
    return m, heads, dict(zip(heads, g_self)), dict(zip(heads, zeros))


def _cos(a, b):
    return float(sum((a[k] * b[k]).sum() for k in a) / (math.sqrt(sum(a[k].pow(2).sum() for k in a))
                                                          * math.sqrt(sum(b[k].pow(2).sum() for k in b))))


def test_alignment_pri_is_the_cosine_over_the_parameters_l_pri_moves(ours, image):
    noisy, clean = image
    r = adapt_image(entry("alg3", lr=1e-6), ours, noisy, clean)
    _, heads, g_self, g_pri = _head_grads(ours, noisy, clean)
    moved = {n for n, g in g_pri.items() if bool((g != 0).any())}
    assert moved == {n for n in heads if n.startswith("primary_head.")}  # L_pri never reaches the auxiliary head
    assert r.alignment == pytest.approx(_cos(g_self, g_pri), abs=1e-9)  # over both heads: diluted
    assert r.alignment_pri == pytest.approx(_cos({n: g_self[n] for n in moved}, {n: g_pri[n] for n in moved}), abs=1e-9)
    assert abs(r.alignment_pri) > abs(r.alignment)
    # entries that move only what L_pri moves: the two cosines agree
    for name in ("oracle", "lan-offset"):
        e = adapt_image(entry(name), ours, noisy, clean)
        assert e.alignment_pri == pytest.approx(e.alignment, abs=1e-12)
    assert adapt_image(entry("oracle"), ours, noisy, clean).alignment_pri == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("k", [1, K])
def test_lpri_actual_and_predicted_over_the_first_sgd_update(ours, image, k):
    noisy, clean = image
    lr = 1e-6
    r = adapt_image(entry("alg3", lr=lr, steps=k), ours, noisy, clean)
    m, heads, g_self, g_pri = _head_grads(ours, noisy, clean)
    with torch.no_grad():
        before = l1(m(noisy), clean).item()
        for n, p in heads.items():
            p -= lr * g_self[n]
        after = l1(m(noisy), clean).item()
    assert r.lpri_actual == pytest.approx(after - before, rel=1e-6)
    assert r.lpri_pred == pytest.approx(-lr * float(sum((g_pri[n] * g_self[n]).sum() for n in heads)), rel=1e-9)
    assert abs(r.lpri_pred - r.lpri_actual) < 0.05 * abs(r.lpri_actual)  # first order holds at a tiny lr


def test_lpri_pred_follows_adam_s_first_step_the_sign_of_the_gradient(ours, image):
    noisy, clean = image
    lr = 1e-6
    r = adapt_image(entry("alg3", optimizer="adam", lr=lr, steps=2), ours, noisy, clean)
    _, heads, g_self, g_pri = _head_grads(ours, noisy, clean)
    step = {n: g / (g.abs() + 1e-8) for n, g in g_self.items()}  # Adam's bias-corrected first update
    assert r.lpri_pred == pytest.approx(-lr * float(sum((g_pri[n] * step[n]).sum() for n in heads)), rel=1e-6)
    assert abs(r.lpri_pred - r.lpri_actual) < 0.05 * abs(r.lpri_actual)


def test_the_first_update_diagnostics_are_none_when_they_cannot_be_computed(ours, ridnet, image):
    noisy, clean = image
    without = adapt_image(entry("alg3"), ours, noisy)
    assert (without.alignment, without.alignment_pri, without.lpri_pred, without.lpri_actual) == (None,) * 4
    zero = adapt_image(R.get("alg3").with_(steps=0), ours, noisy, clean)
    assert zero.alignment_pri is not None and (zero.lpri_pred, zero.lpri_actual) == (None, None)  # no update
    for name in ("none", "nlm", "ensemble8"):
        r = adapt_image(R.get(name), ridnet, noisy, clean)
        assert (r.alignment, r.alignment_pri, r.lpri_pred, r.lpri_actual) == (None,) * 4


def test_evaluate_rows_carry_the_first_update_diagnostics():
    import numpy as np

    from bench.adaptation.evaluate import ROW_COLUMNS, Target, evaluate
    from bench.data.base import ImagePair

    torch.manual_seed(4)
    model = methods.create("ours", base=4, scale=2, mask_base=4)
    rng = np.random.default_rng(0)
    clean = rng.uniform(0.2, 0.8, (16, 16, 3)).astype(np.float32)
    pair = ImagePair("a", clean, np.clip(clean + rng.normal(0, 0.1, clean.shape), 0, 1).astype(np.float32))
    cols = ("alignment", "alignment_pri", "lpri_pred", "lpri_actual")
    assert set(cols) <= set(ROW_COLUMNS)
    (row,) = evaluate(model, entry("alg3"), [Target("test", "s", [pair])], torch.device("cpu"))
    assert all(isinstance(row[c], float) and math.isfinite(row[c]) for c in cols), row
    (plain,) = evaluate(model, R.get("ensemble8"), [Target("test", "s", [pair])], torch.device("cpu"))
    assert all(plain[c] is None for c in cols)


def test_the_alignment_figure_plots_the_primary_head_cosine_and_falls_back_for_older_runs(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from bench.report.figures import tta_alignment

    recs = []
    for i in range(3):
        for metric, row, v in (("psnr_float", "none", 30.0), ("psnr_float", "alg3", 30.0 + 0.1 * i),
                               ("alignment", "alg3", -0.1 * i), ("alignment_pri", "alg3", -0.3 * i),
                               ("psnr_float", "official", 30.0 + 0.2 * i), ("alignment", "official", 0.1 * i)):
            recs.append({"row": row, "seed": 0, "split": "test", "scenario": "c", "image": f"i{i}", "metric": metric,
                         "value": v})
    rows = [{"name": "none", "method": "ours", "adapt": "none"}, {"name": "alg3", "method": "ours", "adapt": "alg3"},
            {"name": "official", "method": "ours", "adapt": "official"}]
    study = SimpleNamespace(spec={"scenarios": ["c"], "rows": rows}, tidy=pd.DataFrame(recs), title="t")
    data = tta_alignment.compute(study)
    pts = {p.row: p for p in data.points}
    assert pts["alg3"].metric == "alignment_pri" and pts["alg3"].alignment.tolist() == pytest.approx([0, -0.3, -0.6])
    assert pts["official"].metric == "alignment" and pts["official"].alignment.tolist() == pytest.approx([0, .1, .2])
    assert "official" in data.caption and "L_pri moves" in tta_alignment.LABELS["alignment_pri"]
    assert all(p.exists() for p in tta_alignment.draw(data, tmp_path))
