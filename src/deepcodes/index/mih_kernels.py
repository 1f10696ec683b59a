"""Numba kernels of multi-index hashing: substring extraction and the growing-radius k-NN search.

A code of ``W`` 64-bit words is cut into ``m`` substrings of contiguous bits; substring ``j`` starts
at bit ``sub_off[j]`` of word ``sub_word[j]`` and is ``sub_width[j]`` (<= 32) bits long, possibly
running into the next word.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..knn.hamming import popcount64
from ..knn.heap import heap_push, sift_down

_ONE = np.uint64(1)
_SIXTY_FOUR = np.uint64(64)


@nb.njit(inline="always")
def _substring(x, word, off, width):
    v = x[word] >> np.uint64(off)
    if off + width > 64:
        v |= x[word + 1] << (_SIXTY_FOUR - np.uint64(off))
    return v & ((_ONE << np.uint64(width)) - _ONE)


@nb.njit(parallel=True, cache=True)
def substring_values(words, sub_word, sub_off, sub_width):
    """Substring values (m, n) uint32 of codes ``words`` (n, W) uint64."""
    n = words.shape[0]
    m = sub_word.shape[0]
    out = np.empty((m, n), dtype=np.uint32)
    for i in nb.prange(n):
        for j in range(m):
            out[j, i] = np.uint32(_substring(words[i], sub_word[j], sub_off[j], sub_width[j]))
    return out


@nb.njit(inline="always")
def _binomial(n, r):
    out = 1.0
    for i in range(r):
        out = out * (n - i) / (i + 1)
    return out


def _make_mih_knn(W):
    # W (64-bit words per code) is a compile-time constant, so the word loops unroll. numba keys its
    # disk cache of a closure on the closure's values too: one cached kernel per W.
    @nb.njit(parallel=True, cache=True)
    def mih_knn(queries, tables, offsets, sub_word, sub_off, sub_width, k, budget):
        """Exact Hamming k-NN by multi-index hashing (Norouzi, Punjani & Fleet, 2012).

        ``tables`` (m, n, W + 1) holds, for each substring j, every code sorted by its substring-j
        value, each row followed by the code's id (so a bucket is one contiguous run of memory), and
        ``offsets`` (m, 2^s + 1) the bucket starts.
        Probes go in the order (r, j) for r = 0, 1, ... and j = 0..m-1; probe (r, j) visits every
        bucket of table j at substring distance exactly r from the query. After probe (r, j), a code
        never seen differs in at least r + 1 bits on substrings 0..j and at least r on the others, so
        every code within Hamming distance m*r + j has been seen: once k codes are kept and the k-th
        distance is at most that radius, the result is final. The kept set is a max-heap on
        (distance, id), so ties go to the lower id exactly as in a linear scan.
        A code turns up once per substring; it is counted only at its first probe, the smallest
        (substring distance, j), which its substring distances tell without any visited set.

        ``work[q]`` counts the buckets probed plus the codes verified for query q. A query whose work
        passes ``budget``, or would be expected to in its next probe, is abandoned (its output rows
        are left unset) with ``work[q] = -1``: far neighbours make the probes multiply, and a linear
        scan is then cheaper.
        """
        nq = queries.shape[0]
        n = tables.shape[1]
        m = sub_word.shape[0]
        max_width = 0
        for j in range(m):
            max_width = max(max_width, sub_width[j])
        out_d = np.empty((nq, k), dtype=np.int32)
        out_i = np.empty((nq, k), dtype=np.int64)
        work = np.zeros(nq, dtype=np.int64)
        for qi in nb.prange(nq):
            q = queries[qi]
            qsub = np.empty(m, dtype=np.uint64)
            for j in range(m):
                qsub[j] = _substring(q, sub_word[j], sub_off[j], sub_width[j])
            heap_d = np.empty(k, dtype=np.int64)
            heap_i = np.empty(k, dtype=np.int64)
            x = np.empty(W, dtype=np.uint64)
            size = 0
            done = False
            spent = 0
            for r in range(max_width + 1):
                for j in range(m):
                    width = sub_width[j]
                    if r <= width:
                        # Give up before a probe whose expected work (buckets times their mean
                        # size) would pass the budget, rather than after wasting it.
                        expected = _binomial(width, r) * (1.0 + n / (1 << width))
                        if spent + expected > budget:
                            spent = budget + 1
                            done = True
                            break
                        # Gosper's hack: every width-bit mask with r bits set, in increasing order.
                        mask = (_ONE << np.uint64(r)) - _ONE
                        limit = _ONE << np.uint64(width)
                        while mask < limit:
                            v = qsub[j] ^ mask
                            lo = offsets[j, v]
                            hi = offsets[j, v + 1]
                            spent += 1 + hi - lo
                            if spent > budget:
                                done = True
                                break
                            for p in range(lo, hi):
                                acc = np.uint64(0)
                                for w in range(W):
                                    x[w] = q[w] ^ tables[j, p, w]
                                    acc += popcount64(x[w])
                                d = np.int64(acc)
                                if size == k and d > heap_d[0]:
                                    continue
                                idx = np.int64(tables[j, p, W])
                                if size == k and d == heap_d[0] and idx > heap_i[0]:
                                    continue
                                first = True
                                for jj in range(m):
                                    if jj != j:
                                        dj = np.int64(popcount64(_substring(x, sub_word[jj], sub_off[jj], sub_width[jj])))
                                        if dj < r or (dj == r and jj < j):
                                            first = False
                                            break
                                if not first:
                                    continue
                                if size < k:
                                    heap_push(heap_d, heap_i, size, d, idx)
                                    size += 1
                                else:
                                    heap_d[0] = d
                                    heap_i[0] = idx
                                    sift_down(heap_d, heap_i, size)
                            if mask == 0:
                                break
                            low = mask & (~mask + _ONE)
                            ripple = mask + low
                            mask = (((ripple ^ mask) >> np.uint64(2)) // low) | ripple
                    if done or (size == k and heap_d[0] <= m * r + j):
                        done = True
                        break
                if done:
                    break
            if spent > budget:
                work[qi] = -1
                continue
            work[qi] = spent
            for p in range(size - 1, -1, -1):
                out_d[qi, p] = heap_d[0]
                out_i[qi, p] = heap_i[0]
                heap_d[0] = heap_d[p]
                heap_i[0] = heap_i[p]
                sift_down(heap_d, heap_i, p)
        return out_d, out_i, work
    return mih_knn


_MIH_KERNELS = {}


def mih_knn(queries, tables, offsets, sub_word, sub_off, sub_width, k, budget):
    """Exact Hamming k-NN by multi-index hashing (see _make_mih_knn), compiled once per word count."""
    W = queries.shape[1]
    if W not in _MIH_KERNELS:
        _MIH_KERNELS[W] = _make_mih_knn(W)
    return _MIH_KERNELS[W](queries, tables, offsets, sub_word, sub_off, sub_width, k, budget)
