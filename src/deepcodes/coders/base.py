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
from ..errors import InputError
from ..validation import (as_format_errors, check_codes, check_fitted, check_int, check_matrix, check_state_array,
                          check_state_keys)


class Coder(BaseEstimator):
    """Base of all coders: ``fit`` / ``encode``, saving and loading through :mod:`deepcodes.persist`.

    Subclasses list their learned array attributes in ``_learned`` (names ending in ``_``), check
    their parameters in ``_check_params`` (used by ``fit`` and on load) and give the shape and dtype
    every learned array must have in ``_state_shapes``: loading checks a file against both before
    any kernel sees it (:meth:`_check_state`).
    """

    _learned: tuple[str, ...] = ()

    def _check_params(self) -> None:
        """Raise InputError unless the constructor parameters are valid (no data needed)."""

    def _state_shapes(self) -> dict[str, tuple]:
        """``{name: (shape, dtype)}`` or ``(shape, dtype, False)`` for arrays whose values are only
        informational (not range-checked): what each learned array must be, given the parameters
        and ``n_features_in_`` (``None`` in a shape matches any size). Every coder defines it: a
        loaded file is checked against it, so a coder without it cannot be loaded."""
        raise NotImplementedError(f"{type(self).__name__} defines no _state_shapes, so its saved files cannot be "
                                  "checked on load (see Coder._check_state)")

    def _check_state(self) -> None:
        """Raise FormatError unless the parameters are valid and every learned array has the shape
        and dtype they imply and finite values within float32 range: a loaded file may be hostile."""
        with as_format_errors(f"{type(self).__name__} parameters"):
            self.n_features_in_ = check_int(self.n_features_in_, "n_features_in_", low=1)
            if "random_state" in self.get_params(deep=False):
                check_int(self.random_state, "random_state", low=0, allow_none=True)
            self._check_params()
            expected = self._state_shapes()
        for name, (shape, dtype, *checked) in expected.items():
            check_state_array(getattr(self, name, None), name, shape, dtype, finite=all(checked))

    @property
    def dim_(self) -> int:
        """Input dimension seen by ``fit``."""
        check_fitted(self, "n_features_in_")
        return int(self.n_features_in_)

    def _check_input(self, X, name: str = "X") -> np.ndarray:
        self._check_fitted()
        return check_matrix(X, name, dim=self.n_features_in_)

    def _check_fitted(self) -> None:
        check_fitted(self, self._learned[0])

    def transform(self, X) -> np.ndarray:
        """Alias of ``encode`` so coders drop into scikit-learn pipelines."""
        return self.encode(X)

    def save(self, path, meta: dict | None = None) -> None:
        """Save the fitted coder to ``path`` (safetensors + JSON metadata, atomic)."""
        self._check_fitted()
        persist.save(self, path, meta=meta)

    def _get_state(self):
        params = self.get_params(deep=False)
        if "random_state" in params and not (params["random_state"] is None or isinstance(params["random_state"], int)):
            params["random_state"] = None   # a Generator's state is not saved
        params["n_features_in_"] = int(self.n_features_in_)
        arrays = {name: np.asarray(getattr(self, name)) for name in self._learned}
        return params, arrays

    @classmethod
    def _from_state(cls, params, arrays):
        params = dict(params)
        n_features = params.pop("n_features_in_", None)
        check_state_keys(cls.__name__, params, cls._get_param_names(), "parameters")
        check_state_keys(cls.__name__, arrays, cls._learned, "arrays")
        obj = cls(**params)
        obj.n_features_in_ = n_features
        for name in cls._learned:
            setattr(obj, name, arrays[name])
        obj._check_state()
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
        batch_size = check_int(batch_size, "batch_size", low=1)
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

    def _check_codes(self, codes) -> np.ndarray:
        """``codes`` as (n, M) uint8, checked: fitted coder, right width, every sub-code < K."""
        self._check_fitted()
        codes = check_codes(codes, code_size=self.code_size)
        K = 2 ** int(self.n_bits_per_code)
        if codes.max(initial=0) >= K:
            raise InputError(f"codes hold values >= K={K}")
        return codes

    def db_bias(self, codes) -> np.ndarray:
        """Per-code additive term of the asymmetric distance (n,) float32 (zeros unless overridden)."""
        return np.zeros(len(self._check_codes(codes)), dtype=np.float32)

    def query_bias(self, Q) -> np.ndarray:
        """Per-query additive term of the asymmetric distance (nq,) float32 (zeros unless overridden)."""
        return np.zeros(len(self._check_input(Q, "queries")), dtype=np.float32)

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

    def _check_params(self) -> None:
        check_quantizer_shape(self.M, self.n_bits_per_code)
        check_int(self.n_iter, "n_iter", low=1)
        check_int(self.max_train, "max_train", low=1, allow_none=True)


def check_quantizer_shape(M, n_bits_per_code) -> tuple[int, int]:
    """Validate the number of sub-codes and bits per sub-code (1..8, so a sub-code fits a byte)."""
    M = check_int(M, "M (number of sub-quantizers)", low=1)
    nbits = check_int(n_bits_per_code, "n_bits_per_code", low=1, high=8)
    return M, nbits


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
