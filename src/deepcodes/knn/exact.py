"""Exact Euclidean k-nearest neighbours with a stable tie rule: (squared L2 in float64, id).

Equal distances go to the lower id, the same rule as the Hamming and ADC rankings.
"""
from __future__ import annotations

import logging

import numpy as np

from ..validation import check_k, check_matrix

log = logging.getLogger(__name__)

# faiss ranks in float32; this many extra candidates are re-ranked in float64.
_EXTRA = 16
# Elements of float64 scratch (queries x candidates x dims, or queries x database) made at once.
_BLOCK = 1 << 23
_SEARCH_BLOCK = 1024


def _sqdist_rows(rows: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Squared L2 distances (..., m) in float64 between ``rows`` (..., m, d) and ``q`` (..., d)."""
    diff = np.subtract(rows, q[..., None, :], dtype=np.float64)
    return np.einsum("...md,...md->...m", diff, diff)


def _rerank(database: np.ndarray, q: np.ndarray, cand: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact distances (m, c) of queries q (m, d) to their candidates cand (m, c), sorted by (distance, id)."""
    dist = _sqdist_rows(database[cand], q)
    order = np.lexsort((cand, dist), axis=-1)
    return np.take_along_axis(dist, order, axis=-1), np.take_along_axis(cand, order, axis=-1)


def _norms(X: np.ndarray) -> np.ndarray:
    """Squared norms (n,) in float64, a block of rows at a time."""
    step = max(1, _BLOCK // X.shape[1])
    return np.concatenate([np.einsum("nd,nd->n", b, b) for b in
                           (X[s:s + step].astype(np.float64) for s in range(0, X.shape[0], step))])


def _brute_force(database: np.ndarray, db_norms: np.ndarray, q: np.ndarray, k: int):
    """Exact top-k (distances, ids), each (m, k), of queries q (m, d) float64 over the whole database.

    A float64 matrix product selects every point within rounding error of the k-th distance; those
    are re-ranked by :func:`_rerank`, the same exact distances and order as the faiss path.
    """
    n, d = database.shape
    out_d, out_i = np.empty((q.shape[0], k)), np.empty((q.shape[0], k), dtype=np.int64)
    q_norms = np.einsum("qd,qd->q", q, q)
    # Twice the rounding bound of the float64 expansion: enough to keep every point that could be
    # in the exact top-k, ties included.
    margin = (d + 4) * 2.0 ** -50 * (q_norms + db_norms.max())
    step = max(1, _BLOCK // max(n, d))
    db_step = max(1, _BLOCK // d)
    for s in range(0, q.shape[0], step):
        qb = q[s:s + step]
        prod = np.concatenate([qb @ database[t:t + db_step].astype(np.float64).T
                               for t in range(0, n, db_step)], axis=1)
        approx = db_norms[None, :] + q_norms[s:s + step, None] - 2.0 * prod
        kth = np.partition(approx, k - 1, axis=1)[:, k - 1]
        for row in range(qb.shape[0]):
            cand = np.flatnonzero(approx[row] <= kth[row] + margin[s + row])
            dist, ids = _rerank(database, qb[row:row + 1], cand[None, :])
            out_d[s + row], out_i[s + row] = dist[0, :k], ids[0, :k]
    return out_d, out_i


def exact_knn(database, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest neighbours of ``queries`` (nq, d) in ``database`` (n, d) by Euclidean distance.

    Returns ``(distances float32 (nq, k), ids int64 (nq, k))``: squared L2 distances computed in
    float64, ordered by (distance, id). faiss ``IndexFlatL2`` proposes ``k + 16`` candidates per
    query, which are re-ranked exactly. A query whose k-th exact distance is not clear of the last
    candidate's by faiss's float32 error bound (a tied or closer point may have been left out) is
    searched by float64 brute force instead. Queries go through in blocks, so scratch memory is
    bounded (about 64 MB of float64 beyond faiss's own).
    """
    import faiss

    database = check_matrix(database, "database", dtype=None)
    queries = check_matrix(queries, "queries", dim=database.shape[1], dtype=None)
    n, d = database.shape
    k = check_k(k, n)
    n_cand = min(n, k + _EXTRA)
    index = faiss.IndexFlatL2(d)
    index.add(np.ascontiguousarray(database, dtype=np.float32))
    db_norms = _norms(database)
    # Rounding bound of faiss's ||q||^2 + ||x||^2 - 2 q.x in float32 (d-term sums, the final
    # additions, the casts to float32 of the data and of our k-th distance), relative to ||q||^2 + ||x||^2.
    rel_err = (d + 8) * 2.0 ** -23
    nq = queries.shape[0]
    out_d = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    step = max(1, _BLOCK // (n_cand * d))
    n_fallback = 0
    for start in range(0, nq, _SEARCH_BLOCK):
        q64 = queries[start:start + _SEARCH_BLOCK].astype(np.float64)
        f_dist, cand = index.search(np.ascontiguousarray(q64, dtype=np.float32), n_cand)
        dist, ids = out_d[start:start + q64.shape[0]], out_i[start:start + q64.shape[0]]
        for s in range(0, q64.shape[0], step):
            block_d, block_i = _rerank(database, q64[s:s + step], cand[s:s + step])
            dist[s:s + step], ids[s:s + step] = block_d[:, :k], block_i[:, :k]
        # Every point faiss left out has exact distance >= (faiss's last distance) - error.
        err = rel_err * (np.einsum("qd,qd->q", q64, q64) + db_norms.max())
        unsafe = np.flatnonzero((n_cand < n) & (f_dist[:, -1] - err <= dist[:, -1]))
        if unsafe.size:
            dist[unsafe], ids[unsafe] = _brute_force(database, db_norms, q64[unsafe], k)
            n_fallback += unsafe.size
    if n_fallback:
        log.debug("exact_knn: %d of %d queries needed brute force (near-ties at rank %d)", n_fallback, nq, k)
    return out_d, out_i
