"""VLQFastScanIndex: its re-ranked results against exact VLQ-ADC on the same codes, its layout
after changes, and its input checks."""
import numpy as np
import pytest

from deepcodes import index_factory
from deepcodes.errors import InputError
from deepcodes.index import VLQFastScanIndex, VLQIndex
from deepcodes.index import vlq_fastscan

SEARCH = {"nprobe": 4, "w": 12}


@pytest.fixture(scope="module")
def filled():
    rng = np.random.default_rng(0)
    centres = 4 * rng.standard_normal((40, 24)).astype(np.float32)
    X = (centres[rng.integers(0, 40, 4000)] + rng.standard_normal((4000, 24))).astype(np.float32)
    Q = (centres[rng.integers(0, 40, 60)] + rng.standard_normal((60, 24))).astype(np.float32)
    index = index_factory(24, "VLQ32x6,PQ7x4,FastScan", random_state=0)  # odd M: a half-used byte pair
    index.train(X)
    index.add(X, ids=np.arange(4000) * 3)  # caller ids, not positions
    return index, Q


def exact_twin(index):
    """A VLQIndex holding exactly the same trained state and codes."""
    return VLQIndex._from_state(*index._get_state())


def test_factory_spelling_and_code_layout(filled):
    index, _ = filled
    assert isinstance(index, VLQFastScanIndex) and index.spec == "VLQ32x6,PQ7x4,FastScan"
    assert index.code_size == 8 and index.get_codes([0, 3]).shape == (2, 8)
    assert index.memory_bytes()["fastscan"] > 0


def test_full_shortlist_equals_exact_vlq(filled):
    index, Q = filled
    exact = exact_twin(index)
    d0, i0, scanned = exact.search(Q, 10, **SEARCH, return_scanned=True)
    d1, i1 = index.search(Q, 10, **SEARCH, kprime=int(scanned.max()))
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)
    # the default shortlist (40 of ~300 scanned) holds the exact top 10 for most queries
    _, i2 = index.search(Q, 10, **SEARCH)
    assert (i2 == i0).all(axis=1).mean() >= 0.8


def test_short_shortlist_returns_exact_distances_of_its_codes(filled):
    # k' = k = 10 of 100-900 scanned: the shortlist misses some of the exact top 10, but every returned
    # distance is the exact kernel's distance of that id, and the results come in (distance, id) order
    index, Q = filled
    d_all, i_all, scanned = exact_twin(index).search(Q, 4000, **SEARCH, return_scanned=True)  # every code scanned
    assert (scanned > 12).all()
    d, i = index.search(Q, 10, **SEARCH, kprime=10)
    for q in range(Q.shape[0]):
        exact = dict(zip(i_all[q].tolist(), d_all[q].tolist()))
        assert [exact[x] for x in i[q]] == d[q].tolist()
        assert sorted(zip(d[q].tolist(), i[q].tolist())) == list(zip(d[q].tolist(), i[q].tolist()))
    assert not np.array_equal(i, i_all[:, :10])  # the case is not the full shortlist's


def test_scalar_kernel_and_batches_agree(filled, monkeypatch):
    index, Q = filled
    d0, i0 = index.search(Q, 5, **SEARCH, kprime=20)
    d1, i1 = index.search(Q, 5, **SEARCH, kprime=20, batch_size=7)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_allclose(d1, d0, rtol=1e-5)  # the centroid GEMM rounds by batch
    monkeypatch.setattr(vlq_fastscan, "HAVE_AVX2", False)
    d2, i2 = index.search(Q, 5, **SEARCH, kprime=20)
    np.testing.assert_array_equal(i2, i0)
    np.testing.assert_array_equal(d2, d0)


def test_round_trip_and_remove_rebuild_the_layout(filled):
    index, Q = filled
    back = VLQFastScanIndex.from_bytes(index.to_bytes())
    d0, i0 = index.search(Q, 10, **SEARCH)
    d1, i1 = back.search(Q, 10, **SEARCH)
    np.testing.assert_array_equal(i1, i0)
    np.testing.assert_array_equal(d1, d0)
    gone = np.unique(i0[:, 0])
    assert back.remove(gone) == len(gone)
    exact = exact_twin(back)
    _, i2, scanned = exact.search(Q, 10, **SEARCH, return_scanned=True)
    d3, i3 = back.search(Q, 10, **SEARCH, kprime=int(scanned.max()))
    assert not np.isin(i3, gone).any()
    np.testing.assert_array_equal(i3, i2)


def test_bad_input(filled):
    index, Q = filled
    with pytest.raises(InputError, match="kprime=5 is smaller than k=10"):
        index.search(Q, 10, **SEARCH, kprime=5)
    with pytest.raises(InputError, match="kprime"):
        index.search(Q, 10, **SEARCH, kprime=0)
    with pytest.raises(InputError, match="4-bit"):
        VLQFastScanIndex(24, 32, n_neighbors=6, M=8, n_bits_per_code=8)
    for spec in ("IVF64,PQ8x4,FastScan", "VLQ32x6,PQ8,FastScan", "VLQ32x6,FastScan"):
        with pytest.raises(InputError, match="bad index spec"):
            index_factory(24, spec)
