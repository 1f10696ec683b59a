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
  only the rare winner touches the heap.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..knn.arrays import read_only
from ..knn.heap import heap_drain, heap_push, sift_down
from ..knn.sort import stable_argsort_f32

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
            t = tables[q0 + j]
            for i in range(k):
                heap_push(heap_d[j], heap_i[j], i, _distance(t, q_bias[q0 + j], db_bias[i], flat[i * M:], M, K), i)
            top[j] = heap_d[j, 0]
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


def adc_knn(tables, codes, db_bias, q_bias, k):
    """ADC k-NN: the k smallest distances per query, ties broken by database position.

    ``tables`` (nq, M, K) float32, ``codes`` (n, M) uint8 (C-contiguous), ``db_bias`` (n,) and
    ``q_bias`` (nq,) float32; 1 <= k <= n. Returns ``(distances (nq, k) float32, positions (nq, k)
    int64)`` in (distance, position) order.
    """
    nq, M, K = tables.shape
    flat, m_shape, k_bits = _shape_args(tables)
    return _adc_knn(read_only(flat), read_only(codes), read_only(db_bias), read_only(q_bias), k,
                    _block(nq, M, 1 << len(k_bits)), m_shape, k_bits)


def adc_rank(tables, codes, db_bias, q_bias, k):
    """ADC k-NN for large k (a full ranking): all distances, then a stable radix sort per query.
    Arguments and result as :func:`adc_knn`'s; memory ``block * n`` floats per thread."""
    nq, M, K = tables.shape
    flat, m_shape, k_bits = _shape_args(tables)
    return _adc_rank(read_only(flat), read_only(codes), read_only(db_bias), read_only(q_bias), k,
                     _block(nq, M, 1 << len(k_bits)), m_shape, k_bits)
