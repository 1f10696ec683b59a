"""Numba ADC kernels: exact asymmetric-distance k-NN over quantizer codes, ties broken by position.

Every kernel returns, per query, the k smallest (distance, position) pairs in lexicographic order,
so the result equals a stable sort of all distances. They run in parallel over queries.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..knn.heap import heap_push, sift_down
from ..knn.sort import stable_argsort_f32

# Queries per block in adc_knn. Larger blocks read each code row once per block, but their tables
# overflow L1 at M = 16 and measured slower (0.64x vs 0.9x faiss IndexPQ at 1M codes).
_ADC_BLOCK = 1


@nb.njit(parallel=True, cache=True)
def adc_rank(tables, codes, db_bias, q_bias, k):
    """ADC k-NN for large k (a full ranking): all distances, then a stable radix sort per query."""
    nq, M, _ = tables.shape
    n = codes.shape[0]
    out_d = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    for q in nb.prange(nq):
        t = tables[q]
        dist = np.empty(n, dtype=np.float32)
        for i in range(n):
            acc = db_bias[i] + q_bias[q]
            for m in range(M):
                acc += t[m, codes[i, m]]
            dist[i] = acc
        order = stable_argsort_f32(dist)
        for j in range(k):
            out_i[q, j] = order[j]
            out_d[q, j] = dist[order[j]]
    return out_d, out_i


@nb.njit(parallel=True, cache=True)
def adc_knn(tables, codes, db_bias, q_bias, k):
    """ADC k-NN: the k smallest asymmetric distances per query, ties broken by database id.

    Queries go ``_ADC_BLOCK`` at a time so each code row is read once per block, and a distance
    enters its query's heap only when it beats the current k-th (no distance array is written).
    """
    nq, M, _ = tables.shape
    n = codes.shape[0]
    out_d = np.empty((nq, k), dtype=np.float32)
    out_i = np.empty((nq, k), dtype=np.int64)
    n_blocks = (nq + _ADC_BLOCK - 1) // _ADC_BLOCK
    for b in nb.prange(n_blocks):
        q0 = b * _ADC_BLOCK
        nb_q = min(nq, q0 + _ADC_BLOCK) - q0
        heap_d = np.empty((nb_q, k), dtype=np.float32)
        heap_i = np.empty((nb_q, k), dtype=np.int64)
        top = np.full(nb_q, np.inf, dtype=np.float32)
        size = 0
        for i in range(n):
            row = codes[i]
            for j in range(nb_q):
                t = tables[q0 + j]
                acc = db_bias[i] + q_bias[q0 + j]
                for m in range(M):
                    acc += t[m, row[m]]
                if size < k:
                    heap_push(heap_d[j], heap_i[j], size, acc, i)
                    top[j] = heap_d[j, 0]
                elif acc < top[j]:
                    heap_d[j, 0] = acc
                    heap_i[j, 0] = i
                    sift_down(heap_d[j], heap_i[j], k)
                    top[j] = heap_d[j, 0]
            if size < k:
                size += 1
        for j in range(nb_q):
            for p in range(k - 1, -1, -1):
                out_d[q0 + j, p] = heap_d[j, 0]
                out_i[q0 + j, p] = heap_i[j, 0]
                heap_d[j, 0] = heap_d[j, p]
                heap_i[j, 0] = heap_i[j, p]
                sift_down(heap_d[j], heap_i[j], p)
    return out_d, out_i
