import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from deepcodes import persist
from deepcodes.coders import ITQ
from deepcodes.errors import FormatError, InputError
from deepcodes.index.hamming import HammingIndex
from deepcodes.index import mih
from deepcodes.index.mih import MultiIndexHashing, default_n_substrings
from reference import brute_hamming


@pytest.fixture(autouse=True)
def _no_linear_scan(monkeypatch):
    # The databases here are small, so most queries would pass the work budget and be answered by
    # the linear scan; lift it so that the multi-index search itself is what gets checked.
    monkeypatch.setattr(mih, "SCAN_BUDGET", 1e9)


def assert_same_as_linear_scan(db, q, n_bits, ks, ms):
    ref = HammingIndex(n_bits)
    ref.add_codes(db)
    for m in ms:
        index = MultiIndexHashing(n_bits, n_substrings=m)
        index.add_codes(db)
        for k in ks:
            d, i = index.search_codes(q, k)
            assert (index.last_work_ >= 0).all()
            rd, ri = ref.search_codes(q, k)
            assert d.dtype == np.int32 and i.dtype == np.int64
            np.testing.assert_array_equal(i, ri, err_msg=f"ids differ for m={m}, k={k}")
            np.testing.assert_array_equal(d, rd, err_msg=f"distances differ for m={m}, k={k}")


@settings(max_examples=40, deadline=None)
@given(n_bytes=st.sampled_from([1, 2, 3, 5, 8, 9, 16]), n=st.integers(2, 300), nq=st.integers(1, 20),
       k_frac=st.floats(0.0, 1.0), seed=st.integers(0, 2**16), n_values=st.integers(1, 4),
       m_frac=st.floats(0.0, 1.0))
