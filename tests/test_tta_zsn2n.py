"""The ZS-N2N pair down-sampler, loss (against hand computations) and zero-shot network; the NLM and BM3D anchors."""
import numpy as np
import pytest
import torch
from skimage.restoration import estimate_sigma

from bench.adaptation import classical
from bench.adaptation.classical import classical_denoise
from bench.adaptation.zsn2n import ZeroShotNet, pair_downsample, zero_shot_net, zsn2n_loss

# One channel, 4×4; its four 2×2 cells [[a, b], [c, d]] give D1 = (a + d)/2 and D2 = (b + c)/2.
Y = torch.tensor([[1.0, 0.0, 2.0, 0.0],
                  [0.0, 1.0, 0.0, 0.0],
                  [0.0, 2.0, 1.0, 1.0],
                  [0.0, 0.0, 1.0, 3.0]], dtype=torch.float64)[None, None]
D1Y = [[1.0, 1.0], [0.0, 2.0]]  # cells: (1+1)/2, (2+0)/2 / (0+0)/2, (1+3)/2
D2Y = [[0.0, 0.0], [1.0, 1.0]]  # cells: (0+0)/2, (0+0)/2 / (2+0)/2, (1+1)/2


def test_pair_downsampler_by_hand():
    d1, d2 = pair_downsample(Y)
    assert d1[0, 0].tolist() == D1Y and d2[0, 0].tolist() == D2Y
    rgb = torch.rand(2, 3, 6, 8)
    a, b = pair_downsample(rgb)  # depthwise: each channel on its own
    assert a.shape == b.shape == (2, 3, 3, 4)
    torch.testing.assert_close(a[1, 2, 1, 3], (rgb[1, 2, 2, 6] + rgb[1, 2, 3, 7]) / 2)
    torch.testing.assert_close(b[1, 2, 1, 3], (rgb[1, 2, 2, 7] + rgb[1, 2, 3, 6]) / 2)


def test_loss_of_the_identity_denoiser_by_hand():
    # g(x) = x: residual = ½(mse(D1y, D2y) + mse(D2y, D1y)); D1y − D2y = [[1, 1], [−1, 1]] ⇒ mse 1
    # consistency = ½(mse(D1y, D1y) + mse(D2y, D2y)) = 0  ⇒  loss = 1
    assert zsn2n_loss(lambda x: x, Y).item() == 1.0
    # the zero-shot network's denoiser is y − f(y): with f ≡ 0 it is the identity too
    net = ZeroShotNet(channels=1).double()
    for p in net.parameters():
        torch.nn.init.zeros_(p)
    assert zsn2n_loss(net.denoise, Y).item() == 1.0


def test_loss_of_a_nonlinear_denoiser_by_hand():
    # g(x) = x² (pixel-wise), so the consistency term is not zero: D(g(y)) averages squares.
    # residual:    g(D1y) − D2y = [[1, 1], [0, 4]] − [[0, 0], [1, 1]] = [[1, 1], [−1, 3]] → mse (1+1+1+9)/4 = 3
    #              g(D2y) − D1y = [[0, 0], [1, 1]] − [[1, 1], [0, 2]] = [[−1, −1], [1, −1]] → mse 1
    #              residual = ½(3 + 1) = 2
    # g(y) = y²:   D1(g y) = [[(1+1)/2, (4+0)/2], [(0+0)/2, (1+9)/2]] = [[1, 2], [0, 5]]
    #              D2(g y) = [[(0+0)/2, (0+0)/2], [(4+0)/2, (1+1)/2]] = [[0, 0], [2, 1]]
    # consistency: g(D1y) − D1(g y) = [[0, −1], [0, −1]] → mse 0.5
    #              g(D2y) − D2(g y) = [[0, 0], [−1, 0]] → mse 0.25
    #              consistency = ½(0.5 + 0.25) = 0.375
    assert zsn2n_loss(lambda x: x**2, Y).item() == 2.375


def test_odd_sizes_are_cropped_to_even_and_tiny_images_refused():
    y = torch.rand(1, 3, 9, 7, dtype=torch.float64)

    def g(x):
        return torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1)  # depends on the borders

    assert zsn2n_loss(g, y).item() == zsn2n_loss(g, y[..., :8, :6]).item()
    with pytest.raises(ValueError, match="at least 2×2 pixels, got 1×5"):
        zsn2n_loss(g, torch.rand(1, 3, 1, 5))


