"""DSH, DNNH and SuBiC on small real data (UCI digits, a slice of MNIST)."""
import numpy as np
import pytest
from sklearn.base import clone

from deepcodes import persist
from deepcodes.coders import ITQ, unpack_bits
from deepcodes.coders.dnnh import DNNH, DivideAndEncode
from deepcodes.coders.dsh import DSH, DSHLoss
from deepcodes.coders.subic import SuBiC, block_shape
from deepcodes.errors import InputError
from deepcodes.index import ADCIndex, HammingIndex
from deepcodes.methods import get_method, make_coder

COMMON = dict(hidden=(128,), epochs=10, batch_size=64, lr=3e-3, random_state=0)
CODERS = {"dsh": (DSH, dict(n_bits=32)), "dnnh": (DNNH, dict(n_bits=32)),
          "subic": (SuBiC, dict(n_bits=32, n_blocks=8))}


def _make(name, **kw):
    cls, base = CODERS[name]
    return cls(**{**COMMON, **base, **kw})


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    return {name: _make(name).fit(X[:1400], y[:1400]) for name in CODERS}


def _class_map(scores_db_by_query, y_db, y_q):
    """mAP of rankings given as (nq, n_db) distances, ranked by (distance, id)."""
    aps = []
    for d, yq in zip(scores_db_by_query, y_q):
        rel = y_db[np.lexsort((np.arange(len(d)), d))] == yq
        hits = np.cumsum(rel)
        aps.append((hits[rel] / (np.flatnonzero(rel) + 1)).mean())
    return float(np.mean(aps))


def _map_of(model, X_db, y_db, X_q, y_q):
    if isinstance(model, SuBiC):
        index = ADCIndex(model)
        index.add(X_db)
        d, ids = index.search(X_q, len(X_db))
        order = np.argsort(ids, axis=1)
        return _class_map(np.take_along_axis(d, order, axis=1), y_db, y_q)
    db = unpack_bits(model.encode(X_db), model.n_bits)
    q = unpack_bits(model.encode(X_q), model.n_bits)
    return _class_map((q[:, None, :] != db[None, :, :]).sum(-1), y_db, y_q)


@pytest.mark.parametrize("name", list(CODERS))
def test_loss_decreases_and_the_codes_rank_classes_well(name, fitted, digits):
    X, y = digits
    model = fitted[name]
    losses = [h["loss"] for h in model.history_]
    assert losses[-1] < 0.5 * losses[0]
    scores = [h["validation_score"] for h in model.history_]
    assert model.best_epoch_ == 1 + int(np.argmax(scores))
    # Held-out digits (never trained on) are ranked far better than chance (0.1) and than by
    # the untrained network.
    held_db, held_q = slice(0, 1400), slice(1400, None)
    got = _map_of(model, X[held_db], y[held_db], X[held_q], y[held_q])
    untrained = _make(name, epochs=0).fit(X[:1400], y[:1400])
    assert got > 0.5
    assert got > _map_of(untrained, X[held_db], y[held_db], X[held_q], y[held_q]) + 0.1


@pytest.mark.parametrize("name", ["dsh", "dnnh"])
def test_binary_codes_are_balanced(name, fitted, digits):
    X, _ = digits
    model = fitted[name]
    freq = unpack_bits(model.encode(X), model.n_bits).mean(axis=0)
    assert model.encode(X).shape == (len(X), 4)
    assert freq.min() > 0.05 and freq.max() < 0.95
    assert np.abs(freq - 0.5).mean() < 0.25


