"""4-bit fast-scan: the SIMD block kernel equals its scalar twin and a brute-force sum of the 8-bit
tables; FastScanIndex's re-ranked top k equals ADCIndex's (same ids, same distances) where the
shortlist covers it, with caller ids, after removal and after a save/load round trip."""
import numpy as np
import pytest

import deepcodes
from deepcodes.coders import PQ
from deepcodes.errors import InputError
from deepcodes.index import ADCIndex, FastScanIndex
from deepcodes.index import fastscan_kernels as fk
from deepcodes.index.simd import HAVE_AVX2


# (2, 5000, 6, 3): sums of two 8-bit entries over 5,000 codes, so ties at the bound and many
# reservoir selections
@pytest.mark.parametrize("M,n,nq,kprime", [(32, 1000, 9, 50), (7, 333, 5, 40), (1, 31, 2, 5), (2, 5000, 6, 3)])
def test_shortlist_kernels_equal_brute_force(M, n, nq, kprime):
    rng = np.random.default_rng(M)
    codes = rng.integers(0, 16, (n, M)).astype(np.uint8)
    tables = (rng.random((nq, M, 16)) * 3).astype(np.float32)
    packed = fk.pack_codes(codes)
    np.testing.assert_array_equal(fk.unpack_codes(packed, n, M), codes)
    luts = fk.quantize_tables(tables)
    n_pairs = -(-M // 2)
    scalar = fk.shortlist(luts, packed, n, n_pairs, kprime, False)
    if HAVE_AVX2:
        simd = fk.shortlist(luts, packed, n, n_pairs, kprime, True)
        np.testing.assert_array_equal(simd[0], scalar[0])
        np.testing.assert_array_equal(simd[1], scalar[1])
    low = tables.min(2, keepdims=True)
    scale = 255 / (tables - low).max((1, 2))
    q8 = np.rint((tables - low) * scale[:, None, None]).astype(np.int64)
    sums = np.stack([q8[q][np.arange(M), codes].sum(1) for q in range(nq)])
    order = np.argsort(sums, axis=1, kind="stable")[:, :kprime]
    np.testing.assert_array_equal(scalar[1][:nq], order)
    np.testing.assert_array_equal(scalar[0][:nq], np.take_along_axis(sums, order, 1))


@pytest.fixture(scope="module")
def pq4(digits):
    X = digits[0].astype(np.float32)
    return X, PQ(M=16, n_bits_per_code=4, n_iter=10, random_state=0).fit(X)


def test_fast_scan_equals_exact_adc_where_the_shortlist_covers_it(pq4):
    X, pq = pq4
    rng = np.random.default_rng(0)
    ids = rng.choice(10**9, X.shape[0], replace=False)
    fast, exact = FastScanIndex(pq), ADCIndex(pq)
    fast.add(X, ids)
    exact.add(X, ids)
    Q = X[:40] + rng.normal(0, 0.05, (40, X.shape[1])).astype(np.float32)
    ed, ei = exact.search(Q, 10)
    d, i = fast.search(Q, 10, kprime=fast.ntotal)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(d, ed)
    # the default shortlist: equal wherever it held exact ADC's top 10 (most rows)
    d, i = fast.search(Q, 10)
    same = (i == ei).all(axis=1)
    assert same.mean() >= 0.8
    np.testing.assert_array_equal(d[same], ed[same])
    # removal, then a round trip through bytes
    fast.remove(ids[:100])
    exact.remove(ids[:100])
    loaded = deepcodes.persist.loads(deepcodes.persist.dumps(fast))
    for index in (fast, loaded):
        d, i = index.search(Q, 10, kprime=index.ntotal)
        ed, ei = exact.search(Q, 10)
        np.testing.assert_array_equal(i, ei)
        np.testing.assert_array_equal(d, ed)


def test_fast_scan_refuses_what_it_cannot_search(pq4):
    X, _ = pq4
    with pytest.raises(InputError, match="4-bit"):
        FastScanIndex(PQ(M=8))
    index = deepcodes.index_factory(X.shape[1], "PQ16x4,FastScan")
    assert isinstance(index, FastScanIndex)
    with pytest.raises(InputError, match="4-bit"):
        deepcodes.index_factory(X.shape[1], "PQ16,FastScan")
    index.train(X)
    index.add(X)
    with pytest.raises(InputError, match="kprime"):
        index.search(X[:2], 10, kprime=5)
    with pytest.raises(InputError, match="unknown search parameter"):
        index.search(X[:2], 10, nprobe=5)
