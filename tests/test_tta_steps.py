"""bench.adaptation.inner.run_steps: the one update loop of every learned adaptation, and its lr schedule."""
import pytest
import torch
from torch.func import functional_call

import methods
from bench.adaptation.inner import inner_parameters, iterates, lr_at, run_steps
from bench.core.losses import aux_loss


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.05), ("adam", 1e-3)])
def test_adapt_iterates_match_an_autograd_loop(optimizer, lr):
    """adapt.iterates (meta-test's and MTL's inner loop) is run_steps on L_aux: checked against an
    independent loop written with torch.autograd.grad and the update rule spelled out."""
    torch.manual_seed(3)
    model = methods.create("ours", base=8, scale=4, mask_base=8)
    noisy = torch.rand(1, 3, 12, 12)
    restorer = model.restorer
    with torch.no_grad():
        features, mask = restorer.body(noisy), model.mask_net(noisy)
        params = {k: p.detach() for k, p in inner_parameters(restorer, "heads").items()}
        ours = iterates(restorer, params, noisy, mask, features, steps=3, lr=lr, optimizer=optimizer)
    theirs, p = [params], dict(params)
    m = {k: torch.zeros_like(v) for k, v in p.items()}
    v = {k: torch.zeros_like(x) for k, x in p.items()}
    for t in range(1, 4):
        leaves = {k: x.clone().requires_grad_(True) for k, x in p.items()}
        rec = functional_call(restorer, leaves, (noisy,), {"features": features})[1]
        grads = dict(zip(leaves, torch.autograd.grad(aux_loss(rec, noisy, mask), list(leaves.values()))))
        if optimizer == "adam":
            m = {k: 0.9 * m[k] + 0.1 * grads[k] for k in p}
            v = {k: 0.999 * v[k] + 0.001 * grads[k] ** 2 for k in p}
            step = {k: (m[k] / (1 - 0.9**t)) / ((v[k] / (1 - 0.999**t)).sqrt() + 1e-8) for k in p}
        else:
            step = grads
        p = {k: (p[k] - lr * step[k]).detach() for k in p}
        theirs.append(p)
    assert len(ours) == len(theirs) == 4
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys()
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-7)
    assert not torch.equal(ours[-1]["aux_head.out.weight"], params["aux_head.out.weight"])  # it moved


def test_sgd_and_adam_on_a_quadratic_by_hand():
    x0 = {"x": torch.tensor([2.0, -1.0], dtype=torch.float64)}

    def loss(p):
        return (p["x"] ** 2).sum()  # gradient 2x

    sgd = run_steps(loss, x0, steps=2, lr=0.25)
    assert torch.equal(sgd[1]["x"], torch.tensor([1.0, -0.5], dtype=torch.float64))  # x − 0.25·2x = x/2
    assert torch.equal(sgd[2]["x"], torch.tensor([0.5, -0.25], dtype=torch.float64))
    # Adam's first bias-corrected step is lr·g/(|g| + eps) ≈ lr·sign(g)
    adam = run_steps(loss, x0, steps=1, lr=0.1, optimizer="adam", keep="last")
    assert len(adam) == 1
    torch.testing.assert_close(adam[0]["x"], torch.tensor([1.9, -0.9], dtype=torch.float64), rtol=0, atol=1e-7)


def test_lr_halving_and_on_step():
    assert [lr_at(t, 1.0, 2) for t in (1, 2, 3, 4, 5)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert lr_at(1500, 1e-3, 1500) == 1e-3 and lr_at(1501, 1e-3, 1500) == 5e-4
    seen = []

    def loss(p):
        return p["x"].sum()  # gradient 1: each update subtracts that update's lr

    out = run_steps(loss, {"x": torch.zeros(1, dtype=torch.float64)}, steps=3, lr=1.0, halve_lr_at=2,
                    on_step=lambda t, p, v, g: seen.append((t, float(v), float(g["x"]))))
    assert [float(p["x"]) for p in out] == [0.0, -1.0, -2.0, -2.5]
    assert seen == [(0, 0.0, 1.0), (1, -1.0, 1.0), (2, -2.0, 1.0)]


def test_create_graph_keeps_second_order_terms():
    w = torch.tensor([1.5], dtype=torch.float64, requires_grad=True)

    def loss(p):
        return (w * p["x"] ** 2).sum()

    last = run_steps(loss, {"x": torch.tensor([1.0], dtype=torch.float64)}, steps=1, lr=0.1,
                     create_graph=True, keep="last")[0]
    last["x"].sum().backward()  # x1 = x0 − 0.1·2·w·x0  ⇒  dx1/dw = −0.2·x0 = −0.2
    torch.testing.assert_close(w.grad, torch.tensor([-0.2], dtype=torch.float64))


def test_unknown_optimizer_is_refused():
    with pytest.raises(ValueError, match="optimizer 'rmsprop'"):
        run_steps(lambda p: p["x"].sum(), {"x": torch.zeros(1)}, steps=1, lr=0.1, optimizer="rmsprop")
