"""Numba kernels of multi-index hashing: substring extraction and the growing-radius k-NN search.

A code of ``W`` 64-bit words is cut into ``m`` substrings of contiguous bits; substring ``j`` starts
at bit ``sub_off[j]`` of word ``sub_word[j]`` and is ``sub_width[j]`` (<= 32) bits long, possibly
running into the next word.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..knn.arrays import read_only
from ..knn.hamming import popcount64
from ..knn.heap import heap_drain, heap_push, sift_down
from .simd import prefetch

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


# What the search costs, in nanoseconds per bucket probed, per code verified from a bucket (a
# prefetched run of codes and a full-length distance each) and per code of the blocked linear scan
# (vectorized popcounts over a stream). Fitted on one thread by least squares of search time on
# buckets probed and codes verified (1M random 64- and 128-bit codes and 1M ITQ-64 codes of
# SIFT1M-CIFAR, m = 3..10, k = 1, 10, 100, groups of 30 queries; median relative error 17%), the
# scan's from HammingIndex on the same codes, on the 2-core AMD EPYC machines of this project.
BUCKET_NS = 30.0
VERIFY_NS = 1.4
VERIFY_NS_PER_WORD = 2.6
SCAN_NS_PER_CODE = 0.56
SCAN_NS_PER_WORD = 0.26
# Database codes a query's distance profile is read from before any probe (a strided sample).
PROFILE_CODES = 1024
# Buckets whose offsets are read ahead of their codes, and how many buckets ahead a run of codes is
# prefetched (4 measured best of 0, 2, 4, 8, 16 on 1M ITQ-64 codes, k = 10: 1.2-1.3x the search
# without prefetching, same results).
BUCKET_GROUP = 256
PREFETCH_AHEAD = 4
# The smallest profile distances the local fit of the lower tail uses.
_PROFILE_ORDER = 8


@nb.njit(inline="always")
def _normal_quantile(p):
    """Φ⁻¹(p) for 0 < p <= 0.5 (Abramowitz & Stegun 26.2.23, |error| < 4.5e-4)."""
    t = np.sqrt(-2.0 * np.log(p))
    return -(t - (2.515517 + 0.802853 * t + 0.010328 * t * t) / (1.0 + 1.432788 * t + 0.189269 * t * t
                                                                 + 0.001308 * t * t * t))


def profile_sample(words: np.ndarray) -> np.ndarray:
    """The codes a query's distance profile is read from: a strided sample of ``words`` (n, W)
    uint64, at most ``PROFILE_CODES`` rows and one in 64, copied into one contiguous array so that
    reading it costs cache hits, not one memory access per sampled code."""
    n = words.shape[0]
    s = min(PROFILE_CODES, max(1, n // 64))
    return np.ascontiguousarray(words[::n // s][:s])


@nb.njit(inline="always")
def _estimated_kth_distance(q, sample, n, W, k, n_bits):
    """The query's k-th neighbour distance among n codes estimated from its distance profile, the
    distances to the s codes of ``sample`` (see :func:`profile_sample`): the larger of two
    normal-tail extrapolations to the quantile k / n, one from the profile's mean and deviation
    (right for random-like codes), one fitted to its 8 smallest distances (closer for learned
    codes, whose near tail is heavier). Both tend to fall short of the truth on learned codes, which
    the checks during the search make up for."""
    s = sample.shape[0]
    J = min(_PROFILE_ORDER, s)
    low = np.full(J, n_bits + 1.0)
    total = 0.0
    total_sq = 0.0
    for t in range(s):
        row = sample[t]
        acc = np.uint64(0)
        for w in range(W):
            acc += popcount64(q[w] ^ row[w])
        d = float(acc)
        total += d
        total_sq += d * d
        if d < low[J - 1]:
            p = J - 1
            while p > 0 and low[p - 1] > d:
                low[p] = low[p - 1]
                p -= 1
            low[p] = d
    if s < 2 * J:
        return 0.0
    zk = _normal_quantile(min(0.5, k / n))
    mean = total / s
    sd = np.sqrt(max(0.0, total_sq / s - mean * mean))
    # least-squares line through (z_j, j-th smallest distance), z_j = Φ⁻¹(j / (s + 1))
    sz = szz = sd_ = szd = 0.0
    for j in range(J):
        z = _normal_quantile((j + 1.0) / (s + 1.0))
        sz += z
        szz += z * z
        sd_ += low[j]
        szd += z * low[j]
    slope = (J * szd - sz * sd_) / max(1e-12, J * szz - sz * sz)
    local = (sd_ - slope * sz) / J + slope * zk
    return max(0.0, mean + sd * zk, local)


@nb.njit(inline="always")
def _verify_run(q, tables, j, lo, hi, r, sub_word, sub_off, sub_width, W, k, heap_d, heap_i, size, x):
    """Offer the codes of rows ``lo:hi`` of table ``j`` (a bucket at substring distance ``r``) to
    the (distance, id) max-heap of at most ``k`` pairs holding ``size``; returns its new size. A
    code is counted only at its first probe, the smallest (substring distance, table), which its
    other substrings' distances tell; ``x`` (W,) is scratch for the code XOR the query."""
    m = sub_word.shape[0]
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
    return size


