"""Careless input at every entry point of every coder: each probe must raise a one-line
DeepcodesError (InputError or NotFittedError) that names the problem, never a traceback from
numpy, faiss or torch, and never a silent answer. Outcome counts are printed at the end
(``pytest -s -n 0 tests/test_inputs.py``)."""
import collections
import inspect

import numpy as np
import pytest
from sklearn.base import clone

from deepcodes import persist
from deepcodes.errors import InputError, NotFittedError
from deepcodes.validation import MAX_SQUARED_NORM, check_codes, check_labels, check_matrix
from fitted import CODER_NAMES, INDEX_NAMES, data, fitted, print_tally

TALLY: collections.Counter = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _print_tally():
    yield
    print_tally("careless-input probes (entry point, outcome)", TALLY)


def _expect(error, where: str, call, match: str | None = None) -> None:
    with pytest.raises(error, match=match) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message, f"{where}: not a one-line error: {message!r}"
    TALLY[where, type(info.value).__name__] += 1


def bad_matrices(d: int):
    """(label, value, message fragment) for vector input of dimension ``d`` that must be refused."""
    good = data()[0][:6, :d] if d <= 64 else np.zeros((6, d), np.float32)
    huge = good.astype(np.float64)
    huge[2, 1] = 1e300                       # finite in float64, inf in float32
    overflow = np.full((6, d), 5e18, np.float32)   # finite, but squared norms overflow float32
    nan = good.copy()
    nan[1, 0] = np.nan
    return [
        ("ragged list", [[0.0] * d, [0.0] * (d - 1)], "rectangular"),
        ("object array", np.array([np.zeros(d), "x"], dtype=object), "object"),
        ("bool", good > 0.5, "bool"),
        ("complex", good.astype(np.complex64), "real-valued"),
        ("strings", np.array([["a"] * d]), "numeric"),
        ("None", None, "numeric"),
        ("dict", {"x": 1}, "numeric|2-D"),
        ("NaN", nan, "NaN"),
        ("inf", np.full((2, d), np.inf, np.float32), "inf"),
        ("1e300 in float64", huge, "NaN or inf"),
        ("5e18: squared norm overflows", overflow, "overflows float32"),
        ("wrong dimension", np.zeros((3, d + 1), np.float32), "dimension"),
        ("empty", np.zeros((0, d), np.float32), "empty"),
        ("3-D", np.zeros((2, 2, d), np.float32), "2-D"),
        ("1-D of the wrong length", np.zeros(d + 3, np.float32), "2-D"),
        ("0 columns", np.zeros((3, 0), np.float32), "0 columns|dimension"),
    ]


BAD_BATCH_SIZES = [0, -1, 1.5, True, "8", None]


def _unfitted(name):
    """An unfitted coder with the small instance's parameters (a front's model unfitted too)."""
    return clone(fitted(name))


def _is_quantizer(coder) -> bool:
    return getattr(coder, "code_kind", None) == "quantizer"


QUANTIZER_NAMES = [n for n in CODER_NAMES if getattr(persist.class_named(n), "code_kind", None) == "quantizer"]


@pytest.mark.parametrize("name", CODER_NAMES)
def test_unfitted_coders_say_so_at_every_entry_point(name, tmp_path):
    coder = _unfitted(name)
    X = data()[0][:4]
    save = coder.save if hasattr(coder, "save") else lambda path: persist.save(coder, path)
    calls = {"transform": lambda: coder.transform(X), "save": lambda: save(tmp_path / "m")}
    if hasattr(coder, "encode"):
        calls["encode"] = lambda: coder.encode(X)
    if _is_quantizer(coder):
        codes = np.zeros((4, 1), np.uint8)
        calls.update(decode=lambda: coder.decode(codes), adc_tables=lambda: coder.adc_tables(X),
                     db_bias=lambda: coder.db_bias(codes), query_bias=lambda: coder.query_bias(X),
                     quantization_error=lambda: coder.quantization_error(X))
    for method, call in calls.items():
        _expect(NotFittedError, f"unfitted {method}", call, "not fitted")
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("name", CODER_NAMES)
def test_fitted_coders_refuse_bad_vectors_and_batch_sizes(name):
    coder = fitted(name)
    d = coder.n_features_in_
    entry_points = {"encode": coder.encode} if hasattr(coder, "encode") else {"transform": coder.transform}
    if _is_quantizer(coder):
        entry_points.update(adc_tables=coder.adc_tables, query_bias=coder.query_bias,
                            quantization_error=coder.quantization_error)
    for method, call in entry_points.items():
        for label, value, message in bad_matrices(d):
            _expect(InputError, f"{method}: {label}", lambda: call(value), message)
    if "batch_size" not in inspect.signature(next(iter(entry_points.values()))).parameters:
        return
    for batch_size in BAD_BATCH_SIZES:
        _expect(InputError, "encode: batch_size", lambda: coder.encode(data()[0][:4, :d], batch_size=batch_size),
                "batch_size")


