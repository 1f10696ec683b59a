"""Exhaustive asymmetric-distance (ADC) search over quantizer codes (PQ, OPQ, RQ)."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import InputError
from ..validation import check_matrix
from .base import CodeIndex
from .kernels import adc_knn, adc_rank


@persist.register
class ADCIndex(CodeIndex):
    """Exact ADC k-NN: the query stays a float vector, database vectors are their codes, and the
    squared distance ||q - x̂||² is summed from per-query look-up tables.

    Results are sorted by (distance, database id).

    Parameters
    ----------
    quantizer : a fitted Quantizer (PQ, OPQ, RQ, or any with ``adc_tables``).
    """

    def __init__(self, quantizer):
        if getattr(quantizer, "code_kind", None) != "quantizer":
            raise InputError(f"ADCIndex needs a fitted quantizer (PQ, OPQ, RQ), got {type(quantizer).__name__}")
        self.quantizer = quantizer
        self._bias = np.empty(0, dtype=np.float32)
        super().__init__(quantizer)

    @property
    def code_size(self) -> int:
        return self.quantizer.code_size

    def _check_code_values(self, codes) -> None:
        K = 2 ** self.quantizer.n_bits_per_code
        if codes.size and codes.max() >= K:
            raise InputError(f"codes hold values >= K={K}")

    def _on_add(self, codes) -> None:
        self._bias = np.concatenate([self._bias, self.quantizer.db_bias(codes).astype(np.float32)])

    def search(self, Q, k: int, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """k nearest database vectors of each query (nq, d): ``(squared distances float32, ids int64)``."""
        k = self._check_search(k, batch_size)
        Q = check_matrix(Q, "queries", dim=self.quantizer.dim_)
        codes = self.codes
        # a heap wins for small k; for long rankings a stable sort of all distances is faster
        kernel = adc_rank if 8 * k >= self.ntotal else adc_knn
        out_d = np.empty((Q.shape[0], k), dtype=np.float32)
        out_i = np.empty((Q.shape[0], k), dtype=np.int64)
        for s in range(0, Q.shape[0], batch_size):
            q = Q[s:s + batch_size]
            tables = np.ascontiguousarray(self.quantizer.adc_tables(q), dtype=np.float32)
            q_bias = self.quantizer.query_bias(q).astype(np.float32)
            out_d[s:s + batch_size], out_i[s:s + batch_size] = kernel(tables, codes, self._bias, q_bias, k)
        return out_d, out_i

    def _params(self) -> dict:
        return {}

    @classmethod
    def _build(cls, params, coder):
        if coder is None:
            raise InputError("an ADCIndex file must hold its quantizer")
        return cls(coder)
