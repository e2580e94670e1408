"""Every registered method — built-in or from an installed plugin — keeps the model contract: the
probe forward, the same output twice, finite gradients on an odd size; the paper's networks also
keep their parameter counts."""
from dataclasses import replace

import pytest
import torch

import methods
from bench.adaptation.inner import meta_test

# Parameter counts from docs/design.md §1 and §4 (restorer, mask network when the recipe uses one):
# only for the paper's networks; a plugin's network has no count to keep.
EXPECTED = {"ours": (603_360, 56_449), "chi": (620_928, 0), "ridnet": (1_499_347, 0), "mirnet": (31_787_419, 0)}
SMALL = {"mirnet": {"n_feat": 8, "n_rrg": 1}}  # the full MIRNet is checked by count only


def small(name: str) -> methods.MethodSpec:
    spec = methods.get(name)
    return replace(spec, arch_kwargs={**spec.arch_kwargs, **SMALL.get(spec.arch, {})})


@pytest.mark.parametrize("name", methods.names())
def test_the_model_contract_holds(name):
    assert methods.check_contract(small(name), name) is not None


@pytest.mark.parametrize("name", methods.names())
def test_forward_is_deterministic_and_gradients_are_finite_on_an_odd_size(name):
    spec = small(name)
    torch.manual_seed(0)
    model = spec.create()
    torch.manual_seed(0)
    again = spec.create()
    x = torch.rand(1, 3, 19, 23)
    out = model(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    with torch.no_grad():
        assert torch.equal(out.detach(), again(x)) and torch.equal(out.detach(), model(x))
    out.abs().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", [n for n in methods.names() if methods.get(n).arch in EXPECTED])
def test_the_paper_networks_keep_their_parameter_counts(name):
    spec = methods.get(name)
    counts = spec.param_counts()
    restorer, mask = EXPECTED[spec.arch]
    assert counts["restorer"] == restorer
    assert counts["mask"] == (56_449 if spec.recipe.uses_mask else 0)
    assert mask in (0, 56_449)


@pytest.mark.parametrize("name", [n for n in methods.names() if methods.get(n).recipe.metatest])
def test_adapting_methods_adapt(name):
    model = small(name).create()
    recipe = methods.get(name).recipe
    x = torch.rand(1, 3, 17, 21)
    out = meta_test(model, x, steps=2, lr=1e-2, scope=recipe.inner_scope, aux=recipe.aux_loss)
    assert out.shape == x.shape and torch.isfinite(out).all()


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(KeyError, match="known methods: ours"):
        methods.create("nosuch")
    with pytest.raises(methods.MethodError, match="fails to import"):
        methods.get("no_such_package.nets:build")


def test_the_contract_refuses_a_network_that_breaks_it():
    from torch import nn

    def crop():
        return nn.Conv2d(3, 3, 3)

    spec = methods.MethodSpec("crop", "crops", crop, methods.SUPERVISED, arch="crop")
    with pytest.raises(methods.MethodError, match=r"method crop: the forward pass .* returned a torch.float32 tensor "
                                                  r"of shape \(1, 3, 30, 30\)"):
        methods.check_contract(spec, "method crop")
    meta = replace(spec, recipe=methods.get("ours").recipe, build=lambda: nn.Identity())
    with pytest.raises(methods.MethodError, match="needs head_names, body"):
        methods.check_contract(meta, "method m")
