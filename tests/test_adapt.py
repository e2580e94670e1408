"""The functional inner loop equals a slow, hand-written loop (docs/design.md §8, learn2learn-style)."""
import copy

import pytest
import torch

import methods
from bench.adaptation.inner import meta_test, mtl_loss, per_sample_mode
from bench.perf.reference import naive_meta_test, naive_mtl_loss, official_meta_test  # the slow loops, one copy

HP = dict(inner_lr=0.05, lambda_in=10.0, lambda_out=10.0)


def grads_of(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(1)
    model = methods.create("ours").double()
    noisy = torch.rand(2, 3, 11, 13, dtype=torch.float64)
    clean = (noisy + 0.1 * torch.randn_like(noisy)).clamp(0, 1)
    return model, noisy, clean


def assert_close_grads(a, b, rtol=1e-5):
    assert a.keys() == b.keys()
    for k in a:
        scale = b[k].abs().max().clamp_min(1e-12)
        assert (a[k] - b[k]).abs().max() / scale <= rtol, k


@pytest.mark.parametrize("first_order", [False, True])
@pytest.mark.parametrize("scope,aux", [("heads", "mrl"), ("heads", "rl"), ("all", "mrl")])
def test_mtl_loss_matches_naive_loop(setup, first_order, scope, aux):
    model, noisy, clean = setup
    kw = dict(steps=3 if scope == "all" else 5, first_order=first_order, scope=scope, aux=aux, **HP)
    fast = grads_of(model, lambda: mtl_loss(model, noisy, clean, **kw))
    slow = grads_of(model, lambda: naive_mtl_loss(model, noisy, clean, **kw))
    assert_close_grads(fast, slow)
    n_params = sum(1 for _ in model.restorer.parameters()) + (sum(1 for _ in model.mask_net.parameters()) if aux == "mrl" else 0)
    if not first_order:  # every restorer (and mask) parameter gets a meta-gradient
        assert len(fast) == n_params
    else:  # first order: the aux head and mask only enter through the (detached) inner gradients
        assert not any(k.startswith(("mask_net.", "restorer.aux_head.")) for k in fast)
    assert all(torch.isfinite(g).all() for g in fast.values())


def test_k_and_order_change_the_gradient(setup):
    model, noisy, clean = setup
    g5 = grads_of(model, lambda: mtl_loss(model, noisy, clean, steps=5, **HP))
    g1 = grads_of(model, lambda: mtl_loss(model, noisy, clean, steps=1, **HP))
    fo = grads_of(model, lambda: mtl_loss(model, noisy, clean, steps=5, first_order=True, **HP))
    for other in (g1, fo):
        diff = max(((g5[k] - other.get(k, torch.zeros_like(g5[k]))).abs().max()
                    / g5[k].abs().max().clamp_min(1e-12)).item() for k in g5)
        assert diff > 1e-4
    # the mask network's gradient only exists through the inner steps' second-order terms
    mask_key = next(k for k in g5 if k.startswith("mask_net."))
    assert g5[mask_key].abs().max() > 0


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_meta_test_matches_hand_written_loop_and_leaves_model_unchanged(setup, optimizer):
    model, noisy, _ = setup
    before = copy.deepcopy(model.state_dict())
    lr, steps = (0.05, 5) if optimizer == "sgd" else (1e-3, 4)
    out = meta_test(model, noisy, steps=steps, lr=lr, optimizer=optimizer)

    # per image: a deep copy, torch.optim on the heads, the full network at every step
    expected = naive_meta_test(model, noisy, steps=steps, lr=lr, optimizer=optimizer, freeze=False)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert (out - model.restorer(noisy)[0]).abs().max() > 1e-6  # adaptation did something
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_meta_test_trajectory_and_zero_steps(setup):
    model, noisy, _ = setup
    traj = meta_test(model, noisy, steps=3, lr=0.05, trajectory=True)
    assert traj.shape == (4, *noisy.shape)
    with torch.no_grad():
        torch.testing.assert_close(traj[0], model.restorer(noisy)[0])
    torch.testing.assert_close(traj[-1], meta_test(model, noisy, steps=3, lr=0.05))
    torch.testing.assert_close(meta_test(model, noisy, steps=0, lr=0.05), traj[0])


def test_meta_test_iterates_are_meta_tests_parameters(setup):
    """Fig. 8 looks inside the adapted network through these iterates: each one's prediction is
    meta_test(trajectory=True)'s at that step."""
    from bench.adaptation.inner import forward_with, meta_test_iterates

    model, noisy, _ = setup
    its, features, _ = meta_test_iterates(model, noisy[:1], steps=2, lr=0.05, optimizer="adam")
    traj = meta_test(model, noisy[:1], steps=2, lr=0.05, optimizer="adam", trajectory=True)
    assert len(its) == 3
    with torch.no_grad():
        for k, p in enumerate(its):
            torch.testing.assert_close(forward_with(model.restorer, p, noisy[:1], features)[0], traj[k])


@pytest.mark.parametrize("shape", [(1, 3, 7, 9), (2, 3, 17, 30), (1, 3, 33, 31)])
def test_odd_sizes(shape):
    model = methods.create("ours")
    x = torch.rand(shape)
    clean, rec = model.restorer(x)
    assert clean.shape == rec.shape == x.shape and model.mask_net(x).shape == (shape[0], 1, *shape[2:])
    assert meta_test(model, x, steps=2, lr=1e-3).shape == x.shape
    mtl_loss(model, x, x, steps=2, inner_lr=1e-3, lambda_in=10, lambda_out=10).backward()


@pytest.mark.parametrize("mode", ["vmap", "loop"])
def test_both_per_sample_modes_equal_the_naive_loops(setup, mode):
    model, noisy, clean = setup
    ref = grads_of(model, lambda: naive_mtl_loss(model, noisy, clean, steps=3, **HP))
    with per_sample_mode(mode):
        fast = grads_of(model, lambda: mtl_loss(model, noisy, clean, steps=3, **HP))
        out = meta_test(model, noisy, steps=3, lr=0.05)
        traj = meta_test(model, noisy, steps=2, lr=0.05, trajectory=True)
    assert fast.keys() == ref.keys()
    for k in ref:
        assert (fast[k] - ref[k]).abs().max() <= 1e-6 * ref[k].abs().max().clamp_min(1e-12), k
    torch.testing.assert_close(out, naive_meta_test(model, noisy, steps=3, lr=0.05), rtol=1e-10, atol=1e-10)
    assert traj.shape == (3, *noisy.shape)


def test_naive_meta_test_frozen_body_changes_nothing_but_speed(setup):
    model, noisy, _ = setup
    a = naive_meta_test(model, noisy, steps=2, lr=0.05, freeze=True)
    b = naive_meta_test(model, noisy, steps=2, lr=0.05, freeze=False)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert all(p.requires_grad for p in model.parameters())  # the model itself is left alone


def test_official_loop_is_the_official_entry_once_its_departures_are_off(setup):
    """The official TTAID test loop (full network and mask every step, torch.optim.Adam, the primary
    head's first conv frozen) computes the ``official`` entry's executor path with the soft mask and
    the prediction after the K-th step; as shipped it reports the prediction after K−1 steps, with a
    binary mask — which the entry as registered does too."""
    from bench.adaptation.registry import get
    from bench.adaptation.run import adapt_image

    model, noisy, _ = setup
    lr, k = 1e-3, 3
    official = get("official").with_(steps=k, lr=lr)

    def entry(**changes):
        return adapt_image(official.with_(**changes), model, noisy[:1], diagnostics=False).prediction

    ours = entry(mask_threshold=None, predict_after="last")
    torch.testing.assert_close(official_meta_test(model, noisy[:1], steps=k, lr=lr, threshold=None, report="after"),
                               ours, rtol=1e-6, atol=1e-6)
    one_less = entry(mask_threshold=None)
    torch.testing.assert_close(official_meta_test(model, noisy[:1], steps=k, lr=lr, threshold=None), one_less,
                               rtol=1e-6, atol=1e-6)
    assert (ours - one_less).abs().max() > 1e-3  # the last step matters: the check above can fail
    shipped = official_meta_test(model, noisy[:1], steps=k, lr=lr)
    assert (shipped - one_less).abs().max() > 1e-4  # the binary mask changes the loss, hence the result
    torch.testing.assert_close(shipped, entry(), rtol=1e-6, atol=1e-6)
    assert all(p.requires_grad for p in model.parameters())  # the model itself is left alone
