import numpy as np
import pytest

from deepcodes.coders import ITQ, LSH, OPQ, PQ, RQ, unpack_bits
from deepcodes.errors import InputError, NotFittedError

BINARY = [LSH, ITQ]
QUANTIZERS = [PQ, OPQ, RQ]


def _quantizer(cls, M=4, nbits=4, **kw):
    return cls(M=M, n_bits_per_code=nbits, n_iter=10, random_state=0, **kw)


@pytest.mark.parametrize("cls", BINARY)
@pytest.mark.parametrize("n_bits", [8, 16, 32])
def test_binary_codes_are_packed_and_deterministic(cls, n_bits, digits):
    X, _ = digits
    a = cls(n_bits=n_bits, random_state=3).fit(X)
    b = cls(n_bits=n_bits, random_state=3).fit(X)
    codes = a.encode(X)
    assert codes.dtype == np.uint8 and codes.shape == (len(X), n_bits // 8)
    np.testing.assert_array_equal(codes, b.encode(X))
    bits = unpack_bits(codes, n_bits)
    np.testing.assert_array_equal(bits, a.project(X) >= 0)
    np.testing.assert_array_equal(a.transform(X), codes)


def test_lsh_differs_by_seed(digits):
    X, _ = digits
    assert not np.array_equal(LSH(32, random_state=0).fit(X).encode(X), LSH(32, random_state=1).fit(X).encode(X))


def test_itq_rotation_is_orthogonal_and_lowers_quantization_loss(digits):
    X, _ = digits
    itq = ITQ(n_bits=16, random_state=0).fit(X)
    R = itq.rotation_.astype(np.float64)
    np.testing.assert_allclose(R @ R.T, np.eye(16), atol=1e-5)
    V = (X - itq.mean_) @ itq.components_

    def loss(rot):
        Z = V @ rot
        return np.sum((np.sign(Z) - Z) ** 2)

    no_iter = ITQ(n_bits=16, n_iter=0, random_state=0).fit(X)
    assert loss(itq.rotation_) < loss(no_iter.rotation_)


def test_itq_bits_are_roughly_balanced(mnist_slice):
    X, _, _, _ = mnist_slice
    bits = unpack_bits(ITQ(32, random_state=0).fit(X).encode(X), 32)
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.25)


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_quantizer_roundtrip_shapes_and_error_falls_with_more_codes(cls, digits):
    X, _ = digits
    small = _quantizer(cls, M=2).fit(X)
    big = _quantizer(cls, M=8).fit(X)
    codes = big.encode(X)
    assert codes.dtype == np.uint8 and codes.shape == (len(X), 8) and codes.max() < 16
    assert big.decode(codes).shape == X.shape
    assert big.quantization_error(X) < small.quantization_error(X)
    assert big.quantization_error(X) < np.mean(np.sum((X - X.mean(0)) ** 2, axis=1))


def test_pq_pads_dimensions_that_do_not_divide(digits):
    X, _ = digits
    pq = _quantizer(PQ, M=5).fit(X)  # 64 dims, 5 sub-quantizers: padded to 65
    assert pq.codebooks_.shape == (5, 16, 13)
    assert pq.decode(pq.encode(X)).shape == X.shape


def test_opq_beats_pq_on_correlated_data(digits):
    X, _ = digits
    # A random rotation mixes dimensions across sub-spaces: OPQ should undo it better than PQ.
    Q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((64, 64)))
    Xr = (X @ Q).astype(np.float32)
    pq = _quantizer(PQ, M=8).fit(Xr)
    opq = _quantizer(OPQ, M=8).fit(Xr)
    R = opq.rotation_.astype(np.float64)
    np.testing.assert_allclose(R @ R.T, np.eye(64), atol=1e-4)
    assert opq.quantization_error(Xr) < pq.quantization_error(Xr)


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_adc_tables_give_the_distance_to_the_reconstruction(cls, digits):
    X, _ = digits
    q = _quantizer(cls, M=4).fit(X)
    codes = q.encode(X[:50])
    Q = X[100:105]
    T = q.adc_tables(Q)
    adc = T[:, np.arange(4)[None, :], codes].sum(-1) + q.db_bias(codes)[None] + q.query_bias(Q)[:, None]
    recon = q.decode(codes)
    exact = ((Q[:, None, :] - recon[None]) ** 2).sum(-1)
    np.testing.assert_allclose(adc, exact, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls", BINARY + QUANTIZERS)
def test_bad_input_gets_clear_errors(cls, digits):
    X, _ = digits
    make = (lambda: cls(n_bits=16, random_state=0)) if cls in BINARY else (lambda: _quantizer(cls))
    with pytest.raises(NotFittedError):
        make().encode(X)
    with pytest.raises(InputError, match="NaN"):
        bad = X.copy()
        bad[3, 2] = np.nan
        make().fit(bad)
    with pytest.raises(InputError, match="empty"):
        make().fit(X[:0])
    with pytest.raises(InputError, match="numeric"):
        make().fit(np.array([["a", "b"]]))
    coder = make().fit(X)
    with pytest.raises(InputError, match="dimension 10, expected 64"):
        coder.encode(X[:, :10])
    with pytest.raises(InputError, match="inf"):
        coder.encode(np.full((2, 64), np.inf))


@pytest.mark.parametrize("cls", BINARY)
def test_code_lengths_the_method_cannot_make(cls, digits):
    X, _ = digits
    with pytest.raises(InputError, match="multiple of 8"):
        cls(n_bits=12).fit(X)
    with pytest.raises(InputError):
        cls(n_bits=0).fit(X)


def test_itq_refuses_more_bits_than_dimensions(digits):
    X, _ = digits
    with pytest.raises(InputError, match="128 bits from 64-dimensional"):
        ITQ(n_bits=128).fit(X)


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_quantizer_refuses_impossible_shapes(cls, digits):
    X, _ = digits
    with pytest.raises(InputError, match="n_bits_per_code"):
        cls(M=4, n_bits_per_code=9).fit(X)
    with pytest.raises(InputError, match="at least 256 training points"):
        cls(M=4, n_bits_per_code=8).fit(X[:100])


def test_pq_refuses_more_subquantizers_than_dimensions(digits):
    X, _ = digits
    with pytest.raises(InputError, match="exceed the dimension"):
        PQ(M=100, n_bits_per_code=2).fit(X)
