"""4-bit fast-scan kernels (André, Kermarrec & Le Scouarnec, "Cache locality is not enough", VLDB 2015;
faiss's ``PQ32x4fs``): PQ codes of 4 bits per sub-quantizer, searched through 8-bit look-up tables
held in SIMD registers, then the shortlist re-ranked with the exact float tables.

Layout. Codes go in blocks of 32. A block holds, for each pair of sub-quantizers (2p, 2p + 1), 32
bytes: byte r is code r's sub-code 2p in its low nibble and 2p + 1 in its high nibble. A query's
8-bit table for one sub-quantizer is its 16 entries, stored twice (one copy per 128-bit lane).

Kernel. One AVX2 ``vpshufb`` looks up 32 codes' sub-codes at once; the 8-bit results are summed in
16-bit lanes (even bytes and odd bytes in two accumulators, faiss's trick: the even sums are the
full 16-bit sums minus 256 times the odd ones), four queries per pass over a block so each block's
bytes are loaded and split into nibbles once per four queries. numba has no SIMD shuffle, so the
block kernel is written in LLVM IR through ``numba.extending.intrinsic``; on a CPU without AVX2 a
plain loop computes the same integers.

Results are exact integers: the 8-bit tables are ``round((T[m, j] - min_j T[m, j]) * scale)`` with one
scale per query, so a code's fast-scan sum is a monotone approximation of its ADC distance; the
shortlist is the ``k'`` smallest (sum, position) pairs, and re-ranking computes each candidate's
exact distance in the same float32 order as :func:`deepcodes.index.kernels.adc_knn`. The final
top-k therefore equals exact ADC's whenever the shortlist holds exact ADC's top-k.

Shortlist. After each block, two vector compares per query give the lanes whose sum is below the
query's bound; only those lanes are visited, in position order, and appended to a reservoir of
``2 k'`` (sum, position) keys that a selection cuts back to ``k'`` when it fills
(:mod:`deepcodes.knn.reservoir`), the largest kept sum becoming the new bound. At 1M codes and k' =
400 this took the kernel from 0.45x to 0.90x faiss's at 8 bytes, against a heap of k' that sifted
every admitted code (``bench/README.md``).
"""
from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..knn.hamming import popcount64
from ..knn.heap import heap_admits, heap_drain, heap_offer
from ..knn.reservoir import POSITION_BITS, drain_sorted, keep_smallest, pack_key
from .simd import HAVE_AVX2

BLOCK = 32  # codes per block
QUERIES = 4  # queries per pass over a block


def block_accumulator(n_queries: int):
    """The AVX2 block kernel for ``n_queries`` queries per pass, a numba intrinsic
    ``(packed, offset, luts, n_pairs, out)``: out[q * 32 + lane] (uint16, n_queries x 32 lanes) = the
    table sums of one block of codes starting at byte ``offset`` of ``packed``, for the queries whose
    tables ``luts`` holds as [pair][query][low, high][32 bytes] (from byte 0 of ``luts``). Lane l < 16
    is the block's code 2l, lane 16 + l code 2l + 1."""
    def accumulate(typingctx, packed, offset, luts, n_pairs, out):
        return _block_kernel(n_queries, packed, offset, luts, n_pairs, out)

    accumulate.__name__ = f"accumulate_block_{n_queries}"
    return intrinsic(accumulate)


