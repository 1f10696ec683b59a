"""The blocked ADC kernels against a plain reference: bit-identical float32 distances (summed in the
kernels' order) and the stable (distance, position) order, for every query-group and table shape."""
import numpy as np
import pytest

from deepcodes.index.kernels import adc_knn, adc_rank, group_codes
from deepcodes.index.simd import HAVE_AVX2

# the scalar kernels everywhere, the AVX2 gather kernels where the CPU has them
GATHER = [False, True] if HAVE_AVX2 else [False]


def reference(tables, codes, db_bias, q_bias, k):
    out_d, out_i = [], []
    for q in range(tables.shape[0]):
        acc = db_bias + q_bias[q]
        for m in range(tables.shape[1]):
            acc = acc + tables[q, m, codes[:, m]]
        order = np.argsort(acc, kind="stable")[:k]
        out_d.append(acc[order])
        out_i.append(order)
    return np.array(out_d, dtype=np.float32), np.array(out_i, dtype=np.int64)


# (M, K): four-query groups (small tables), two-query groups (M * K > 2048), K not a power of two;
# M = 3 and 5 take the kernel whose sub-code count is a run-time value, M = 16 the unrolled one
@pytest.mark.parametrize("M,K", [(3, 16), (16, 256), (5, 200)])
@pytest.mark.parametrize("nq", [1, 3, 9])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("gather", GATHER)
def test_adc_kernels_equal_the_reference(M, K, nq, ties, gather):
    rng = np.random.default_rng(M * 1000 + K + nq)
    n = 3001  # not a multiple of the gathers' 8 lanes: the last code goes one at a time
    codes = rng.integers(0, K, (n, M), dtype=np.uint8)
    if ties:  # small integers: many equal distances, which must come in position order
        tables = rng.integers(0, 3, (nq, M, K)).astype(np.float32)
        db_bias = np.zeros(n, dtype=np.float32)
        q_bias = np.zeros(nq, dtype=np.float32)
    else:
        tables = rng.random((nq, M, K), dtype=np.float32)
        db_bias = rng.random(n, dtype=np.float32)
        q_bias = rng.random(nq, dtype=np.float32)
    for k in (1, 10, 257, n):
        rd, ri = reference(tables, codes, db_bias, q_bias, k)
        for kernel in (adc_knn, adc_rank):
            d, i = kernel(tables, codes, db_bias, q_bias, k, gather=gather)
            np.testing.assert_array_equal(i, ri)
            np.testing.assert_array_equal(d, rd)


@pytest.mark.skipif(not HAVE_AVX2, reason="the gather kernels need AVX2")
@pytest.mark.parametrize("n", [7, 8, 64, 101])
def test_gather_kernels_on_few_codes_and_given_groups(n):
    """Fewer codes than one group, exactly one, and k reaching past the whole groups; the groups a
    caller keeps (as ADCIndex does) give the result the kernel's own regrouping gives."""
    rng = np.random.default_rng(n)
    M, K, nq = 8, 256, 5
    codes = rng.integers(0, K, (n, M), dtype=np.uint8)
    tables = rng.random((nq, M, K), dtype=np.float32)
    db_bias = rng.random(n, dtype=np.float32)
    q_bias = rng.random(nq, dtype=np.float32)
    groups = group_codes(codes)
    assert groups.shape == ((n // 8) * 8 * M,)
    for k in sorted({1, min(n, 9), n}):
        rd, ri = reference(tables, codes, db_bias, q_bias, k)
        for kernel in (adc_knn, adc_rank):
            d, i = kernel(tables, codes, db_bias, q_bias, k, groups=groups, gather=True)
            np.testing.assert_array_equal(i, ri)
            np.testing.assert_array_equal(d, rd)


def test_prefetch_changes_nothing_and_takes_only_index_tuples_that_fit():
    import numba as nb
    from numba.core.errors import TypingError

    from deepcodes.index.simd import prefetch

    @nb.njit
    def prefetch_then_sum(table):
        total = np.uint64(0)
        for i in range(table.shape[0]):
            for j in range(table.shape[1]):
                prefetch(table, (i, j))
                prefetch(table, (i,))
                total += table[i, j, 0]
        return total

    table = np.arange(2 * 5 * 3, dtype=np.uint64).reshape(2, 5, 3)
    before = table.copy()
    assert prefetch_then_sum(table) == table[:, :, 0].sum()
    assert np.array_equal(table, before)

    @nb.njit
    def prefetch_three_indices(table):
        prefetch(table, (0, 0, 0))

    with pytest.raises(TypingError):  # more indices than the array has dimensions
        prefetch_three_indices(np.zeros((2, 3), dtype=np.uint64))
