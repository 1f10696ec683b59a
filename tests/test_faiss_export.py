import numpy as np
import pytest

from deepcodes.coders import OPQ, PQ, RQ
from deepcodes.coders.gsl import GSLQuantizer
from deepcodes.errors import InputError
from deepcodes.index import ADCIndex
from deepcodes.interop.faiss_export import to_faiss


def _same_neighbours(index_ours, faiss_index, Q, k=20):
    D, ids = index_ours.search(Q, k)
    Df, idf = faiss_index.search(np.ascontiguousarray(Q), k)
    np.testing.assert_allclose(Df, D, rtol=1e-4, atol=1e-4)
    # Ids agree wherever distances are not tied (ties may be ordered differently).
    tied = np.zeros_like(ids, dtype=bool)
    gaps = np.diff(D, axis=1) < 1e-4
    tied[:, 1:] |= gaps
    tied[:, :-1] |= gaps
    np.testing.assert_array_equal(idf[~tied], ids[~tied])
    assert (~tied).mean() > 0.5


@pytest.mark.parametrize("quantizer", [
    PQ(M=4, n_bits_per_code=8, n_iter=5),                      # 64 = 4 x 16: no padding
    PQ(M=5, n_bits_per_code=8, n_iter=5),                      # padded to 65
    PQ(M=4, n_bits_per_code=5, n_iter=5),                      # codes not byte-aligned in faiss
    OPQ(M=4, n_bits_per_code=8, n_iter=5, n_outer=2),
    OPQ(M=6, n_bits_per_code=6, n_iter=5, n_outer=2),          # padded and rotated
])
def test_faiss_returns_the_same_neighbours(quantizer, digits):
    X, _ = digits
    q = quantizer.set_params(random_state=0).fit(X)
    ours = ADCIndex(q)
    ours.add(X)
    exported = to_faiss(q, X)
    assert exported.ntotal == len(X)
    _same_neighbours(ours, exported, X[:60])
    # the codes travel unchanged
    from_codes = to_faiss(q, codes=ours.codes)
    np.testing.assert_array_equal(from_codes.search(X[:5], 5)[1], exported.search(X[:5], 5)[1])


@pytest.mark.parametrize("quantizer", ["pq", "opq"])
def test_gsl_codes_served_by_faiss(quantizer, digits):
    X, y = digits
    inner = (PQ if quantizer == "pq" else OPQ)(M=4, n_bits_per_code=4, n_iter=5)
    m = GSLQuantizer(n_bits=16, quantizer=inner, dim=20, hidden=(32,), epochs=2, random_state=0).fit(X, y)
    ours = ADCIndex(m)
    ours.add(X)
    exported = to_faiss(m, X)
    D, ids = ours.search(X[:40], 10)
    Df, idf = exported.search(m.embed(X[:40]), 10)
    np.testing.assert_allclose(Df, D, rtol=1e-4, atol=1e-4)


def test_unsupported_models_are_refused(digits):
    X, _ = digits
    with pytest.raises(InputError):
        to_faiss(RQ(M=2, n_bits_per_code=4, n_iter=3, random_state=0).fit(X))
    q = PQ(M=2, n_bits_per_code=4, n_iter=3, random_state=0).fit(X)
    with pytest.raises(InputError):
        to_faiss(q, X, codes=q.encode(X))
    with pytest.raises(InputError):
        to_faiss(q, codes=np.full((3, 2), 200, dtype=np.uint8))
