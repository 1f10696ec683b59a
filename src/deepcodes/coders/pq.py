"""Product quantization (Jégou, Douze, Schmid, TPAMI 2011) and its optimized form OPQ (Ge et al., CVPR 2013)."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import InputError
from ..validation import check_int, check_matrix, rng_from, seed_from
from .base import CodebookQuantizer, check_quantizer_shape
from .kmeans import assign, kmeans


def subsample(X: np.ndarray, max_train: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_train`` rows of ``X`` drawn without replacement (all of them if None)."""
    if max_train is None or X.shape[0] <= max_train:
        return X
    return X[np.sort(rng.choice(X.shape[0], max_train, replace=False))]


def pq_encode(Y: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Codes (n, M) uint8 of ``Y`` (n, M * ds) float32: the nearest codeword of each sub-vector
    in ``codebooks`` (M, K, ds) float32."""
    M, _, ds = codebooks.shape
    codes = np.empty((Y.shape[0], M), dtype=np.uint8)
    for m in range(M):
        codes[:, m] = assign(Y[:, m * ds:(m + 1) * ds], codebooks[m])[0]
    return codes


def _pq_decode(codes: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    M = codebooks.shape[0]
    return np.concatenate([codebooks[m][codes[:, m]] for m in range(M)], axis=1)


def pq_train(Y: np.ndarray, M: int, K: int, n_iter: int, seed: int, init=None) -> np.ndarray:
    """Codebooks (M, K, ds) float32 from ``Y`` (n, M * ds) float32: k-means (faiss) of each sub-vector,
    seeded ``seed + m``, started from ``init`` (M, K, ds) when given."""
    ds = Y.shape[1] // M
    return np.stack([
        kmeans(Y[:, m * ds:(m + 1) * ds], K, n_iter=n_iter, seed=seed + m,
               init=None if init is None else init[m])
        for m in range(M)
    ])


@persist.register
class PQ(CodebookQuantizer):
    """Product quantizer: split vectors into ``M`` sub-vectors, k-means each into ``2**n_bits_per_code``
    centroids, and code a vector by its ``M`` nearest sub-centroid indices.

    Inputs whose dimension d is not a multiple of M are zero-padded to the next multiple (padding
    changes no distance).

    Parameters
    ----------
    M : number of sub-quantizers (bytes per code).
    n_bits_per_code : bits per sub-code, 1..8 (K = 2**n_bits_per_code centroids each).
    n_iter : k-means iterations.
    max_train : train on at most this many rows (a seeded sample); None uses them all.
    random_state : seed or numpy Generator.

    Attributes
    ----------
    codebooks_ : (M, K, d_pad / M) float32.
    """

    def _pad(self, X: np.ndarray) -> np.ndarray:
        d_pad = -(-X.shape[1] // self.M) * self.M
        if d_pad == X.shape[1]:
            return X
        return np.pad(X, ((0, 0), (0, d_pad - X.shape[1])))

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        """Map input vectors to the space the codebooks live in (padded; rotated for OPQ)."""
        return self._pad(X)

    def _unprepare(self, Y: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(Y[:, :self.n_features_in_])

    def _check_fit_input(self, X):
        self._check_params()
        self.M, self.n_bits_per_code = check_quantizer_shape(self.M, self.n_bits_per_code)
        X = check_matrix(X)
        if self.M > X.shape[1]:
            raise InputError(f"M={self.M} sub-quantizers exceed the dimension {X.shape[1]}")
        K = 2 ** self.n_bits_per_code
        if X.shape[0] < K:
            raise InputError(f"{type(self).__name__} with {self.n_bits_per_code} bits per sub-code needs "
                             f"at least {K} training points, got {X.shape[0]}")
        return X

    def _state_shapes(self) -> dict[str, tuple]:
        d, M = self.n_features_in_, self.M
        if M > d:
            raise InputError(f"M={M} sub-quantizers exceed the dimension {d}")
        return {"codebooks_": ((M, 2 ** self.n_bits_per_code, -(-d // M)), np.float32)}

    def fit(self, X, y=None) -> "PQ":
        """Learn the sub-codebooks from ``X`` (n, d), n >= 2**n_bits_per_code. Returns self."""
        X = self._check_fit_input(X)
        rng = rng_from(self.random_state)
        self.n_features_in_ = X.shape[1]
        Y = self._pad(subsample(X, self.max_train, rng))
        self.codebooks_ = pq_train(Y, self.M, 2 ** self.n_bits_per_code, self.n_iter, seed_from(rng))
        return self

    def encode(self, X, batch_size: int = 65536) -> np.ndarray:
        """Codes (n, M) uint8 of ``X`` (n, d): the nearest sub-centroid of every sub-vector."""
        X = self._check_input(X)
        batch_size = check_int(batch_size, "batch_size", low=1)
        out = np.empty((X.shape[0], self.M), dtype=np.uint8)
        for s in range(0, X.shape[0], batch_size):
            out[s:s + batch_size] = pq_encode(self._prepare(X[s:s + batch_size]), self.codebooks_)
        return out

    def decode(self, codes) -> np.ndarray:
        """Reconstructions (n, d) float32 of codes (n, M)."""
        codes = self._check_codes(codes)
        return self._unprepare(_pq_decode(codes, self.codebooks_))

    def adc_tables(self, Q) -> np.ndarray:
        """Tables (nq, M, K) float32: T[q, m, j] = ||q_m - c_mj||² (q_m: the m-th sub-vector of q)."""
        Q = self._prepare(self._check_input(Q, "queries"))
        M, K, ds = self.codebooks_.shape
        Qs = Q.reshape(Q.shape[0], M, ds)
        cross = np.einsum("qmd,mkd->qmk", Qs, self.codebooks_, optimize=True)
        c_norm = np.einsum("mkd,mkd->mk", self.codebooks_, self.codebooks_)
        q_norm = np.einsum("qmd,qmd->qm", Qs, Qs)
        return np.maximum(q_norm[:, :, None] - 2 * cross + c_norm[None], 0).astype(np.float32)


@persist.register
class OPQ(PQ):
    """Optimized product quantization, the non-parametric form: alternate PQ training on the rotated
    data with the orthogonal Procrustes rotation that best maps the data onto its reconstructions.

    Parameters are PQ's, plus ``n_outer`` alternations (each runs ``n_iter_inner`` warm-started
    k-means iterations).

    Attributes
    ----------
    rotation_ : (d_pad, d_pad) float32 orthogonal; codes quantize ``pad(x) @ rotation_``.
    codebooks_ : (M, K, d_pad / M) float32.
    """

    _learned = ("codebooks_", "rotation_")

    def __init__(self, M: int = 8, n_bits_per_code: int = 8, n_iter: int = 25, n_outer: int = 10,
                 n_iter_inner: int = 4, max_train: int | None = None, random_state=None):
        super().__init__(M=M, n_bits_per_code=n_bits_per_code, n_iter=n_iter, max_train=max_train,
                         random_state=random_state)
        self.n_outer = n_outer
        self.n_iter_inner = n_iter_inner

    def _prepare(self, X: np.ndarray) -> np.ndarray:
        return self._pad(X) @ self.rotation_

    def _check_params(self) -> None:
        super()._check_params()
        check_int(self.n_outer, "n_outer", low=0)
        check_int(self.n_iter_inner, "n_iter_inner", low=1)

    def _state_shapes(self) -> dict[str, tuple]:
        shapes = super()._state_shapes()
        d_pad = self.M * shapes["codebooks_"][0][2]
        return {**shapes, "rotation_": ((d_pad, d_pad), np.float32)}

    def _unprepare(self, Y: np.ndarray) -> np.ndarray:
        return super()._unprepare(Y @ self.rotation_.T)

    def fit(self, X, y=None, *, progress: bool = False) -> "OPQ":
        """Learn the rotation and sub-codebooks from ``X`` (n, d); ``progress`` shows a bar over the
        alternations. Returns self."""
        from tqdm.auto import tqdm

        X = self._check_fit_input(X)
        n_outer = check_int(self.n_outer, "n_outer", low=0)
        n_inner = check_int(self.n_iter_inner, "n_iter_inner", low=1)
        rng = rng_from(self.random_state)
        seed = seed_from(rng)
        self.n_features_in_ = X.shape[1]
        P = self._pad(subsample(X, self.max_train, rng)).astype(np.float32)
        K = 2 ** self.n_bits_per_code
        R = np.eye(P.shape[1], dtype=np.float32)
        PR = P
        codebooks = pq_train(PR, self.M, K, self.n_iter, seed)
        for _ in tqdm(range(n_outer), disable=not progress, desc="OPQ.fit", unit="alternation"):
            recon = _pq_decode(pq_encode(PR, codebooks), codebooks)
            U, _, Vt = np.linalg.svd((P.T @ recon).astype(np.float64))
            R = (U @ Vt).astype(np.float32)
            PR = P @ R
            codebooks = pq_train(PR, self.M, K, n_inner, seed, init=codebooks)
        self.rotation_ = R
        self.codebooks_ = codebooks
        return self