def _block_kernel(n_queries, packed, offset, luts, n_pairs, out):
    sig = types.void(packed, offset, luts, n_pairs, out)

    def codegen(context, builder, signature, args):
        packed_v, offset_v, luts_v, n_pairs_v, out_v = args
        codes_ptr = builder.gep(context.make_array(signature.args[0])(context, builder, packed_v).data, [offset_v])
        lut_ptr = context.make_array(signature.args[2])(context, builder, luts_v).data
        out_ptr = context.make_array(signature.args[4])(context, builder, out_v).data
        i64 = ir.IntType(64)
        v32i8 = ir.VectorType(ir.IntType(8), 32)
        v16i16 = ir.VectorType(ir.IntType(16), 16)
        pshufb = cgutils.get_or_insert_function(builder.module, ir.FunctionType(v32i8, [v32i8, v32i8]),
                                                "llvm.x86.avx2.pshuf.b")
        zero = ir.Constant(v16i16, None)
        full = [cgutils.alloca_once_value(builder, zero) for _ in range(n_queries)]
        odd = [cgutils.alloca_once_value(builder, zero) for _ in range(n_queries)]
        nibble = ir.Constant(v32i8, [0x0F] * 32)
        four = ir.Constant(v32i8, [4] * 32)
        eight = ir.Constant(v16i16, [8] * 16)

        def load32(ptr, byte_offset):
            return builder.load(builder.bitcast(builder.gep(ptr, [byte_offset]), v32i8.as_pointer()), align=1)

        with cgutils.for_range(builder, n_pairs_v) as loop:
            p = loop.index
            codes = load32(codes_ptr, builder.mul(p, ir.Constant(i64, BLOCK)))
            low = builder.and_(codes, nibble)
            high = builder.and_(builder.lshr(codes, four), nibble)
            pair_luts = builder.mul(p, ir.Constant(i64, n_queries * 2 * 32))
            for q in range(n_queries):
                at = builder.add(pair_luts, ir.Constant(i64, q * 64))
                a = builder.bitcast(builder.call(pshufb, [load32(lut_ptr, at), low]), v16i16)
                b = builder.bitcast(builder.call(pshufb, [load32(lut_ptr, builder.add(at, ir.Constant(i64, 32))),
                                                          high]), v16i16)
                builder.store(builder.add(builder.load(full[q]), builder.add(a, b)), full[q])
                builder.store(builder.add(builder.load(odd[q]), builder.add(builder.lshr(a, eight),
                                                                          builder.lshr(b, eight))), odd[q])
        for q in range(n_queries):
            o = builder.load(odd[q])
            even = builder.sub(builder.load(full[q]), builder.shl(o, eight))
            dst = builder.gep(out_ptr, [ir.Constant(i64, q * BLOCK)])
            builder.store(even, builder.bitcast(dst, v16i16.as_pointer()), align=1)
            dst = builder.gep(out_ptr, [ir.Constant(i64, q * BLOCK + 16)])
            builder.store(o, builder.bitcast(dst, v16i16.as_pointer()), align=1)
        return context.get_dummy_value()

    return sig, codegen


_accumulate_block = block_accumulator(QUERIES)


@intrinsic
def _lanes_within_simd(typingctx, sums, bounds, masks):
    """masks[q] (uint32) gets bit l set where sums[q * 32 + l] (uint16) < bounds[q] (uint16), for
    every query q of ``bounds``: two AVX2 compares per query in place of 32 scalar ones."""
    sig = types.void(sums, bounds, masks)

    def codegen(context, builder, signature, args):
        sums_a, bounds_a, masks_a = (context.make_array(t)(context, builder, v) for t, v in zip(signature.args, args))
        i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
        v16i16 = ir.VectorType(i16, 16)
        n_queries = builder.extract_value(bounds_a.shape, 0)
        with cgutils.for_range(builder, n_queries) as loop:
            q = loop.index
            bound = builder.load(builder.gep(bounds_a.data, [q]))
            splat = builder.insert_element(ir.Constant(v16i16, ir.Undefined), bound, ir.Constant(i32, 0))
            splat = builder.shuffle_vector(splat, splat, ir.Constant(ir.VectorType(i32, 16), [0] * 16))
            mask = ir.Constant(i32, 0)
            for half in range(2):
                at = builder.add(builder.mul(q, ir.Constant(i64, BLOCK)), ir.Constant(i64, 16 * half))
                lanes = builder.load(builder.bitcast(builder.gep(sums_a.data, [at]), v16i16.as_pointer()), align=1)
                bits = builder.zext(builder.bitcast(builder.icmp_unsigned("<", lanes, splat), i16), i32)
                mask = builder.or_(mask, builder.shl(bits, ir.Constant(i32, 16 * half)))
            builder.store(mask, builder.gep(masks_a.data, [q]))
        return context.get_dummy_value()

    return sig, codegen


@nb.njit(inline="always")
def _lanes_within_scalar(sums, bounds, masks):
    """What :func:`_lanes_within_simd` computes, one lane at a time."""
    for q in range(bounds.shape[0]):
        mask = np.uint32(0)
        for lane in range(BLOCK):
            if sums[q * BLOCK + lane] < bounds[q]:
                mask |= np.uint32(1) << np.uint32(lane)
        masks[q] = mask


_EVEN_BITS = (np.uint64(0x00FF00FF), np.uint64(0x0F0F0F0F), np.uint64(0x33333333), np.uint64(0x55555555))


@nb.njit(inline="always")
def _spread16(x):
    """The 16 low bits of x (uint64) moved to the even bits 0, 2, ..., 30."""
    x = (x | (x << np.uint64(8))) & _EVEN_BITS[0]
    x = (x | (x << np.uint64(4))) & _EVEN_BITS[1]
    x = (x | (x << np.uint64(2))) & _EVEN_BITS[2]
    return (x | (x << np.uint64(1))) & _EVEN_BITS[3]