def test_mih_equals_stable_brute_force_with_many_ties(n_bytes, n, nq, k_frac, seed, n_values, m_frac):
    rng = np.random.default_rng(seed)
    # few distinct byte values -> many duplicated codes and tied distances
    values = rng.integers(0, 256, n_values, dtype=np.uint8)
    db = values[rng.integers(0, n_values, (n, n_bytes))]
    q = values[rng.integers(0, n_values, (nq, n_bytes))]
    n_bits = 8 * n_bytes
    k = max(1, int(k_frac * n))
    low = -(-n_bits // 24)
    m = low + int(m_frac * (min(n_bits, 12) - low))
    index = MultiIndexHashing(n_bits, n_substrings=m)
    index.add_codes(db[: n // 2])
    index.add_codes(db[n // 2:])
    d, i = index.search_codes(q, k)
    rd, ri = brute_hamming(db, q, n_bits, k)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd)


@pytest.mark.parametrize("n_bits", [32, 64, 128])
def test_mih_equals_linear_scan_on_random_codes(n_bits):
    rng = np.random.default_rng(n_bits)
    db = rng.integers(0, 256, (3000, n_bits // 8), dtype=np.uint8)
    q = rng.integers(0, 256, (40, n_bits // 8), dtype=np.uint8)
    ms = [m for m in (2, 4, 8) if n_bits // m <= 24]
    assert_same_as_linear_scan(db, q, n_bits, (1, 10, 100), ms + [None])


@pytest.mark.parametrize("n_values", [2, 3])
def test_mih_equals_linear_scan_with_many_ties(n_values):
    # Few distinct byte values: thousands of duplicate codes, so the k-th distance is shared by
    # many ids and only the id rule decides which of them are returned.
    rng = np.random.default_rng(n_values)
    values = rng.integers(0, 256, n_values, dtype=np.uint8)
    db = values[rng.integers(0, n_values, (5000, 8))]
    q = np.concatenate([values[rng.integers(0, n_values, (30, 8))], db[:10]])
    assert_same_as_linear_scan(db, q, 64, (1, 10, 100), (3, 4, 8))


def test_mih_equals_linear_scan_on_itq_codes_of_digits(digits):
    X, _ = digits
    for n_bits in (32, 64):
        itq = ITQ(n_bits, random_state=0).fit(X[:1500])
        db, q = itq.encode(X[:1500]), itq.encode(X[1500:])
        assert_same_as_linear_scan(db, q, n_bits, (1, 10, 100), [m for m in (2, 4, 8) if n_bits // m <= 24])


def test_mih_equals_linear_scan_on_itq_codes_of_mnist(mnist_slice):
    X, _, Q, _ = mnist_slice
    itq = ITQ(64, random_state=0).fit(X)
    assert_same_as_linear_scan(itq.encode(X), itq.encode(Q), 64, (1, 10, 100), (3, 4, 8, None))


def test_mih_with_coder_matches_hamming_index(digits):
    X, _ = digits
    itq = ITQ(32, random_state=0).fit(X)
    index = MultiIndexHashing(coder=itq)
    index.add(X, batch_size=400)
    ref = HammingIndex(coder=itq)
    ref.add(X)
    for a, b in zip(index.search(X[:50], 7), ref.search(X[:50], 7)):
        np.testing.assert_array_equal(a, b)


def test_far_queries_go_to_the_linear_scan(monkeypatch):
    rng = np.random.default_rng(9)
    db = rng.integers(0, 256, (4000, 8), dtype=np.uint8)
    # near queries (copies of database codes with a bit flipped) and far ones (random codes)
    near = db[:20].copy()
    near[:, 0] ^= 1
    q = np.concatenate([near, rng.integers(0, 256, (20, 8), dtype=np.uint8)])
    index = MultiIndexHashing(64, n_substrings=4)
    index.add_codes(db)
    monkeypatch.setattr(mih, "SCAN_BUDGET", 0.05)
    d, i = index.search_codes(q, 1, batch_size=16)
    scanned = index.last_work_ < 0
    assert not scanned[:20].any() and scanned[20:].all()
    assert (index.last_work_[:20] <= 0.05 * 4000).all()
    rd, ri = brute_hamming(db, q, 64, 1)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd)


def test_mih_add_after_search_rebuilds_tables():
    rng = np.random.default_rng(5)
    db = rng.integers(0, 4, (2000, 4), dtype=np.uint8)
    q = rng.integers(0, 4, (25, 4), dtype=np.uint8)
    index = MultiIndexHashing(32)
    index.add_codes(db[:100])
    index.search_codes(q, 5)
    index.add_codes(db[100:])
    assert index.ntotal == 2000 and index.m_ == default_n_substrings(32, 2000)
    d, i = index.search_codes(q, 20, batch_size=7)
    rd, ri = brute_hamming(db, q, 32, 20)
    np.testing.assert_array_equal(i, ri)
    np.testing.assert_array_equal(d, rd)


def test_mih_save_load_round_trip(tmp_path, digits):
    X, _ = digits
    itq = ITQ(64, random_state=0).fit(X)
    index = MultiIndexHashing(coder=itq, n_substrings=4)
    index.add(X)
    want = index.search(X[:30], 10)
    path = tmp_path / "mih.dc"
    index.save(path, meta={"note": "test"})
    for mmap in (True, False):
        loaded = persist.load(path, mmap=mmap)
        assert isinstance(loaded, MultiIndexHashing)
        assert loaded.n_substrings == 4 and loaded.ntotal == len(X) and loaded.n_bits == 64
        for a, b in zip(loaded.search(X[:30], 10), want):
            np.testing.assert_array_equal(a, b)
    plain = MultiIndexHashing(16)
    plain.add_codes(np.arange(40, dtype=np.uint8).reshape(20, 2))
    plain.save(tmp_path / "plain.dc")
    loaded = persist.load(tmp_path / "plain.dc")
    assert loaded.n_substrings is None and loaded.coder is None
    np.testing.assert_array_equal(loaded.search_codes(plain.codes[:3], 4)[1], plain.search_codes(plain.codes[:3], 4)[1])


def test_mih_truncated_file_is_a_format_error(tmp_path):
    index = MultiIndexHashing(64)
    index.add_codes(np.random.default_rng(0).integers(0, 256, (500, 8), dtype=np.uint8))
    path = tmp_path / "mih.dc"
    index.save(path)
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(FormatError, match="truncated"):
        persist.load(path)


def test_default_n_substrings():
    assert default_n_substrings(64, 1_000_000) == 4
    assert default_n_substrings(128, 1_000_000) == 8
    assert default_n_substrings(64, 100_000) == 5
    assert default_n_substrings(64, 1000) == 10
    assert default_n_substrings(8, 1) == 2
    assert MultiIndexHashing(256).m_ >= 256 // 24


def test_mih_errors():
    index = MultiIndexHashing(16)
    with pytest.raises(InputError, match="empty"):
        index.search_codes(np.zeros((1, 2), np.uint8), 1)
    index.add_codes(np.zeros((5, 2), np.uint8))
    with pytest.raises(InputError, match="k=6 is larger than the database"):
        index.search_codes(np.zeros((1, 2), np.uint8), 6)
    with pytest.raises(InputError, match="k must be >= 1"):
        index.search_codes(np.zeros((1, 2), np.uint8), 0)
    with pytest.raises(InputError, match="expected 2"):
        index.search_codes(np.zeros((1, 3), np.uint8), 1)
    with pytest.raises(InputError, match="expected 2"):
        index.add_codes(np.zeros((1, 4), np.uint8))
    with pytest.raises(InputError, match="integer"):
        index.search_codes(np.zeros((1, 2), np.float32), 1)
    with pytest.raises(InputError, match="multiple of 8"):
        MultiIndexHashing(12)
    with pytest.raises(InputError, match="at most 24"):
        MultiIndexHashing(64, n_substrings=2)
    with pytest.raises(InputError, match="n_substrings must be <= 16"):
        MultiIndexHashing(16, n_substrings=17)
    with pytest.raises(InputError, match="n_bits or a binary coder"):
        MultiIndexHashing()
