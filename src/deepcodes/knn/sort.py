"""A stable linear-time argsort of float32 distances (the (distance, id) order of a full ranking)."""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(cache=True)
def stable_argsort_f32(dist):
    """Stable argsort of float32 ``dist`` (n,) by LSD radix sort on order-preserving uint32 keys.

    Linear time; equal distances keep their index order, so the result is the (distance, id) order.
    """
    n = dist.shape[0]
    keys = dist.view(np.uint32).copy()
    for i in range(n):
        # flip so that unsigned order equals float order (negatives reversed, positives above them)
        if keys[i] & np.uint32(0x80000000):
            keys[i] = ~keys[i]
        else:
            keys[i] = keys[i] | np.uint32(0x80000000)
    order = np.arange(n)
    keys2 = np.empty_like(keys)
    order2 = np.empty_like(order)
    count = np.empty(257, dtype=np.int64)
    for shift in range(0, 32, 8):
        count[:] = 0
        for i in range(n):
            count[((keys[i] >> shift) & np.uint32(255)) + 1] += 1
        if count.max() == n:
            continue  # every key shares this digit: the pass would not move anything
        for b in range(1, 257):
            count[b] += count[b - 1]
        for i in range(n):
            digit = (keys[i] >> shift) & np.uint32(255)
            p = count[digit]
            count[digit] = p + 1
            keys2[p] = keys[i]
            order2[p] = order[i]
        keys, keys2 = keys2, keys
        order, order2 = order2, order
    return order
