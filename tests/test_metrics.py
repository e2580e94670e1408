import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from bench.core.metrics import image_metrics, quantize


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(3)
    clean = torch.rand(2, 3, 40, 37, generator=g)
    noisy = clean + 0.08 * torch.randn(clean.shape, generator=g)
    return noisy, clean  # noisy leaves [0,1]: the metric must clamp


def hwc(x):
    return x.permute(0, 2, 3, 1).double().numpy()


def test_metrics_match_scikit_image(pair):
    noisy, clean = pair
    m = image_metrics(noisy, clean)
    q_noisy, q_clean = hwc(quantize(noisy)), hwc(quantize(clean))
    for i in range(2):
        assert m["psnr"][i] == pytest.approx(peak_signal_noise_ratio(q_clean[i], q_noisy[i], data_range=1.0), abs=1e-4)
        assert m["ssim"][i] == pytest.approx(
            structural_similarity(q_clean[i], q_noisy[i], data_range=1.0, channel_axis=-1), abs=1e-6)
        assert m["ssim_gauss"][i] == pytest.approx(structural_similarity(
            q_clean[i], q_noisy[i], data_range=1.0, channel_axis=-1, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False), abs=1e-4)
    assert m["ssim"][0] != pytest.approx(m["ssim_gauss"][0], abs=1e-4)  # the two conventions differ


def test_quantization_is_what_a_png_holds():
    x = torch.tensor([-0.2, 0.0, 0.5, 0.50196, 1.3])
    assert np.allclose(quantize(x).numpy() * 255, [0, 0, 128, 128, 255])
    clean = torch.full((1, 3, 16, 16), 0.5)
    # a difference below half a grey level vanishes once quantized: piq caps identical images at 80 dB
    assert image_metrics(clean + 1e-4, clean)["psnr"][0] >= 80
