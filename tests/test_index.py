import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepcodes.coders import ITQ, OPQ, PQ, RQ
from deepcodes.errors import InputError
from deepcodes.index import ADCIndex, HammingIndex
from reference import brute_hamming


@settings(max_examples=40, deadline=None)
@given(n_bytes=st.sampled_from([1, 2, 3, 8, 9, 16]), n=st.integers(2, 300), nq=st.integers(1, 40),
       k_frac=st.floats(0.01, 1.0), seed=st.integers(0, 2**16), n_values=st.integers(1, 4))
def test_hamming_equals_stable_brute_force_with_many_ties(n_bytes, n, nq, k_frac, seed, n_values):
    rng = np.random.default_rng(seed)
    # few distinct byte values -> many duplicated codes and tied distances
    values = rng.integers(0, 256, n_values, dtype=np.uint8)
    db = values[rng.integers(0, n_values, (n, n_bytes))]
    q = values[rng.integers(0, n_values, (nq, n_bytes))]
    k = max(1, int(k_frac * n))
    index = HammingIndex(8 * n_bytes)
    index.add_codes(db[: n // 2])
    index.add_codes(db[n // 2:])
    d, i = index.search_codes(q, k)
    rd, ri = brute_hamming(db, q, 8 * n_bytes, k)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd)


def test_hamming_candidate_buffer_compaction_is_exact():
    # n far above the candidate capacity (2k or k+1024) forces several compactions.
    rng = np.random.default_rng(1)
    db = rng.integers(0, 4, (20000, 2), dtype=np.uint8)
    q = rng.integers(0, 4, (33, 2), dtype=np.uint8)
    index = HammingIndex(16)
    index.add_codes(db)
    for k in (1, 7, 100):
        d, i = index.search_codes(q, k)
        rd, ri = brute_hamming(db, q, 16, k)
        np.testing.assert_array_equal(i, ri)
        np.testing.assert_array_equal(d, rd)


def test_hamming_index_with_coder_encodes_vectors(digits):
    X, _ = digits
    itq = ITQ(16, random_state=0).fit(X)
    index = HammingIndex(coder=itq)
    index.add(X, batch_size=500)
    d, i = index.search(X[:10], 5)
    ref = HammingIndex(16)
    ref.add_codes(itq.encode(X))
    rd, ri = ref.search_codes(itq.encode(X[:10]), 5)
    np.testing.assert_array_equal(i, ri)
    assert (d[:, 0] == 0).all()


def test_hamming_errors():
    index = HammingIndex(16)
    with pytest.raises(InputError, match="empty"):
        index.search_codes(np.zeros((1, 2), np.uint8), 1)
    index.add_codes(np.zeros((5, 2), np.uint8))
    with pytest.raises(InputError, match="k=6 is larger than the database"):
        index.search_codes(np.zeros((1, 2), np.uint8), 6)
    with pytest.raises(InputError, match="expected 2"):
        index.search_codes(np.zeros((1, 3), np.uint8), 1)
    with pytest.raises(InputError, match="expected 2"):
        index.add_codes(np.zeros((1, 4), np.uint8))
    with pytest.raises(InputError, match="integer"):
        index.add_codes(np.zeros((1, 2), np.float32))
    with pytest.raises(InputError, match="multiple of 8"):
        HammingIndex(10)
    with pytest.raises(InputError, match="integer array of codes"):
        index.search(np.zeros((1, 2), np.float32), 1)


@pytest.mark.parametrize("cls", [PQ, OPQ, RQ])
def test_adc_equals_brute_force_on_reconstructions_with_ties(cls, digits):
    X, _ = digits
    q = cls(M=4, n_bits_per_code=4, n_iter=10, random_state=0).fit(X)
    # repeat every code three times: equal distances must come back in id order
    codes = np.repeat(q.encode(X[:200]), 3, axis=0)
    index = ADCIndex(q)
    index.add_codes(codes[:250])
    index.add_codes(codes[250:])
    Q = X[300:320]
    d, i = index.search(Q, 50)
    recon = q.decode(codes).astype(np.float64)
    ref = ((Q[:, None, :].astype(np.float64) - recon[None]) ** 2).sum(-1)
    # group ids of equal codes share exactly the same float32 distance in the index
    full_d, full_i = index.search(Q, len(codes))
    for row in range(len(Q)):
        by_id = np.empty(len(codes), np.float32)
        by_id[full_i[row]] = full_d[row]
        order = np.lexsort((np.arange(len(codes)), by_id))
        np.testing.assert_array_equal(full_i[row], order)
        np.testing.assert_allclose(full_d[row], ref[row][full_i[row]], rtol=1e-4, atol=1e-4)
        # exact-duplicate codes tie: ids within a triple come out ascending and adjacent
        triple = full_i[row][:3]
        assert list(triple) == sorted(triple) and triple[0] // 3 == triple[2] // 3
    np.testing.assert_array_equal(i, full_i[:, :50])


def test_adc_index_add_vectors_in_batches(digits):
    X, _ = digits
    pq = PQ(M=8, n_bits_per_code=4, n_iter=10, random_state=0).fit(X)
    a = ADCIndex(pq)
    a.add(X, batch_size=100)
    np.testing.assert_array_equal(a.codes, pq.encode(X))
    assert a.ntotal == len(X)


def test_adc_errors(digits):
    X, _ = digits
    pq = PQ(M=4, n_bits_per_code=4, n_iter=5, random_state=0).fit(X)
    index = ADCIndex(pq)
    with pytest.raises(InputError, match="empty"):
        index.search(X[:1], 1)
    index.add(X[:10])
    with pytest.raises(InputError, match="dimension 3, expected 64"):
        index.search(X[:2, :3], 1)
    with pytest.raises(InputError, match="k=11"):
        index.search(X[:2], 11)
    with pytest.raises(InputError, match="NaN"):
        index.search(np.full((1, 64), np.nan), 1)
    with pytest.raises(InputError, match="K=16"):
        index.add_codes(np.full((1, 4), 200, np.uint8))
    with pytest.raises(InputError, match="quantizer"):
        ADCIndex(ITQ(8).fit(X))


def test_adc_index_gather_path_follows_changes(digits, monkeypatch):
    """ADCIndex's regrouped codes (the gather kernels', M >= 8 on AVX2) are rebuilt after a removal
    and an addition: its results equal the scalar kernels' at every step, bit for bit."""
    import deepcodes.index.adc as adc_module

    X, _ = digits
    pq = PQ(M=8, n_bits_per_code=8, n_iter=5, random_state=0).fit(X)
    index = ADCIndex(pq)
    index.add(X[:1001])
    Q = X[1500:1520]
    for step in range(3):
        if step == 1:
            index.remove(np.arange(0, 1001, 5))
        if step == 2:
            index.add(X[1001:1403])
        for k in (7, index.ntotal):
            fast = index.search(Q, k)
            monkeypatch.setattr(adc_module, "gathers_pay", lambda M: False)
            scalar = index.search(Q, k)
            monkeypatch.undo()
            np.testing.assert_array_equal(fast[0], scalar[0])
            np.testing.assert_array_equal(fast[1], scalar[1])
