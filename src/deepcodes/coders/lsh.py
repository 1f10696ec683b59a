"""Linear hashers: bits are signs of affine projections. LSH draws them at random; ITQ learns them."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..validation import check_matrix, check_n_bits, rng_from
from .base import BinaryCoder


class LinearHasher(BinaryCoder):
    """Bits = sign((X - mean_) @ projection_). Subclasses learn ``mean_`` and ``projection_``."""

    _learned = ("mean_", "projection_")

    def _check_params(self) -> None:
        check_n_bits(self.n_bits)

    def _state_shapes(self) -> dict[str, tuple]:
        d, L = self.n_features_in_, self.n_bits
        return {"mean_": ((d,), np.float32), "projection_": ((d, L), np.float32)}

    def project(self, X) -> np.ndarray:
        """Real-valued projections (n, n_bits) float32."""
        return (np.asarray(X, dtype=np.float32) - self.mean_) @ self.projection_


@persist.register
class LSH(LinearHasher):
    """Locality-sensitive hashing: signs of random Gaussian projections of the centred data.

    Parameters
    ----------
    n_bits : code length L, a multiple of 8.
    random_state : seed or numpy Generator for the projections.

    Attributes
    ----------
    mean_ : (d,) float32, the training mean subtracted before projecting.
    projection_ : (d, L) float32, i.i.d. N(0, 1) directions.
    """

    def __init__(self, n_bits: int = 32, random_state=None):
        self.n_bits = n_bits
        self.random_state = random_state

    def fit(self, X, y=None) -> "LSH":
        """Learn the mean of ``X`` (n, d) and draw the projections. Returns self."""
        self.n_bits = check_n_bits(self.n_bits)
        X = check_matrix(X)
        rng = rng_from(self.random_state)
        self.n_features_in_ = X.shape[1]
        self.mean_ = X.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.projection_ = rng.standard_normal((X.shape[1], self.n_bits)).astype(np.float32)
        return self