def test_subic_codes_are_one_hot_per_block_and_use_their_blocks(fitted, digits):
    X, _ = digits
    model = fitted["subic"]
    codes = model.encode(X)
    assert codes.shape == (len(X), 8) and codes.dtype == np.uint8
    assert (model.M, model.block_size, model.n_bits_per_code, model.code_size) == (8, 16, 4, 8)
    onehot = model.decode(codes).reshape(len(X), 8, 16)
    assert set(np.unique(onehot)) == {0.0, 1.0}
    np.testing.assert_array_equal(onehot.sum(axis=-1), 1)
    np.testing.assert_array_equal(onehot.argmax(axis=-1), codes)
    bits = unpack_bits(model.one_hot_codes(X), model.one_hot_bits).reshape(len(X), 8, 16)
    np.testing.assert_array_equal(bits, onehot.astype(bool))
    # Balanced: every block spreads the data over many entries, none holds a third of it.
    for m in range(8):
        counts = np.bincount(codes[:, m], minlength=16)
        assert (counts > 0).sum() >= 6 and counts.max() < len(X) / 3
    P = model.block_probabilities(X[:50])
    np.testing.assert_allclose(P.sum(axis=-1), 1, rtol=1e-5)
    np.testing.assert_array_equal(P.argmax(axis=-1), codes[:50])


def test_subic_block_sum_distance_equals_its_definition(fitted, digits):
    X, _ = digits
    model = fitted["subic"]
    Xdb, Xq = X[:300], X[1500:1520]
    index = ADCIndex(model)
    index.add(Xdb)
    dist, ids = index.search(Xq, len(Xdb))
    P, codes = model.block_probabilities(Xq), model.encode(Xdb)
    brute = np.array([[-sum(P[q, m, codes[i, m]] for m in range(model.M)) for i in range(len(Xdb))]
                      for q in range(len(Xq))])
    np.testing.assert_allclose(np.take_along_axis(brute, ids, axis=1), dist, rtol=1e-5, atol=1e-6)
    # The ranking is the stable sort of the definition by (distance, id) (equal up to float rounding).
    order = np.lexsort((np.arange(len(Xdb))[None].repeat(len(Xq), 0), brute), axis=1)
    np.testing.assert_allclose(np.take_along_axis(brute, order, axis=1), dist, rtol=1e-5, atol=1e-6)
    # Hamming on the one-hot bits is 2 * (M - blocks in common).
    ham = HammingIndex(n_bits=model.one_hot_bits)
    ham.add_codes(model.one_hot_codes(Xdb))
    hd, hids = ham.search_codes(model.one_hot_codes(Xq), len(Xdb))
    common = (model.encode(Xq)[:, None, :] == codes[None, :, :]).sum(-1)
    np.testing.assert_array_equal(hd, np.take_along_axis(2 * (model.M - common), hids, axis=1))


@pytest.mark.parametrize("name", list(CODERS))
def test_save_load_round_trip_and_sklearn_clone(name, fitted, digits, tmp_path):
    X, _ = digits
    model = fitted[name]
    model.save(tmp_path / "m.dc")
    back = persist.load(tmp_path / "m.dc")
    assert type(back) is type(model)
    np.testing.assert_array_equal(back.encode(X), model.encode(X))
    assert clone(model).get_params() == model.get_params()


def test_fits_are_seeded(digits):
    X, y = digits
    a, b = (_make("dnnh", epochs=2, random_state=7).fit(X[:600], y[:600]) for _ in range(2))
    np.testing.assert_array_equal(a.encode(X), b.encode(X))
    assert a.history_[-1]["loss"] == b.history_[-1]["loss"]


def test_dsh_loss_matches_its_pairwise_definition():
    import torch

    g = torch.Generator().manual_seed(0)
    b = torch.randn(7, 5, generator=g)
    y = torch.tensor([0, 0, 1, 2, 1, 0, 2])
    m, alpha = 3.0, 0.1
    terms = []
    for i in range(7):
        for j in range(i + 1, 7):
            d2 = float(((b[i] - b[j]) ** 2).sum())
            s = float(y[i] == y[j])
            reg = float((b[i].abs() - 1).abs().sum() + (b[j].abs() - 1).abs().sum())
            terms.append(0.5 * s * d2 + 0.5 * (1 - s) * max(m - d2, 0) + alpha * reg)
    assert float(DSHLoss(m, alpha)(b, y)) == pytest.approx(np.mean(terms), rel=1e-5)


