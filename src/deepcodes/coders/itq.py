"""PCA-ITQ, iterative quantization (Gong & Lazebnik, CVPR 2011)."""
from __future__ import annotations

import numpy as np
from tqdm.auto import trange

from .. import persist
from ..threads import single_blas
from ..errors import InputError
from ..validation import check_int, check_matrix, check_n_bits, rng_from
from .lsh import LinearHasher


def pca(X: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """``(mean (d,), components (d, n_components))`` of ``X``, by the covariance eigenvectors, largest first."""
    mean = X.mean(axis=0, dtype=np.float64)
    Xc = X.astype(np.float64) - mean
    cov = Xc.T @ Xc / X.shape[0]
    eigval, eigvec = np.linalg.eigh(cov)
    order = np.argsort(eigval)[::-1][:n_components]
    components = eigvec[:, order]
    # eigh's sign is arbitrary; fix it so results do not depend on the LAPACK build.
    signs = np.sign(components[np.argmax(np.abs(components), axis=0), np.arange(n_components)])
    return mean, components * np.where(signs == 0, 1, signs)


def itq_rotation(V: np.ndarray, n_iter: int, rng: np.random.Generator, *, progress: bool = False) -> np.ndarray:
    """Orthogonal R (L, L) minimising ||sign(V R) - V R||² by alternating sign and Procrustes steps.

    The products are (n, L) x (L, L) and the SVD L x L: one BLAS thread does them as fast as two,
    and does not fight other pools for the cores (see :mod:`deepcodes.threads`)."""
    L = V.shape[1]
    R, _ = np.linalg.qr(rng.standard_normal((L, L)))
    with single_blas():
        for _ in trange(n_iter, disable=not progress, desc="ITQ rotation", unit="iter"):
            B = np.where(V @ R >= 0, 1.0, -1.0)
            U, _, Wt = np.linalg.svd(B.T @ V)
            R = Wt.T @ U.T
    return R


@persist.register
class ITQ(LinearHasher):
    """PCA-ITQ: centre, project on the top-L principal directions, then rotate to minimise the
    quantization loss ||B - V R||² by ``n_iter`` Procrustes iterations.

    Parameters
    ----------
    n_bits : code length L, a multiple of 8, at most the input dimension.
    n_iter : ITQ iterations (the authors use 50).
    random_state : seed or numpy Generator for the initial rotation.

    Attributes
    ----------
    mean_ : (d,) float32.
    components_ : (d, L) float32, principal directions.
    rotation_ : (L, L) float32, the learned orthogonal rotation.
    projection_ : (d, L) float32, ``components_ @ rotation_``.
    """

    _learned = ("mean_", "projection_", "components_", "rotation_")

    def __init__(self, n_bits: int = 32, n_iter: int = 50, random_state=None):
        self.n_bits = n_bits
        self.n_iter = n_iter
        self.random_state = random_state

    def _check_params(self) -> None:
        check_n_bits(self.n_bits)
        check_int(self.n_iter, "n_iter", low=0)

    def _state_shapes(self) -> dict[str, tuple]:
        d, L = self.n_features_in_, self.n_bits
        if L > d:
            raise InputError(f"n_bits={L} exceeds the input dimension {d}")
        return {**super()._state_shapes(), "components_": ((d, L), np.float32), "rotation_": ((L, L), np.float32)}

    def fit(self, X, y=None, *, progress: bool = False) -> "ITQ":
        """Learn mean, PCA and rotation from ``X`` (n, d). Returns self; ``progress`` shows a bar
        over the rotation's iterations."""
        X = check_matrix(X)
        self.n_bits = check_n_bits(self.n_bits)
        if self.n_bits > X.shape[1]:
            raise InputError(f"ITQ cannot make {self.n_bits} bits from {X.shape[1]}-dimensional data "
                             "(PCA gives at most one bit per dimension)")
        if X.shape[0] < 2:
            raise InputError("ITQ needs at least 2 training points")
        n_iter = check_int(self.n_iter, "n_iter", low=0)
        rng = rng_from(self.random_state)
        mean, components = pca(X, self.n_bits)
        V = (X.astype(np.float64) - mean) @ components
        R = itq_rotation(V, n_iter, rng, progress=progress)
        self.n_features_in_ = X.shape[1]
        self.mean_ = mean.astype(np.float32)
        self.components_ = components.astype(np.float32)
        self.rotation_ = R.astype(np.float32)
        self.projection_ = (components @ R).astype(np.float32)
        return self
