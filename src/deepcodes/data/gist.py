"""GIST descriptors (Oliva & Torralba, 2001) of small images, in numpy/scipy, vectorised over images.

The descriptor of one image, as in the common LMgist construction:

1. grey levels (ITU-R 601 luma of RGB) in [0, 255];
2. prefiltering: ``log(1 + I)``, then whitening (subtract a Gaussian low-pass, cut-off ``fc = 4``
   cycles/image) and local contrast normalisation (divide by 0.2 + the low-passed local energy);
3. a bank of Gabor-like filters in the frequency domain, ``n_scales`` scales × ``n_orientations``
   orientations (4 × 8 by default), applied to the image extended by symmetric padding;
4. the filter responses' magnitudes averaged over a ``grid`` × ``grid`` grid of blocks (4 × 4).

Feature order: filter (scale-major, then orientation), then block (row-major over the grid):
4 × 8 × 16 = 512 values per image. Every step is a batched FFT or array operation over a chunk of
images, so each image's descriptor is independent of the others in its batch.
"""
from __future__ import annotations

import logging

import numpy as np
import scipy.fft

from ..errors import InputError
from ..persist import atomic_save_npy
from .groundtruth import cache_dir

__all__ = ["gist", "gabor_bank", "cifar10_gist"]

log = logging.getLogger(__name__)

_PREFILTER_FC = 4.0
_PREFILTER_PAD = 5
# Bytes of complex128 scratch per chunk of images (images x filters x padded pixels).
_CHUNK_BYTES = 256 << 20


def _frequency_grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer frequency coordinates (fy, fx) of an n×n FFT, in FFT (unshifted) order."""
    f = scipy.fft.fftfreq(n, d=1.0 / n)
    return np.meshgrid(f, f, indexing="ij")


def gabor_bank(n: int, n_scales: int = 4, n_orientations: int = 8) -> np.ndarray:
    """Transfer functions (n_scales * n_orientations, n, n) of the filter bank for n×n images.

    Filter (s, o) is a Gaussian in log-polar frequency: radial centre at 0.3 / 1.85**s of the
    sampling frequency, angular centre at o·π/n_orientations, angular width shrinking with the
    number of orientations (the LMgist parameterisation).
    """
    fy, fx = _frequency_grid(n)
    radius = np.sqrt(fx**2 + fy**2)
    theta = np.arctan2(fy, fx)
    bank = []
    for s in range(n_scales):
        for o in range(n_orientations):
            centre = 0.3 / 1.85**s
            width = 16.0 * n_orientations**2 / 32.0**2
            t = theta + np.pi * o / n_orientations
            t = np.where(t < -np.pi, t + 2 * np.pi, np.where(t > np.pi, t - 2 * np.pi, t))
            bank.append(np.exp(-10.0 * 0.35 * (radius / n / centre - 1.0) ** 2 - 2.0 * width * np.pi * t**2))
    return np.stack(bank)


def _to_grey(images: np.ndarray) -> np.ndarray:
    if images.ndim == 4:
        if images.shape[-1] != 3:
            raise InputError(f"colour images must be (n, h, w, 3), got shape {images.shape}")
        return images.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if images.ndim == 3:
        return images.astype(np.float64)
    raise InputError(f"images must be (n, h, w) grey or (n, h, w, 3) RGB, got shape {images.shape}")


def _prefilter(grey: np.ndarray) -> np.ndarray:
    """Whitening and local contrast normalisation of a batch (n, h, w) of grey images."""
    img = np.log1p(grey)
    p = _PREFILTER_PAD
    img = np.pad(img, ((0, 0), (p, p), (p, p)), mode="symmetric")
    n = img.shape[1]
    fy, fx = _frequency_grid(n)
    s1 = _PREFILTER_FC / np.sqrt(np.log(2.0))
    lowpass = np.exp(-(fx**2 + fy**2) / s1**2)
    out = img - scipy.fft.ifft2(scipy.fft.fft2(img, axes=(1, 2)) * lowpass, axes=(1, 2)).real
    energy = np.sqrt(np.abs(scipy.fft.ifft2(scipy.fft.fft2(out**2, axes=(1, 2)) * lowpass, axes=(1, 2))))
    out = out / (0.2 + energy)
    return out[:, p:-p, p:-p]


def gist(images, *, n_scales: int = 4, n_orientations: int = 8, grid: int = 4, padding: int | None = None,
         chunk_size: int | None = None) -> np.ndarray:
    """GIST descriptors (n, n_scales * n_orientations * grid**2) float32 of square ``images``.

    ``images``: (n, s, s) grey or (n, s, s, 3) RGB, any numeric dtype, grey levels in [0, 255].
    ``padding``: symmetric extension before filtering (default s/2, so a 32×32 image is filtered
    at 64×64). Images are processed ``chunk_size`` at a time (default: about 256 MB of scratch).
    """
    arr = np.asarray(images)
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"images must be real numbers, got dtype {arr.dtype}")
    grey = _to_grey(arr)
    n, h, w = grey.shape
    if n == 0:
        raise InputError("images is empty")
    if h != w:
        raise InputError(f"images must be square, got {h}x{w}")
    if not np.isfinite(grey).all():
        raise InputError("images contain NaN or inf")
    if grey.min() < 0:
        raise InputError("images must hold non-negative grey levels (0-255)")
    if h % grid:
        raise InputError(f"image size {h} is not a multiple of the {grid}x{grid} grid")
    pad = h // 2 if padding is None else int(padding)
    size = h + 2 * pad
    bank = gabor_bank(size, n_scales, n_orientations)
    n_filters = bank.shape[0]
    if chunk_size is None:
        chunk_size = max(1, _CHUNK_BYTES // (16 * n_filters * size * size))
    block = h // grid
    out = np.empty((n, n_filters * grid * grid), dtype=np.float32)
    for start in range(0, n, chunk_size):
        img = _prefilter(grey[start:start + chunk_size])
        img = np.pad(img, ((0, 0), (pad, pad), (pad, pad)), mode="symmetric")
        spectrum = scipy.fft.fft2(img, axes=(1, 2))
        response = np.abs(scipy.fft.ifft2(spectrum[:, None] * bank[None], axes=(2, 3)))
        response = response[:, :, pad:pad + h, pad:pad + h]
        m = response.shape[0]
        blocks = response.reshape(m, n_filters, grid, block, grid, block).mean(axis=(3, 5))
        out[start:start + m] = blocks.reshape(m, -1)
    return out


def cifar10_gist(images: np.ndarray, *, progress: bool = False) -> np.ndarray:
    """512-d GIST of the CIFAR-10 images (n, 32, 32, 3) uint8, cached in ``cache_dir()/gist``.

    The cache file's name carries a hash of the images, so other images are never served a stale
    result; an unreadable or inconsistent cache file is recomputed and overwritten atomically.
    """
    import hashlib

    images = np.ascontiguousarray(images)
    digest = hashlib.sha256(images.tobytes()).hexdigest()[:16]
    path = cache_dir() / "gist" / f"cifar10-gist512-{images.shape[0]}-{digest}.npy"
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape == (images.shape[0], 512) and cached.dtype == np.float32 and np.isfinite(cached).all():
            return cached
        log.warning("ignoring inconsistent GIST cache %s", path)
    except FileNotFoundError:
        pass
    except (ValueError, OSError, EOFError) as exc:
        log.warning("ignoring unreadable GIST cache %s (%s)", path, exc)
    if progress:
        log.info("computing GIST of %d images (cached in %s)", images.shape[0], path)
    features = gist(images)
    atomic_save_npy(path, features)
    return features
