"""VLQ-ADC over 4-bit codes searched by fast scan, the shortlist re-ranked with the exact VLQ distance."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..errors import InputError
from ..validation import check_int
from .fastscan import MAX_M
from .simd import HAVE_AVX2
from .vlq import VLQIndex
from .vlq_fastscan_kernels import pack_lists, vlq_fastscan_search


@persist.register
class VLQFastScanIndex(VLQIndex):
    """:class:`VLQIndex` with 4-bit residual sub-codes (16 codewords per sub-quantizer), searched by
    the fast-scan kernels of :mod:`deepcodes.index.vlq_fastscan_kernels` (factory spelling
    ``VLQ<centroids>x<neighbours>,PQ<M>x4,FastScan``).

    Training, assignment, the stored codes (``M`` sub-codes of one byte each, then the lambda byte:
    what ``get_codes`` returns and the file holds) and the segments scanned are :class:`VLQIndex`'s.
    The search estimates every scanned code's distance from 8-bit tables (one per probed centroid)
    summed 32 codes at a time in SIMD registers, plus the closed-form segment term and a per-code
    byte for the query-independent line term; each code the shortlist admits gets
    :class:`VLQIndex`'s exact distance at once, from its block, and the ``kprime`` smallest
    estimates are re-ranked by it. Results are in (distance, id) order and equal
    :class:`VLQIndex`'s on the same codes wherever the shortlist holds its top k (always when
    ``kprime`` is at least the number of codes scanned); every returned distance is the exact one.

    Memory beyond :class:`VLQIndex`'s (rebuilt after every change, not saved): the codes packed
    two sub-codes a byte, each segment list padded to whole blocks of 32 codes, and per slot the
    lambda byte, a signed byte and a float32 for the line term (M / 2 + 6 bytes a slot). The scan
    reads M / 2 + 2 bytes per code (packed sub-codes, lambda byte, line-term byte; ``PQ28x4`` is 16
    bytes a code), plus the float line terms of the blocks where the shortlist admits a code, and
    the ids of the final top k only.

    Search parameters: :class:`VLQIndex`'s (``nprobe``, ``w``, ``batch_size``, ``return_scanned``)
    and ``kprime`` (shortlist length, default ``max(4 k, 40)``, at least k).
    """

    search_params = {**VLQIndex.search_params, "kprime": None}

    def __init__(self, d: int, n_centroids: int, n_neighbors: int = 64, M: int = 8, n_bits_per_code: int = 4,
                 n_iter: int = 20, max_train: int | None = None, random_state=None, *, front=None,
                 spec: str | None = None):
        if n_bits_per_code != 4:
            raise InputError(f"VLQFastScanIndex needs 4-bit sub-codes (n_bits_per_code=4), got {n_bits_per_code!r}")
        if isinstance(M, (int, np.integer)) and M > MAX_M:
            raise InputError(f"VLQFastScanIndex holds at most {MAX_M} sub-quantizers, got M={M}")
        super().__init__(d, n_centroids, n_neighbors=n_neighbors, M=M, n_bits_per_code=n_bits_per_code,
                         n_iter=n_iter, max_train=max_train, random_state=random_state, front=front, spec=spec)
        self._layout = (None, None)

    def _search_layout(self, offsets: np.ndarray, codes: np.ndarray) -> tuple:
        """:func:`pack_lists` of the stored codes, rebuilt whenever their line terms are."""
        g = self.line_terms()
        cached_g, layout = self._layout
        if cached_g is not g:
            layout = pack_lists(codes, offsets, g, self.n_centroids, self.n_neighbors)
            self._layout = (g, layout)
        return layout

    def memory_bytes(self) -> dict[str, int]:
        """:meth:`VLQIndex.memory_bytes`, plus ``fastscan``: the packed blocks, line-term bytes and
        block offsets the search reads."""
        out = super().memory_bytes()
        lists = self.lists
        out["fastscan"] = int(sum(a.nbytes for a in self._search_layout(lists.offsets, lists.codes)))
        return out

    def _check_scan_params(self, nprobe: int, w=None, kprime=None) -> dict:
        out = super()._check_scan_params(nprobe, w)
        out["kprime"] = None if kprime is None else check_int(kprime, "kprime", low=1)
        return out

    def _scan(self, dqc, Qp, k, nprobe, offsets, codes, ids, w, kprime):
        kprime = max(4 * k, 40) if kprime is None else kprime
        if kprime < k:
            raise InputError(f"kprime={kprime} is smaller than k={k}: the shortlist must hold the k results")
        return vlq_fastscan_search(dqc, Qp, self._codebooks_t, nprobe, w, k, kprime, self.neighbors_, self._edge_sq,
                                   self._P, self.lambda_codebook_, offsets, ids, *self._search_layout(offsets, codes),
                                   HAVE_AVX2)
