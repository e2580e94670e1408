"""Baseline architectures (docs/design.md §4): exact parameter counts, shapes, gradients, weight sharing."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from methods.mirnet import DAU, MSRB, MIRNet
from methods.ridnet import RIDNet


def n_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def check_forward_backward(model: nn.Module, shape: tuple[int, int, int, int]) -> None:
    """Same shape out, finite output and gradients for every trainable parameter, input-dependent residual."""
    x = torch.rand(shape)
    out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()
    (out - x.flip(-1)).abs().mean().backward()
    grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
    missing = [name for name, g in grads.items() if g is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert all(torch.isfinite(g).all() for g in grads.values())
    assert sum(g.abs().sum() for g in grads.values()) > 0  # type: ignore[misc]
    with torch.no_grad():  # the network part (output minus the global skip) responds to its input
        x2 = torch.rand(shape)
        assert not torch.allclose(model(x2) - x2, out - x, atol=1e-6)


# --- RIDNet -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mean_shift", "expected"), [(False, 1_499_347), (True, 1_499_371)])
def test_ridnet_param_count(mean_shift: bool, expected: int) -> None:
    model = RIDNet(mean_shift=mean_shift)
    assert n_params(model) == expected
    assert n_params(model, trainable_only=True) == 1_499_347  # the mean shift is frozen


@pytest.mark.parametrize(("mean_shift", "shape"), [(False, (1, 3, 21, 19)), (True, (1, 3, 33, 30))])
def test_ridnet_forward_backward(mean_shift: bool, shape: tuple[int, int, int, int]) -> None:
    check_forward_backward(RIDNet(mean_shift=mean_shift), shape)


def test_ridnet_mean_shift_is_identity_round_trip() -> None:
    model = RIDNet(mean_shift=True)
    x = torch.rand(1, 3, 5, 4)
    assert torch.allclose(model.add_mean(model.sub_mean(x)), x, atol=1e-6)


# --- MIRNet -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("share_dau", "expected"), [(True, 31_787_419), (False, 42_239_263)])
def test_mirnet_param_count(share_dau: bool, expected: int) -> None:
    assert n_params(MIRNet(share_dau=share_dau)) == expected


@pytest.mark.parametrize(("share_dau", "shape"), [(True, (1, 3, 21, 19)), (False, (1, 3, 33, 30))])
def test_mirnet_forward_backward_small(share_dau: bool, shape: tuple[int, int, int, int]) -> None:
    check_forward_backward(MIRNet(n_feat=8, n_rrg=1, share_dau=share_dau), shape)


@pytest.mark.parametrize("shape", [(1, 3, 17, 23), (2, 3, 3, 2)])
def test_mirnet_default_forward_any_size(shape: tuple[int, int, int, int]) -> None:
    model = MIRNet() if shape[-1] > 2 else MIRNet(n_feat=8, n_rrg=1)  # (3, 2) exercises replicate padding
    x = torch.rand(shape)
    with torch.no_grad():
        out = model(x)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("share_dau", [True, False])
def test_mirnet_weight_sharing(share_dau: bool) -> None:
    model = MIRNet(n_feat=8, n_rrg=1, width=2, share_dau=share_dau)
    daus = [m for m in model.modules() if isinstance(m, DAU)]
    assert len({id(d.body[1]) for d in daus}) == 1  # one PReLU for every DAU, in both settings
    assert daus[0].body[1] is model.dau_act
    for msrb in (m for m in model.modules() if isinstance(m, MSRB)):
        assert all(len(stream) == (1 if share_dau else 2) for stream in msrb.dau)
    assert not any("kernel" in name for name, _ in model.named_parameters())  # the blur is a fixed buffer
    assert any(name.endswith("kernel") for name, _ in model.named_buffers())