def test_zero_shot_network_shape_size_and_seeded_init():
    net = zero_shot_net(seed=4)
    assert sum(p.numel() for p in net.parameters()) == 3 * 48 * 9 + 48 + 48 * 48 * 9 + 48 + 48 * 3 + 3 == 22275
    assert [m.kernel_size for m in (net.conv1, net.conv2, net.conv3)] == [(3, 3), (3, 3), (1, 1)]
    assert net(torch.rand(1, 3, 10, 6)).shape == (1, 3, 10, 6)
    state = torch.random.get_rng_state()
    again = zero_shot_net(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is left alone
    assert all(torch.equal(a, b) for a, b in zip(net.parameters(), again.parameters()))
    assert not torch.equal(net.conv1.weight, zero_shot_net(seed=5).conv1.weight)


def _ramps(size, sigma, seed):
    """A smooth RGB image (ramps) and a Gaussian-noisy copy."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    clean = np.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.0 * xx], axis=-1)
    return clean, clean + np.random.default_rng(seed).normal(0, sigma, clean.shape)


def _psnr(a, b):
    return 10 * np.log10(1 / np.mean((a - b) ** 2))


def test_nlm_uses_scikit_image_estimate_sigma_times_sigma_scale(monkeypatch):
    clean, noisy = _ramps(48, 0.08, 0)
    est = float(estimate_sigma(noisy, channel_axis=-1, average_sigmas=True))
    assert abs(est - 0.08) < 0.012  # robust estimate of the true 0.08
    out, sigma = classical_denoise(noisy, "nlm")
    assert sigma == est and out.shape == noisy.shape
    assert np.mean((out - clean) ** 2) < 0.5 * np.mean((noisy - clean) ** 2)
    seen = {}
    real = classical.denoise_nl_means

    def spy(image, **kw):
        seen.update(kw)
        return real(image, **kw)

    monkeypatch.setattr(classical, "denoise_nl_means", spy)
    _, sigma = classical_denoise(noisy, "nlm", sigma_scale=1.5, h_factor=0.6)
    assert sigma == pytest.approx(1.5 * est, rel=1e-12)
    assert seen["sigma"] == sigma and seen["h"] == pytest.approx(0.6 * 1.5 * est, rel=1e-12)


def test_bm3d_denoises_and_returns_the_estimated_sigma():
    clean, noisy = _ramps(32, 0.1, 1)
    out, sigma = classical_denoise(noisy, "bm3d")
    assert sigma == float(estimate_sigma(noisy, channel_axis=-1, average_sigmas=True))
    assert out.shape == noisy.shape and out.min() >= 0 and out.max() <= 1
    assert _psnr(out, clean) > _psnr(noisy, clean) + 3


def test_bm3d_passes_the_scaled_sigma_and_clips(monkeypatch):
    import bm3d
    from bm3d.profiles import BM3DProfileRefilter

    _, noisy = _ramps(16, 0.1, 2)
    seen = {}

    def fake(z, sigma_psd, profile):
        seen.update(sigma_psd=sigma_psd, profile=profile)
        return z * 3 - 1  # out of [0, 1] on both sides

    monkeypatch.setattr(bm3d, "bm3d_rgb", fake)
    out, sigma = classical_denoise(noisy, "bm3d", sigma_scale=2.0, profile="refilter")
    assert seen["sigma_psd"] == sigma and type(seen["profile"]) is BM3DProfileRefilter
    assert seen["profile"].num_threads == 1  # deterministic: the package's threads sum in a varying order
    assert sigma == pytest.approx(2 * float(estimate_sigma(noisy, channel_axis=-1, average_sigmas=True)), rel=1e-12)
    assert out.min() == 0 and out.max() == 1 and np.array_equal(out, np.clip(noisy * 3 - 1, 0, 1))


def test_bm3d_is_deterministic():
    _, noisy = _ramps(24, 0.1, 3)
    assert np.array_equal(classical_denoise(noisy, "bm3d")[0], classical_denoise(noisy, "bm3d")[0])


def test_an_unknown_classical_algorithm_or_profile_is_one_line():
    with pytest.raises(ValueError, match="unknown classical algorithm 'wiener'; known: nlm, bm3d") as e:
        classical_denoise(np.zeros((8, 8, 3)), "wiener")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown BM3D profile 'best'; known: np, refilter"):
        classical_denoise(np.zeros((8, 8, 3)), "bm3d", profile="best")
