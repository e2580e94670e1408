"""Synthetic noise: a camera-pipeline simulator (real-looking noise) and the paper's pre-training mix.

The embedded default has no real noisy photographs, yet test-time adaptation only has something to
do when training and test noise differ. So noise for MTL and test comes from a small camera model in
the spirit of Brooks et al. 2019, "Unprocessing images for learned raw denoising": an sRGB image is
taken back to a linear raw Bayer mosaic, raw-domain noise is added, and the image is developed again.
What comes out is signal-dependent, spatially and cross-channel correlated noise whose character
depends on a named :class:`CameraProfile` (colour matrix, CFA, demosaicker, noise range, JPEG).

Pipeline of :func:`simulate` (every step vectorised):

1. sRGB -> linear with the sRGB transfer curve (the exact piecewise curve, not the 2.2 power law);
2. linear sRGB -> camera RGB with the inverse of the profile's colour-correction matrix (CCM);
3. inverse white balance and digital gain (divide by ``digital * (red, 1, blue)``), clip to [0, 1];
4. Bayer mosaic in the profile's CFA pattern;
5. heteroscedastic Gaussian noise, variance ``shot * x + read`` (see *noise model* below), and the
   sensor's clip to [0, 1];
6. demosaic (colour-demosaicing: bilinear, Malvar 2004 or Menon 2007) on a phase-preserving
   reflection-padded mosaic (also padded to even size), cropped back to the input size;
7. white balance and digital gain, clip; 8. CCM, clip; 9. sRGB curve;
10. optional chroma noise reduction (blur of Cb/Cr, as smartphone ISPs do);
11. 8-bit output: a JPEG round trip in memory at the profile's quality, else rounding to 8 bits (what
    an sRGB noisy photograph on disk holds).

Noise model (Brooks et al. §3.2, our reading): ``shot`` and ``read`` are *variance* parameters
(lambda_shot, lambda_read), the noisy raw value is ``N(x, shot * x + read)``;
``log(shot) ~ U(log low, log high)`` and ``log(read) = 2.18 * log(shot) + 1.20 + N(0, 0.26)`` with
natural logarithms and 0.26 a standard deviation (docs/design.md §5: Brooks' code and paper, where
both are variance terms, not standard deviations). At shot = 1.2e-2 this
gives read ~ 2e-4 (raw std ~ 0.015); at shot = 1e-4, read ~ 6e-9 (negligible).
Brooks' inverse tone curve and highlight-preserving gain inversion are left out to keep the model
small: they change the exact level-to-noise curve, not the kind of noise.

What the noise looks like in sRGB (measured in tests/test_camera.py): the raw variance grows with
the signal, but the sRGB curve compresses highlights and the sensor clips at black, so the sRGB
noise std peaks in the dark mid-tones (grey ~0.15) and falls towards black and white, as in real
sRGB photographs. Residuals are spatially correlated (lag-1 ~0.4-0.7) and R/G correlated (~0.3-0.5).
Why one module of ~450 lines: the profile type, its validation, the named profiles and the eleven
pipeline steps are one model, read together; each step is a small function.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from bench.core.errors import DataError

CFAPattern = Literal["RGGB", "BGGR", "GRBG", "GBRG"]
DemosaicMethod = Literal["bilinear", "malvar2004", "menon2007"]

CFA_PATTERNS: tuple[str, ...] = ("RGGB", "BGGR", "GRBG", "GBRG")
DEMOSAIC_METHODS: tuple[str, ...] = ("bilinear", "malvar2004", "menon2007")

# Brooks et al. 2019: the relation between the two noise parameters fitted on real raw data.
READ_SLOPE = 2.18
READ_INTERCEPT = 1.20
READ_JITTER = 0.26


@dataclass(frozen=True)
class CameraProfile:
    """A named camera: everything that decides the character of its noise.

    Fields are plain tuples so that a profile is hashable and can key cached stage outputs.
    """

    name: str
    """Registry key, e.g. ``"sidd-like"``."""
    description: str
    """One line for reports: what kind of camera this imitates."""
    shot_range: tuple[float, float]
    """(low, high) of lambda_shot, sampled log-uniformly per image (variance per unit signal)."""
    ccm: tuple[tuple[float, float, float], ...]
    """3x3 colour-correction matrix, camera RGB -> linear sRGB; rows sum to 1 so grey stays grey."""
    red_gain: tuple[float, float]
    """Uniform range of the white-balance gain of the red channel (green is 1)."""
    blue_gain: tuple[float, float]
    """Uniform range of the white-balance gain of the blue channel."""
    digital_gain: tuple[float, float] = (1.0, 1.25)
    """Uniform range of the overall brightness gain the camera applied after white balance."""
    cfa: CFAPattern = "RGGB"
    """Bayer pattern, top-left 2x2 block read row by row: RGGB, BGGR, GRBG or GBRG."""
    demosaic: DemosaicMethod = "bilinear"
    """Demosaicking algorithm: bilinear, malvar2004 or menon2007."""
    chroma_nr: float = 0.0
    """Std in pixels of the Gaussian blur the ISP's chroma noise reduction applies to Cb and Cr
    (0 = none). It is what makes smartphone sRGB noise mostly luminance, i.e. channel-correlated."""
    jpeg_quality: int | None = None
    """JPEG quality of the camera's output (None = lossless 8-bit output)."""
    read_jitter: float = READ_JITTER
    """Standard deviation of the Gaussian term in log(lambda_read)."""
    read_slope: float = READ_SLOPE
    """Slope of log(lambda_read) against log(lambda_shot)."""
    read_intercept: float = READ_INTERCEPT
    """Intercept of log(lambda_read) against log(lambda_shot)."""

    def __post_init__(self) -> None:
        where = f"camera profile {self.name!r}"
        for label, (low, high) in (
            ("shot_range", self.shot_range),
            ("red_gain", self.red_gain),
            ("blue_gain", self.blue_gain),
            ("digital_gain", self.digital_gain),
        ):
            if not (0 < low <= high):
                raise DataError(f"{where}: {label} {(low, high)} must satisfy 0 < low <= high")
        ccm = np.asarray(self.ccm, dtype=np.float64)
        if ccm.shape != (3, 3) or not np.all(np.isfinite(ccm)):
            raise DataError(f"{where}: ccm must be a finite 3x3 matrix, got shape {ccm.shape}")
        if not np.allclose(ccm.sum(axis=1), 1.0, atol=1e-6):
            raise DataError(f"{where}: ccm rows must sum to 1 (grey stays grey), got {ccm.sum(axis=1)}")
        if abs(np.linalg.det(ccm)) < 1e-6:
            raise DataError(f"{where}: ccm must be invertible")
        if self.cfa not in CFA_PATTERNS:
            raise DataError(f"{where}: cfa {self.cfa!r} is not one of {', '.join(CFA_PATTERNS)}")
        if self.demosaic not in DEMOSAIC_METHODS:
            raise DataError(f"{where}: demosaic {self.demosaic!r} is not one of {', '.join(DEMOSAIC_METHODS)}")
        if self.jpeg_quality is not None and not (1 <= self.jpeg_quality <= 100):
            raise DataError(f"{where}: jpeg_quality {self.jpeg_quality} must be in 1..100 or None")
        if self.chroma_nr < 0:
            raise DataError(f"{where}: chroma_nr {self.chroma_nr} must be >= 0")
        if self.read_jitter < 0:
            raise DataError(f"{where}: read_jitter {self.read_jitter} must be >= 0")

    @property
    def ccm_array(self) -> np.ndarray:
        """The colour matrix as a float64 (3, 3) array."""
        return np.asarray(self.ccm, dtype=np.float64)


