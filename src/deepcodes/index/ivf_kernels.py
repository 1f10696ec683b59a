"""Numba kernels shared by the inverted-file indexes (IVFADCIndex, VLQIndex).

Search kernels run in parallel over queries. Candidates pass through a bounded max-heap keyed on
(distance, id) pairs, so the results equal a stable sort by (distance, id) of every candidate
scanned, whatever order the lists are visited in.

Table conventions (``P`` precomputed at train time, ``qr`` per query):

* ``P[c, m, j] = ||r_mj||² + 2<c_m, r_mj>`` for first-level centroid ``c``, sub-quantizer ``m``
  and sub-centroid ``r_mj`` (``c_m`` is the m-th sub-vector of the centroid);
* ``qr[q, m, j] = <q_m, r_mj>``.

The per-centroid ADC table of ALGORITHMS.md is then ``T_c = P[c] - 2 qr[q]``.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..knn.heap import heap_admits, heap_drain, heap_offer
from ..knn.reservoir import float_key, float_key_value, key_position, keep_smallest


@nb.njit(inline="always")
def result_arrays(nq, k):
    """A search kernel's outputs before the scan: ``(distances (nq, k) float32 inf, ids (nq, k)
    int64 -1, codes scanned (nq,) int64 0)``."""
    return (np.full((nq, k), np.inf, dtype=np.float32), np.full((nq, k), -1, dtype=np.int64),
            np.zeros(nq, dtype=np.int64))


@nb.njit(parallel=True, cache=True)
def squared_distances_from_dots(dots, q_norms, c_norms):
    """Squared distances from inner products, in place: ``dots`` (nq, k) float32 of <q_i, c_j>
    becomes max(0, (||q_i||² - 2 <q_i, c_j>) + ||c_j||²) for ``q_norms`` (nq,) and ``c_norms`` (k,)
    float32, in that float32 order (numpy's broadcast expression gives the same values); returned.

    One parallel pass over the product, where the numpy expression made three single-threaded
    passes and two temporaries of its size: at 1,000 queries and 1,024 centroids those cost twice
    the product itself."""
    zero = np.float32(0.0)
    for i in nb.prange(dots.shape[0]):
        qn = q_norms[i]
        row = dots[i]
        for j in range(row.shape[0]):
            v = (qn - np.float32(2.0) * row[j]) + c_norms[j]
            row[j] = v if v > zero else zero
    return dots


@nb.njit(inline="always")
def _nearest_centroids(dq, nprobe, out_d, out_i):
    """The ``nprobe`` nearest centroids of one query (squared distances ``dq``), ascending."""
    heap_d = np.empty(nprobe, dtype=np.float32)
    heap_i = np.empty(nprobe, dtype=np.int64)
    size = 0
    for c in range(dq.shape[0]):
        if heap_admits(heap_d, size, nprobe, dq[c]):
            size = heap_offer(heap_d, heap_i, size, nprobe, dq[c], c)
    heap_drain(heap_d, heap_i, size, out_d, out_i)


@nb.njit(inline="always")
def query_codebook_dots(q, codebooks_t, out):
    """out[m, j] = <q_m, r_mj> for one padded query ``q`` (d_pad,) and the transposed codebooks
    ``codebooks_t`` (M, ds, K).

    Done per query inside the search kernels: M*K*ds multiply-adds, where a GEMM against the
    block-diagonal codebook matrix would spend M times that on zeros. The transposed layout makes
    the inner loop run over contiguous j, which vectorizes."""
    M, ds, K = codebooks_t.shape
    for m in range(M):
        row = out[m]
        row[:] = 0
        for t in range(ds):
            qv = q[m * ds + t]
            col = codebooks_t[m, t]
            for j in range(K):
                row[j] += qv * col[j]


@nb.njit(parallel=True, cache=True)
def vlq_assign(G, x_norms, c_norms, neighbors, edge_sq):
    """Nearest centroid and line of VLQ-ADC (ALGORITHMS.md section 6, build steps 1 and 3).

    Squared distances come from the Gram matrix ``G`` (n, k) = X Cᵀ as ||x||² - 2<x, c> + ||c||²
    (``x_norms`` (n,), ``c_norms`` (k,)), as faiss computes them. A is the nearest centroid (lowest
    id on ties). For every edge (A, B) with ``neighbors`` (k, n_nb) and ``edge_sq`` (k, n_nb) =
    ||c_A - c_B||²: a = ||x - c_B||², b = ||x - c_A||², lambda = -(a - b - c) / (2c), squared line
    distance b + lambda²c + lambda(a - b - c). The nearest line with lambda in [0, 1] wins, else the
    nearest line; ties go to the lower edge. A zero-length edge (duplicate centroids) is the point
    c_A: lambda = 0, distance b.

    Returns ``(nearest (n,) int64, edge (n,) int64, lam (n,) float32, line_sqdist (n,) float32)``.
    """
    n, k = G.shape
    n_nb = neighbors.shape[1]
    nearest = np.empty(n, dtype=np.int64)
    edge = np.empty(n, dtype=np.int64)
    lam = np.empty(n, dtype=np.float32)
    dist = np.empty(n, dtype=np.float32)
    for i in nb.prange(n):
        g = G[i]
        xn = x_norms[i]
        A = 0
        b = np.inf
        for c in range(k):
            d = xn - 2 * g[c] + c_norms[c]
            if d < b:
                b = d
                A = c
        b = max(b, 0.0)
        nearest[i] = A
        best_in, best_any = -1, -1
        d_in, d_any = np.inf, np.inf
        l_in, l_any = 0.0, 0.0
        for e in range(n_nb):
            c = edge_sq[A, e]
            if c > 0:
                B = neighbors[A, e]
                a = max(xn - 2 * g[B] + c_norms[B], 0.0)
                v = a - b - c
                lm = -v / (2 * c)
                d = b + lm * lm * c + lm * v
            else:
                lm = 0.0
                d = b
            if d < d_any:
                d_any, best_any, l_any = d, e, lm
            if lm >= 0 and lm <= 1 and d < d_in:
                d_in, best_in, l_in = d, e, lm
        if best_in >= 0:
            edge[i], lam[i], dist[i] = best_in, l_in, d_in
        else:
            edge[i], lam[i], dist[i] = best_any, l_any, d_any
    return nearest, edge, lam, dist


@nb.njit(parallel=True, cache=True)
def segment_residuals(X, centroids, A, B, lam):
    """Residuals (n, d) float32: x - ((1 - lam) c_A + lam c_B) = x - c_A - lam (c_B - c_A)."""
    n, d = X.shape
    out = np.empty((n, d), dtype=np.float32)
    for i in nb.prange(n):
        cA = centroids[A[i]]
        cB = centroids[B[i]]
        li = lam[i]
        for t in range(d):
            out[i, t] = X[i, t] - cA[t] - li * (cB[t] - cA[t])
    return out


@nb.njit(inline="always")
def _segment_keys(dq, nprobe, neighbors, edge_sq, scratch):
    """The segments of the ``nprobe`` nearest centroids as (squared distance, list id) keys
    (:func:`deepcodes.knn.reservoir.float_key`), (nprobe * n_neighbors,) int64."""
    n_nb = neighbors.shape[1]
    probe_d = np.empty(nprobe, dtype=np.float32)
    probe_i = np.empty(nprobe, dtype=np.int64)
    _nearest_centroids(dq, nprobe, probe_d, probe_i)
    keys = np.empty(nprobe * n_nb, dtype=np.int64)
    for j in range(nprobe):
        A = probe_i[j]
        b = dq[A]
        for e in range(n_nb):
            c = edge_sq[A, e]
            # closed form: v = a - b - c; b when v > 0 (the foot of q lies before c_A), else the
            # distance to the line b - v²/(4c)
            v = dq[neighbors[A, e]] - b - c
            if v > 0 or c <= 0:
                d = b
            else:
                d = b - v * v / (4 * c)
            keys[j * n_nb + e] = float_key(np.float32(d), A * n_nb + e, scratch)
    return keys


@nb.njit(inline="always")
def _nearest_keys(dq, nprobe, w, neighbors, edge_sq, scratch):
    """The keys of the ``w`` nearest segments (by (distance, list id)), in no particular order: a
    selection over the nprobe * n_neighbors candidates, where a heap would cost a sift each."""
    keys = _segment_keys(dq, nprobe, neighbors, edge_sq, scratch)
    n = min(w, keys.shape[0])
    if n < keys.shape[0]:
        keep_smallest(keys, keys.shape[0], n)
    return keys[:n]


@nb.njit(inline="always")
def nearest_segments(dq, nprobe, w, neighbors, edge_sq, seg_d, seg_i):
    """Search steps 1-2 for one query: the ``w`` nearest segments (ascending (distance, list id))
    of the ``nprobe`` nearest centroids, into ``seg_d``/``seg_i``; returns how many were found."""
    scratch = np.empty(1, dtype=np.float32)
    keys = np.sort(_nearest_keys(dq, nprobe, w, neighbors, edge_sq, scratch))
    for r in range(keys.shape[0]):
        seg_d[r] = float_key_value(keys[r], scratch)
        seg_i[r] = key_position(keys[r])
    return keys.shape[0]


@nb.njit(inline="always")
def query_segments(dq, q, codebooks_t, K, nprobe, w, neighbors, edge_sq):
    """What every VLQ scan of one query starts from: ``(qr (M, K) float32, the list ids of its
    nearest segments ascending)``. Scanned in list-id order, the segments of one centroid A come
    together, so its table P[A] stays in cache; the result heap makes the order irrelevant to the
    results."""
    t = np.empty((codebooks_t.shape[0], K), dtype=np.float32)
    query_codebook_dots(q, codebooks_t, t)
    keys = _nearest_keys(dq, nprobe, w, neighbors, edge_sq, np.empty(1, dtype=np.float32))
    # ordered by list id: a key's low 32 bits
    seg_i = np.empty(keys.shape[0], dtype=np.int64)
    for r in range(keys.shape[0]):
        seg_i[r] = key_position(keys[r])
    return t, np.sort(seg_i)


@nb.njit(parallel=True, cache=True)
def vlq_segments(dqc, nprobe, w, neighbors, edge_sq):
    """Search steps 1-2 for a batch: ``(segment sqdist (nq, w) float32, list ids (nq, w) int64)``."""
    nq = dqc.shape[0]
    out_d = np.empty((nq, w), dtype=np.float32)
    out_i = np.empty((nq, w), dtype=np.int64)
    for q in nb.prange(nq):
        nearest_segments(dqc[q], nprobe, w, neighbors, edge_sq, out_d[q], out_i[q])
    return out_d, out_i


@nb.njit(parallel=True, cache=True)
def line_terms(codes, lists, n_neighbors, neighbors, P):
    """The query-independent line term of each stored VLQ code, (n,) float32:
    g = sum_m P[B, m, j_m] - P[A, m, j_m] = 2 <c_B - c_A, r̂> for codes (n, M + 1) in ``lists``
    (list ``A * n_neighbors + e`` is the segment (c_A, c_neighbors[A, e]))."""
    n = codes.shape[0]
    M = P.shape[1]
    out = np.empty(n, dtype=np.float32)
    for i in nb.prange(n):
        A = lists[i] // n_neighbors
        B = neighbors[A, lists[i] - A * n_neighbors]
        sa = np.float32(0.0)
        sb = np.float32(0.0)
        for m in range(M):
            j = codes[i, m]
            sa += P[A, m, j]
            sb += P[B, m, j]
        out[i] = sb - sa
    return out


@nb.njit(inline="always")
def adc_entry(PA, t, m, j):
    """T_A[m, j] = P[A, m, j] - 2 qr[q, m, j] in float32: every VLQ kernel builds its tables and
    its exact distances from this one expression, so they agree to the bit."""
    return PA[m, j] - np.float32(2.0) * t[m, j]


@nb.njit(inline="always")
def centroid_table(PA, t, table):
    """``table`` (M, K) = T_A for one query (``t`` = qr[q]) and centroid A (``PA`` = P[A]): the
    per-list table of IVF-ADC and the per-centroid table of VLQ-ADC."""
    M, K = PA.shape
    for m in range(M):
        for j in range(K):
            table[m, j] = adc_entry(PA, t, m, j)


@nb.njit(inline="always")
def vlq_distance(s, lm, g, b, ab, c):
    """The VLQ-ADC distance of a code at ``lm`` = lambda on the segment (c_A, c_B), from
    ``s`` = sum_m T_A[m, j_m], its line term ``g``, ``b`` = ||q - c_A||², ``ab`` = ||q - c_B||² - b
    and ``c`` = ||c_A - c_B||²:

        ||q - c_A||² + lam (||q - c_B||² - ||q - c_A||²) + (lam² - lam) ||c_A - c_B||²
            + sum_m T_A[m, j_m] + lam g

    (float32, in this order, so every kernel that ranks VLQ codes gets the same distances)."""
    return b + lm * ab + (lm * lm - lm) * c + s + lm * g


@nb.njit(parallel=True, cache=True)
def vlq_search(dqc, Qp, codebooks_t, nprobe, w, k, neighbors, edge_sq, P, lam_codebook, offsets, codes, ids, g):
    """VLQ-ADC search (ALGORITHMS.md section 6, search steps 1-3) for a batch of queries.

    ``dqc`` (nq, k_c) squared query-centroid distances; ``Qp`` (nq, d_pad) the zero-padded queries;
    ``codebooks_t`` (M, d_pad / M, K) the residual PQ codebooks transposed; ``P`` (k_c, M, K);
    ``codes`` (n, M + 1): M PQ sub-codes, then the lambda byte; list ``A * n_nb + e`` holds the
    vectors on segment (c_A, c_neighbors[A, e]) and spans ``offsets[l]:offsets[l + 1]``; ``g``
    (n,) the codes' :func:`line_terms`.

    The segments are scanned in list-id order, so those of one centroid A come together: its table
    T_A is built once (M * K entries, as IVF-PQ builds one per list), after which a code costs one
    look-up per sub-code plus its line term, instead of three look-ups (P[A], P[B], qr).

    Returns ``(dist (nq, k) float32, ids (nq, k) int64, scanned (nq,) int64)``; slots beyond the
    candidates found hold (inf, -1).
    """
    nq = dqc.shape[0]
    M = P.shape[1]
    n_nb = neighbors.shape[1]
    out_d, out_i, scanned = result_arrays(nq, k)
    for q in nb.prange(nq):
        dq = dqc[q]
        t, seg_i = query_segments(dq, Qp[q], codebooks_t, P.shape[2], nprobe, w, neighbors, edge_sq)
        table = np.empty((M, P.shape[2]), dtype=np.float32)
        current = -1
        heap_d = np.empty(k, dtype=np.float32)
        heap_i = np.empty(k, dtype=np.int64)
        size = 0
        count = 0
        for s in range(seg_i.shape[0]):
            lst = seg_i[s]
            start, stop = offsets[lst], offsets[lst + 1]
            if start == stop:
                continue
            A = lst // n_nb
            e = lst - A * n_nb
            if A != current:
                current = A
                centroid_table(P[A], t, table)
            b = dq[A]
            ab = dq[neighbors[A, e]] - b
            c = edge_sq[A, e]
            for p in range(start, stop):
                sm = np.float32(0.0)
                for m in range(M):
                    sm += table[m, codes[p, m]]
                d = vlq_distance(sm, lam_codebook[codes[p, M]], g[p], b, ab, c)
                if heap_admits(heap_d, size, k, d):
                    size = heap_offer(heap_d, heap_i, size, k, d, ids[p])
            count += stop - start
        scanned[q] = count
        heap_drain(heap_d, heap_i, size, out_d[q], out_i[q])
    return out_d, out_i, scanned


@nb.njit(parallel=True, cache=True)
def ivfadc_search(dqc, Qp, codebooks_t, nprobe, k, P, offsets, codes, ids):
    """IVFADC search with residual PQ: probe the ``nprobe`` nearest lists and scan them by ADC.

    Per probed list c the table ``P[c] - 2 qr[q]`` is built once (faiss's precomputed-table
    form), after which each code costs one look-up per sub-quantizer:
    ||q - c - r||² = ||q - c||² + sum_m (P[c, m, j_m] - 2 qr[q, m, j_m]). Arguments as
    :func:`vlq_search`'s.

    Returns ``(dist (nq, k) float32, ids (nq, k) int64, scanned (nq,) int64)``, padded with (inf, -1).
    """
    nq = dqc.shape[0]
    M = P.shape[1]
    K = P.shape[2]
    out_d, out_i, scanned = result_arrays(nq, k)
    for q in nb.prange(nq):
        dq = dqc[q]
        t = np.empty((M, P.shape[2]), dtype=np.float32)
        query_codebook_dots(Qp[q], codebooks_t, t)
        probe_d = np.empty(nprobe, dtype=np.float32)
        probe_i = np.empty(nprobe, dtype=np.int64)
        _nearest_centroids(dq, nprobe, probe_d, probe_i)
        table = np.empty((M, K), dtype=np.float32)
        heap_d = np.empty(k, dtype=np.float32)
        heap_i = np.empty(k, dtype=np.int64)
        size = 0
        count = 0
        for j in range(nprobe):
            lst = probe_i[j]
            start, stop = offsets[lst], offsets[lst + 1]
            if start == stop:
                continue
            centroid_table(P[lst], t, table)
            base = probe_d[j]
            for p in range(start, stop):
                code = codes[p]
                d = base
                for m in range(M):
                    d += table[m, code[m]]
                if heap_admits(heap_d, size, k, d):
                    size = heap_offer(heap_d, heap_i, size, k, d, ids[p])
            count += stop - start
        scanned[q] = count
        heap_drain(heap_d, heap_i, size, out_d[q], out_i[q])
    return out_d, out_i, scanned
