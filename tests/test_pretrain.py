"""MAXL pre-training: the recipe's grad_loss switch really removes L_G from the mask's meta step; the
meta pass's gradient without a double backward equals the literal second-order graph."""
import copy

import numpy as np
import pytest
import torch

import bench.training.pretrain
import methods
from bench.core.config import PretrainConfig
from bench.core.losses import aux_loss, l1
from bench.data import Source
from bench.data.base import ImagePair
from bench.data.noise import noise_model
from bench.perf.reference import naive_maxl_meta_backward, naive_maxl_step
from bench.training.context import TrainContext
from bench.training.pretrain import mask_meta_backward, pretrain


def _mask_after_pretraining(grad_loss: bool):
    torch.manual_seed(0)
    model = methods.create("ours")
    img = np.random.default_rng(0).random((24, 24, 3), dtype=np.float32)
    source = Source([ImagePair("x", img)], [noise_model("synthetic-mix")])
    cfg = PretrainConfig(epochs=1, steps_per_epoch=1, batch=1, patch=16, lambda_g=1.0)
    ctx = TrainContext(device=torch.device("cpu"), rng=np.random.default_rng(0), quiet=True)
    pretrain(model, methods.get("ours").with_recipe(grad_loss=grad_loss).recipe, cfg, source, ctx)
    return model.mask_net.out.weight.detach().clone(), model.restorer.body.stem.weight.detach().clone()


def test_grad_loss_switch_changes_only_the_mask_step():
    mask_on, body_on = _mask_after_pretraining(True)
    mask_off, body_off = _mask_after_pretraining(False)
    assert not torch.equal(mask_on, mask_off)  # L_G entered the mask network's update
    assert torch.equal(body_on, body_off)  # the restorer's first (auxiliary) pass is the same


def _meta_grads(fn, model, noisy, clean, **hp):
    model.mask_net.zero_grad(set_to_none=True)
    outer = fn(model.restorer, model.mask_net, noisy, clean, **hp)
    return outer, {k: None if p.grad is None else p.grad.clone() for k, p in model.mask_net.named_parameters()}


@pytest.mark.parametrize("use_mask,lambda_g", [(True, 0.01), (True, 0.0), (False, 0.5)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_meta_pass_without_double_backward_equals_the_second_order_graph(use_mask, lambda_g, layout):
    torch.manual_seed(1)
    model = methods.create("ours", base=8, scale=4, mask_base=8)
    with torch.no_grad():  # a trained-like mask, not ~0.5 everywhere
        model.mask_net.out.weight.mul_(20)
    noisy, clean = torch.rand(2, 3, 20, 20), torch.rand(2, 3, 20, 20)
    hp = dict(inner_lr=0.3, use_mask=use_mask, lambda_g=lambda_g)  # a large α, so second-order terms matter
    ref_outer, ref = _meta_grads(naive_maxl_meta_backward, model, noisy, clean, **hp)
    if layout == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        noisy, clean = (x.contiguous(memory_format=torch.channels_last) for x in (noisy, clean))
    outer, got = _meta_grads(mask_meta_backward, model, noisy, clean, **hp)
    assert outer == pytest.approx(ref_outer, rel=1e-5)
    assert ref.keys() == got.keys()
    for k in ref:
        assert (ref[k] is None) == (got[k] is None), k
        if ref[k] is not None:
            assert ref[k].abs().max() > 0, k
            torch.testing.assert_close(got[k], ref[k], rtol=1e-4, atol=1e-4 * ref[k].abs().max().item())


def test_pretraining_runs_channels_last_on_cpu_and_hands_back_contiguous_weights(monkeypatch):
    seen = []
    real = bench.training.pretrain.mask_meta_backward

    def spy(restorer, mask_net, noisy, clean, **kw):
        seen.append((noisy.is_contiguous(memory_format=torch.channels_last),
                     restorer.body.stem.weight.is_contiguous(memory_format=torch.channels_last)))
        return real(restorer, mask_net, noisy, clean, **kw)

    monkeypatch.setattr(bench.training.pretrain, "mask_meta_backward", spy)
    torch.manual_seed(0)
    model = methods.create("ours")
    img = np.random.default_rng(0).random((24, 24, 3), dtype=np.float32)
    source = Source([ImagePair("x", img)], [noise_model("synthetic-mix")])
    cfg = PretrainConfig(epochs=1, steps_per_epoch=2, batch=2, patch=16)
    ctx = TrainContext(device=torch.device("cpu"), rng=np.random.default_rng(0), quiet=True)
    pretrain(model, methods.get("ours").recipe, cfg, source, ctx)
    assert seen == [(True, True)] * 2
    assert all(p.is_contiguous() for p in model.parameters())


def test_maxl_steps_follow_the_double_backward_path_in_float64():
    """Several whole MAXL steps (Adam on θ1, then the meta step on θ2), channels-last + JVP vs NCHW +
    double backward: in float64 the weights stay equal, so the two paths are one algorithm and
    float32's drift between them (README) is rounding amplified by training, not a different update."""
    torch.manual_seed(0)
    base = methods.create("ours", base=8, scale=4, mask_base=8).double()
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.rand(2, 3, 16, 16, generator=gen, dtype=torch.float64),
                torch.rand(2, 3, 16, 16, generator=gen, dtype=torch.float64)) for _ in range(6)]

    def train(new: bool) -> torch.Tensor:
        m = copy.deepcopy(base)
        if new:
            m = m.to(memory_format=torch.channels_last)
        opt1, opt2 = torch.optim.Adam(m.restorer.parameters(), 1e-3), torch.optim.Adam(m.mask_net.parameters(), 1e-3)
        for noisy, clean in batches:
            if not new:
                naive_maxl_step(m, (opt1, opt2), noisy, clean, inner_lr=0.1, lambda_g=0.01)
                continue
            noisy, clean = (x.contiguous(memory_format=torch.channels_last) for x in (noisy, clean))
            opt1.zero_grad()
            with torch.no_grad():
                mask = m.mask_net(noisy)
            pred, rec = m.restorer(noisy)
            (l1(pred, clean) + aux_loss(rec, noisy, mask)).backward()
            opt1.step()
            opt2.zero_grad()
            mask_meta_backward(m.restorer, m.mask_net, noisy, clean, inner_lr=0.1, lambda_g=0.01)
            opt2.step()
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    old, new = train(False), train(True)
    assert not torch.equal(old, base_weights := torch.cat([p.detach().flatten() for p in base.parameters()]))
    torch.testing.assert_close(new, old, rtol=1e-10, atol=1e-12)
    assert (new - base_weights).abs().max() > 1e-4  # the steps moved the weights
