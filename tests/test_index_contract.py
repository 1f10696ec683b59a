"""The CodeIndex contract (index/base.py), checked on every index class: caller ids through
add/remove/save/load/search, all-or-nothing changes, range_search, search_by_id, parameters."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import deepcodes
from deepcodes import persist
from deepcodes.coders import ITQ, PQ, RQ
from deepcodes.errors import FormatError, InputError, NotFittedError
from deepcodes.index import ADCIndex, HammingIndex, IVFADCIndex, MultiIndexHashing, VLQIndex
from deepcodes.index.base import CodeIndex
from reference import brute_hamming


def _hamming(X):
    return HammingIndex(coder=ITQ(32, random_state=0).fit(X))


def _mih(X):
    return MultiIndexHashing(coder=ITQ(32, random_state=0).fit(X), n_substrings=4)


def _adc(X):
    return ADCIndex(PQ(M=8, n_bits_per_code=4, n_iter=5, random_state=0).fit(X))


def _ivf(X):
    return IVFADCIndex(X.shape[1], 8, M=8, n_bits_per_code=4, n_iter=5, random_state=0).train(X)


def _vlq(X):
    return VLQIndex(X.shape[1], 8, n_neighbors=3, M=8, n_bits_per_code=4, n_iter=5, random_state=0).train(X)


BUILDERS = {"hamming": _hamming, "mih": _mih, "adc": _adc, "ivf": _ivf, "vlq": _vlq}
# full-probe parameters, so the inverted indexes are exact over their codes here
EXHAUSTIVE = {"hamming": {}, "mih": {}, "adc": {}, "ivf": {"nprobe": 8}, "vlq": {"nprobe": 8, "w": 24}}


@pytest.fixture(scope="module")
def data(digits):
    X, _ = digits
    return X[:1500], X[1500:1530]


@pytest.fixture(params=sorted(BUILDERS))
def kind(request):
    return request.param


def _filled(kind, data):
    X, _ = data
    index = BUILDERS[kind](X)
    ids = np.random.default_rng(0).choice(10**9, len(X), replace=False).astype(np.int64)
    index.add(X[:700], ids[:700])
    index.add(X[700:], ids[700:], batch_size=300)
    return index, ids


def _snapshot(index, Q, params):
    return [a.copy() for a in index.search(Q, 20, **params)] + [index.ntotal]


def _assert_same(a, b):
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_every_index_class_is_a_code_index():
    for cls in (HammingIndex, MultiIndexHashing, ADCIndex, IVFADCIndex, VLQIndex):
        assert issubclass(cls, CodeIndex)


def test_caller_ids_through_add_remove_save_load_and_search(kind, data, tmp_path):
    X, Q = data
    index, ids = _filled(kind, data)
    params = EXHAUSTIVE[kind]
    assert index.ntotal == len(X) and ids[5] in index and -1 not in index and "x" not in index
    d, i = index.search(Q, 10, **params)
    assert i.dtype == np.int64 and set(i.ravel()) <= set(ids)
    # the query that is a stored vector finds itself (at distance 0 for binary codes)
    di, ii = index.search(X[:3], 1, **params)
    np.testing.assert_array_equal(index.contains(ii[:, 0]), True)
    np.testing.assert_array_equal(index.get_codes(ids[:4]), index.get_codes(ids[:4]))
    assert index.get_codes(ids[:4]).shape == (4, index.code_size)

    gone = ids[::3]
    assert index.remove(gone) == len(gone)
    assert index.ntotal == len(X) - len(gone) and not index.contains(gone).any()
    d, i = index.search(Q, 30, **params)
    assert not np.isin(i, gone).any()
    for mmap in (False, True):
        path = tmp_path / f"{kind}{mmap}.dc"
        index.save(path, meta={"trained_on": "digits"})
        loaded = deepcodes.load(path, mmap=mmap)
        assert type(loaded) is type(index) and loaded.ntotal == index.ntotal
        assert loaded.describe()["trained_on"] == "digits"
        _assert_same(loaded.search(Q, 30, **params), (d, i))
        # the loaded index keeps working: add (default ids continue after the largest) and remove
        loaded.add(X[:2])
        assert loaded.contains([ids.max() + 1, ids.max() + 2]).all() and loaded.ntotal == index.ntotal + 2
        loaded.remove([int(ids.max()) + 1, int(ids.max()) + 2])
        _assert_same(loaded.search(Q, 30, **params), (d, i))
    again = type(index).from_bytes(index.to_bytes())
    _assert_same(again.search(Q, 30, **params), (d, i))


def test_bad_ids_leave_the_index_unchanged(kind, data):
    X, Q = data
    index, ids = _filled(kind, data)
    params = EXHAUSTIVE[kind]
    before = _snapshot(index, Q, params)
    bad = [
        (lambda: index.add(X[:3], [7, 8, 7]), "id 7 appears twice"),
        (lambda: index.add(X[:2], [1, ids[4]]), f"id {ids[4]} is already in the index"),
        (lambda: index.add(X[:2], [3, -2]), "id -2 is negative"),
        (lambda: index.add(X[:2], [3]), "got 1 ids for 2 items"),
        (lambda: index.add(X[:2], [3.0, 4.0]), "ids must be integers"),
        (lambda: index.add(X[:2], "ab"), "ids must be integers"),
        (lambda: index.remove([ids[0], 12345]), "id 12345 is not in the index"),
        (lambda: index.remove([ids[0], ids[0]]), "appears twice"),
        (lambda: index.remove([-5]), "id -5 is negative"),
        (lambda: index.get_codes([12345]), "id 12345 is not in the index"),
        (lambda: index.search_by_id([12345], 1), "id 12345 is not in the index"),
        (lambda: index.search(Q, 10, nprob=3), "unknown search parameter 'nprob'.*valid: "),
        (lambda: index.search(Q, len(X) + 1), "larger than the database"),
        (lambda: index.range_search(Q, -1), "radius"),
    ]
    for call, message in bad:
        with pytest.raises(InputError, match=message):
            call()
        _assert_same(_snapshot(index, Q, params), before)


def test_a_repeated_id_is_caught_while_additions_are_still_queued(kind, data):
    # batches under unordered ids stay queued (unmerged) between adds; the check still sees them
    X, Q = data
    index = BUILDERS[kind](X)
    ids = np.random.default_rng(1).choice(10**6, 900, replace=False).astype(np.int64)
    index.add(X[:300], ids[:300])
    index.add(X[300:600], ids[300:600])
    with pytest.raises(InputError, match=f"id {ids[450]} is already in the index"):
        index.add(X[600:602], [ids[600], ids[450]])
    index.add(X[600:900], ids[600:900])
    assert index.ntotal == 900 and index.contains(ids).all()
    whole = BUILDERS[kind](X)
    whole.add(X[:900], ids)
    _assert_same(index.search(Q, 20, **EXHAUSTIVE[kind]), whole.search(Q, 20, **EXHAUSTIVE[kind]))
    index.remove(ids[:100])
    with pytest.raises(InputError, match=f"id {ids[200]} is already in the index"):
        index.add(X[:2], [ids[50], ids[200]])
    index.add(X[:1], [ids[50]])
    assert ids[50] in index and index.ntotal == 801


def test_default_ids_continue_after_the_largest(kind, data):
    X, _ = data
    index = BUILDERS[kind](X)
    index.add(X[:10])
    index.add(X[10:15], ids=[100, 101, 102, 103, 104])
    index.remove([2])
    index.add(X[15:17])
    assert index.contains([105, 106]).all() and not index.contains([2, 15]).any()


def test_range_search_equals_all_results_cut_at_the_radius(kind, data):
    X, Q = data
    index, _ = _filled(kind, data)
    params = EXHAUSTIVE[kind]
    full_d, full_i = index.search(Q, index.ntotal, **params)
    radius = full_d[:, 40].max() if index.distance_kind == "binary" else float(np.median(full_d[:, 150]))
    radius = int(radius) if index.distance_kind == "binary" else radius
    lims, D, I = index.range_search(Q, radius, **params)
    assert lims.shape == (len(Q) + 1,) and lims[-1] == len(D) == len(I)
    for q in range(len(Q)):
        keep = (full_d[q] <= radius) & (full_i[q] >= 0)
        d, i = D[lims[q]:lims[q + 1]], I[lims[q]:lims[q + 1]]
        assert np.all((d[1:] > d[:-1]) | ((d[1:] == d[:-1]) & (i[1:] > i[:-1])))
        if index.distance_kind == "binary":
            _assert_same((d, i), (full_d[q][keep], full_i[q][keep]))
        else:
            # float tables are computed per query batch, so distances agree to rounding only: items
            # at the radius itself may fall on either side
            sure = np.abs(full_d[q] - radius) > 1e-4 * radius
            assert set(i) & set(full_i[q][sure]) == set(full_i[q][keep & sure])
            by_id = dict(zip(full_i[q], full_d[q]))
            np.testing.assert_allclose(d, [by_id[j] for j in i], rtol=1e-5)
    assert (np.diff(lims) > 64).any()  # some queries needed the growing search


def test_search_by_id_queries_with_the_stored_item(kind, data):
    X, _ = data
    index, ids = _filled(kind, data)
    params = EXHAUSTIVE[kind]
    d, i = index.search_by_id(ids[:20], 5, **params)
    own = [ids[q] in i[q][d[q] == d[q, 0]] for q in range(20)]
    assert all(own)
    if index.distance_kind == "binary":
        _assert_same((d, i), index.search_codes(index.get_codes(ids[:20]), 5))
    else:
        _assert_same((d, i), index._search(index.reconstruct(ids[:20]), 5, **{**index.search_params, **params})[:2])
        assert index.reconstruct(ids[:3]).dtype == np.float32


def test_describe_and_repr(kind, data):
    index, _ = _filled(kind, data)
    info = index.describe()
    assert info["class"] == type(index).__name__ and info["ntotal"] == 1500 and info["d"] == 64
    assert info["bytes_per_vector"] == index.code_size + 8 and info["is_trained"]
    assert set(info["search_params"]) == set(index.search_params)
    assert repr(index) == f"{type(index).__name__}(spec=None, d=64, ntotal=1500, code_size={index.code_size})"


def test_binary_indexes_have_no_reconstruction(data):
    index, ids = _filled("hamming", data)
    with pytest.raises(InputError, match="binary codes"):
        index.reconstruct(ids[:2])


def test_from_bytes_refuses_another_class(data):
    index, _ = _filled("hamming", data)
    with pytest.raises(FormatError, match="not a ADCIndex"):
        ADCIndex.from_bytes(index.to_bytes())


def test_unfitted_coder_is_fitted_by_train(data):
    X, Q = data
    index = HammingIndex(coder=ITQ(32, random_state=0), d=64)
    assert not index.is_trained and index.d == 64
    with pytest.raises(NotFittedError, match="train"):
        index.add(X)
    index.train(X).add(X)
    ref = _hamming(X)
    ref.add(X)
    _assert_same(index.search(Q, 5), ref.search(Q, 5))
    adc = ADCIndex(RQ(M=4, n_bits_per_code=4, n_iter=3, random_state=0), d=64).train(X)
    assert adc.is_trained and adc.train(X[:10]) is adc  # a trained index ignores train


def _codes_with_ties(rng, n, n_bytes, n_values):
    values = rng.integers(0, 256, n_values, dtype=np.uint8)
    return values[rng.integers(0, n_values, (n, n_bytes))]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 200), seed=st.integers(0, 2**16), n_values=st.integers(1, 3),
       frac=st.floats(0.05, 0.9), k_frac=st.floats(0.0, 1.0), mih=st.booleans())
def test_removal_from_a_hamming_index_equals_building_without(n, seed, n_values, frac, k_frac, mih):
    rng = np.random.default_rng(seed)
    db = _codes_with_ties(rng, n, 4, n_values)
    q = _codes_with_ties(rng, 7, 4, n_values)
    ids = rng.permutation(10 * n)[:n]
    gone = rng.random(n) < frac
    gone[0] = False
    make = (lambda: MultiIndexHashing(32, n_substrings=2)) if mih else (lambda: HammingIndex(32))
    index = make()
    index.add_codes(db[: n // 2], ids[: n // 2])
    index.add_codes(db[n // 2:], ids[n // 2:])
    index.remove(ids[gone])
    fresh = make()
    fresh.add_codes(db[~gone], ids[~gone])
    k = max(1, int(k_frac * (~gone).sum()))
    d, i = index.search_codes(q, k)
    _assert_same((d, i), fresh.search_codes(q, k))
    # and both are the stable brute force over the kept codes, ties by id
    order = np.argsort(ids[~gone])
    rd, rpos = brute_hamming(db[~gone][order], q, 32, k)
    _assert_same((d, i), (rd, ids[~gone][order][rpos]))


@settings(max_examples=20, deadline=None)
@given(n=st.integers(3, 150), seed=st.integers(0, 2**16), frac=st.floats(0.05, 0.9), k_frac=st.floats(0.0, 1.0))
def test_removal_from_an_adc_index_equals_building_without(pq4, n, seed, frac, k_frac):
    q, X = pq4
    rng = np.random.default_rng(seed)
    # codes of 6 distinct vectors repeated: many exactly tied distances
    codes = q.encode(X[rng.integers(0, 6, n)])
    ids = rng.permutation(10 * n)[:n]
    gone = rng.random(n) < frac
    gone[0] = False
    index = ADCIndex(q)
    index.add_codes(codes, ids)
    index.remove(ids[gone])
    fresh = ADCIndex(q)
    fresh.add_codes(codes[~gone][::-1], ids[~gone][::-1])
    k = max(1, int(k_frac * (~gone).sum()))
    d, i = index.search(X[:5], k)
    _assert_same((d, i), fresh.search(X[:5], k))
    for row in range(5):
        assert np.all((d[row, 1:] > d[row, :-1]) | ((d[row, 1:] == d[row, :-1]) & (i[row, 1:] > i[row, :-1])))


@pytest.fixture(scope="module")
def pq4(digits):
    X, _ = digits
    return PQ(M=4, n_bits_per_code=4, n_iter=5, random_state=0).fit(X), X


def test_mih_rebuilds_its_tables_after_removal(data):
    X, Q = data
    index, ids = _filled("mih", data)
    ref, _ = _filled("hamming", data)
    index.search(Q, 5)
    index.remove(ids[:500])
    ref.remove(ids[:500])
    _assert_same(index.search(Q, 10), ref.search(Q, 10))


def test_mmap_load_keeps_codes_on_disk(data, tmp_path):
    index, _ = _filled("adc", data)
    index.save(tmp_path / "a.dc")
    loaded = deepcodes.load(tmp_path / "a.dc", mmap=True)
    assert persist.is_file_mapped(loaded.codes) and persist.is_file_mapped(loaded.ids)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**16), n_values=st.integers(1, 4), radius=st.integers(0, 24))
def test_hamming_range_search_equals_brute_force(n, seed, n_values, radius):
    rng = np.random.default_rng(seed)
    db = _codes_with_ties(rng, n, 3, n_values)
    q = _codes_with_ties(rng, 5, 3, n_values)
    ids = rng.choice(10 * n, n, replace=False)
    index = HammingIndex(24)
    index.add_codes(db, ids)
    lims, D, I = index.range_search(q, radius)
    order = np.argsort(ids)
    rd, rpos = brute_hamming(db[order], q, 24, n)
    for row in range(len(q)):
        keep = rd[row] <= radius
        _assert_same((D[lims[row]:lims[row + 1]], I[lims[row]:lims[row + 1]]), (rd[row][keep], ids[order][rpos[row]][keep]))