@pytest.mark.parametrize("name", QUANTIZER_NAMES)
def test_quantizers_refuse_bad_codes(name):
    coder = fitted(name)
    M, K = coder.code_size, 2 ** coder.n_bits_per_code
    good = np.zeros((3, M), np.uint8)
    too_big = good.copy()
    too_big[1, 0] = K if K < 256 else 255
    cases = [("float codes", good.astype(np.float32), "integer"), ("negative", good.astype(np.int64) - 1, "outside"),
             ("bool", good.astype(bool), "integer"), ("wrong width", np.zeros((3, M + 1), np.uint8), "per row"),
             ("ragged", [[0] * M, [0] * (M + 1)], "rectangular"), ("3-D", good[None], "2-D"),
             ("empty", good[:0], "empty")]
    if K < 256:
        cases.append(("code >= K", too_big, "K="))
    for method in ("decode", "db_bias"):
        for label, codes, message in cases:
            _expect(InputError, f"{method}: {label}", lambda: getattr(coder, method)(codes), message)


@pytest.mark.parametrize("name", CODER_NAMES)
def test_fit_refuses_bad_training_data(name):
    coder = _unfitted(name)
    X, y = data()
    for label, value, message in bad_matrices(X.shape[1]):
        if label in ("wrong dimension", "1-D of the wrong length"):
            continue    # fit learns the dimension
        # labels of the right count, so that a supervised coder's complaint is about the vectors
        labels = y[:len(value)] if hasattr(value, "__len__") and not isinstance(value, dict) else None
        _expect(InputError, f"fit: {label}", lambda: coder.fit(value, labels), message)
    if _needs_labels(coder, X):
        for label, labels, message in (("no labels", None, "label"), ("ragged labels", [[1, 2], [3]], "rectangular"),
                                       ("wrong length", y[:10], "labels for"), ("float labels", y + 0.5, "integer"),
                                       ("one class", np.zeros_like(y), "class")):
            _expect(InputError, f"fit: {label}", lambda: coder.fit(X, labels), message)


@pytest.mark.parametrize("name", INDEX_NAMES)
def test_indexes_refuse_bad_vectors_and_a_failed_add_changes_nothing(name):
    """Every index: bad vectors (a huge but finite one included) and batch sizes given to ``add``
    or ``search`` are InputErrors, and after a refused add the index answers exactly as before."""
    index = fitted(name)
    Q = data()[0][:5]
    before_total = index.ntotal
    before = index.search(Q, 4)
    for label, value, message in bad_matrices(Q.shape[1]):
        _expect(InputError, f"index add: {label}", lambda: index.add(value), message)
        if label != "empty":
            _expect(InputError, f"index search: {label}", lambda: index.search(value, 4), message)
    for batch_size in BAD_BATCH_SIZES:
        _expect(InputError, "index add: batch_size", lambda: index.add(Q, batch_size=batch_size), "batch_size")
    late = data()[0][:120].astype(np.float64)
    late[-1, 3] = 1e300                      # only the last of three batches is bad
    _expect(InputError, "index add: bad last batch", lambda: index.add(late, batch_size=50), "NaN or inf")
    assert index.ntotal == before_total
    for got, want in zip(index.search(Q, 4), before, strict=True):
        np.testing.assert_array_equal(got, want)


