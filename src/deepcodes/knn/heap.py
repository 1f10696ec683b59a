"""Bounded max-heaps on (distance, id) pairs, for numba kernels.

A heap of the k best candidates keeps its worst pair at the root; comparing pairs
lexicographically makes the kept set independent of the order candidates arrive in, so every
kernel that uses these returns exactly what a stable sort by (distance, id) would.
"""
from __future__ import annotations

import numba as nb
import numpy as np


@nb.njit(inline="always")
def sift_down(heap_d, heap_i, size):
    """Restore the max-heap on (distance, id) pairs after the root of ``heap_d``/``heap_i`` changed."""
    pos = 0
    while True:
        left = 2 * pos + 1
        if left >= size:
            break
        largest = left
        right = left + 1
        if right < size and (heap_d[right] > heap_d[left] or
                             (heap_d[right] == heap_d[left] and heap_i[right] > heap_i[left])):
            largest = right
        if heap_d[largest] > heap_d[pos] or (heap_d[largest] == heap_d[pos] and heap_i[largest] > heap_i[pos]):
            heap_d[pos], heap_d[largest] = heap_d[largest], heap_d[pos]
            heap_i[pos], heap_i[largest] = heap_i[largest], heap_i[pos]
            pos = largest
        else:
            break


@nb.njit(inline="always")
def heap_push(heap_d, heap_i, size, d, i):
    """Put (d, i) at heap position ``size`` and sift it up (the heap then holds ``size + 1`` pairs)."""
    pos = size
    heap_d[pos] = d
    heap_i[pos] = i
    while pos > 0:
        parent = (pos - 1) // 2
        if heap_d[pos] > heap_d[parent] or (heap_d[pos] == heap_d[parent] and heap_i[pos] > heap_i[parent]):
            heap_d[pos], heap_d[parent] = heap_d[parent], heap_d[pos]
            heap_i[pos], heap_i[parent] = heap_i[parent], heap_i[pos]
            pos = parent
        else:
            break


@nb.njit(inline="always")
def heap_admits(heap_d, size, cap, d):
    """Whether :func:`heap_offer` could take a pair at distance ``d`` (float32): the heap is not
    full or ``d`` is not above its worst. Scan loops test this before offering: with the offer
    inlined behind the test the loop's common path holds one compare (numba 0.68, AMD EPYC host: the
    nearest 3 of 1,024 centroids in 1.3 µs a query against 12-16 µs offering every one)."""
    return size < cap or np.float32(d) <= heap_d[0]


@nb.njit(inline="always")
def heap_offer(heap_d, heap_i, size, cap, d, i):
    """Offer (d, i) to a max-heap of at most ``cap`` float32 pairs; return its new size.

    A full heap takes the pair only when it is lexicographically smaller than the worst kept pair.
    ``d`` is rounded to float32 first, so a pair is compared by the key it is stored under.
    """
    d = np.float32(d)
    if size < cap:
        heap_push(heap_d, heap_i, size, d, i)
        return size + 1
    if d < heap_d[0] or (d == heap_d[0] and i < heap_i[0]):
        heap_d[0] = d
        heap_i[0] = i
        sift_down(heap_d, heap_i, size)
    return size


@nb.njit(inline="always")
def heap_drain(heap_d, heap_i, size, out_d, out_i):
    """Write the ``size`` heap pairs to ``out_d``/``out_i`` in ascending (distance, id) order (empties the heap)."""
    for p in range(size - 1, -1, -1):
        out_d[p] = heap_d[0]
        out_i[p] = heap_i[0]
        heap_d[0] = heap_d[p]
        heap_i[0] = heap_i[p]
        sift_down(heap_d, heap_i, p)
