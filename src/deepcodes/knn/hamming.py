"""Exact Hamming k-NN over packed binary codes: popcount, the blocked scan kernel, and the
stateless search every Hamming index and validator shares.

Results are, per query, the k smallest (distance, position) pairs in lexicographic order: exactly a
stable sort of all distances.
"""
from __future__ import annotations

import numba as nb
import numpy as np

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)


@nb.njit(inline="always")
def popcount64(x):
    # LLVM turns this idiom into a single popcnt instruction where the CPU has one.
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


@nb.njit(cache=True)
def _compact(cand_d, cand_i, count, k, n_bits):
    """Keep the k best of ``count`` candidates (ids ascending) in place; return the new distance
    threshold t: the kept set is every candidate with d < t plus the lowest-id ones with d == t."""
    hist = np.zeros(n_bits + 2, dtype=np.int64)
    for c in range(count):
        hist[cand_d[c]] += 1
    below = 0
    t = 0
    while below + hist[t] < k:
        below += hist[t]
        t += 1
    need_at_t = k - below
    kept = 0
    for c in range(count):
        d = cand_d[c]
        if d < t or (d == t and need_at_t > 0):
            if d == t:
                need_at_t -= 1
            cand_d[kept] = d
            cand_i[kept] = cand_i[c]
            kept += 1
    return t


def _make_hamming_knn(W):
    # W (64-bit words per code) is a compile-time constant, so the word loop unrolls. Cached: numba
    # keys the cache on the closure's W, and a fresh process (a server, a shard actor) then loads
    # the kernel instead of spending ~15 s compiling it.
    @nb.njit(parallel=True, cache=True)
    def hamming_knn(queries, database, k, n_bits, block, capacity):
        """Exact Hamming k-NN. ``queries`` (nq, W) and ``database`` (n, W) are uint64 words.

        Queries are taken ``block`` at a time so each database word is read once per block. Each query
        keeps a candidate buffer (ids ascending) and an acceptance bound; when the buffer fills it is cut
        to the k best by a counting pass, after which only strictly closer codes can enter (an equal
        distance with a higher id never beats a kept one). A final counting sort gives the exact
        (distance, id) order.
        """
        nq = queries.shape[0]
        n = database.shape[0]
        out_d = np.empty((nq, k), dtype=np.int32)
        out_i = np.empty((nq, k), dtype=np.int64)
        n_blocks = (nq + block - 1) // block
        for b in nb.prange(n_blocks):
            q0 = b * block
            nb_q = min(nq, q0 + block) - q0
            cand_d = np.empty((nb_q, capacity), dtype=np.int32)
            cand_i = np.empty((nb_q, capacity), dtype=np.int64)
            count = np.zeros(nb_q, dtype=np.int64)
            bound = np.full(nb_q, n_bits, dtype=np.int64)
            # Database tiles small enough to stay in L1 while every query of the block scans them.
            for i0 in range(0, n, 2048):
                i1 = min(n, i0 + 2048)
                for j in range(nb_q):
                    q = queries[q0 + j]
                    bj = bound[j]
                    for i in range(i0, i1):
                        acc = np.uint64(0)
                        for w in range(W):
                            acc += popcount64(q[w] ^ database[i, w])
                        d = np.int64(acc)
                        if d <= bj:
                            c = count[j]
                            cand_d[j, c] = d
                            cand_i[j, c] = i
                            count[j] = c + 1
                            if c + 1 == capacity:
                                t = _compact(cand_d[j], cand_i[j], capacity, k, n_bits)
                                count[j] = k
                                bj = t - 1
                    bound[j] = bj
            for j in range(nb_q):
                cnt = count[j]
                if cnt > k:
                    _compact(cand_d[j], cand_i[j], cnt, k, n_bits)
                # counting sort by distance; candidates are in id order, so ties stay in id order
                hist = np.zeros(n_bits + 2, dtype=np.int64)
                for c in range(k):
                    hist[cand_d[j, c] + 1] += 1
                for d in range(1, n_bits + 2):
                    hist[d] += hist[d - 1]
                for c in range(k):
                    d = cand_d[j, c]
                    p = hist[d]
                    hist[d] = p + 1
                    out_d[q0 + j, p] = d
                    out_i[q0 + j, p] = cand_i[j, c]
        return out_d, out_i
    return hamming_knn


_HAMMING_KERNELS = {}


def hamming_knn(queries, database, k, n_bits, block, capacity):
    """Exact Hamming k-NN (see _make_hamming_knn), compiled once per number of 64-bit words."""
    W = queries.shape[1]
    if W not in _HAMMING_KERNELS:
        _HAMMING_KERNELS[W] = _make_hamming_knn(W)
    return _HAMMING_KERNELS[W](queries, database, k, n_bits, block, capacity)


def to_words(codes: np.ndarray) -> np.ndarray:
    """View packed codes (n, B) uint8 as (n, ceil(B/8)) uint64 words, zero-padded (no distance change)."""
    n, nbytes = codes.shape
    n_words = -(-nbytes // 8)
    if nbytes == 8 * n_words:
        return np.ascontiguousarray(codes).view(np.uint64)
    padded = np.zeros((n, 8 * n_words), dtype=np.uint8)
    padded[:, :nbytes] = codes
    return padded.view(np.uint64)


def hamming_search(query_codes: np.ndarray, database_words: np.ndarray, k: int, n_bits: int,
                   batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """k nearest database codes of packed ``query_codes`` (nq, B) uint8 among ``database_words``
    (n, W) uint64 (see :func:`to_words`): ``(distances (nq, k) int32, positions (nq, k) int64)`` in
    (distance, position) order. Inputs are trusted (checked by the caller); 1 <= k <= n."""
    n = database_words.shape[0]
    capacity = min(n, max(2 * k, k + 1024))
    # Blocks of queries share each database pass; the block shrinks when candidate buffers are big.
    block = int(max(1, min(16, -(-query_codes.shape[0] // 2), (1 << 22) // capacity)))
    out_d = np.empty((query_codes.shape[0], k), dtype=np.int32)
    out_i = np.empty((query_codes.shape[0], k), dtype=np.int64)
    for s in range(0, query_codes.shape[0], batch_size):
        qw = to_words(query_codes[s:s + batch_size])
        out_d[s:s + batch_size], out_i[s:s + batch_size] = hamming_knn(qw, database_words, k, n_bits, block, capacity)
    return out_d, out_i