@nb.njit(inline="always")
def positions_mask(lane_mask):
    """A block's lane mask (bit l: lane l) as a position mask (bit r: the block's code r; see
    :func:`lane_position`), so that its set bits, lowest first, visit the codes in scan order."""
    lanes = np.uint64(lane_mask)
    return _spread16(lanes & np.uint64(0xFFFF)) | (_spread16(lanes >> np.uint64(16)) << np.uint64(1))


@nb.njit(inline="always")
def accumulate_block_scalar(packed, offset, luts, n_pairs, out):
    """What a :func:`block_accumulator` kernel computes, one byte at a time (CPUs without AVX2, and
    tests); the number of queries is ``out.shape[0] // 32``."""
    n_queries = out.shape[0] // BLOCK
    out[:] = 0
    for p in range(n_pairs):
        for r in range(BLOCK):
            c = packed[offset + p * BLOCK + r]
            lane = position_lane(r)
            for q in range(n_queries):
                at = (p * n_queries + q) * 64
                out[q * BLOCK + lane] += np.uint16(luts[at + (c & 15)]) + np.uint16(luts[at + 32 + (c >> 4)])


@nb.njit(inline="always")
def position_lane(position):
    """The lane that holds the block's code at ``position`` (the inverse of :func:`lane_position`)."""
    return (position >> 1) + (BLOCK // 2) * (position & 1)


@nb.njit(inline="always")
def lane_position(lane):
    """The position within its block of the code a lane holds."""
    return 2 * lane if lane < 16 else 2 * (lane - 16) + 1


@nb.njit(parallel=True, cache=True)
def shortlist(luts, packed, n, n_pairs, kprime, simd):
    """The ``kprime`` smallest (fast-scan sum, position) pairs of every query.

    ``luts`` (n_groups, n_pairs * 256) uint8: the 8-bit tables of 4 queries per row (see
    :func:`quantize_tables`); ``packed`` (n_blocks * n_pairs * 32,) uint8 (see :func:`pack_codes`);
    ``n`` codes (positions >= n are padding). Returns ``(sums (n_groups * 4, kprime) float32,
    positions (n_groups * 4, kprime) int64)`` in (sum, position) order, padded with (inf, -1).
    """
    n_groups = luts.shape[0]
    n_blocks = (n + BLOCK - 1) // BLOCK
    out_d = np.full((n_groups * QUERIES, kprime), np.inf, dtype=np.float32)
    out_i = np.full((n_groups * QUERIES, kprime), -1, dtype=np.int64)
    capacity = 2 * kprime
    for g in nb.prange(n_groups):
        # each query's candidates as (sum, position) keys in a reservoir of 2 kprime (see
        # knn.reservoir): appending costs O(1), where a heap of kprime costs a sift per candidate
        kept = np.empty((QUERIES, capacity), dtype=np.int64)
        size = np.zeros(QUERIES, dtype=np.int64)
        # the admission bound (the largest kept sum after a reservoir's last selection; before,
        # 65535, above any sum of at most 256 tables of 255) as an integer, so that a block's lanes
        # are tested against it by one vector compare
        worst = np.full(QUERIES, 65535, dtype=np.uint16)
        masks = np.empty(QUERIES, dtype=np.uint32)
        acc = np.empty(QUERIES * BLOCK, dtype=np.uint16)
        group_luts = luts[g]
        for b in range(n_blocks):
            if simd:
                _accumulate_block(packed, b * n_pairs * BLOCK, group_luts, n_pairs, acc)
                _lanes_within_simd(acc, worst, masks)
            else:
                accumulate_block_scalar(packed, b * n_pairs * BLOCK, group_luts, n_pairs, acc)
                _lanes_within_scalar(acc, worst, masks)
            for q in range(QUERIES):
                if masks[q] == 0:
                    continue
                w = worst[q]
                # Only the lanes under the bound, in position order: every kept code comes earlier
                # in the scan, so a sum equal to the bound loses its tie and the strict test is
                # exact; w tightens when the reservoir is cut back within this block.
                pending = positions_mask(masks[q])
                while pending != 0:
                    lowest = pending & (~pending + np.uint64(1))
                    pending ^= lowest
                    r = np.int64(popcount64(lowest - np.uint64(1)))
                    i = b * BLOCK + r
                    if i >= n:
                        break
                    d = acc[q * BLOCK + (r >> 1) + 16 * (r & 1)]
                    if d < w:
                        kept[q, size[q]] = pack_key(d, i)
                        size[q] += 1
                        if size[q] == capacity:
                            w = np.uint16(keep_smallest(kept[q], capacity, kprime) >> POSITION_BITS)
                            size[q] = kprime
                worst[q] = w
        for q in range(QUERIES):
            drain_sorted(kept[q], size[q], kprime, out_d[g * QUERIES + q], out_i[g * QUERIES + q])
    return out_d, out_i


@nb.njit(inline="always")
def _sub_code(packed, n_pairs, i, m):
    byte = np.int64(packed[((i // BLOCK) * n_pairs + m // 2) * BLOCK + i % BLOCK])
    return (byte >> 4) if m % 2 else (byte & 15)


@nb.njit(parallel=True, cache=True)
def rerank(tables, packed, n_pairs, db_bias, q_bias, candidates, k):
    """Exact ADC distances of each query's candidates, and their k smallest (distance, position).

    ``tables`` (nq, M, 16) float32 exact ADC tables; ``candidates`` (nq, kprime) int64 positions (-1:
    none). The distance is summed as :func:`deepcodes.index.kernels.adc_knn` sums it. Returns
    ``(distances (nq, k) float32, positions (nq, k) int64)``, padded with (inf, -1).
    """
    nq, M, _ = tables.shape
    out_d = np.full((nq, k), np.inf, dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
    for q in nb.prange(nq):
        heap_d = np.empty(k, dtype=np.float32)
        heap_i = np.empty(k, dtype=np.int64)
        size = 0
        t = tables[q]
        for c in range(candidates.shape[1]):
            i = candidates[q, c]
            if i < 0:
                continue
            acc = db_bias[i] + q_bias[q]
            for m in range(M):
                acc += t[m, _sub_code(packed, n_pairs, i, m)]
            if heap_admits(heap_d, size, k, acc):
                size = heap_offer(heap_d, heap_i, size, k, acc, i)
        heap_drain(heap_d, heap_i, size, out_d[q], out_i[q])
    return out_d, out_i


@nb.njit(cache=True)
def _pack(codes, n_pairs, out):
    n, M = codes.shape
    for i in range(n):
        base = (i // BLOCK) * n_pairs * BLOCK + i % BLOCK
        for p in range(n_pairs):
            low = codes[i, 2 * p]
            high = codes[i, 2 * p + 1] if 2 * p + 1 < M else 0
            out[base + p * BLOCK] = low | (high << 4)


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """4-bit sub-codes (n, M) uint8 (values < 16) in the block layout: (ceil(n / 32) * ceil(M / 2) * 32,)
    uint8, padding codes and the odd M's last high nibble zero."""
    n, M = codes.shape
    n_pairs = -(-M // 2)
    out = np.zeros(-(-n // BLOCK) * n_pairs * BLOCK, dtype=np.uint8)
    _pack(np.ascontiguousarray(codes, dtype=np.uint8), n_pairs, out)
    return out


@nb.njit(cache=True)
def _unpack(packed, n_pairs, n, M, out):
    for i in range(n):
        for m in range(M):
            out[i, m] = _sub_code(packed, n_pairs, i, m)


def unpack_codes(packed: np.ndarray, n: int, M: int) -> np.ndarray:
    """The inverse of :func:`pack_codes`: (n, M) uint8."""
    out = np.empty((n, M), dtype=np.uint8)
    _unpack(packed, -(-M // 2), n, M, out)
    return out


def quantize_tables(tables: np.ndarray) -> np.ndarray:
    """8-bit tables of float ADC tables (nq, M, 16): ``round((T - min_j T[m]) * 255 / max_m range_m)``
    per query (one scale per query keeps the sums' order close to the distances'), in the kernel's
    layout (ceil(nq / 4), ceil(M / 2) * 256) uint8; missing queries and the odd M's extra
    sub-quantizer get zero tables."""
    nq, M, K = tables.shape
    low = tables.min(axis=2, keepdims=True)
    span = (tables - low).max(axis=(1, 2))
    scale = np.where(span > 0, 255.0 / np.maximum(span, np.finfo(np.float32).tiny), 0.0).astype(np.float32)
    q8 = np.rint((tables - low) * scale[:, None, None]).clip(0, 255).astype(np.uint8)
    n_pairs = -(-M // 2)
    groups = -(-nq // QUERIES)
    full = np.zeros((groups * QUERIES, 2 * n_pairs, K), dtype=np.uint8)
    full[:nq, :M] = q8
    # [group][query][pair][low/high][16] -> [group][pair][query][low/high][16 twice]
    lay = full.reshape(groups, QUERIES, n_pairs, 2, K).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(np.concatenate([lay, lay], axis=-1)).reshape(groups, n_pairs * QUERIES * 2 * 2 * K)
