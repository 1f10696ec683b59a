"""One pass per query over a full ranking: the numba kernels behind :func:`evaluate_search`.

Each kernel gives exactly what the vectorised definitions in :mod:`deepcodes.eval.metrics` give
(integer counts, and average precision summed hit by hit in rank order, the order
``np.bincount`` adds in), without the (n_queries, n_database) temporaries of the numpy forms:
``tests/test_evaluate.py`` pins them to those definitions bit for bit. Rows run in parallel.

Shapes as in :mod:`deepcodes.eval.metrics`: ``rel`` (nq, r) bool, ``dist`` (nq, r), ``ids``
(nq, r) int64, cutoffs 1-based ranks.
"""
from __future__ import annotations

import math

import numba as nb
import numpy as np

__all__ = ["unordered_rows", "class_mask", "neighbor_mask", "rank_stats", "radius_counts",
           "one_recall_rows", "r_recall_rows"]


@nb.njit(parallel=True, cache=True)
def unordered_rows(dist, ids):
    """bool (nq,): is row i *not* strictly increasing in (distance, id)."""
    nq, r = dist.shape
    out = np.zeros(nq, dtype=np.bool_)
    for i in nb.prange(nq):
        for j in range(1, r):
            if dist[i, j] < dist[i, j - 1] or (dist[i, j] == dist[i, j - 1] and ids[i, j] <= ids[i, j - 1]):
                out[i] = True
                break
    return out


@nb.njit(cache=True)
def _mark_members(member, ids, out):
    """out[j] = ids[j] >= 0 and member[ids[j]]."""
    for j in range(len(ids)):
        t = ids[j]
        out[j] = t >= 0 and member[t]


@nb.njit(parallel=True, cache=True)
def class_mask(database_labels, query_labels, ids):
    """bool (nq, r): ``ids[i, j] >= 0`` and its label equals ``query_labels[i]``."""
    out = np.empty(ids.shape, dtype=np.bool_)
    for i in nb.prange(ids.shape[0]):
        _mark_members(database_labels == query_labels[i], ids[i], out[i])
    return out


@nb.njit(parallel=True, cache=True)
def neighbor_mask(neighbors, ids, n_database):
    """bool (nq, r): ``ids[i, j] >= 0`` and it is one of ``neighbors[i]`` (nq, K)."""
    out = np.empty(ids.shape, dtype=np.bool_)
    for i in nb.prange(ids.shape[0]):
        member = np.zeros(n_database, dtype=np.bool_)
        for t in neighbors[i]:
            member[t] = True
        _mark_members(member, ids[i], out[i])
    return out


@nb.njit(parallel=True, cache=True)
def rank_stats(rel, n_relevant, cutoffs, map_at):
    """Per query: ``(ap (nq,), ap_at (nq, len(map_at)), hits (nq, len(cutoffs)), found (nq,))``.

    ``ap`` is :func:`~deepcodes.eval.metrics.average_precision` over the whole row, ``ap_at[:, a]``
    the same with ``k = map_at[a]`` (the DH/DPSH denominator), ``hits[:, c]`` the relevant items in
    the top ``cutoffs[c]`` and ``found`` those in the row. ``cutoffs`` and ``map_at`` are sorted
    ascending, each in [1, r].
    """
    nq, r = rel.shape
    ap = np.zeros(nq)
    ap_at = np.zeros((nq, len(map_at)))
    hits = np.empty((nq, len(cutoffs)), dtype=np.int64)
    found = np.empty(nq, dtype=np.int64)
    for i in nb.prange(nq):
        total = 0.0
        nth = 0
        c = 0
        a = 0
        for j in range(r):
            while c < len(cutoffs) and cutoffs[c] == j:
                hits[i, c] = nth
                c += 1
            while a < len(map_at) and map_at[a] == j:
                if nth > 0:
                    ap_at[i, a] = total / nth
                a += 1
            if rel[i, j]:
                nth += 1
                total += nth / (j + 1)
        while c < len(cutoffs):
            hits[i, c] = nth
            c += 1
        while a < len(map_at):
            if nth > 0:
                ap_at[i, a] = total / nth
            a += 1
        if n_relevant[i] > 0:
            ap[i] = total / n_relevant[i]
        found[i] = nth
    return ap, ap_at, hits, found


@nb.njit(parallel=True, cache=True)
def radius_counts(rel, dist, max_radius):
    """(hits, retrieved), int64 (nq, max_radius + 1): relevant / all items with dist <= t, t =
    0..max_radius (``ceil(dist) <= t``, so non-integer distances are binned as integer ones)."""
    nq, r = rel.shape
    hits = np.zeros((nq, max_radius + 1), dtype=np.int64)
    retrieved = np.zeros((nq, max_radius + 1), dtype=np.int64)
    for i in nb.prange(nq):
        for j in range(r):
            b = math.ceil(dist[i, j])
            if b <= max_radius:
                retrieved[i, b] += 1
                if rel[i, j]:
                    hits[i, b] += 1
        for t in range(1, max_radius + 1):
            hits[i, t] += hits[i, t - 1]
            retrieved[i, t] += retrieved[i, t - 1]
    return hits, retrieved


@nb.njit(parallel=True, cache=True)
def one_recall_rows(ids, true_nn, Rs):
    """bool (nq, len(Rs)): is ``true_nn[i]`` among the top R of ``ids[i]``."""
    nq, r = ids.shape
    out = np.empty((nq, len(Rs)), dtype=np.bool_)
    for i in nb.prange(nq):
        pos = r
        for j in range(r):
            if ids[i, j] == true_nn[i]:
                pos = j
                break
        for c in range(len(Rs)):
            out[i, c] = pos < Rs[c]
    return out


@nb.njit(parallel=True, cache=True)
def r_recall_rows(ids, true_knn, Rs, n_database):
    """float64 (nq, len(Rs)): |top-R of ids ∩ top-R of true_knn| / R; ids < 0 never match."""
    nq = ids.shape[0]
    out = np.empty((nq, len(Rs)))
    for i in nb.prange(nq):
        member = np.zeros(n_database, dtype=np.bool_)
        for c in range(len(Rs)):
            R = Rs[c]
            for j in range(R):
                member[true_knn[i, j]] = True
            count = 0
            for j in range(R):
                t = ids[i, j]
                if t >= 0 and member[t]:
                    count += 1
            for j in range(R):
                member[true_knn[i, j]] = False
            out[i, c] = count / R
    return out
