import itertools

import numpy as np
import pytest
import torch

from deepcodes import persist
from deepcodes.coders import ITQ, unpack_bits
from deepcodes.coders.bdnn import SHBDNN, UHBDNN, dcc_b_step, fit_decoder, similarity_loss
from deepcodes.coders.deep import default_hidden
from deepcodes.errors import InputError
from deepcodes.eval import ClassRelevance, evaluate_search
from deepcodes.index import HammingIndex

FAST = dict(n_outer=3, n_inner=8, random_state=0)


def _quadratic(B, Q, G):
    """½ bᵀGb − bᵀq for every row: the per-point B-step objective."""
    return 0.5 * np.einsum("ml,lk,mk->m", B, G, B) - np.einsum("ml,ml->m", B, Q)


def test_b_step_is_the_exact_coordinate_optimum_of_each_bit():
    rng = np.random.default_rng(0)
    m, L = 40, 5
    W = rng.standard_normal((7, L))
    G = W.T @ W
    Q = rng.standard_normal((m, L)) * 2
    B0 = np.where(rng.standard_normal((m, L)) >= 0, 1.0, -1.0)
    got = dcc_b_step(torch.tensor(B0), torch.tensor(Q), torch.tensor(G), n_sweeps=2).numpy()
    # Brute force: the same cyclic order, each bit set to whichever of ±1 gives the lower objective.
    want = B0.copy()
    for _ in range(2):
        for k in range(L):
            for i in range(m):
                trial = np.repeat(want[i:i + 1], 2, axis=0)
                trial[:, k] = [1.0, -1.0]
                values = _quadratic(trial, np.repeat(Q[i:i + 1], 2, axis=0), G)
                if values[0] != values[1]:
                    want[i, k] = trial[np.argmin(values), k]
    np.testing.assert_array_equal(got, want)


def test_b_step_converges_to_a_point_no_single_flip_improves_and_never_rises():
    rng = np.random.default_rng(1)
    m, L = 64, 4
    W = rng.standard_normal((6, L))
    G, Q = W.T @ W, rng.standard_normal((m, L)) * 3
    B = torch.tensor(np.where(rng.standard_normal((m, L)) >= 0, 1.0, -1.0))
    values = [_quadratic(B.numpy(), Q, G)]
    for _ in range(6):
        B = dcc_b_step(B, torch.tensor(Q), torch.tensor(G), n_sweeps=1)
        values.append(_quadratic(B.numpy(), Q, G))
    assert np.all(np.diff(np.stack(values), axis=0) <= 1e-12)
    final = B.numpy()
    for k in range(L):
        flipped = final.copy()
        flipped[:, k] *= -1
        assert np.all(_quadratic(flipped, Q, G) >= values[-1] - 1e-12)
    # Never worse than the best code found by exhaustive search by more than coordinate descent allows:
    # on this tiny case it reaches the global optimum for most points.
    codes = np.array(list(itertools.product([-1.0, 1.0], repeat=L)))
    best = np.min(0.5 * np.einsum("cl,lk,ck->c", codes, G, codes)[None] - Q @ codes.T, axis=1)
    assert np.all(values[-1] >= best - 1e-12)
    assert np.mean(np.isclose(values[-1], best)) > 0.8


def test_similarity_term_from_class_sums_equals_the_dense_formula_and_its_gradient():
    rng = np.random.default_rng(0)
    m, L, C = 37, 8, 4
    y = torch.tensor(rng.integers(0, C, m))
    H1 = torch.tensor(rng.standard_normal((m, L)), requires_grad=True)
    H2 = H1.detach().clone().requires_grad_(True)
    S = torch.where(y[:, None] == y[None, :], 1.0, -1.0).double()
    dense = ((H1 @ H1.T / L - S) ** 2).sum()
    fast = similarity_loss(H2, y, C)
    dense.backward()
    fast.backward()
    np.testing.assert_allclose(fast.item(), dense.item(), rtol=1e-12)
    np.testing.assert_allclose(H2.grad.numpy(), H1.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_decoder_step_is_the_exact_ridge_minimiser():
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.random((200, 12)), dtype=torch.float32)
    B = torch.tensor(np.where(rng.standard_normal((200, 8)) >= 0, 1.0, -1.0))
    lam = 1e-2
    W4, c4 = fit_decoder(X, B, lam)
    W4.requires_grad_(True)
    c4.requires_grad_(True)
    loss = ((X.double() - B @ W4.T - c4) ** 2).sum() / (2 * 200) + lam / 2 * (W4 ** 2).sum()
    loss.backward()
    assert W4.grad.abs().max() < 1e-5 and c4.grad.abs().max() < 1e-5


