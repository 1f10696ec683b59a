"""4-bit fast-scan kernels for VLQ-ADC: the segments' codes in blocks of 32, searched through 8-bit
tables held in SIMD registers (the block kernel of :mod:`deepcodes.index.fastscan_kernels`), the
shortlist re-ranked with VLQ-ADC's exact distance.

Why this splits. With T_A = P[A] - 2 qr[q] (see :mod:`deepcodes.index.ivf_kernels`), a code on the
segment (c_A, c_B) at position lambda is at exactly

    ||q - c_A||² + lambda (||q - c_B||² - ||q - c_A||²) + (lambda² - lambda) ||c_A - c_B||²
        + sum_m T_A[m, j_m] + lambda g,     g = sum_m (P[B] - P[A])[m, j_m] = 2 <c_B - c_A, r̂>

from the query. The first line is closed form per (segment, lambda); ``sum_m T_A`` is one 16-entry
table per sub-quantizer and probed centroid, which fast scan sums 32 codes at a time; ``g`` does not
depend on the query, so it is computed once per code when the codes are packed and kept as one
signed byte (scaled per centroid). The estimate replaces T_A by its 8-bit quantization
``round((T_A - min_j T_A[m]) * s_A)`` (one scale s_A per probed centroid) and g by its byte; the
``kprime`` smallest estimates (ties by row) are re-ranked by the exact distance.

Re-ranking where the codes are. A code admitted to the shortlist gets its exact distance at once,
from its block (in cache: it was just summed), the exact float T_A (built with the 8-bit table) and
its float g, kept beside the block: the exact kernel's arithmetic
(:func:`deepcodes.index.ivf_kernels.vlq_distance`, T_A summed in sub-quantizer order), so the
distances are the exact kernel's to the bit. Re-ranking the final shortlist by reading each row's
stored code, line term and id afterwards cost 300-470 ns a candidate on the AMD host (scattered
rows: cache misses each; 12-17 µs of a 50 µs query at k' = 40), where computing the
exact distance of the ~4 k' codes admitted during the scan costs a few µs; only the final top k's
ids are read from the scattered rows.

Layout. Each inverted list (one segment) is padded to whole blocks of 32 codes: list l's codes
occupy blocks ``block_offsets[l]:block_offsets[l + 1]``, row ``offsets[l] + i`` in slot
``32 * block_offsets[l] + i``, packed as :func:`deepcodes.index.fastscan_kernels.pack_codes` packs
them (the slots past a list's end are zero codes, never ranked); each code's lambda byte, line-term
byte and float line term sit in per-slot arrays in the block kernel's lane order.
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..knn.heap import heap_drain, heap_offer
from .fastscan_kernels import BLOCK, accumulate_block_scalar, block_accumulator, pack_codes, position_lane
from .ivf_kernels import centroid_table, query_segments, result_arrays, vlq_distance
from .simd import prefetch

_accumulate_one = block_accumulator(1)  # one query per pass: each query scans its own segments


def pack_lists(codes: np.ndarray, offsets: np.ndarray, g: np.ndarray, n_centroids: int, n_neighbors: int):
    """The search layout of VLQ codes (n, M + 1) in CSR lists ``offsets`` (nlist + 1,) with line
    terms ``g`` (n,) float32 (:func:`deepcodes.index.ivf_kernels.line_terms`):
    ``(block_offsets (nlist + 1,) int64, packed (n_blocks * ceil(M / 2) * 32,) uint8,
    lam (n_blocks * 32,) uint8, g8 (n_blocks * 32,) int8, g_scale (n_centroids,) float32,
    g_lanes (n_blocks * 32,) float32)``: the lambda bytes, g8 ≈ line term / g_scale[A] (see the
    module docstring; the scale per centroid A the largest |line term| of its codes over 127) and
    the line terms themselves, block by block in the block kernel's lane order, zero in the padding
    slots."""
    M = codes.shape[1] - 1
    sizes = np.diff(offsets)
    block_offsets = np.zeros(offsets.shape[0], dtype=np.int64)
    np.cumsum(-(-sizes // BLOCK), out=block_offsets[1:])
    lists = np.repeat(np.arange(sizes.shape[0], dtype=np.int64), sizes)
    slots = BLOCK * block_offsets[lists] + (np.arange(codes.shape[0]) - offsets[lists])
    n_slots = BLOCK * int(block_offsets[-1])
    padded = np.zeros((n_slots, M), dtype=np.uint8)
    padded[slots] = codes[:, :M]
    A = lists // n_neighbors
    g_max = np.zeros(n_centroids, dtype=np.float32)
    np.maximum.at(g_max, A, np.abs(g))
    g_scale = (g_max / 127).astype(np.float32)
    denom = np.where(g_scale[A] > 0, g_scale[A], 1)
    # position_lane for every slot at once: the lanes' bytes in that order
    # let the estimate of a block's 32 codes run as one loop over arrays beside the sums
    in_block = slots % BLOCK
    lanes = slots - in_block + in_block // 2 + (BLOCK // 2) * (in_block % 2)
    lam = np.zeros(n_slots, dtype=np.uint8)
    lam[lanes] = codes[:, M]
    g8 = np.zeros(n_slots, dtype=np.int8)
    g8[lanes] = np.clip(np.rint(g / denom), -127, 127).astype(np.int8)
    g_lanes = np.zeros(n_slots, dtype=np.float32)
    g_lanes[lanes] = g
    return block_offsets, pack_codes(padded), lam, g8, g_scale, g_lanes


@nb.njit(inline="always")
def _centroid_table(PA, t, lut, entries):
    """The 8-bit table of T_A = PA - 2 t (M, 16) into ``lut`` (ceil(M / 2) * 64,) in the block
    kernel's one-query layout ([pair][low, high][16 entries twice]); ``entries`` (M, 16) float32
    receives the exact T_A (:func:`~deepcodes.index.ivf_kernels.centroid_table`). Returns
    ``(sum_m min_j T_A, 1 / scale)``: T_A[m, j] ≈ min_j T_A[m] + lut entry / scale, the entry
    round((T_A[m, j] - min_j T_A[m]) * scale) with scale = 255 / the largest span."""
    M, K = PA.shape
    centroid_table(PA, t, entries)
    lows = np.empty(M, dtype=np.float32)
    span = np.float32(0.0)
    bias = np.float32(0.0)
    for m in range(M):
        lo = np.float32(np.inf)
        hi = np.float32(-np.inf)
        for j in range(K):
            v = entries[m, j]
            lo = v if v < lo else lo
            hi = v if v > hi else hi
        lows[m] = lo
        bias += lo
        span = max(span, hi - lo)
    scale = np.float32(255.0) / span if span > 0 else np.float32(0.0)
    for m in range(M):
        at = (m // 2) * 64 + (m % 2) * 32
        for j in range(K):
            # >= 0.5, so truncation is the floor (no libm call), and only the top needs a clamp
            r = np.int32((entries[m, j] - lows[m]) * scale + np.float32(0.5))
            b = np.uint8(r if r < 255 else 255)
            lut[at + j] = b
            lut[at + 16 + j] = b
    return bias, (np.float32(1.0) / scale if scale > 0 else np.float32(0.0))


# Segments ahead whose first block is prefetched: a query's segments lie scattered over the blocks
# and most fill one block, so without it every block's first read waits on memory.
AHEAD = 2


@nb.njit(inline="always")
def _prefetch_block(packed, lam8, g8, g_lanes, blk, n_pairs):
    """Ask for block ``blk``'s packed codes (one prefetch per 64-byte line), lane bytes and line
    terms."""
    block_at = blk * n_pairs * BLOCK
    for at in range(block_at, block_at + n_pairs * BLOCK, 64):
        prefetch(packed, (at,))
    prefetch(lam8, (blk * BLOCK,))
    prefetch(g8, (blk * BLOCK,))
    prefetch(g_lanes, (blk * BLOCK,))
    prefetch(g_lanes, (blk * BLOCK + BLOCK // 2,))


@nb.njit(inline="always")
def _exact_sum(packed, block_at, position, n_pairs, entries):
    """sum_m T_A[m, j_m] of the code at ``position`` of the block at byte ``block_at`` of ``packed``,
    from the exact table ``entries`` (M, 16), in sub-quantizer order (the exact kernel's)."""
    M = entries.shape[0]
    s = np.float32(0.0)
    for m in range(M):
        byte = np.int64(packed[block_at + (m >> 1) * BLOCK + position])
        s += entries[m, (byte >> 4) if m & 1 else (byte & 15)]
    return s


@nb.njit(parallel=True, cache=True)
def vlq_fastscan_search(dqc, Qp, codebooks_t, nprobe, w, k, kprime, neighbors, edge_sq, P, lam_codebook,
                        offsets, ids, block_offsets, packed, lam8, g8, g_scale, g_lanes, simd):
    """VLQ-ADC search by fast scan, then exact re-ranking of each query's ``kprime`` best estimates.

    Arguments as :func:`deepcodes.index.ivf_kernels.vlq_search`'s (the same segments are scanned;
    the codes and line terms are read from the layout of :func:`pack_lists`), and ``simd`` (use
    the AVX2 block kernel). Returns ``(dist (nq, k) float32, ids (nq, k) int64, scanned (nq,)
    int64)``: the exact VLQ distances of the re-ranked shortlist in (distance, id) order, padded
    with (inf, -1); equal to :func:`vlq_search`'s whenever the shortlist holds its top k (always
    when ``kprime`` >= the codes scanned).
    """
    nq = dqc.shape[0]
    M = P.shape[1]
    n_pairs = (M + 1) // 2
    n_nb = neighbors.shape[1]
    out_d, out_i, scanned = result_arrays(nq, k)
    for q in nb.prange(nq):
        dq = dqc[q]
        # one 8-bit table per centroid: its segments come together in the list-id order
        t, seg_i = query_segments(dq, Qp[q], codebooks_t, P.shape[2], nprobe, w, neighbors, edge_sq)
        n_seg = seg_i.shape[0]
        capacity = 0
        for s in range(n_seg):
            capacity += offsets[seg_i[s] + 1] - offsets[seg_i[s]]
        # every admitted code's exact distance and row, by order of admission: the codes are
        # admitted in row order, so the shortlist's heap on (estimate, admission) breaks ties by row
        admitted_d = np.empty(capacity, dtype=np.float32)
        admitted_row = np.empty(capacity, dtype=np.int64)
        lut = np.zeros(n_pairs * 64, dtype=np.uint8)
        entries = np.empty((M, P.shape[2]), dtype=np.float32)
        acc = np.empty(BLOCK, dtype=np.uint16)
        est = np.empty(BLOCK, dtype=np.float32)
        short_d = np.empty(kprime, dtype=np.float32)
        short_i = np.empty(kprime, dtype=np.int64)
        size = 0
        n_admitted = 0
        worst = np.float32(np.inf)
        current = -1
        bias = np.float32(0.0)
        inv_scale = np.float32(0.0)
        g_unit = np.float32(0.0)
        for s in range(n_seg):
            if s + AHEAD < n_seg:
                _prefetch_block(packed, lam8, g8, g_lanes, block_offsets[seg_i[s + AHEAD]], n_pairs)
            lst = seg_i[s]
            start, stop = offsets[lst], offsets[lst + 1]
            if start == stop:
                continue
            A = lst // n_nb
            e = lst - A * n_nb
            if A != current:
                current = A
                bias, inv_scale = _centroid_table(P[A], t, lut, entries)
                g_unit = g_scale[A]
            b = dq[A]
            ab = dq[neighbors[A, e]] - b
            c = edge_sq[A, e]
            base = b + bias
            first = block_offsets[lst]
            for blk in range(first, block_offsets[lst + 1]):
                block_at = blk * n_pairs * BLOCK
                if simd:
                    _accumulate_one(packed, block_at, lut, n_pairs, acc)
                else:
                    accumulate_block_scalar(packed, block_at, lut, n_pairs, acc)
                # the 32 estimates in one branch-free pass (the lanes' bytes sit beside the sums)
                at = blk * BLOCK
                for lane in range(BLOCK):
                    lm = lam_codebook[lam8[at + lane]]
                    est[lane] = (base + lm * ab + (lm * lm - lm) * c + np.float32(acc[lane]) * inv_scale
                                 + lm * g_unit * np.float32(g8[at + lane]))
                row0 = start + (blk - first) * BLOCK
                for position in range(min(BLOCK, stop - row0)):
                    lane = position_lane(position)
                    if size < kprime or est[lane] <= worst:
                        d = vlq_distance(_exact_sum(packed, block_at, position, n_pairs, entries),
                                         lam_codebook[lam8[at + lane]], g_lanes[at + lane], b, ab, c)
                        admitted_d[n_admitted] = d
                        admitted_row[n_admitted] = row0 + position
                        size = heap_offer(short_d, short_i, size, kprime, est[lane], n_admitted)
                        n_admitted += 1
                        if size == kprime:
                            worst = short_d[0]
        scanned[q] = capacity
        _top_k_by_id(admitted_d, admitted_row, short_i[:size], ids, k, out_d[q], out_i[q])
    return out_d, out_i, scanned


@nb.njit(inline="always")
def _top_k_by_id(admitted_d, admitted_row, shortlist, ids, k, out_d, out_i):
    """The k smallest (exact distance, id) of the ``shortlist``'s admitted codes into out_d/out_i
    (sorted). Only the codes at or under the k-th smallest distance can be among them, so only
    their ids are read (scattered rows: one cache miss each)."""
    n = shortlist.shape[0]
    if n == 0:
        return
    dist = np.empty(n, dtype=np.float32)
    for r in range(n):
        dist[r] = admitted_d[shortlist[r]]
    bound = np.sort(dist)[min(k, n) - 1]
    for r in range(n):
        if dist[r] <= bound:
            prefetch(ids, (admitted_row[shortlist[r]],))
    heap_d = np.empty(k, dtype=np.float32)
    heap_i = np.empty(k, dtype=np.int64)
    n_found = 0
    for r in range(n):
        if dist[r] <= bound:
            n_found = heap_offer(heap_d, heap_i, n_found, k, dist[r], ids[admitted_row[shortlist[r]]])
    heap_drain(heap_d, heap_i, n_found, out_d, out_i)
