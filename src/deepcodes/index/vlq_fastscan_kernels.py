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
``kprime`` smallest estimates (ties by row) are re-ranked with
:func:`deepcodes.index.ivf_kernels.vlq_code_distance`, the exact kernel's own arithmetic.

Layout. Each inverted list (one segment) is padded to whole blocks of 32 codes: list l's codes
occupy blocks ``block_offsets[l]:block_offsets[l + 1]``, row ``offsets[l] + i`` in slot
``32 * block_offsets[l] + i``, packed as :func:`deepcodes.index.fastscan_kernels.pack_codes` packs
them (the slots past a list's end are zero codes, never ranked).
"""
from __future__ import annotations

import numba as nb
import numpy as np

from ..knn.heap import heap_drain, heap_offer
from .fastscan_kernels import BLOCK, accumulate_block_scalar, block_accumulator, lane_position, pack_codes
from .ivf_kernels import centroid_table, query_segments, result_arrays, vlq_code_distance
from .simd import prefetch

_accumulate_one = block_accumulator(1)  # one query per pass: each query scans its own segments


def pack_lists(codes: np.ndarray, offsets: np.ndarray, g: np.ndarray, n_centroids: int, n_neighbors: int):
    """The search layout of VLQ codes (n, M + 1) in CSR lists ``offsets`` (nlist + 1,) with line
    terms ``g`` (n,) float32 (:func:`deepcodes.index.ivf_kernels.line_terms`):
    ``(block_offsets (nlist + 1,) int64, packed (n_blocks * ceil(M / 2) * 32,) uint8,
    g (n,) int8, g_scale (n_centroids,) float32)``, g ≈ g_scale[A] * line term (see the module
    docstring), the scale per centroid A the largest |line term| of its codes over 127."""
    M = codes.shape[1] - 1
    sizes = np.diff(offsets)
    block_offsets = np.zeros(offsets.shape[0], dtype=np.int64)
    np.cumsum(-(-sizes // BLOCK), out=block_offsets[1:])
    lists = np.repeat(np.arange(sizes.shape[0], dtype=np.int64), sizes)
    slots = BLOCK * block_offsets[lists] + (np.arange(codes.shape[0]) - offsets[lists])
    padded = np.zeros((BLOCK * int(block_offsets[-1]), M), dtype=np.uint8)
    padded[slots] = codes[:, :M]
    A = lists // n_neighbors
    g_max = np.zeros(n_centroids, dtype=np.float32)
    np.maximum.at(g_max, A, np.abs(g))
    g_scale = (g_max / 127).astype(np.float32)
    denom = np.where(g_scale[A] > 0, g_scale[A], 1)
    g8 = np.clip(np.rint(g / denom), -127, 127).astype(np.int8)
    return block_offsets, pack_codes(padded), g8, g_scale


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


@nb.njit(inline="always")
def _list_of_row(offsets, seg_i, row):
    """The list holding stored ``row``, one of the scanned lists ``seg_i`` (ascending list ids, so
    their rows ascend too): a binary search over the query's few segments, where one over every
    list's offsets missed the cache at each step."""
    lo = 0
    hi = seg_i.shape[0] - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if offsets[seg_i[mid]] <= row:
            lo = mid
        else:
            hi = mid - 1
    return seg_i[lo]


@nb.njit(parallel=True, cache=True)
def vlq_fastscan_search(dqc, Qp, codebooks_t, nprobe, w, k, kprime, neighbors, edge_sq, P, lam_codebook,
                        offsets, codes, ids, g, block_offsets, packed, g8, g_scale, simd):
    """VLQ-ADC search by fast scan, then exact re-ranking of each query's ``kprime`` best estimates.

    Arguments as :func:`deepcodes.index.ivf_kernels.vlq_search`'s (the same segments are scanned),
    plus the layout of :func:`pack_lists` and ``simd`` (use the AVX2 block kernel). Returns
    ``(dist (nq, k) float32, ids (nq, k) int64, scanned (nq,) int64)``: the exact VLQ distances of
    the re-ranked shortlist in (distance, id) order, padded with (inf, -1); equal to
    :func:`vlq_search`'s whenever the shortlist holds its top k (always when ``kprime`` >= the codes
    scanned).
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
        lut = np.zeros(n_pairs * 64, dtype=np.uint8)
        entries = np.empty((M, P.shape[2]), dtype=np.float32)
        acc = np.empty(BLOCK, dtype=np.uint16)
        short_d = np.empty(kprime, dtype=np.float32)
        short_i = np.empty(kprime, dtype=np.int64)
        size = 0
        worst = np.float32(np.inf)
        current = -1
        bias = np.float32(0.0)
        inv_scale = np.float32(0.0)
        g_unit = np.float32(0.0)
        count = 0
        for s in range(n_seg):
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
                if simd:
                    _accumulate_one(packed, blk * n_pairs * BLOCK, lut, n_pairs, acc)
                else:
                    accumulate_block_scalar(packed, blk * n_pairs * BLOCK, lut, n_pairs, acc)
                for lane in range(BLOCK):
                    row = start + (blk - first) * BLOCK + lane_position(lane)
                    if row >= stop:
                        continue
                    lm = lam_codebook[codes[row, M]]
                    est = (base + lm * ab + (lm * lm - lm) * c + np.float32(acc[lane]) * inv_scale
                           + lm * g_unit * np.float32(g8[row]))
                    if size < kprime or est <= worst:
                        size = heap_offer(short_d, short_i, size, kprime, est, row)
                        if size == kprime:
                            worst = short_d[0]
            count += stop - start
        scanned[q] = count
        heap_d = np.empty(k, dtype=np.float32)
        heap_i = np.empty(k, dtype=np.int64)
        n_found = 0
        # the shortlist's rows are scattered over the codes: ask for all of them before reading any
        for r in range(size):
            prefetch(codes, (short_i[r],))
        for r in range(size):
            row = short_i[r]
            lst = _list_of_row(offsets, seg_i, row)
            A = lst // n_nb
            e = lst - A * n_nb
            d = vlq_code_distance(codes, row, P[A], t, lam_codebook, g, dq[A], dq[neighbors[A, e]] - dq[A],
                                  edge_sq[A, e])
            n_found = heap_offer(heap_d, heap_i, n_found, k, d, ids[row])
        heap_drain(heap_d, heap_i, n_found, out_d[q], out_i[q])
    return out_d, out_i, scanned