_PROFILES: dict[str, CameraProfile] = {
    p.name: p
    for p in (
        CameraProfile(
            name="sidd-like",
            description="smartphone (SIDD-like): strong noise, RGGB, bilinear demosaic, chroma NR, PNG output",
            shot_range=(2e-3, 1.2e-2),
            ccm=((1.80, -0.65, -0.15), (-0.30, 1.60, -0.30), (0.05, -0.60, 1.55)),
            red_gain=(1.9, 2.4),
            blue_gain=(1.5, 1.9),
            digital_gain=(1.0, 1.4),
            cfa="RGGB",
            demosaic="bilinear",
            chroma_nr=2.0,
            jpeg_quality=None,
        ),
        CameraProfile(
            name="polyu-like",
            description="DSLR (PolyU-like): mild noise, RGGB, Malvar demosaic, JPEG quality 90",
            shot_range=(1e-4, 2e-3),
            ccm=((1.55, -0.45, -0.10), (-0.20, 1.45, -0.25), (0.02, -0.42, 1.40)),
            red_gain=(1.8, 2.3),
            blue_gain=(1.4, 1.8),
            digital_gain=(1.0, 1.25),
            cfa="RGGB",
            demosaic="malvar2004",
            jpeg_quality=90,
        ),
        CameraProfile(
            name="nam-like",
            description="test camera (Nam-like): moderate noise, GRBG, Menon demosaic, JPEG quality 95",
            shot_range=(3e-4, 4e-3),
            ccm=((2.05, -0.90, -0.15), (-0.25, 1.70, -0.45), (0.00, -0.75, 1.75)),
            red_gain=(2.0, 2.6),
            blue_gain=(1.3, 1.7),
            digital_gain=(1.0, 1.3),
            cfa="GRBG",
            demosaic="menon2007",
            jpeg_quality=95,
            read_jitter=0.3,
        ),
        # The strong shift (scenario ``strong-shift``): noise above the whole training range. Shot
        # noise 1.25x to 2.5x the top of sidd-like's range, more digital gain (a dark scene pushed up),
        # half sidd-like's chroma NR (so more colour noise), bilinear demosaic on a BGGR sensor no
        # training camera has (lag-1 autocorrelation ~0.75 against 0.68 / 0.46), then JPEG q80.
        # `bench data scenarios --strength` reports how far it lies from the training cameras.
        CameraProfile(
            name="lowlight-like",
            description="low-light smartphone: noise above the training range, BGGR, bilinear, weak chroma NR, JPEG 80",
            shot_range=(1.5e-2, 3e-2),
            ccm=((1.90, -0.75, -0.15), (-0.28, 1.65, -0.37), (0.04, -0.64, 1.60)),
            red_gain=(1.9, 2.5),
            blue_gain=(1.4, 1.9),
            digital_gain=(1.1, 1.5),
            cfa="BGGR",
            demosaic="bilinear",
            chroma_nr=1.5,
            jpeg_quality=80,
        ),
    )
}