@nb.njit(parallel=True, cache=True)
def _mih_knn(queries, tables, offsets, sub_word, sub_off, sub_width, sample, k, budget, w_shape):
    """Exact Hamming k-NN by multi-index hashing (Norouzi, Punjani & Fleet, 2012).

    ``tables`` (m, n, W + 1) holds, for each substring j, every code sorted by its substring-j
    value, each row followed by the code's id (so a bucket is one contiguous run of memory), and
    ``offsets`` (m, 2^s + 1) the bucket starts. W is ``len(w_shape)`` (a compile-time constant).
    Probes go in the order (r, j) for r = 0, 1, ... and j = 0..m-1; probe (r, j) visits every
    bucket of table j at substring distance exactly r from the query. After probe (r, j), a code
    never seen differs in at least r + 1 bits on substrings 0..j and at least r on the others, so
    every code within Hamming distance m*r + j has been seen: once k codes are kept and the k-th
    distance is at most that radius, the result is final. The kept set is a max-heap on
    (distance, id), so ties go to the lower id exactly as in a linear scan.
    A code turns up once per substring; it is counted only at its first probe, the smallest
    (substring distance, j), which its substring distances tell without any visited set.

    Cost control: ``budget`` is the number of codes the linear scan would read (their cost is
    ``SCAN_NS_PER_CODE`` plus ``SCAN_NS_PER_WORD`` per word). Before every probe the cost still
    needed is estimated: the probes up to the radius that certifies the k-th distance, which is at
    least the radius certified so far plus one, at most the current k-th best, and estimated from
    the query's distance profile in between (from the second round on: the exact-match round r = 0 is only weighed by itself);
    a probe costs its buckets (``BUCKET_NS`` each) and the codes a bucket holds on average
    (``VERIFY_NS`` each). A query whose spent plus still-needed cost passes the scan's is abandoned
    at once, most far ones after the m exact-match probes (its output rows are left unset,
    ``work[q] = -1``): the caller answers it by the linear scan. ``work[q]`` otherwise counts the buckets probed plus the codes verified.
    """
    W = len(w_shape)
    nq = queries.shape[0]
    n = tables.shape[1]
    m = sub_word.shape[0]
    n_bits = 0
    max_width = 0
    for j in range(m):
        max_width = max(max_width, sub_width[j])
        n_bits += sub_width[j]
    scan_ns = budget * (SCAN_NS_PER_CODE + SCAN_NS_PER_WORD * W)
    verify_ns = VERIFY_NS + VERIFY_NS_PER_WORD * W
    out_d = np.empty((nq, k), dtype=np.int32)
    out_i = np.empty((nq, k), dtype=np.int64)
    work = np.zeros(nq, dtype=np.int64)
    for qi in nb.prange(nq):
        q = queries[qi]
        qsub = np.empty(m, dtype=np.uint64)
        for j in range(m):
            qsub[j] = _substring(q, sub_word[j], sub_off[j], sub_width[j])
        estimate = _estimated_kth_distance(q, sample, n, W, k, n_bits)
        heap_d = np.empty(k, dtype=np.int64)
        heap_i = np.empty(k, dtype=np.int64)
        x = np.empty(W, dtype=np.uint64)
        starts = np.empty(BUCKET_GROUP, dtype=np.int64)
        stops = np.empty(BUCKET_GROUP, dtype=np.int64)
        size = 0
        done = False
        abandoned = False
        buckets = 0
        verified = 0
        for r in range(max_width + 1):
            for j in range(m):
                width = sub_width[j]
                if r > width:
                    # no bucket at this distance: the certified radius still grows
                    if size == k and heap_d[0] <= m * r + j:
                        done = True
                        break
                    continue
                # The radius that will certify the k-th distance, and the expected cost of the
                # probes from (r, j) up to it (buckets of the mean size). The exact-match round
                # (r = 0, m buckets) is always tried unless it alone costs more than the scan: a
                # near duplicate, which a sampled profile cannot see, is found there.
                target = max(np.ceil(estimate), m * r + j) if r > 0 else m * r + j
                if size == k:
                    target = min(target, heap_d[0])
                need = 0.0
                rr, jj = r, j
                while m * rr + jj <= target and rr <= max_width:
                    if rr <= sub_width[jj]:
                        need += _binomial(sub_width[jj], rr) * (BUCKET_NS + verify_ns * n / (1 << sub_width[jj]))
                    jj += 1
                    if jj == m:
                        jj = 0
                        rr += 1
                if buckets * BUCKET_NS + verified * verify_ns + need > scan_ns:
                    abandoned = True
                    break
                # The probe's buckets go in groups: first their (start, stop) offsets, loads that do
                # not wait on each other, then their runs of codes, each prefetched a few buckets
                # ahead, so that the cache misses of short runs scattered over a large table overlap.
                # Gosper's hack: every width-bit mask with r bits set, in increasing order.
                mask = (_ONE << np.uint64(r)) - _ONE
                limit = _ONE << np.uint64(width)
                more = True
                while more:
                    n_group = 0
                    while more and n_group < BUCKET_GROUP:
                        v = qsub[j] ^ mask
                        starts[n_group] = offsets[j, v]
                        stops[n_group] = offsets[j, v + 1]
                        n_group += 1
                        if mask == 0:
                            more = False
                        else:
                            low = mask & (~mask + _ONE)
                            ripple = mask + low
                            mask = (((ripple ^ mask) >> np.uint64(2)) // low) | ripple
                            more = mask < limit
                    for t in range(min(PREFETCH_AHEAD, n_group)):
                        prefetch(tables, (j, starts[t]))
                    for t in range(n_group):
                        if t + PREFETCH_AHEAD < n_group:
                            prefetch(tables, (j, starts[t + PREFETCH_AHEAD]))
                        buckets += 1
                        verified += stops[t] - starts[t]
                        size = _verify_run(q, tables, j, starts[t], stops[t], r, sub_word, sub_off, sub_width,
                                           W, k, heap_d, heap_i, size, x)
                if size == k and heap_d[0] <= m * r + j:
                    done = True
                    break
            if done or abandoned:
                break
        if abandoned:
            work[qi] = -1
            continue
        work[qi] = buckets + verified
        heap_drain(heap_d, heap_i, size, out_d[qi], out_i[qi])
    return out_d, out_i, work


def mih_knn(queries, tables, offsets, sub_word, sub_off, sub_width, sample, k, budget):
    """Exact Hamming k-NN by multi-index hashing (see :func:`_mih_knn`; ``sample`` is
    :func:`profile_sample` of the codes): ``(distances (nq, k) int32, ids (nq, k) int64, work (nq,)
    int64)``, rows with ``work == -1`` left to the caller."""
    arrays = (queries, tables, offsets, sub_word, sub_off, sub_width, sample)
    return _mih_knn(*map(read_only, arrays), k, budget, (0,) * queries.shape[1])
