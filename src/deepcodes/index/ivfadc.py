"""IVFADC: the classic inverted file with residual product quantization (Jégou, Douze, Schmid, 2011)."""
from __future__ import annotations

import numpy as np

from .. import persist
from .invlists import ResidualIVF
from .ivf_kernels import ivfadc_search


@persist.register
class IVFADCIndex(ResidualIVF):
    """Inverted file over ``n_centroids`` k-means cells; each vector is stored in its nearest cell's
    list as the PQ code (``M`` bytes) of its residual to the cell centroid.

    Search probes the ``nprobe`` nearest cells and ranks their codes by the ADC distance
    ||q - c - r̂||², built from faiss-style precomputed tables (see ``ivf_kernels``). This is the
    like-for-like baseline for :class:`~deepcodes.index.vlq.VLQIndex`; it mirrors faiss
    ``IndexIVFPQ`` with ``by_residual`` and precomputed tables. The contract is
    :class:`~deepcodes.index.base.CodeIndex`'s.

    Search parameters: ``nprobe`` (cells probed, default 8), ``batch_size`` (queries per kernel
    call) and ``return_scanned`` (also return the number of codes scanned per query). Results are
    in (distance, id) order; slots beyond the vectors scanned hold (inf, -1).

    Parameters
    ----------
    d : vector dimension.
    n_centroids : number of cells (inverted lists).
    M : sub-quantizers of the residual PQ (bytes per code); d need not be a multiple of M.
    n_bits_per_code : bits per sub-code, 1..8.
    n_iter : k-means iterations (first level and PQ).
    max_train : train on at most this many vectors (a seeded sample); None uses them all.
    random_state : seed or numpy Generator.
    front : optional front (fitted, or fitted by ``train``): the lists live in its output space.
    spec : the factory string the index was built from.
    """

    def _nlist(self) -> int:
        return self.n_centroids

    def _code_size(self) -> int:
        return self.M

    def _assign(self, X: np.ndarray) -> tuple[np.ndarray]:
        return (self._nearest_centroid(X),)

    def _residuals(self, X: np.ndarray, nearest: np.ndarray) -> np.ndarray:
        return X - self.centroids_[nearest]

    def _list_ids(self, nearest: np.ndarray) -> np.ndarray:
        return nearest

    def _pack_codes(self, pq_codes: np.ndarray, nearest: np.ndarray) -> np.ndarray:
        return pq_codes

    def _bases(self, lists: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return self.centroids_[lists]

    def _scan(self, dqc, Qp, k, nprobe, offsets, codes, ids):
        return ivfadc_search(dqc, Qp, self._codebooks_t, nprobe, k, self._P, offsets, codes, ids)