def test_default_hidden_sizes_follow_the_authors_and_grow():
    assert default_hidden(16) == (90, 30) and default_hidden(32) == (120, 50)
    n1, n2 = default_hidden(64)
    assert n1 > 120 and n2 > 64


@pytest.fixture(scope="module")
def uh(digits):
    return UHBDNN(n_bits=16, validation_size=200, **FAST).fit(digits[0][:1500])


def test_uhbdnn_objective_decreases_codes_are_balanced_and_valid(uh, digits):
    X = digits[0][:1500]
    assert np.all(np.diff(uh.objective_) <= 1e-6 * np.abs(uh.objective_[:-1]))
    assert uh.validation_map_.shape == (3,) and np.all((uh.validation_map_ > 0) & (uh.validation_map_ <= 1))
    assert uh.validation_map_[uh.best_iteration_] == uh.validation_map_.max()
    codes = uh.encode(X)
    assert codes.shape == (1500, 2) and codes.dtype == np.uint8
    bits = unpack_bits(codes, 16)
    np.testing.assert_array_equal(bits, uh.project(X) >= 0)
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.2)
    assert uh.W4_.shape == (64, 16) and uh.c4_.shape == (64,)


def test_uhbdnn_fits_mnist_images(mnist_slice):
    X, _, Q, _ = mnist_slice
    coder = UHBDNN(n_bits=8, n_outer=2, n_inner=10, validation_size=100, random_state=0).fit(X[:1000])
    assert coder.objective_[1] <= coder.objective_[0]
    assert np.all((coder.validation_map_ > 0.05) & (coder.validation_map_ <= 1))
    assert coder.encode(Q).shape == (len(Q), 1)


def test_uhbdnn_is_reproducible_and_survives_save_load(uh, digits, tmp_path):
    X, Q = digits[0][:1500], digits[0][1500:]
    again = UHBDNN(n_bits=16, validation_size=200, **FAST).fit(X)
    np.testing.assert_array_equal(again.encode(Q), uh.encode(Q))
    np.testing.assert_array_equal(again.objective_, uh.objective_)
    path = tmp_path / "uh.dcm"
    uh.save(path)
    loaded = persist.load(path)
    assert isinstance(loaded, UHBDNN) and loaded.get_params() == uh.get_params()
    np.testing.assert_array_equal(loaded.encode(Q), uh.encode(Q))


def _class_map(coder, Xdb, ydb, Xq, yq):
    index = HammingIndex(coder=coder)
    index.add(Xdb)
    return evaluate_search(index.search_codes, coder.encode(Xq), ClassRelevance(ydb, yq), len(Xdb))["map"]


def test_shbdnn_learns_classes_far_above_itq(digits):
    X, y = digits
    Xdb, ydb, Xq, yq = X[:1000], y[:1000], X[1500:], y[1500:]
    sh = SHBDNN(n_bits=16, n_outer=2, n_inner=60, validation_size=100, random_state=0).fit(Xdb, ydb)
    assert np.all(np.diff(sh.objective_) <= 1e-6 * np.abs(sh.objective_[:-1]))
    bits = unpack_bits(sh.encode(Xdb), 16)
    assert np.all(np.abs(bits.mean(axis=0) - 0.5) < 0.3)
    itq = ITQ(n_bits=16, random_state=0).fit(Xdb)
    assert _class_map(sh, Xdb, ydb, Xq, yq) > _class_map(itq, Xdb, ydb, Xq, yq) + 0.1


