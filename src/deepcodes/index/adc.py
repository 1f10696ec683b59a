"""Exhaustive asymmetric-distance (ADC) search over quantizer codes (PQ, OPQ, RQ, GSL)."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import InputError
from ..validation import check_int, check_matrix
from .flat import FlatIndex
from .kernels import adc_knn, adc_rank, gathers_pay, group_codes


@persist.register
class ADCIndex(FlatIndex):
    """Exact ADC k-NN: the query stays a float vector, stored vectors are their codes, and the
    squared distance ||q - x̂||² is summed from per-query look-up tables (the contract is
    :class:`~deepcodes.index.base.CodeIndex`'s).

    Results are sorted by (distance, id). Search parameter: ``batch_size`` (queries per table
    batch). A GSLQuantizer's codes quantize its network's output: queries go through the network,
    and ``reconstruct`` and ``search_by_id`` work in that representation space. With 8 or more
    sub-codes on an AVX2 CPU the first search after a change regroups the codes for the gather
    kernel (:func:`~deepcodes.index.kernels.group_codes`): a second copy, ``ntotal * code_size``
    bytes, held until the next change.

    Parameters
    ----------
    quantizer : a Quantizer (PQ, OPQ, RQ, GSLQuantizer, or any with ``adc_tables``), fitted or
        fitted by ``train``.
    d, spec : the input dimension of a quantizer not fitted yet, and the factory string.
    """

    _with_aux = True

    def __init__(self, quantizer, *, d: int | None = None, spec: str | None = None):
        if getattr(quantizer, "code_kind", None) != "quantizer":
            raise InputError(f"ADCIndex needs a quantizer (PQ, OPQ, RQ, GSL), got {type(quantizer).__name__}")
        self.quantizer = quantizer
        self._groups = (-1, None)
        super().__init__(quantizer, d=d, spec=spec)

    @property
    def code_size(self) -> int:
        return int(self.quantizer.code_size)

    @property
    def _space(self):
        """The quantizer of the space the codes live in: a GSLQuantizer's inner one, else the quantizer."""
        return self.quantizer.quantizer_ if hasattr(self.quantizer, "embed") else self.quantizer

    def _check_code_values(self, codes) -> None:
        K = 2 ** self.quantizer.n_bits_per_code
        if codes.size and codes.max() >= K:
            raise InputError(f"codes hold values >= K={K}")

    def _aux_of(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(self._space.db_bias(codes), dtype=np.float32)

    def _queries(self, Q) -> np.ndarray:
        if hasattr(self.quantizer, "embed"):
            return self.quantizer.embed(Q)
        return check_matrix(Q, "queries", dim=self.d)

    def _stored_queries(self, rows: np.ndarray) -> np.ndarray:
        return self._reconstruct_rows(rows)

    def _reconstruct_rows(self, rows: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._space.decode(self._store.codes[rows]), dtype=np.float32)

    def _search(self, Q: np.ndarray, k: int, batch_size: int, **kernel_params) -> tuple[np.ndarray, np.ndarray]:
        batch_size = check_int(batch_size, "batch_size", low=1)
        space = self._space
        out_d = np.empty((Q.shape[0], k), dtype=np.float32)
        out_i = np.empty((Q.shape[0], k), dtype=np.int64)
        for s in range(0, Q.shape[0], batch_size):
            q = Q[s:s + batch_size]
            tables = np.ascontiguousarray(space.adc_tables(q), dtype=np.float32)
            q_bias = np.asarray(space.query_bias(q), dtype=np.float32)
            out_d[s:s + batch_size], out_i[s:s + batch_size] = self._tables_knn(tables, q_bias, k, **kernel_params)
        return out_d, self._store.ids_at(out_i)

    def _tables_knn(self, tables: np.ndarray, q_bias: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest rows for one batch of tables (nq, M, K): ``(distances, rows)``."""
        # a heap wins for small k; for long rankings a stable sort of all distances is faster
        kernel = adc_rank if 8 * k >= self.ntotal else adc_knn
        return kernel(tables, self._store.codes, self._store.aux, q_bias, k, groups=self._grouped_codes())

    def _grouped_codes(self) -> np.ndarray | None:
        """The stored codes regrouped for the gather kernels (a second copy of the codes, rebuilt
        after any change), or None where those kernels do not run."""
        if not gathers_pay(self.code_size):
            return None
        version, groups = self._groups
        if version != self._store.version:
            groups = group_codes(self._store.codes)
            self._groups = (self._store.version, groups)
        return groups

    @classmethod
    def _build(cls, params, coder):
        if coder is None:
            raise InputError("an ADCIndex file must hold its quantizer")
        return cls(coder, d=params.get("d"), spec=params.get("spec"))
