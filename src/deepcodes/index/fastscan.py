"""4-bit fast-scan ADC: a shortlist by 8-bit look-up tables in SIMD registers, re-ranked exactly."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import InputError
from ..validation import check_int
from .adc import ADCIndex
from .fastscan_kernels import pack_codes, quantize_tables, rerank, shortlist
from .simd import HAVE_AVX2

# Most sub-quantizers a fast-scan sum holds: 8-bit entries are summed in 16-bit lanes.
MAX_M = 256


@persist.register
class FastScanIndex(ADCIndex):
    """ADC k-NN over 4-bit codes (16 codewords per sub-quantizer, faiss's ``PQ<M>x4fs``), searched by
    the fast-scan kernels of :mod:`deepcodes.index.fastscan_kernels`.

    Each query's float tables are quantized to 8 bits; the ``kprime`` smallest quantized sums
    (ties by id) form a shortlist, whose exact ADC distances are then computed as
    :class:`ADCIndex` computes them. Results are sorted by (distance, id) and equal
    :class:`ADCIndex`'s wherever the shortlist holds its top k (always when ``kprime = ntotal``).

    Search parameters: ``kprime`` (shortlist length, default ``max(4 k, 40)``: at 1M SIFT-like
    codes, k = 10, 16 and 32 sub-quantizers, it held exact ADC's top 10 for 98-100% of the
    results), ``batch_size``. Memory: the codes as :class:`ADCIndex` stores them (a byte per
    sub-code, what ``get_codes`` returns and the file holds) plus their packed copy (M / 2 bytes).

    Parameters
    ----------
    quantizer : a Quantizer with ``n_bits_per_code == 4`` and at most 256 sub-quantizers (PQ, OPQ,
        RQ, GSL), fitted or fitted by ``train``.
    d, spec : as for :class:`ADCIndex`.
    """

    search_params = {**ADCIndex.search_params, "kprime": None}

    def __init__(self, quantizer, *, d: int | None = None, spec: str | None = None):
        if getattr(quantizer, "n_bits_per_code", None) != 4:
            raise InputError(f"FastScanIndex needs 4-bit sub-codes (n_bits_per_code=4), got "
                             f"{getattr(quantizer, 'n_bits_per_code', None)}")
        super().__init__(quantizer, d=d, spec=spec)
        if self.code_size > MAX_M:
            raise InputError(f"FastScanIndex holds at most {MAX_M} sub-quantizers, got {self.code_size}")
        self._packed = (-1, None)

    def _current_packed(self) -> np.ndarray:
        """The stored codes in the kernels' block layout, repacked after any change."""
        version, packed = self._packed
        if version != self._store.version:
            packed = pack_codes(self._store.codes)
            self._packed = (self._store.version, packed)
        return packed

    def _search(self, Q: np.ndarray, k: int, batch_size: int, kprime) -> tuple[np.ndarray, np.ndarray]:
        kprime = max(4 * k, 40) if kprime is None else check_int(kprime, "kprime", low=k)
        return super()._search(Q, k, batch_size, kprime=min(kprime, self.ntotal))

    def _tables_knn(self, tables: np.ndarray, q_bias: np.ndarray, k: int, kprime: int):
        packed, n_pairs = self._current_packed(), -(-self.code_size // 2)
        _, candidates = shortlist(quantize_tables(tables), packed, self.ntotal, n_pairs, kprime, HAVE_AVX2)
        return rerank(tables, packed, n_pairs, self._store.aux, q_bias, candidates[:tables.shape[0]], k)

    @classmethod
    def _build(cls, params, coder):
        if coder is None:
            raise InputError("a FastScanIndex file must hold its quantizer")
        return cls(coder, d=params.get("d"), spec=params.get("spec"))