@pytest.mark.parametrize("cls", [UHBDNN, SHBDNN])
def test_bad_input_is_a_clear_error(cls, digits):
    X, y = digits
    fit = (lambda c, X_, y_=y: c.fit(X_, y_)) if cls is SHBDNN else (lambda c, X_, y_=None: c.fit(X_))
    with pytest.raises(InputError, match="multiple of 8"):
        fit(cls(n_bits=12), X)
    bad = X.copy()
    bad[3, 5] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fit(cls(n_bits=8), bad)
    with pytest.raises(InputError, match="training points"):
        fit(cls(n_bits=8, validation_size=0), X[:40], y[:40])
    with pytest.raises(InputError, match="validation"):
        fit(cls(n_bits=8, validation_size=3), X)
    with pytest.raises(InputError, match="hidden"):
        fit(cls(n_bits=8, hidden=(10,)), X)
    with pytest.raises(InputError, match="device"):
        fit(cls(n_bits=8, device="nonsense"), X)


def test_shbdnn_label_errors(digits):
    X, y = digits
    with pytest.raises(InputError, match="labels"):
        SHBDNN(n_bits=8).fit(X)
    with pytest.raises(InputError, match="labels for"):
        SHBDNN(n_bits=8).fit(X, y[:-1])
    with pytest.raises(InputError, match="class"):
        SHBDNN(n_bits=8).fit(X, np.zeros(len(X), dtype=int))


def test_training_and_validation_do_not_depend_on_the_input_scale(digits):
    X = digits[0][:600]
    small = UHBDNN(n_bits=8, n_outer=1, n_inner=3, validation_size=100, random_state=0).fit(X)
    large = UHBDNN(n_bits=8, n_outer=1, n_inner=3, validation_size=100, random_state=0).fit(X * 16)
    np.testing.assert_allclose(large.validation_map_, small.validation_map_)
    np.testing.assert_array_equal(large.encode(X * 16), small.encode(X))


def test_history_logs_every_term_per_outer_iteration(uh):
    history = uh.history_
    assert len(history) == 4 and [r["iteration"] for r in history] == [0, 1, 2, 3]
    terms = ("reconstruction", "decoder_decay", "equality", "independence", "balance", "decay")
    for r in history:
        assert all(np.isfinite(r[k]) for k in terms + ("objective", "validation_map", "fit_error"))
        np.testing.assert_allclose(r["objective"], sum(r[k] for k in terms), rtol=1e-12)
    np.testing.assert_array_equal(uh.objective_, [r["objective"] for r in history[1:]])
    np.testing.assert_array_equal(uh.validation_map_, [r["validation_map"] for r in history[1:]])
    assert history[0]["codes_changed"] == 0 and all(0 <= r["codes_changed"] <= 1 for r in history)
    assert sum(r["codes_flipped"] for r in history[1:]) > 0, "the B-steps never changed a code"


def test_schedules_resolve_without_rewriting_parameters(digits):
    X = digits[0][:600]
    assert (UHBDNN().n_outer, UHBDNN().n_inner) == (None, None)
    coder = UHBDNN(n_bits=8, schedule="paper", n_outer=1, validation_size=100, random_state=0).fit(X)
    assert (coder.n_outer_, coder.n_inner_) == (1, 400) and coder.n_inner is None
    assert coder.history_[1]["evaluations"] > 20, "the paper schedule runs up to 400 L-BFGS iterations"
    fast = UHBDNN(n_bits=8, n_outer=1, validation_size=100, random_state=0).fit(X)
    assert (fast.n_outer_, fast.n_inner_) == (1, UHBDNN()._schedule().n_inner)
    with pytest.raises(InputError, match="schedule"):
        UHBDNN(n_bits=8, schedule="long").fit(X)


