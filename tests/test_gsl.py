import numpy as np
import pytest

from deepcodes import persist
from deepcodes.coders import OPQ, PQ, RQ
from deepcodes.coders.gsl import GSLQuantizer
from deepcodes.errors import InputError
from deepcodes.index import ADCIndex
from deepcodes.methods import make_coder


def _gsl(**kw):
    # 16-codeword sub-quantizers keep every codebook refit in the test cheap
    base = dict(n_bits=16, quantizer=PQ(M=4, n_bits_per_code=4, n_iter=5), dim=16, hidden=(64,), epochs=3,
                batch_size=128, max_train=None, random_state=0)
    base.update(kw)
    return GSLQuantizer(**base)


@pytest.fixture(scope="module")
def fitted(digits):
    X, y = digits
    return _gsl(quantization="gsl", alpha=0.8).fit(X, y)


def _relative_error(model, X):
    Z = model.embed(X)
    return model.quantization_error(X) / np.sum((Z - Z.mean(0)) ** 2, axis=1).mean()


def test_training_through_the_layer_beats_post_hoc_quantization_error(mnist_slice):
    X, y, _, _ = mnist_slice
    X, y = X[:2000], y[:2000]
    common = dict(n_bits=16, quantizer=PQ(M=4, n_bits_per_code=4, n_iter=5), dim=32, epochs=4, random_state=0,
                  max_train=None)
    post = GSLQuantizer(quantization="none", **common).fit(X, y)
    gsl = GSLQuantizer(quantization="gsl", alpha=0.8, **common).fit(X, y)
    assert gsl.quantization_error(X) < 0.7 * post.quantization_error(X)
    assert _relative_error(gsl, X) < _relative_error(post, X)
    assert gsl.history_[-1]["snapped_fraction"] > 0


def test_codes_search_and_determinism(fitted, digits):
    X, y = digits
    codes = fitted.encode(X)
    assert codes.shape == (len(X), 4) and codes.dtype == np.uint8
    assert fitted.code_size == 4 and fitted.n_bits == 16 and fitted.dim_ == 64
    assert fitted.decode(codes).shape == (len(X), 16)
    again = _gsl(quantization="gsl", alpha=0.8).fit(X, y)
    np.testing.assert_array_equal(again.encode(X), codes)
    index = ADCIndex(fitted)
    index.add(X)
    _, ids = index.search(X[:50], 10)
    # neighbours share the query's class far more often than chance (0.1)
    assert (y[ids] == y[:50, None]).mean() > 0.6


def test_save_load_round_trip(fitted, digits, tmp_path):
    X, _ = digits
    fitted.save(tmp_path / "gsl.dc")
    back = persist.load(tmp_path / "gsl.dc")
    assert isinstance(back, GSLQuantizer)
    np.testing.assert_array_equal(back.encode(X), fitted.encode(X))
    np.testing.assert_allclose(back.adc_tables(X[:5]), fitted.adc_tables(X[:5]), rtol=1e-5)


@pytest.mark.parametrize("quantizer", [OPQ(M=4, n_bits_per_code=4, n_iter=5, n_outer=2),
                                       RQ(M=4, n_bits_per_code=4, n_iter=5), "rq"])
def test_other_quantizers(quantizer, digits):
    X, y = digits
    m = _gsl(quantizer=quantizer, epochs=2 if quantizer != "rq" else 1).fit(X, y)
    index = ADCIndex(m)
    index.add(X)
    d, ids = index.search(X[:5], 3)
    assert ids.shape == (5, 3) and np.isfinite(d).all()
    assert isinstance(m.quantizer_, OPQ if isinstance(quantizer, OPQ) else RQ)


@pytest.mark.parametrize("loss", ["contrastive", "triplet"])
@pytest.mark.parametrize("snap", ["direction", "landing"])
def test_pairwise_losses_and_snap_modes(loss, snap, digits):
    X, y = digits
    m = _gsl(loss=loss, snap=snap, epochs=2, quant_weight=0.01).fit(X, y)
    assert np.isfinite([h["loss"] for h in m.history_]).all()
    assert m.history_[-1]["loss"] < m.history_[0]["loss"] * 1.5


def test_quantization_loss_and_warm_start(digits):
    X, y = digits
    warm = _gsl(quantization="none", epochs=2).fit(X, y)
    refit = _gsl(quantization="none", epochs=0, n_bits=32, quantizer=PQ(M=8, n_bits_per_code=4), init=warm).fit(X, y)
    np.testing.assert_allclose(refit.embed(X[:20]), warm.embed(X[:20]))
    assert refit.code_size == 8
    ql = _gsl(quantization="loss", quant_weight=1.0, epochs=2, init=warm).fit(X, y)
    assert ql.history_[0]["batch_quantization_error"] is not None