TRAIN_PROFILES: tuple[str, ...] = ("sidd-like", "polyu-like")
"""Profiles that stand in for the MTL training sets (SIDD-Small + PolyU)."""
TEST_PROFILE = "nam-like"
"""Profile that stands in for the test set (Nam): a camera the model never saw."""


def profiles() -> dict[str, CameraProfile]:
    """All named camera profiles (a copy: the registry itself is not to be changed)."""
    return dict(_PROFILES)


def get_profile(name: str) -> CameraProfile:
    """The profile called ``name``; a DataError lists the known names otherwise."""
    try:
        return _PROFILES[name]
    except KeyError:
        raise DataError(f"unknown camera profile {name!r}; known: {', '.join(sorted(_PROFILES))}") from None


@dataclass(frozen=True)
class CameraParams:
    """The random draw of one simulated photograph (logged so that a sample can be explained)."""

    shot: float
    read: float
    red_gain: float
    blue_gain: float
    digital_gain: float

    @property
    def gains(self) -> tuple[float, float, float]:
        """Per-channel gain the camera applies to its raw RGB: white balance times digital gain."""
        g = self.digital_gain
        return (g * self.red_gain, g, g * self.blue_gain)


def sample_params(profile: CameraProfile, rng: np.random.Generator) -> CameraParams:
    """Draw noise levels and gains for one image, in a fixed order (determinism)."""
    log_shot = rng.uniform(math.log(profile.shot_range[0]), math.log(profile.shot_range[1]))
    log_read = profile.read_slope * log_shot + profile.read_intercept + rng.normal(0.0, profile.read_jitter)
    return CameraParams(
        shot=math.exp(log_shot),
        read=math.exp(log_read),
        red_gain=rng.uniform(*profile.red_gain),
        blue_gain=rng.uniform(*profile.blue_gain),
        digital_gain=rng.uniform(*profile.digital_gain),
    )


# --- colour transforms -------------------------------------------------------------------------


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """Inverse sRGB transfer curve (IEC 61966-2-1)."""
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """sRGB transfer curve; input clipped at 0 first so the power stays real."""
    x = np.maximum(x, 0.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)