def test_zero_outer_iterations_keep_the_initialisation(digits):
    X = digits[0][:600]
    start = UHBDNN(n_bits=8, n_outer=0, validation_size=100, random_state=0).fit(X)
    assert start.best_iteration_ == -1 and start.objective_.shape == (0,) and len(start.history_) == 1
    trained = UHBDNN(n_bits=8, n_outer=1, n_inner=5, validation_size=100, random_state=0).fit(X)
    np.testing.assert_allclose(trained.history_[0]["validation_map"], start.history_[0]["validation_map"])
    assert not np.array_equal(trained.W1_, start.W1_)


def test_more_bits_than_dimensions_is_a_clear_error_for_uhbdnn_only(digits):
    X, y = digits
    X50 = X[:400, :50]
    with pytest.raises(InputError, match="64 bits from 50-dimensional"):
        UHBDNN(n_bits=64).fit(X50)
    # The supervised network has no PCA start: wider code layers get random extra directions.
    sh = SHBDNN(n_bits=64, n_outer=1, n_inner=3, validation_size=50, random_state=0).fit(X50, y[:400])
    assert sh.encode(X50).shape == (400, 8)


def test_progress_bar_over_outer_iterations(digits, capsys):
    UHBDNN(n_bits=8, n_outer=2, n_inner=2, validation_size=100, random_state=0).fit(digits[0][:400], progress=True)
    err = capsys.readouterr().err
    assert "UHBDNN 8 bits" in err and "2/2" in err
    UHBDNN(n_bits=8, n_outer=1, n_inner=2, validation_size=100, random_state=0).fit(digits[0][:400])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("make", [lambda: UHBDNN(n_bits=8), lambda: SHBDNN(n_bits=8),
                                  lambda: __import__("deepcodes.coders.deephash", fromlist=["DeepHash"]).DeepHash(
                                      n_bits=8, supervised=True)])
def test_a_batch_holding_every_point_gives_the_full_objective(make, digits):
    from deepcodes.coders.deep import Encoder, TrainingState, eigen_init

    X, y = digits
    coder = make()
    Xt = torch.as_tensor(X[:300])
    rng = np.random.default_rng(0)
    net = Encoder(*eigen_init(Xt, (20, 10, 8), coder._activations, rng), coder._activations, torch.device("cpu"))
    B = torch.where(torch.as_tensor(rng.standard_normal((300, 8))) >= 0, 1.0, -1.0).double()
    state = TrainingState(X=Xt, net=net, rng=rng, B=B, y=torch.as_tensor(y[:300]), n_classes=10)
    perm = torch.as_tensor(rng.permutation(300))
    half = state.batch(perm[:150])
    assert half.m == 300 and half.X.shape == (150, 64) and torch.equal(half.B, B[perm[:150]])
    full = coder._network_loss(state).item()
    np.testing.assert_allclose(coder._network_loss(state.batch(perm)).item(), full, rtol=1e-6)
    assert coder._network_loss(half).item() != pytest.approx(full, rel=1e-9)


def test_adam_schedule_trains_in_mini_batches_with_a_warm_optimiser(digits, monkeypatch):
    from deepcodes.coders import deep

    made = []
    real_adam = torch.optim.Adam
    monkeypatch.setattr(deep.torch.optim, "Adam", lambda *a, **k: made.append(1) or real_adam(*a, **k))
    X = digits[0][:1400]
    coder = UHBDNN(n_bits=16, schedule="adam", n_outer=3, n_inner=2, validation_size=200, random_state=0).fit(X)
    assert made == [1], "one Adam optimiser for the whole fit"
    batches = -(-(1400 - 200 - 1) // deep.Schedule(1, 1, "adam").batch_size)
    assert [r["evaluations"] for r in coder.history_[1:]] == [2 * batches] * 3
    objective = [r["objective"] for r in coder.history_]
    assert objective[-1] < objective[1] < objective[0]
    again = UHBDNN(n_bits=16, schedule="adam", n_outer=3, n_inner=2, validation_size=200, random_state=0).fit(X)
    np.testing.assert_array_equal(again.encode(X), coder.encode(X))
