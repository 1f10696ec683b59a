"""VLQ-ADC: the vector-and-line quantization inverted index (Chen et al., 2019), as ALGORITHMS.md section 6 defines it."""
from __future__ import annotations

import numpy as np

from .. import persist
from ..coders.kmeans import kmeans
from ..errors import FormatError, InputError
from ..validation import as_format_errors, check_finite_float32, check_int
from .invlists import ResidualIVF
from .ivf_kernels import line_terms, segment_residuals, vlq_assign, vlq_search, vlq_segments

N_LAMBDA = 256  # the 1-D lambda codebook: one byte per vector
_NEIGHBOR_BLOCK = 256


def nearest_other_centroids(C: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """For every centroid its ``n`` nearest other centroids, ascending by (squared distance, id):
    ``(neighbors (k, n) int64, squared distances (k, n) float32)``. Distances are exact float64
    differences, so the segment lengths the kernels use are not eroded by cancellation."""
    k = C.shape[0]
    C64 = C.astype(np.float64)
    norms = np.einsum("cd,cd->c", C64, C64)
    nbr = np.empty((k, n), dtype=np.int64)
    for s in range(0, k, _NEIGHBOR_BLOCK):
        rows = np.arange(s, min(k, s + _NEIGHBOR_BLOCK))
        d = norms[rows, None] - 2 * C64[rows] @ C64.T + norms[None]
        d[np.arange(len(rows)), rows] = np.inf
        part = np.argpartition(d, n, axis=1)[:, :n + 1] if n + 1 < k else np.argsort(d, axis=1)
        part_d = np.take_along_axis(d, part, 1)
        order = np.lexsort((part, part_d), axis=1)
        nbr[rows] = np.take_along_axis(part, order, 1)[:, :n]
    diff = C64[:, None, :] - C64[nbr]
    return nbr, np.einsum("knd,knd->kn", diff, diff).astype(np.float32)


@persist.register
class VLQIndex(ResidualIVF):
    """Vector-and-line quantization inverted index with residual PQ (VLQ-ADC).

    Build: k-means gives ``n_centroids`` centroids; each centroid A and each of its ``n_neighbors``
    nearest other centroids B define a segment, one inverted list per segment
    (``n_centroids * n_neighbors`` lists, id ``A * n_neighbors + edge``). A vector goes to the list
    of its nearest centroid's nearest line (lambda in [0, 1] preferred), stores lambda as one byte of
    a 256-value 1-D codebook, and the PQ code (``M`` bytes) of its residual
    x - ((1 - lambda) c_A + lambda c_B): ``M + 1`` bytes per vector plus its int64 id.

    Search: the ``nprobe`` nearest centroids; of their ``nprobe * n_neighbors`` segments the ``w``
    nearest by the closed-form segment distance; those lists are ranked by the exact ADC expansion
    of ||q - (c_A + lambda (c_B - c_A)) - r̂||² from one table per probed centroid and each code's
    query-independent line term 2<c_B - c_A, r̂>. The line terms (one float32 a vector) are
    derived from the codes after every change and held in memory, not in the file: they make a
    code cost one table look-up per sub-code, as in IVF-PQ, instead of three (``memory_bytes``
    reports them as ``line_terms``).

    Parameters
    ----------
    d : vector dimension.
    n_centroids : first-level k-means centroids (scale with N; the authors use 32K-64K at 1e9).
    n_neighbors : segments per centroid (64 in the authors' code).
    M : sub-quantizers of the residual PQ; d need not be a multiple of M.
    n_bits_per_code : bits per sub-code, 1..8.
    n_iter : k-means iterations (first level, lambda codebook and PQ).
    max_train : train on at most this many vectors (a seeded sample); None uses them all.
    random_state : seed or numpy Generator.
    front : optional front (fitted, or fitted by ``train``): the lists live in its output space.
    spec : the factory string the index was built from.

    Search parameters: ``nprobe`` (default 8), ``w`` (segments scanned, default
    ``nprobe * n_neighbors // 4``), ``batch_size`` and ``return_scanned`` (also return the number
    of codes scanned per query). Results are in (distance, id) order; slots beyond the vectors
    scanned hold (inf, -1). The contract is :class:`~deepcodes.index.base.CodeIndex`'s.

    Attributes
    ----------
    centroids_ : (n_centroids, list_dim) float32.
    neighbors_ : (n_centroids, n_neighbors) int64, each row ascending by distance.
    lambda_codebook_ : (256,) float32, ascending.
    codebooks_ : (M, 2**n_bits_per_code, ceil(list_dim / M)) float32, the residual PQ.
    """

    _extra_arrays = ("neighbors", "lambda_codebook")

    search_params = {**ResidualIVF.search_params, "w": None}

    def __init__(self, d: int, n_centroids: int, n_neighbors: int = 64, M: int = 8, n_bits_per_code: int = 8,
                 n_iter: int = 20, max_train: int | None = None, random_state=None, *, front=None,
                 spec: str | None = None):
        self.n_neighbors = check_int(n_neighbors, "n_neighbors", low=1)
        n_centroids = check_int(n_centroids, "n_centroids", low=2)
        if self.n_neighbors >= n_centroids:
            raise InputError(f"n_neighbors={self.n_neighbors} must be smaller than n_centroids={n_centroids}")
        if n_centroids * self.n_neighbors >= 2**32:
            # the search selects segments by keys that hold a list id in 32 bits
            raise InputError(f"VLQIndex holds fewer than 2^32 segment lists, n_centroids * n_neighbors = "
                             f"{n_centroids * self.n_neighbors}")
        self.neighbors_: np.ndarray | None = None
        self.lambda_codebook_: np.ndarray | None = None
        # (the lists object, its version, their line terms): valid while both match
        self._line_terms_cache: tuple = (None, -1, None)
        super().__init__(d, n_centroids, M=M, n_bits_per_code=n_bits_per_code, n_iter=n_iter,
                         max_train=max_train, random_state=random_state, front=front, spec=spec)

    def _nlist(self) -> int:
        return self.n_centroids * self.n_neighbors

    def _code_size(self) -> int:
        return self.M + 1

    def _min_train(self) -> int:
        return N_LAMBDA

    def _params(self) -> dict:
        return {**super()._params(), "n_neighbors": self.n_neighbors}

    def _extra_shapes(self) -> dict[str, tuple]:
        return {"neighbors": (self.n_centroids, self.n_neighbors), "lambda_codebook": (N_LAMBDA,)}

    def _check_extra(self) -> None:
        nbr = self.neighbors_
        if nbr.dtype != np.int64 or nbr.min() < 0 or nbr.max() >= self.n_centroids:
            raise FormatError("VLQIndex neighbour table holds ids outside the centroids")
        self.lambda_codebook_ = self.lambda_codebook_.astype(np.float32)
        with as_format_errors("VLQIndex"):
            check_finite_float32(self.lambda_codebook_, "array 'lambda_codebook'")
        self._edges()

    def _edges(self) -> None:
        C = self.centroids_.astype(np.float64)
        diff = C[:, None, :] - C[self.neighbors_]
        self._edge_sq = np.einsum("knd,knd->kn", diff, diff).astype(np.float32)

    # -- build -----------------------------------------------------------------------------------

    def _train_structure(self, X: np.ndarray, seed: int) -> None:
        self.neighbors_, self._edge_sq = nearest_other_centroids(self.centroids_, self.n_neighbors)
        _, lam, _ = self.assign_lines(X)
        cb = kmeans(lam[:, None].astype(np.float32), N_LAMBDA, n_iter=self.n_iter, seed=seed)
        self.lambda_codebook_ = np.sort(cb[:, 0]).astype(np.float32)

    def assign_lines(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Line assignment of ``X`` (n, d), lambda not yet quantized: ``(list id (n,), lambda (n,),
        squared distance to the line (n,))`` (ALGORITHMS.md section 6, build steps 1 and 3)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        C = self.centroids_
        c_norms = np.einsum("cd,cd->c", C, C)
        n = X.shape[0]
        lists = np.empty(n, dtype=np.int64)
        lam = np.empty(n, dtype=np.float32)
        dist = np.empty(n, dtype=np.float32)
        # the Gram matrix of a block stays near 32 MB whatever the number of centroids
        step = max(1, (1 << 23) // C.shape[0])
        for s in range(0, n, step):
            x = X[s:s + step]
            nearest, edge, lam[s:s + step], dist[s:s + step] = vlq_assign(
                x @ C.T, np.einsum("nd,nd->n", x, x), c_norms, self.neighbors_, self._edge_sq)
            lists[s:s + step] = nearest * self.n_neighbors + edge
        return lists, lam, dist

    def _assign(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lists, lam, _ = self.assign_lines(X)
        cb = self.lambda_codebook_
        # the squared distance to the line grows as c (lambda - lambda*)², so the nearest codeword in
        # lambda is also the nearest point on the line
        lam_code = np.searchsorted((cb[1:] + cb[:-1]) / 2, lam).astype(np.uint8)
        return lists, lam_code

    def _segment_ends(self, lists: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        A = lists // self.n_neighbors
        return A, self.neighbors_[A, lists % self.n_neighbors]

    def _residuals(self, X: np.ndarray, lists: np.ndarray, lam_code: np.ndarray) -> np.ndarray:
        A, B = self._segment_ends(lists)
        return segment_residuals(np.ascontiguousarray(X, dtype=np.float32), self.centroids_, A, B,
                                 self.lambda_codebook_[lam_code])

    def _list_ids(self, lists: np.ndarray, lam_code: np.ndarray) -> np.ndarray:
        return lists

    def _pack_codes(self, pq_codes: np.ndarray, lists: np.ndarray, lam_code: np.ndarray) -> np.ndarray:
        return np.concatenate([pq_codes, lam_code[:, None]], axis=1)

    def _bases(self, lists: np.ndarray, codes: np.ndarray) -> np.ndarray:
        A, B = self._segment_ends(lists)
        lam = self.lambda_codebook_[codes[:, self.M]][:, None]
        return self.centroids_[A] + lam * (self.centroids_[B] - self.centroids_[A])

    # -- search ----------------------------------------------------------------------------------

    def _check_scan_params(self, nprobe: int, w=None) -> dict:
        n_seg = nprobe * self.n_neighbors
        w = check_int(max(1, n_seg // 4) if w is None else w, "w", low=1)
        if w > n_seg:
            raise InputError(f"w={w} is larger than the {n_seg} segments probed "
                             f"(nprobe={nprobe} x n_neighbors={self.n_neighbors})")
        return {"w": w}

    def segments(self, Q, nprobe: int = 8, w: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Search steps 1-2 alone: the ``w`` segments nearest to each query (nq, d) among those of its
        ``nprobe`` nearest centroids, by the closed-form distance. Returns ``(squared distances
        (nq, w) float32, list ids (nq, w) int64)`` in (distance, list id) order."""
        self._require_trained("segments")
        Z = self._queries(Q)
        nprobe = check_int(nprobe, "nprobe", low=1, high=self.n_centroids)
        w = self._check_scan_params(nprobe, w)["w"]
        dqc, _ = self._query_terms(Z)
        return vlq_segments(dqc, nprobe, w, self.neighbors_, self._edge_sq)

    def line_terms(self) -> np.ndarray:
        """Each stored code's line term 2<c_B - c_A, r̂> (ntotal,) float32, in list order (the rows
        of ``lists.codes``); recomputed after any change to the lists."""
        cached_store, version, g = self._line_terms_cache
        store = self._store
        if cached_store is not store or version != store.version:
            codes = store.codes  # merges queued additions first
            g = line_terms(np.ascontiguousarray(codes), store.row_lists(), self.n_neighbors, self.neighbors_, self._P)
            g.setflags(write=False)
            self._line_terms_cache = (store, store.version, g)
        return g

    def memory_bytes(self) -> dict[str, int]:
        """:meth:`ResidualIVF.memory_bytes`, plus ``line_terms``: the per-code float32 the search
        reads beside the codes (derived, not saved)."""
        out = super().memory_bytes()
        out["line_terms"] = int(self.line_terms().nbytes) if self.is_trained else 0
        return out

    def _scan(self, dqc, Qp, k, nprobe, offsets, codes, ids, w):
        return vlq_search(dqc, Qp, self._codebooks_t, nprobe, w, k, self.neighbors_, self._edge_sq, self._P,
                          self.lambda_codebook_, offsets, codes, ids, self.line_terms())
