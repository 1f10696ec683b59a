"""The bounded (distance, id) heaps of the numba kernels: heap_admits agrees with what heap_offer takes."""
import numpy as np

from deepcodes.knn.heap import heap_admits, heap_offer


def test_heap_admits_exactly_what_the_offer_could_take():
    rng = np.random.default_rng(0)
    d = rng.integers(0, 20, 400).astype(np.float32)  # many ties
    heap_d, heap_i = np.empty(5, np.float32), np.empty(5, np.int64)
    size = 0
    for i, x in enumerate(d):
        admits = heap_admits(heap_d, size, 5, x)
        before = (heap_d[:size].copy(), heap_i[:size].copy())
        size = heap_offer(heap_d, heap_i, size, 5, x, i)
        changed = not (np.array_equal(before[0], heap_d[:size]) and np.array_equal(before[1], heap_i[:size]))
        assert admits or not changed  # never refuses a pair the heap would take
        if size == 5 and len(before[0]) == 5 and x > before[0].max():
            assert not admits  # and refuses every pair above the worst kept
    kept = sorted(zip(heap_d.tolist(), heap_i.tolist()))
    assert kept == sorted(zip(d.tolist(), range(len(d))))[:5]
