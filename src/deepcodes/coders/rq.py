"""Residual quantization (Chen, Guan, Wang, Sensors 2010): a sum of M full-dimensional codewords."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import InputError
from ..validation import check_int, check_matrix, rng_from, seed_from
from .base import CodebookQuantizer, check_quantizer_shape
from .kmeans import assign, kmeans
from .pq import subsample


@persist.register
class RQ(CodebookQuantizer):
    """Residual quantizer: stage m k-means-quantizes what stages 1..m-1 left over; x ≈ Σ_m C_m[code_m].

    Encoding is greedy, stage by stage (the nearest codeword to the current residual). The
    asymmetric distance is ||q||² - 2 Σ_m <q, C_m[code_m]> + ||x̂||², with ||x̂||² stored per code.

    Parameters
    ----------
    M : number of stages (bytes per code).
    n_bits_per_code : bits per stage, 1..8.
    n_iter : k-means iterations per stage.
    max_train : train on at most this many rows (a seeded sample); None uses them all.
    random_state : seed or numpy Generator.

    Attributes
    ----------
    codebooks_ : (M, K, d) float32.
    """

    def _state_shapes(self) -> dict[str, tuple]:
        return {"codebooks_": ((self.M, 2 ** self.n_bits_per_code, self.n_features_in_), np.float32)}

    def fit(self, X, y=None) -> "RQ":
        """Learn the M stage codebooks from ``X`` (n, d). Returns self."""
        self._check_params()
        self.M, self.n_bits_per_code = check_quantizer_shape(self.M, self.n_bits_per_code)
        n_iter = check_int(self.n_iter, "n_iter", low=1)
        X = check_matrix(X)
        K = 2 ** self.n_bits_per_code
        if X.shape[0] < K:
            raise InputError(f"RQ with {self.n_bits_per_code} bits per stage needs at least {K} "
                             f"training points, got {X.shape[0]}")
        rng = rng_from(self.random_state)
        seed = seed_from(rng)
        residual = subsample(X, self.max_train, rng).copy()
        codebooks = np.empty((self.M, K, X.shape[1]), dtype=np.float32)
        for m in range(self.M):
            codebooks[m] = kmeans(residual, K, n_iter=n_iter, seed=seed + m)
            residual -= codebooks[m][assign(residual, codebooks[m])[0]]
        self.n_features_in_ = X.shape[1]
        self.codebooks_ = codebooks
        return self

    def encode(self, X, batch_size: int = 65536) -> np.ndarray:
        """Codes (n, M) uint8 of ``X`` (n, d), greedily stage by stage."""
        X = self._check_input(X)
        batch_size = check_int(batch_size, "batch_size", low=1)
        out = np.empty((X.shape[0], self.M), dtype=np.uint8)
        for s in range(0, X.shape[0], batch_size):
            residual = X[s:s + batch_size].copy()
            for m in range(self.M):
                out[s:s + batch_size, m] = assign(residual, self.codebooks_[m])[0]
                residual -= self.codebooks_[m][out[s:s + batch_size, m]]
        return out

    def decode(self, codes) -> np.ndarray:
        """Reconstructions (n, d) float32 of codes (n, M): the sum of the chosen codewords."""
        codes = self._check_codes(codes)
        out = np.zeros((codes.shape[0], self.n_features_in_), dtype=np.float32)
        for m in range(self.M):
            out += self.codebooks_[m][codes[:, m]]
        return out

    def adc_tables(self, Q) -> np.ndarray:
        """Tables (nq, M, K) float32: T[q, m, j] = -2 <q, C_m[j]>."""
        Q = self._check_input(Q, "queries")
        return (-2.0 * np.einsum("qd,mkd->qmk", Q, self.codebooks_, optimize=True)).astype(np.float32)

    def db_bias(self, codes) -> np.ndarray:
        """||x̂||² (n,) float32 of each code's reconstruction."""
        codes = self._check_codes(codes)
        out = np.empty(len(codes), dtype=np.float32)
        for s in range(0, len(codes), 65536):
            recon = self.decode(codes[s:s + 65536])
            out[s:s + 65536] = np.einsum("nd,nd->n", recon, recon)
        return out

    def query_bias(self, Q) -> np.ndarray:
        """||q||² (nq,) float32."""
        Q = self._check_input(Q, "queries")
        return np.einsum("qd,qd->q", Q, Q)
