"""What every coder shares: scikit-learn estimator plumbing, persistence, and the two code kinds.

* A :class:`BinaryCoder` maps vectors to ``n_bits`` binary codes packed into ``uint8`` (n, n_bits/8),
  most significant bit first (``numpy.packbits``); bit = 1 where the real-valued output is >= 0.
* A :class:`Quantizer` maps vectors to ``M`` sub-codes (n, M) ``uint8`` and ``decode`` maps them back
  to (n, d) reconstructions. ``adc_tables`` gives the per-query look-up tables for asymmetric search.
"""
from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .. import persist
from ..validation import check_fitted, check_matrix


class Coder(BaseEstimator):
    """Base of all coders: ``fit`` / ``encode``, saving and loading through :mod:`deepcodes.persist`.

    Subclasses list their learned array attributes in ``_learned`` (names ending in ``_``).
    """

    _learned: tuple[str, ...] = ()

    @property
    def dim_(self) -> int:
        """Input dimension seen by ``fit``."""
        check_fitted(self, "n_features_in_")
        return int(self.n_features_in_)

    def _check_input(self, X, name: str = "X") -> np.ndarray:
        check_fitted(self, self._learned[0])
        return check_matrix(X, name, dim=self.n_features_in_)

    def transform(self, X) -> np.ndarray:
        """Alias of ``encode`` so coders drop into scikit-learn pipelines."""
        return self.encode(X)

    def save(self, path, meta: dict | None = None) -> None:
        """Save the fitted coder to ``path`` (safetensors + JSON metadata, atomic)."""
        check_fitted(self, self._learned[0])
        persist.save(self, path, meta=meta)

    def _get_state(self):
        params = self.get_params(deep=False)
        params["n_features_in_"] = int(self.n_features_in_)
        arrays = {name: np.asarray(getattr(self, name)) for name in self._learned}
        return params, arrays

    @classmethod
    def _from_state(cls, params, arrays):
        params = dict(params)
        n_features = params.pop("n_features_in_")
        obj = cls(**params)
        obj.n_features_in_ = int(n_features)
        for name in cls._learned:
            setattr(obj, name, arrays[name])
        return obj


class BinaryCoder(TransformerMixin, Coder):
    """A coder whose codes are ``n_bits`` bits, packed into ``n_bits // 8`` bytes per vector."""

    code_kind = "binary"

    @property
    def code_size(self) -> int:
        """Bytes per code."""
        return self.n_bits // 8

    def project(self, X) -> np.ndarray:
        """Real-valued outputs (n, n_bits) whose signs are the bits."""
        raise NotImplementedError

    def encode(self, X, batch_size: int = 65536) -> np.ndarray:
        """Encode ``X`` (n, d) to packed codes (n, n_bits/8) ``uint8``, in batches of ``batch_size``."""
        X = self._check_input(X)
        out = np.empty((X.shape[0], self.code_size), dtype=np.uint8)
        for start in range(0, X.shape[0], batch_size):
            out[start:start + batch_size] = pack_bits(self.project(X[start:start + batch_size]) >= 0)
        return out


class Quantizer(TransformerMixin, Coder):
    """A vector quantizer with ``M`` sub-codes of ``n_bits_per_code`` bits each."""

    code_kind = "quantizer"

    @property
    def code_size(self) -> int:
        """Sub-codes (bytes) per vector."""
        return int(self.M)

    @property
    def n_bits(self) -> int:
        """Total code length in bits."""
        return int(self.M) * int(self.n_bits_per_code)

    def decode(self, codes) -> np.ndarray:
        """Reconstruct (n, d) float32 vectors from codes (n, M)."""
        raise NotImplementedError

    def adc_tables(self, Q) -> np.ndarray:
        """Look-up tables (nq, M, K) float32 with d(q, x) = sum_m T[q, m, code_m] + db_bias(x) + query_bias(q)."""
        raise NotImplementedError

    def db_bias(self, codes) -> np.ndarray:
        """Per-code additive term of the asymmetric distance (n,) float32 (zeros unless overridden)."""
        return np.zeros(len(codes), dtype=np.float32)

    def query_bias(self, Q) -> np.ndarray:
        """Per-query additive term of the asymmetric distance (nq,) float32 (zeros unless overridden)."""
        return np.zeros(len(Q), dtype=np.float32)

    def quantization_error(self, X) -> float:
        """Mean squared reconstruction error ``mean ||x - decode(encode(x))||^2`` over rows of ``X``."""
        X = self._check_input(X)
        return float(np.mean(np.sum((X - self.decode(self.encode(X))) ** 2, axis=1)))


class CodebookQuantizer(Quantizer):
    """A quantizer with ``M`` codebooks of ``2**n_bits_per_code`` codewords trained by k-means
    (PQ, OPQ, RQ): the parameters they share."""

    _learned = ("codebooks_",)

    def __init__(self, M: int = 8, n_bits_per_code: int = 8, n_iter: int = 25,
                 max_train: int | None = None, random_state=None):
        self.M = M
        self.n_bits_per_code = n_bits_per_code
        self.n_iter = n_iter
        self.max_train = max_train
        self.random_state = random_state


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a boolean (n, L) matrix into (n, L/8) uint8, most significant bit first."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=1)


def unpack_bits(codes: np.ndarray, n_bits: int) -> np.ndarray:
    """Unpack (n, L/8) uint8 codes into a boolean (n, L) matrix."""
    return np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1, count=n_bits).astype(bool)


def fit_with_progress(model, X, y=None, progress: bool = False):
    """``model.fit(X, y)``, passing ``progress`` where its ``fit`` takes it. Returns the model."""
    import inspect

    if "progress" in inspect.signature(model.fit).parameters:
        return model.fit(X, y, progress=progress)
    return model.fit(X, y)


def is_fitted(model) -> bool:
    """Whether a coder or front has been fitted (every deepcodes coder sets ``n_features_in_`` in ``fit``)."""
    return getattr(model, "n_features_in_", None) is not None
