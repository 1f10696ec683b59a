"""Bounded reservoirs of integer keys, for numba kernels that keep the k smallest of a stream.

A scan packs each candidate into one int64 key that compares exactly as its (value, position)
pair: a small integer value (a fast-scan sum) as ``(value << POSITION_BITS) | position``
(:func:`pack_key`), a float32 value as its order-preserving 32 bits above a 32-bit position
(:func:`float_key`). Candidates are appended to a buffer of ``2 k`` keys; when it fills, a selection keeps its k
smallest (O(k) expected, against O(log k) per candidate for a heap), and the largest kept key is
the new admission bound. The kept set never depends on the order in which candidates arrive.
"""
from __future__ import annotations

import numba as nb
import numpy as np

POSITION_BITS = 40
POSITION_MASK = (1 << POSITION_BITS) - 1


@nb.njit(inline="always")
def pack_key(value, position):
    """One int64 key ordered as the pair (value, position); value < 2^23, 0 <= position < 2^40."""
    return (np.int64(value) << POSITION_BITS) | np.int64(position)


_FLIP = np.int32(0x7FFFFFFF)
_LOW32 = np.int64(0xFFFFFFFF)


@nb.njit(inline="always")
def float_key(value, position, scratch):
    """One int64 key ordered as the pair (value, position) of a float32 ``value`` (not NaN) and
    0 <= position < 2^32: a negative float's magnitude bits are flipped, so that the bits, read as
    an int32, order as the floats do (-0.0 just below +0.0). ``scratch`` is a float32 array of one
    element, through which the bits are read."""
    scratch[0] = value
    bits = scratch.view(np.int32)[0]
    ordered = np.int64(bits) if bits >= 0 else np.int64(bits ^ _FLIP)
    return (ordered << 32) | np.int64(position)


@nb.njit(inline="always")
def float_key_value(key, scratch):
    """The float32 value of a :func:`float_key` (``scratch`` as there)."""
    ordered = np.int32(key >> 32)
    scratch.view(np.int32)[0] = ordered if ordered >= 0 else ordered ^ _FLIP
    return scratch[0]


@nb.njit(inline="always")
def key_position(key):
    """The position of a :func:`float_key`."""
    return key & _LOW32


@nb.njit(inline="always")
def _median_of_three(a, b, c):
    if a < b:
        return b if b < c else (c if a < c else a)
    return a if a < c else (c if b < c else b)


@nb.njit(cache=True)
def keep_smallest(keys, size, k):
    """Reorder ``keys[:size]`` (distinct int64) in place so that ``keys[:k]`` holds its k smallest
    (in no particular order), 0 < k <= size; returns the largest of them. Hoare selection with a
    median-of-three pivot: deterministic and O(size) expected."""
    lo, hi = 0, size - 1
    target = k - 1
    while lo < hi:
        pivot = _median_of_three(keys[lo], keys[(lo + hi) // 2], keys[hi])
        i, j = lo, hi
        while i <= j:
            while keys[i] < pivot:
                i += 1
            while keys[j] > pivot:
                j -= 1
            if i <= j:
                keys[i], keys[j] = keys[j], keys[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            break
    largest = keys[0]
    for p in range(1, k):
        largest = max(largest, keys[p])
    return largest


@nb.njit(inline="always")
def drain_sorted(keys, size, k, out_values, out_positions):
    """The min(k, size) smallest of ``keys[:size]`` in ascending order, unpacked: values (as
    ``out_values``' dtype) and positions go to the first slots of the outputs; the rest are left."""
    keep = min(k, size)
    if keep == 0:
        return
    if size > keep:
        keep_smallest(keys, size, keep)
    ordered = np.sort(keys[:keep])
    for p in range(keep):
        out_values[p] = ordered[p] >> POSITION_BITS
        out_positions[p] = ordered[p] & POSITION_MASK