def test_cnn_backbone_on_images(mnist_slice):
    X, y, Q, _ = mnist_slice
    m = _gsl(backbone="cnn", epochs=1).fit(X[:600], y[:600])
    assert m.encode(Q[:10]).shape == (10, 4)


def test_registered_method_builds_it():
    m = make_coder("gsl", 32, random_state=1, quantizer="opq")
    assert isinstance(m, GSLQuantizer) and m.n_bits == 32 and m.quantizer == "opq"


def test_bad_input(digits, mnist_slice):
    X, y = digits
    with pytest.raises(InputError, match="labels are missing"):
        _gsl().fit(X)
    with pytest.raises(InputError, match="images"):
        _gsl(backbone="cnn").fit(X, y)                    # 64 values per row: no image shape
    with pytest.raises(InputError, match="have 784"):
        _gsl(backbone="cnn", image_shape=(32, 32, 3)).fit(mnist_slice[0][:300], mnist_slice[1][:300])
    with pytest.raises(InputError, match="does not match n_bits"):
        _gsl(n_bits=32, quantizer=PQ(M=2)).fit(X, y)
    with pytest.raises(InputError, match="multiple of 8"):
        _gsl(n_bits=12).fit(X, y)
    bad = X.copy()
    bad[3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        _gsl().fit(bad, y)
    with pytest.raises(InputError):
        _gsl(quantizer="lsh").fit(X, y)
    with pytest.raises(InputError):
        _gsl(loss="hinge").fit(X, y)
    with pytest.raises(InputError):
        _gsl(quantization="loss").fit(X, y)               # no weight
    with pytest.raises(InputError):
        _gsl().fit(X, y[:-1])


def test_encode_checks_its_input(fitted):
    with pytest.raises(InputError):
        fitted.encode(np.zeros((3, 10), dtype=np.float32))
    bad = np.zeros((2, 64), dtype=np.float32)
    bad[0, 0] = np.inf
    with pytest.raises(InputError):
        fitted.adc_tables(bad)


def test_reproduction_table_from_runs():
    from deepcodes.reproduce import gsl as rep

    runs = []
    for seed, shift in ((0, 0.0), (1, 0.02)):
        for variant, m in (("float", 0.9), ("post-hoc", 0.8), ("quant-loss", 0.85), ("gsl", 0.86)):
            for bits in (16, 32):
                runs.append({"protocol": "mnist-sup", "family": "classification", "variant": variant, "bits": bits,
                             "seed": seed, "map": m + shift, "quantization_error": 1.0, "fit_seconds": 2.0})
    summary = rep.summarise(runs)
    gsl16 = next(r for r in summary if r["variant"] == "gsl" and r["bits"] == 16)
    assert gsl16["map_mean"] == pytest.approx(0.87) and gsl16["map_std"] == pytest.approx(0.01)
    tuning = {"mnist-sup/classification": {"lambda": 0.1, "alpha": 0.5, "validation_map_by_lambda": {"0.1": 0.9},
                                           "validation_map_by_alpha": {"0.5": 0.91}}}
    table = rep.tables(summary, tuning, 2, 60.0)
    assert "| mnist-sup | classification | 16 | 0.9100 ± 0.0100 | 0.8100 ± 0.0100 | 0.8600 ± 0.0100 | " \
           "0.8700 ± 0.0100 |" in table
    assert "| mnist-sup | classification | 32 | 0.8700 | 0.8600 | 0.0100 | True |" in table


def test_validation_split_and_best_epoch(digits):
    X, y = digits
    warm = _gsl(quantization="none", epochs=3).fit(X, y)
    scores = [h["validation_score"] for h in warm.history_]
    assert len(scores) == 3 and warm.best_epoch_ == 1 + int(np.argmax(scores))
    assert warm.validation_score_ == pytest.approx(max(scores))
    late = _gsl(quantization="gsl", epochs=3, quant_start=1, init=warm, random_state=5).fit(X, y)
    # The warm start keeps its init's held-out points; epochs before quantization awareness are not candidates.
    assert late.validation_seed_ == warm.validation_seed_
    assert late.history_[0]["validation_score"] is None and late.best_epoch_ >= 2
