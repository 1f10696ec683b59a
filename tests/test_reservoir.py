"""The reservoir selection of the fast-scan kernels against sorting."""
import numba as nb
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcodes.knn.reservoir import drain_sorted, float_key, float_key_value, keep_smallest, key_position, pack_key


@nb.njit
def _drain(keys, size, k):
    values = np.full(k, -1.0, dtype=np.float32)
    positions = np.full(k, -1, dtype=np.int64)
    drain_sorted(keys, size, k, values, positions)
    return values, positions


@nb.njit
def _pack_all(values, positions):
    out = np.empty(values.shape[0], dtype=np.int64)
    for p in range(values.shape[0]):
        out[p] = pack_key(values[p], positions[p])
    return out


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 7), min_size=1, max_size=300), st.integers(1, 300), st.integers(0, 2**40 - 301))
def test_keep_smallest_and_drain_equal_a_sort_by_value_then_position(values, k, first):
    values = np.array(values, dtype=np.int64)
    n = values.shape[0]
    k = min(k, n)
    positions = first + np.random.default_rng(n).permutation(n)   # distinct, in any order
    keys = _pack_all(values, positions)
    order = np.lexsort((positions, values))
    kept = keys.copy()
    largest = keep_smallest(kept, n, k)
    assert sorted(kept[:k]) == sorted(keys[order[:k]])
    assert largest == keys[order[k - 1]]
    out_v, out_p = _drain(keys.copy(), n, k)
    np.testing.assert_array_equal(out_v, values[order[:k]].astype(np.float32))
    np.testing.assert_array_equal(out_p, positions[order[:k]])


@nb.njit
def _float_keys(values, positions):
    scratch = np.empty(1, dtype=np.float32)
    keys = np.empty(values.shape[0], dtype=np.int64)
    back = np.empty(values.shape[0], dtype=np.float32)
    where = np.empty(values.shape[0], dtype=np.int64)
    for p in range(values.shape[0]):
        keys[p] = float_key(values[p], positions[p], scratch)
        back[p] = float_key_value(keys[p], scratch)
        where[p] = key_position(keys[p])
    return keys, back, where


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False) | st.sampled_from([0.0, -0.0, 1.5, -1.5]), min_size=1,
                max_size=200))
def test_float_keys_order_as_value_then_position_and_give_both_back(values):
    values = np.array(values, dtype=np.float32)
    positions = np.random.default_rng(values.shape[0]).permutation(values.shape[0]).astype(np.int64) + 2**32 - 201
    keys, back, where = _float_keys(values, positions)
    np.testing.assert_array_equal(back.view(np.int32), values.view(np.int32))   # bit for bit, -0.0 too
    np.testing.assert_array_equal(where, positions)
    # the keys' order is the (value, position) order, -0.0 just below +0.0
    as_sorted = np.where((values == 0) & np.signbit(values), -1e-300, values.astype(np.float64))
    np.testing.assert_array_equal(np.argsort(keys, kind="stable"), np.lexsort((positions, as_sorted)))