PARAMETER_PROBES = {
    "LSH": [dict(n_bits=12), dict(n_bits=0), dict(n_bits="16")],
    "ITQ": [dict(n_bits=12), dict(n_bits=128), dict(n_iter=-1)],
    "PQ": [dict(M=0), dict(n_bits_per_code=9), dict(max_train=-5), dict(max_train=0), dict(n_iter=0), dict(M=65)],
    "OPQ": [dict(max_train=-5), dict(n_outer=-1), dict(n_iter_inner=0)],
    "RQ": [dict(max_train=-5), dict(M=0), dict(n_iter=0)],
    "UHBDNN": [dict(n_bits=72), dict(hidden=5), dict(hidden=(8,)), dict(lambda1=-1.0), dict(n_outer=-1),
               dict(n_sweeps=0), dict(device=3)],
    "SHBDNN": [dict(n_bits=12), dict(lambda5=float("nan")), dict(n_inner=0), dict(hidden=("a", 2))],
    "DeepHash": [dict(supervised="yes"), dict(alpha=-1.0), dict(n_bits=4)],
    "GSLQuantizer": [dict(batch_size=0), dict(batch_size=-1), dict(max_train=-5), dict(epochs=-1),
                     dict(quantizer="lsh"), dict(backbone="rnn"), dict(lr=0), dict(hidden=[0])],
}


def _needs_labels(coder, X) -> bool:
    """Whether ``coder`` is supervised: its fit without labels is refused with an InputError."""
    try:
        clone(coder).fit(X, None)
    except InputError as exc:
        assert "label" in str(exc), f"fit without labels: {exc}"
        return True
    return False


@pytest.mark.parametrize("name", [n for n in CODER_NAMES if n in PARAMETER_PROBES])
def test_fit_refuses_impossible_parameters(name):
    X, y = data()
    cls = type(fitted(name))
    for params in PARAMETER_PROBES[name]:
        coder = cls(**params)
        _expect(InputError, f"fit: {sorted(params)[0]}", lambda: coder.fit(X, y))


def test_uhbdnn_refuses_more_bits_than_dimensions():
    from deepcodes.coders.bdnn import UHBDNN

    _expect(InputError, "fit: n_bits > d", lambda: UHBDNN(n_bits=64, n_outer=1).fit(data()[0][:, :50]),
            "64 bits from 50-dimensional")


def test_the_checks_happen_after_the_cast_to_float32():
    X = np.ones((3, 4))
    X[0, 0] = 1e39                               # finite in float64, inf in float32
    with pytest.raises(InputError, match="NaN or inf"):
        check_matrix(X)
    with pytest.raises(InputError, match="NaN or inf"):
        check_matrix(X, dtype=None)              # keeps float64, still checked as float32 would be
    big = np.full((2, 784), 5e18, np.float32)
    with pytest.raises(InputError, match="overflows float32"):
        check_matrix(big)
    edge = np.full((1, 4), np.sqrt(MAX_SQUARED_NORM / 4) * 0.999, np.float32)
    assert check_matrix(edge).shape == (1, 4)    # just inside the limit
    ints = np.full((2, 4), 2**62, np.int64)
    with pytest.raises(InputError, match="overflows float32"):
        check_matrix(ints)
    with pytest.raises(InputError, match="integer"):
        check_codes(np.zeros((2, 2), bool))
    with pytest.raises(InputError, match="integer"):
        check_labels(np.array([1e300, 1.0]), 2)


def test_a_gpu_trained_model_loads_without_a_gpu_and_says_how_to_encode():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    arrays, document = persist.unpack_arrays(persist.dumps(fitted("GSLQuantizer")))
    document["params"]["device"] = "cuda"
    coder = persist.loads(persist.pack_arrays(arrays, document))
    _expect(InputError, "encode: device not usable", lambda: coder.encode(data()[0][:4]), "set_params")
    coder.set_params(device="cpu")
    assert coder.encode(data()[0][:4]).shape == (4, coder.code_size)


def test_a_row_faiss_cannot_assign_is_refused_not_labelled_minus_one():
    from deepcodes.coders.kmeans import assign

    centroids = np.full((4, 3), 3e19, np.float32)       # every distance overflows float32
    _expect(InputError, "assign: no nearest centroid", lambda: assign(np.full((2, 3), 1e19, np.float32), centroids),
            "no nearest centroid")
    labels, _ = assign(np.zeros((2, 3), np.float32), np.eye(3, dtype=np.float32))
    assert labels.tolist() == [0, 0]
