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