def test_divide_and_encode_maps_each_slice_to_its_own_unit():
    import torch

    layer = DivideAndEncode(3, 2)
    layer.reset_from(torch.Generator().manual_seed(0))
    h = torch.randn(4, 6)
    out = layer(h)
    for bit in range(3):
        expect = torch.sigmoid(h[:, 2 * bit:2 * bit + 2] @ layer.weight[bit] + layer.bias[bit])
        np.testing.assert_allclose(out[:, bit].detach().numpy(), expect.detach().numpy(), rtol=1e-6)


def test_cnn_backbone_on_mnist_images(mnist_slice):
    X, y, Q, _ = mnist_slice
    for cls, kw in ((DSH, {}), (DNNH, {}), (SuBiC, {"n_blocks": 4})):
        model = cls(n_bits=16, backbone="cnn", hidden=(64,), epochs=1, random_state=0, augment=cls is DSH,
                    **kw).fit(X[:600], y[:600])
        assert model.encode(Q[:10]).shape == (10, 2 if cls is not SuBiC else 4)


def test_registered_methods_build_them():
    for name, cls in (("dsh", DSH), ("dnnh", DNNH), ("subic", SuBiC)):
        coder = make_coder(name, 64, random_state=3)
        assert isinstance(coder, cls) and coder.n_bits == 64 and get_method(name).supervised


def test_subic_code_lengths():
    assert block_shape(32, None) == (16, 4)
    assert block_shape(24, 6) == (6, 16)
    assert block_shape(32, 4) == (4, 256)
    with pytest.raises(InputError, match="does not divide into blocks of 2 bits"):
        block_shape(33, None)
    with pytest.raises(InputError, match="does not divide into 4 blocks"):
        block_shape(30, 4)
    with pytest.raises(InputError, match="at most 8"):
        block_shape(64, 4)


@pytest.mark.parametrize("name", list(CODERS))
def test_bad_input_is_a_clear_error(name, digits):
    X, y = digits
    X, y = X[:300], y[:300]
    with pytest.raises(InputError, match="labels are missing"):
        _make(name).fit(X)
    with pytest.raises(InputError, match="labels"):
        _make(name).fit(X, y[:-1])
    with pytest.raises(InputError, match="class"):
        _make(name).fit(X, np.zeros(len(X), dtype=int))
    for value in (np.nan, np.inf):
        bad = X.copy()
        bad[5, 7] = value
        with pytest.raises(InputError, match="NaN or inf"):
            _make(name).fit(bad, y)
    bad_bits = dict(n_bits=12, n_blocks=5) if name == "subic" else dict(n_bits=12)
    with pytest.raises(InputError, match="divide|multiple of 8"):
        _make(name, **bad_bits).fit(X, y)
    with pytest.raises(InputError, match="needs images"):
        _make(name, augment=True).fit(X, y)
    with pytest.raises(InputError, match="backbone"):
        _make(name, backbone="resnet").fit(X, y)
    with pytest.raises(InputError, match="lr"):
        _make(name, lr=0).fit(X, y)
    model = _make(name, epochs=1).fit(X, y)
    with pytest.raises(InputError, match="dimension"):
        model.encode(np.zeros((3, 10), dtype=np.float32))
    bad = np.zeros((2, 64), dtype=np.float32)
    bad[1, 1] = np.inf
    with pytest.raises(InputError, match="NaN or inf"):
        model.encode(bad)


def test_deep_coders_beat_itq_on_an_mnist_slice(mnist_slice):
    X, y, Q, yq = mnist_slice
    itq = ITQ(n_bits=32, random_state=0).fit(X)
    base = _map_of(itq, X, y, Q, yq)
    model = DSH(n_bits=32, hidden=(128,), epochs=4, batch_size=64, lr=3e-3, random_state=0).fit(X, y)
    assert _map_of(model, X, y, Q, yq) > base + 0.2
