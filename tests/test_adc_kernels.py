"""The blocked ADC kernels against a plain reference: bit-identical float32 distances (summed in the
kernels' order) and the stable (distance, position) order, for every query-group and table shape."""
import numpy as np
import pytest

from deepcodes.index.kernels import adc_knn, adc_rank


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
def test_adc_kernels_equal_the_reference(M, K, nq, ties):
    rng = np.random.default_rng(M * 1000 + K + nq)
    n = 3000
    codes = rng.integers(0, K, (n, M), dtype=np.uint8)
    if ties:  # small integers: many equal distances, which must come in position order
        tables = rng.integers(0, 3, (nq, M, K)).astype(np.float32)
        db_bias = np.zeros(n, dtype=np.float32)
        q_bias = np.zeros(nq, dtype=np.float32)
    else:
        tables = rng.random((nq, M, K), dtype=np.float32)
        db_bias = rng.random(n, dtype=np.float32)
        q_bias = rng.random(nq, dtype=np.float32)
    for k in (1, 10, 257):
        rd, ri = reference(tables, codes, db_bias, q_bias, k)
        for kernel in (adc_knn, adc_rank):
            d, i = kernel(tables, codes, db_bias, q_bias, k)
            np.testing.assert_array_equal(i, ri)
            np.testing.assert_array_equal(d, rd)
