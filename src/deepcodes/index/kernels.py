"""Numba ADC kernels: exact asymmetric-distance k-NN over quantizer codes, ties broken by position.

Every kernel returns, per query, the k smallest (distance, position) pairs in lexicographic order,
so the result equals a stable sort of all distances. A distance is always summed in the same order,
``db_bias[i] + q_bias[q] + T[q, 0, c_0] + ... + T[q, M-1, c_{M-1}]`` in float32, so every kernel
(and any blocking of queries or codes) gives bit-identical distances.

Speed comes from three things (measured against faiss ``IndexPQ``, see ``bench/bench_exact.py``):

* the number of centroids K, and the number of sub-codes M when it is a power of two up to 64 (the
  code sizes of 1 to 64 bytes at 8 bits a sub-code), are compile-time constants (passed as the
  length of a tuple, so each pair is compiled once and cached on disk): the sub-code loop unrolls
  and every table offset ``m * K`` becomes an immediate, one byte load and one float add per
  sub-code. Any other M is passed as the length of an array, a run-time value, so that all of them
  share one kernel per K: each compile-time M costs about 13 s of compilation (cached on disk
  afterwards). Unrolling pays where throughput matters: on 500,000 codes, k = 100 and 300 queries
  a run-time M took 1.18x (M = 8) and 1.42x (M = 16) the unrolled kernel's time (a spot check at
  a load average of 9-16; for one query it was not slower);
* queries go in blocks whose tables together stay in L2, over tiles of codes that stay in L1, so
  a code row is fetched from memory once per block rather than once per query;
* the heap is out of the inner loop: a distance is compared with the query's current k-th and
  only the rare winner touches the heap;
* from M = 8 on, on AVX2 CPUs, eight codes are summed at once by a gather per sub-quantizer
  (:func:`~deepcodes.index.simd.gather_sums8`, in the same float32 order, so bit-identical) over
  codes regrouped sub-code-major by :func:`group_codes`. On 1,000,000 random codes, 64 queries,
  k = 100 and an idle 2-core machine, gathers ran 1.02-1.21x the scalar kernel's queries/s at
  M = 4, 1.43-1.46x at M = 8, 2.06x at M = 16 and 1.86x at M = 32 (1.31-1.48x on one thread;
  ``bench/README.md``); M = 4 gains nothing dependable, so it stays scalar.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..knn.arrays import read_only
from ..knn.heap import heap_drain, heap_push, sift_down
from ..knn.sort import stable_argsort_f32
from .simd import HAVE_AVX2, LANES, gather_sums8

# Bytes of look-up tables a block of queries may hold (half of a 1 MB L2, leaving room for codes).
_TABLE_BYTES = 1 << 16
# Bytes of codes per tile (half of a 32 KB L1d).
_TILE_BYTES = 1 << 14


# Sub-code counts compiled as constants (see the module's docstring).
_UNROLLED_M = frozenset(1 << e for e in range(7))


def _shape_args(tables: np.ndarray) -> tuple[np.ndarray, tuple | np.ndarray, tuple]:
    """Flat (nq, M * K') tables with K' = K rounded up to a power of two, the object whose length
    gives M (a tuple, a compile-time constant, for the unrolled M; an array otherwise) and the tuple
    whose length gives log2 K' to the compiler."""
    nq, M, K = tables.shape
    bits = max(0, (K - 1).bit_length())
    if (1 << bits) != K:
        padded = np.zeros((nq, M, 1 << bits), dtype=np.float32)
        padded[:, :, :K] = tables
        tables = padded
    m_shape = (0,) * M if M in _UNROLLED_M else np.zeros(M, dtype=np.uint8)
    return np.ascontiguousarray(tables, dtype=np.float32).reshape(nq, -1), m_shape, (0,) * bits


def _block(nq: int, M: int, K: int) -> int:
    threads = nb.get_num_threads()
    by_cache = max(1, _TABLE_BYTES // (4 * M * K))
    # enough blocks to keep every thread busy
    return int(max(1, min(8, by_cache, -(-nq // threads))))


@nb.njit(inline="always")
def _distance(t, qb, db_bias_i, row, M, K):
    acc = db_bias_i + qb
    for m in range(M):
        acc += t[m * K + row[m]]
    return acc


@nb.njit(inline="always")
def _sums2(rows, base, M, K, t0, t1, a0, a1):
    """Add one code's table entries to two queries' distances (the code's bytes are read once)."""
    for m in range(M):
        c = m * K + rows[base + m]
        a0 += t0[c]
        a1 += t1[c]
    return a0, a1


@nb.njit(inline="always")
def _sums4(rows, base, M, K, t0, t1, t2, t3, a0, a1, a2, a3):
    for m in range(M):
        c = m * K + rows[base + m]
        a0 += t0[c]
        a1 += t1[c]
        a2 += t2[c]
        a3 += t3[c]
    return a0, a1, a2, a3


@nb.njit(inline="always")
def _first_k(t, flat, db_bias, qb, M, K, heap_d, heap_i, k):
    """Fill a query's heap with codes 0..k-1; return its worst distance."""
    for i in range(k):
        heap_push(heap_d, heap_i, i, _distance(t, qb, db_bias[i], flat[i * M:], M, K), i)
    return heap_d[0]


@nb.njit(inline="always")
def _replace_root(heap_d, heap_i, k, d, i):
    """Put (d, i) in place of the heap's worst pair; return the new worst distance."""
    heap_d[0] = d
    heap_i[0] = i
    sift_down(heap_d, heap_i, k)
    return heap_d[0]


@nb.njit(parallel=True, cache=True)
def _adc_knn(tables, codes, db_bias, q_bias, k, block, m_shape, k_bits):
    M = len(m_shape)
    K = 1 << len(k_bits)
    # four queries' tables (4 * M * K floats) within half of L1, else two
    G = 4 if 16 * M * K <= _TILE_BYTES * 2 else 2
    nq = tables.shape[0]
    n = codes.shape[0]
    flat = codes.reshape(n * M)
    tile = max(1, _TILE_BYTES // M)
    out_d = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    n_blocks = (nq + block - 1) // block
    for b in nb.prange(n_blocks):
        q0 = b * block
        nb_q = min(nq, q0 + block) - q0
        heap_d = np.empty((nb_q, k), dtype=np.float32)
        heap_i = np.empty((nb_q, k), dtype=np.int64)
        # a lane past the block's last query repeats it with a worst distance of -inf, so it never
        # enters a heap
        top = np.full(G * ((nb_q + G - 1) // G), -np.inf, dtype=np.float32)
        for j in range(nb_q):
            top[j] = _first_k(tables[q0 + j], flat, db_bias, q_bias[q0 + j], M, K, heap_d[j], heap_i[j], k)
        for i0 in range(k, n, tile):
            m_ = min(n, i0 + tile) - i0
            rows = flat[i0 * M:(i0 + m_) * M]
            bias = db_bias[i0:i0 + m_]
            for g in range(0, nb_q, G):
                j0, j1 = g, min(g + 1, nb_q - 1)
                w0, w1 = top[g], top[g + 1]
                if G == 4:
                    j2, j3 = min(g + 2, nb_q - 1), min(g + 3, nb_q - 1)
                    w2, w3 = top[g + 2], top[g + 3]
                    t0, t1, t2, t3 = tables[q0 + j0], tables[q0 + j1], tables[q0 + j2], tables[q0 + j3]
                    b0, b1, b2, b3 = q_bias[q0 + j0], q_bias[q0 + j1], q_bias[q0 + j2], q_bias[q0 + j3]
                    for ii in range(m_):
                        a0, a1, a2, a3 = _sums4(rows, ii * M, M, K, t0, t1, t2, t3,
                                                bias[ii] + b0, bias[ii] + b1, bias[ii] + b2, bias[ii] + b3)
                        # a later position never beats an equal distance, so < keeps the tie rule
                        if a0 < w0 or a1 < w1 or a2 < w2 or a3 < w3:
                            if a0 < w0:
                                w0 = _replace_root(heap_d[j0], heap_i[j0], k, a0, i0 + ii)
                            if a1 < w1:
                                w1 = _replace_root(heap_d[j1], heap_i[j1], k, a1, i0 + ii)
                            if a2 < w2:
                                w2 = _replace_root(heap_d[j2], heap_i[j2], k, a2, i0 + ii)
                            if a3 < w3:
                                w3 = _replace_root(heap_d[j3], heap_i[j3], k, a3, i0 + ii)
                    top[g + 2], top[g + 3] = w2, w3
                else:
                    t0, t1 = tables[q0 + j0], tables[q0 + j1]
                    b0, b1 = q_bias[q0 + j0], q_bias[q0 + j1]
                    for ii in range(m_):
                        a0, a1 = _sums2(rows, ii * M, M, K, t0, t1, bias[ii] + b0, bias[ii] + b1)
                        if a0 < w0 or a1 < w1:
                            if a0 < w0:
                                w0 = _replace_root(heap_d[j0], heap_i[j0], k, a0, i0 + ii)
                            if a1 < w1:
                                w1 = _replace_root(heap_d[j1], heap_i[j1], k, a1, i0 + ii)
                top[g], top[g + 1] = w0, w1
        for j in range(nb_q):
            heap_drain(heap_d[j], heap_i[j], k, out_d[q0 + j], out_i[q0 + j])
    return out_d, out_i


@nb.njit(parallel=True, cache=True)
def _adc_rank(tables, codes, db_bias, q_bias, k, block, m_shape, k_bits):
    M = len(m_shape)
    K = 1 << len(k_bits)
    nq = tables.shape[0]
    n = codes.shape[0]
    flat = codes.reshape(n * M)
    tile = max(1, _TILE_BYTES // M)
    out_d = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    n_blocks = (nq + block - 1) // block
    for b in nb.prange(n_blocks):
        q0 = b * block
        nb_q = min(nq, q0 + block) - q0
        # one spare row: an odd block's second lane writes there
        dist = np.empty((nb_q + 1, n), dtype=np.float32)
        for i0 in range(0, n, tile):
            m_ = min(n, i0 + tile) - i0
            rows = flat[i0 * M:(i0 + m_) * M]
            bias = db_bias[i0:i0 + m_]
            for g in range(0, nb_q, 2):
                j1 = min(g + 1, nb_q - 1)
                t0, t1 = tables[q0 + g], tables[q0 + j1]
                b0, b1 = q_bias[q0 + g], q_bias[q0 + j1]
                d0, d1 = dist[g, i0:i0 + m_], dist[g + 1, i0:i0 + m_]
                for ii in range(m_):
                    d0[ii], d1[ii] = _sums2(rows, ii * M, M, K, t0, t1, bias[ii] + b0, bias[ii] + b1)
        for j in range(nb_q):
            order = stable_argsort_f32(dist[j])
            for p in range(k):
                out_i[q0 + j, p] = order[p]
                out_d[q0 + j, p] = dist[j, order[p]]
    return out_d, out_i


@nb.njit(inline="always")
def _scalar_range(t, flat, db_bias, qb, start, stop, M, K, heap_d, heap_i, k, worst):
    """Offer codes start..stop-1 (in position order) to a full heap; return the new worst distance."""
    for i in range(start, stop):
        d = _distance(t, qb, db_bias[i], flat[i * M:], M, K)
        if d < worst:
            worst = _replace_root(heap_d, heap_i, k, d, i)
    return worst


@nb.njit(parallel=True, cache=True)
def _adc_knn_gather(tables, codes, groups, db_bias, q_bias, k, block, K):
    """:func:`_adc_knn`'s result through :func:`~deepcodes.index.simd.gather_sums8`: each query
    sums eight codes at once from its table, one gather per sub-quantizer, over tiles of ``groups``
    (see :func:`group_codes`) that stay in L1 while every query of the block scans them. Codes
    before the first whole group past k, and the last n mod 8, are summed one at a time."""
    nq = tables.shape[0]
    n, M = codes.shape
    flat = codes.reshape(n * M)
    n_groups = n // LANES
    first = (k + LANES - 1) // LANES
    prefix_end = min(n, first * LANES)
    tail_start = max(prefix_end, n_groups * LANES)
    tile = max(1, _TILE_BYTES // (LANES * M))
    out_d = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    n_blocks = (nq + block - 1) // block
    for b in nb.prange(n_blocks):
        q0 = b * block
        nb_q = min(nq, q0 + block) - q0
        heap_d = np.empty((nb_q, k), dtype=np.float32)
        heap_i = np.empty((nb_q, k), dtype=np.int64)
        top = np.empty(nb_q, dtype=np.float32)
        sums = np.empty(LANES, dtype=np.float32)
        for j in range(nb_q):
            t = tables[q0 + j]
            qb = q_bias[q0 + j]
            worst = _first_k(t, flat, db_bias, qb, M, K, heap_d[j], heap_i[j], k)
            top[j] = _scalar_range(t, flat, db_bias, qb, k, prefix_end, M, K, heap_d[j], heap_i[j], k, worst)
        for g0 in range(first, n_groups, tile):
            g1 = min(n_groups, g0 + tile)
            for j in range(nb_q):
                t = tables[q0 + j]
                qb = q_bias[q0 + j]
                worst = top[j]
                for g in range(g0, g1):
                    if gather_sums8(t, groups, g * LANES * M, M, K, db_bias, g * LANES, qb, worst, sums):
                        # lanes in position order, each against the bound its predecessors left
                        for lane in range(LANES):
                            if sums[lane] < worst:
                                worst = _replace_root(heap_d[j], heap_i[j], k, sums[lane], g * LANES + lane)
                top[j] = worst
        for j in range(nb_q):
            _scalar_range(tables[q0 + j], flat, db_bias, q_bias[q0 + j], tail_start, n, M, K, heap_d[j], heap_i[j], k,
                          top[j])
            heap_drain(heap_d[j], heap_i[j], k, out_d[q0 + j], out_i[q0 + j])
    return out_d, out_i


@nb.njit(parallel=True, cache=True)
def _adc_rank_gather(tables, codes, groups, db_bias, q_bias, k, block, K):
    """:func:`_adc_rank`'s result, the distances summed as :func:`_adc_knn_gather` sums them."""
    nq = tables.shape[0]
    n, M = codes.shape
    flat = codes.reshape(n * M)
    n_groups = n // LANES
    tile = max(1, _TILE_BYTES // (LANES * M))
    out_d = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    n_blocks = (nq + block - 1) // block
    never = np.float32(-np.inf)
    for b in nb.prange(n_blocks):
        q0 = b * block
        nb_q = min(nq, q0 + block) - q0
        dist = np.empty((nb_q, n), dtype=np.float32)
        for g0 in range(0, n_groups, tile):
            g1 = min(n_groups, g0 + tile)
            for j in range(nb_q):
                t = tables[q0 + j]
                qb = q_bias[q0 + j]
                row = dist[j]
                for g in range(g0, g1):
                    gather_sums8(t, groups, g * LANES * M, M, K, db_bias, g * LANES, qb, never, row[g * LANES:])
        for j in range(nb_q):
            t = tables[q0 + j]
            for i in range(n_groups * LANES, n):
                dist[j, i] = _distance(t, q_bias[q0 + j], db_bias[i], flat[i * M:], M, K)
            order = stable_argsort_f32(dist[j])
            for p in range(k):
                out_i[q0 + j, p] = order[p]
                out_d[q0 + j, p] = dist[j, order[p]]
    return out_d, out_i


# Fewest sub-codes for which the gather kernels were faster than the scalar ones (module docstring).
_GATHER_MIN_M = 8


def gathers_pay(M: int) -> bool:
    """Whether :func:`adc_knn` and :func:`adc_rank` take the gather kernels for M sub-codes."""
    return HAVE_AVX2 and M >= _GATHER_MIN_M


def group_codes(codes: np.ndarray) -> np.ndarray:
    """Codes (n, M) uint8 regrouped for the gather kernels: the first 8 * (n // 8) codes in groups
    of 8, sub-code-major (group g's sub-code m of code l at ``(g * M + m) * 8 + l``), flat uint8.
    The last n mod 8 codes are left out (the kernels read them from ``codes``)."""
    n, M = codes.shape
    whole = (n // LANES) * LANES
    return np.ascontiguousarray(codes[:whole].reshape(-1, LANES, M).transpose(0, 2, 1)).reshape(-1)


def _search(scalar_kernel, gather_kernel, tables, codes, db_bias, q_bias, k, groups, gather):
    nq, M, K = tables.shape
    flat, m_shape, k_bits = _shape_args(tables)
    block = _block(nq, M, 1 << len(k_bits))
    codes, db_bias, q_bias = read_only(codes), read_only(db_bias), read_only(q_bias)
    if gathers_pay(M) if gather is None else gather:
        groups = group_codes(codes) if groups is None else groups
        return gather_kernel(read_only(flat), codes, read_only(groups), db_bias, q_bias, k, block, 1 << len(k_bits))
    return scalar_kernel(read_only(flat), codes, db_bias, q_bias, k, block, m_shape, k_bits)


def adc_knn(tables, codes, db_bias, q_bias, k, groups=None, gather=None):
    """ADC k-NN: the k smallest distances per query, ties broken by database position.

    ``tables`` (nq, M, K) float32, ``codes`` (n, M) uint8 (C-contiguous), ``db_bias`` (n,) and
    ``q_bias`` (nq,) float32; 1 <= k <= n. ``groups``: :func:`group_codes` of ``codes`` when the
    caller keeps them (else made here when the gather kernel runs); ``gather``: force the gather
    kernel (True, AVX2 only) or the scalar one (False) instead of :func:`gathers_pay`'s choice.
    Returns ``(distances (nq, k) float32, positions (nq, k) int64)`` in (distance, position) order;
    both kernels give the same float32 distances bit for bit.
    """
    return _search(_adc_knn, _adc_knn_gather, tables, codes, db_bias, q_bias, k, groups, gather)


def adc_rank(tables, codes, db_bias, q_bias, k, groups=None, gather=None):
    """ADC k-NN for large k (a full ranking): all distances, then a stable radix sort per query.
    Arguments and result as :func:`adc_knn`'s; memory ``block * n`` floats per thread."""
    return _search(_adc_rank, _adc_rank_gather, tables, codes, db_bias, q_bias, k, groups, gather)