def _cfa_channel_map(cfa: str, height: int, width: int) -> np.ndarray:
    """(H, W) array of the channel index (0=R, 1=G, 2=B) each Bayer site records."""
    block = np.array(["RGB".index(c) for c in cfa]).reshape(2, 2)
    reps = (-(-height // 2), -(-width // 2))
    return np.tile(block, reps)[:height, :width]


def add_sensor_noise(raw: np.ndarray, shot: float, read: float, rng: np.random.Generator) -> np.ndarray:
    """Raw-domain noise N(x, shot * x + read), then the sensor's clip to [0, 1]."""
    std = np.sqrt(np.maximum(shot * raw + read, 0.0))
    return np.clip(raw + std * rng.standard_normal(raw.shape), 0.0, 1.0)


def mosaic(image: np.ndarray, cfa: str) -> np.ndarray:
    """Keep one channel per pixel according to the Bayer pattern: (H, W, 3) -> (H, W)."""
    idx = _cfa_channel_map(cfa, image.shape[0], image.shape[1])
    return np.take_along_axis(image, idx[..., None], axis=2)[..., 0]


def demosaic(raw: np.ndarray, cfa: str, method: str) -> np.ndarray:
    """Interpolate a Bayer mosaic back to RGB with colour-demosaicing (imported lazily: it is slow to import)."""
    import colour_demosaicing as cd

    funcs = {
        "bilinear": cd.demosaicing_CFA_Bayer_bilinear,
        "malvar2004": cd.demosaicing_CFA_Bayer_Malvar2004,
        "menon2007": cd.demosaicing_CFA_Bayer_Menon2007,
    }
    return np.asarray(funcs[method](raw, cfa), dtype=np.float64)


# Full-range BT.601 (what JPEG uses): RGB -> (Y, Cb - 0.5, Cr - 0.5).
_RGB_TO_YCC = np.array(
    [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]], dtype=np.float64
)


def chroma_denoise(image: np.ndarray, sigma: float) -> np.ndarray:
    """Blur Cb and Cr with a Gaussian of std ``sigma`` pixels, keep Y; clip back to [0, 1]."""
    from scipy.ndimage import gaussian_filter

    ycc = image @ _RGB_TO_YCC.T
    for c in (1, 2):
        ycc[..., c] = gaussian_filter(ycc[..., c], sigma=sigma, mode="reflect")
    return np.clip(ycc @ np.linalg.inv(_RGB_TO_YCC).T, 0.0, 1.0)


_DEMOSAIC_MARGIN = 4  # >= the half-width of the largest demosaicking kernel (Malvar's 5x5, Menon's 5-tap)


def demosaic_padded(raw: np.ndarray, cfa: str, method: str) -> np.ndarray:
    """Demosaic without border artefacts, for any (also odd) size.

    colour-demosaicing convolves with scipy's half-sample reflection, which puts wrong colours
    beyond the border (bilinear errs by up to 37 % of the signal in the outer pixel). A whole-sample
    reflection (numpy ``reflect``) keeps the Bayer phase, so we pad with it by a margin, plus one
    row/column for odd sizes so the mosaic holds whole 2x2 blocks, and crop back afterwards.
    """
    height, width = raw.shape
    m = _DEMOSAIC_MARGIN
    padded = np.pad(raw, ((m, m + height % 2), (m, m + width % 2)), mode="reflect")
    return demosaic(padded, cfa, method)[m : m + height, m : m + width]


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode an (H, W, 3) image in [0, 1] as JPEG in memory and decode it again (Pillow's default 4:2:0)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(to_uint8(image), mode="RGB").save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Round an image in [0, 1] to 8 bits (values outside are clipped)."""
    return np.clip(np.rint(np.asarray(image, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)


def _check_clean(clean: np.ndarray, who: str) -> np.ndarray:
    arr = np.asarray(clean)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"{who}: expected an (H, W, 3) RGB image, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(f"{who}: expected a float image in [0, 1], got dtype {arr.dtype}")
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0.0 or arr.max() > 1.0):
        raise DataError(f"{who}: expected values in [0, 1], got range [{arr.min():.4g}, {arr.max():.4g}]")
    return arr


# --- the camera simulator ----------------------------------------------------------------------


def simulate(
    clean: np.ndarray,
    profile: CameraProfile | str,
    rng: np.random.Generator,
    params: CameraParams | None = None,
) -> np.ndarray:
    """A noisy photograph of ``clean`` as the profile's camera would have taken it.

    ``clean`` is float (H, W, 3) sRGB in [0, 1]; returns float32 of the same shape, in [0, 1], on
    the 8-bit grid. The result is a pure function of the inputs and the rng state; ``params``
    (default: drawn from the profile with ``rng``) fixes the noise level and gains, e.g. to compare
    profiles at one noise level.
    """
    prof = get_profile(profile) if isinstance(profile, str) else profile
    x = _check_clean(clean, f"simulate({prof.name})").astype(np.float64)
    p = sample_params(prof, rng) if params is None else params
    height, width = x.shape[:2]
    gains = np.asarray(p.gains)
    ccm = prof.ccm_array

    # Unprocess: sRGB -> linear -> camera RGB -> before white balance and gain.
    cam = srgb_to_linear(x) @ np.linalg.inv(ccm).T
    raw = mosaic(np.clip(cam / gains, 0.0, 1.0), prof.cfa)

    raw = add_sensor_noise(raw, p.shot, p.read, rng)

    # Process again, as the camera's ISP would.
    rgb = demosaic_padded(raw, prof.cfa, prof.demosaic)
    rgb = np.clip(rgb * gains, 0.0, 1.0)
    rgb = np.clip(rgb @ ccm.T, 0.0, 1.0)
    srgb = linear_to_srgb(rgb)
    if prof.chroma_nr > 0:
        srgb = chroma_denoise(srgb, prof.chroma_nr)
    if prof.jpeg_quality is not None:
        return jpeg_roundtrip(srgb, prof.jpeg_quality)
    return to_uint8(srgb).astype(np.float32) / 255.0


# --- the paper's synthetic pre-training noise --------------------------------------------------

SIGMA_RANGE: tuple[float, float] = (5 / 255, 50 / 255)
"""Gaussian and speckle noise std, sampled uniformly (each noise draws its own)."""
SP_AMOUNT_RANGE: tuple[float, float] = (0.0, 0.01)
"""Salt-and-pepper amount p: the fraction of all C*H*W elements that are replaced."""
SALT_FRACTION_RANGE: tuple[float, float] = (0.3, 0.8)
"""Salt-and-pepper q: the fraction of replaced elements set to 1 (the rest go to 0)."""


def gaussian_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """x + N(0, sigma^2), clipped to [0, 1]."""
    noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(x + noise, 0.0, 1.0)


def speckle_noise(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """x + x * N(0, sigma^2), clipped to [0, 1]."""
    noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(sigma)
    return np.clip(x + x * noise, 0.0, 1.0)


def salt_and_pepper_counts(n_elements: int, amount: float, salt_fraction: float) -> tuple[int, int]:
    """(salt, pepper) counts: ceil(p*N*q) and ceil(p*N*(1-q)), capped together at N."""
    salt = math.ceil(amount * n_elements * salt_fraction)
    pepper = math.ceil(amount * n_elements * (1.0 - salt_fraction))
    salt = min(salt, n_elements)
    return salt, min(pepper, n_elements - salt)


def salt_and_pepper(x: np.ndarray, amount: float, salt_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Set exactly the formula's number of elements to 1 and to 0, at distinct positions drawn over
    *all* C*H*W elements (the official sampler never reaches the last row, column and channel)."""
    out = np.array(x, dtype=np.float32, copy=True)
    salt, pepper = salt_and_pepper_counts(out.size, amount, salt_fraction)
    where = rng.choice(out.size, size=salt + pepper, replace=False)
    flat = out.reshape(-1)
    flat[where[:salt]] = 1.0
    flat[where[salt:]] = 0.0
    return out


def synthetic_mix(clean: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The paper's pre-training noise: Gaussian, speckle and salt & pepper in a random order.

    Each is applied once with freshly drawn parameters and followed by a clip to [0, 1]
    (docs/design.md §1). Returns float32 (H, W, 3).
    """
    x = _check_clean(clean, "synthetic_mix").astype(np.float32)
    for which in rng.permutation(3):
        if which == 0:
            x = gaussian_noise(x, rng.uniform(*SIGMA_RANGE), rng)
        elif which == 1:
            x = speckle_noise(x, rng.uniform(*SIGMA_RANGE), rng)
        else:
            x = salt_and_pepper(x, rng.uniform(*SP_AMOUNT_RANGE), rng.uniform(*SALT_FRACTION_RANGE), rng)
    return x.astype(np.float32, copy=False)
