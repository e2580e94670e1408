"""Every registered method: builds, runs forward and backward on an odd size, has its paper count."""
import pytest
import torch

import methods
from bench.adaptation.inner import meta_test

# Parameter counts from docs/design.md §1 and §4 (restorer, mask network when the recipe uses one).
EXPECTED = {"ours": (603_360, 56_449), "chi": (620_928, 0), "ridnet": (1_499_347, 0), "mirnet": (31_787_419, 0)}


@pytest.mark.parametrize("name", methods.names())
def test_forward_backward_and_parameter_count(name):
    spec = methods.get(name)
    small = {"n_feat": 8, "n_rrg": 1} if spec.arch == "mirnet" else {}  # the full MIRNet is checked by count only
    model = methods.create(name, **small)
    x = torch.rand(1, 3, 19, 23)
    out = model(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    out.abs().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    counts = spec.param_counts()
    restorer, mask = EXPECTED[spec.arch]
    assert counts["restorer"] == restorer
    if spec.recipe.uses_mask:
        assert counts["mask"] == 56_449
    else:
        assert counts["mask"] == mask == 0 or counts["mask"] == 0


@pytest.mark.parametrize("name", [n for n in methods.names() if methods.get(n).recipe.metatest])
def test_adapting_methods_adapt(name):
    model = methods.create(name)
    recipe = methods.get(name).recipe
    x = torch.rand(1, 3, 17, 21)
    out = meta_test(model, x, steps=2, lr=1e-2, scope=recipe.inner_scope, aux=recipe.aux_loss)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(KeyError, match="known methods: ours"):
        methods.create("nosuch")
