import numpy as np
import pytest
import torch

from deepcodes import persist
from deepcodes.coders import unpack_bits
from deepcodes.coders.deephash import DeepHash, pair_distance_means
from deepcodes.errors import InputError

FAST = dict(n_outer=3, n_inner=8, validation_size=150, random_state=0)


def test_pair_distance_means_from_class_sums_equal_the_pairwise_definition():
    rng = np.random.default_rng(0)
    H = torch.tensor(rng.standard_normal((30, 6)))
    y = torch.tensor(rng.integers(0, 3, 30))
    within, between = pair_distance_means(H, y, 3)
    d = ((H[:, None] - H[None]) ** 2).sum(-1)
    same = (y[:, None] == y[None]) & ~torch.eye(30, dtype=bool)
    diff = y[:, None] != y[None]
    np.testing.assert_allclose(within.item(), d[same].mean().item(), rtol=1e-12)
    np.testing.assert_allclose(between.item(), d[diff].mean().item(), rtol=1e-12)


@pytest.mark.parametrize("supervised", [False, True])
def test_deephash_trains_down_its_objective_and_round_trips(supervised, digits, tmp_path):
    X, y = digits
    coder = DeepHash(n_bits=16, supervised=supervised, **FAST)
    coder.fit(X[:1200], y[:1200]) if supervised else coder.fit(X[:1200])
    assert np.all(np.diff(coder.objective_) <= 1e-6 * np.abs(coder.objective_[:-1]))
    H = coder.project(X)
    assert np.all(np.abs(H) <= 1)              # tanh code layer
    bits = unpack_bits(coder.encode(X), 16)
    np.testing.assert_array_equal(bits, H >= 0)
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.35)
    path = tmp_path / "dh.dcm"
    coder.save(path)
    loaded = persist.load(path)
    assert loaded.get_params() == coder.get_params()
    np.testing.assert_array_equal(loaded.encode(X[1200:]), coder.encode(X[1200:]))


@pytest.fixture(scope="module")
def digits_protocol():
    from deepcodes.data import load_protocol

    return load_protocol("digits-sup")


def test_deephash_learns_on_digits_objective_falls_codes_move_and_map_beats_its_start(digits_protocol):
    from deepcodes.pipeline import evaluate_coder

    p = digits_protocol
    params = dict(n_bits=16, n_inner=10, validation_size=150, itq_iter=0, random_state=0)
    trained = DeepHash(n_outer=4, **params).fit(p.train)
    start = DeepHash(n_outer=0, **params).fit(p.train)
    history = trained.history_
    assert len(history) == 5 and history[0]["iteration"] == 0
    # Every term is logged per outer iteration; the objective falls at each one and far below the start.
    for key in ("quantization", "variance", "orthogonality", "decay", "objective", "codes_changed", "W3_ortho"):
        assert all(key in r for r in history)
    objective = [r["objective"] for r in history]
    assert np.all(np.diff(objective) < 0) and objective[-1] < 0.5 * objective[0]
    # The codes move away from the initialisation (the old scaling left them where they started) ...
    assert history[-1]["codes_changed"] > 0.03
    assert np.mean(unpack_bits(trained.encode(p.train), 16) != unpack_bits(start.encode(p.train), 16)) > 0.03
    # ... and retrieve better than the untrained network they started from.
    assert evaluate_coder(trained, p)["map"] > evaluate_coder(start, p)["map"] + 0.02


def test_itq_rotated_start_lowers_the_quantization_term_keeps_orthogonality_and_retrieves_better(
        digits_protocol):
    from deepcodes.pipeline import evaluate_coder

    p = digits_protocol
    params = dict(n_bits=16, n_inner=10, validation_size=150, random_state=0)
    eigen = DeepHash(n_outer=4, itq_iter=0, **params).fit(p.train)
    rotated = DeepHash(n_outer=0, **params).fit(p.train)
    start, eigen_start = rotated.history_[0], eigen.history_[0]
    # The rotation is a descent step on DH's own objective: it lowers the quantization term and leaves
    # the orthogonality and decay terms as they were (W3's columns stay orthonormal).
    assert start["quantization"] < eigen_start["quantization"]
    for term in ("orthogonality", "decay", "W3_norm", "W3_ortho"):
        assert start[term] == pytest.approx(eigen_start[term], rel=1e-4, abs=1e-6)
    assert start["code_imbalance"] < 0.2
    # Its untrained codes retrieve far better than the eigenvector start even after training.
    assert evaluate_coder(rotated, p)["map"] > evaluate_coder(eigen, p)["map"] + 0.1


def test_deephash_bad_input(digits):
    X, y = digits
    with pytest.raises(InputError, match="multiple of 8"):
        DeepHash(n_bits=20).fit(X)
    with pytest.raises(InputError, match="labels"):
        DeepHash(n_bits=8, supervised=True).fit(X)
    with pytest.raises(InputError, match="class"):
        DeepHash(n_bits=8, supervised=True).fit(X, np.ones(len(X), dtype=int))
    with pytest.raises(InputError, match="inf"):
        bad = X.copy()
        bad[0, 0] = np.inf
        DeepHash(n_bits=8).fit(bad)


def test_weights_must_be_non_negative_numbers(digits):
    with pytest.raises(InputError, match="lambda1"):
        DeepHash(n_bits=8, lambda1=-1.0).fit(digits[0])
    with pytest.raises(InputError, match="alpha"):
        DeepHash(n_bits=8, alpha=float("nan")).fit(digits[0])
    with pytest.raises(InputError, match="itq_iter"):
        DeepHash(n_bits=8, itq_iter=-1).fit(digits[0])
