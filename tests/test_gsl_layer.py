import math

import numpy as np
import pytest
import torch

from deepcodes.coders import OPQ, PQ, RQ
from deepcodes.errors import InputError
from deepcodes.nn import Codebook, ContrastiveLoss, GradientSnapping, snap_gradient, snap_toward


def _book(rows, dim=None, rotation=None):
    books = torch.tensor(rows, dtype=torch.float32)
    return Codebook(books, kind="product", dim=dim or books.shape[0] * books.shape[2], rotation=rotation)


# Subspace 0: -g = (1, 0.2) is best aligned with codeword (1, 0). Subspace 1: every codeword lies
# against the descent direction, so its gradient must pass unchanged.
BOOK = [[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]],
        [[2.0, 2.0], [3.0, 1.0], [1.0, 3.0]]]
Z = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
G = torch.tensor([[-1.0, -0.2, 1.0, 1.0]])


def _backward(layer, z, g):
    z = z.clone().requires_grad_(True)
    layer(z).backward(g)
    return z.grad


def test_forward_is_identity_and_passes_gradients_without_codebook():
    layer = GradientSnapping(alpha=0.7)
    z = torch.randn(5, 4, requires_grad=True)
    np.testing.assert_array_equal(layer(z).detach().numpy(), z.detach().numpy())
    g = torch.randn(5, 4)
    np.testing.assert_array_equal(_backward(layer, z.detach(), g).numpy(), g.numpy())
    layer.codebook = _book(BOOK)
    out = layer(z)
    np.testing.assert_array_equal(out.detach().numpy(), z.detach().numpy())


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_direction_snap_matches_the_formula(alpha):
    layer = GradientSnapping(alpha=alpha, n_neighbors=3)
    layer.codebook = _book(BOOK)
    got = _backward(layer, Z, G).numpy()[0]
    norm = math.hypot(1.0, 0.2)
    expected0 = (1 - alpha) * np.array([-1.0, -0.2]) + alpha * norm * np.array([-1.0, 0.0])
    np.testing.assert_allclose(got[:2], expected0, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[2:], [1.0, 1.0])     # no descent direction: unchanged
    assert layer.last_snapped_fraction == pytest.approx(0.5)     # one of the two subspaces snapped


def test_only_the_k_nearest_codewords_are_candidates():
    # The nearest codeword (0, 0.5) is not a descent direction; the farther (2, 0) is.
    book = [[[0.0, 0.5], [2.0, 0.0], [0.0, 5.0]]]
    z, g = torch.zeros(1, 2), torch.tensor([[-1.0, 0.5]])
    near = GradientSnapping(alpha=1.0, n_neighbors=1)
    near.codebook = _book(book)
    np.testing.assert_array_equal(_backward(near, z, g).numpy(), g.numpy())
    wider = GradientSnapping(alpha=1.0, n_neighbors=2)
    wider.codebook = _book(book)
    np.testing.assert_allclose(_backward(wider, z, g).numpy(), [[-math.hypot(1, 0.5), 0.0]], rtol=1e-6)


def test_landing_snap_matches_the_formula():
    # z = (0, 0) is quantized to (0.5, 0) (r = 0.5); a step along -g = (0, 1) lands at (0, 0.5),
    # nearest to codeword (0, 0.6).
    book = [[[0.5, 0.0], [0.0, 0.6], [-3.0, 0.0]]]
    z, g = torch.zeros(1, 2), torch.tensor([[0.0, -2.0]])
    layer = GradientSnapping(alpha=0.5, snap="landing")
    layer.codebook = _book(book)
    expected = 0.5 * np.array([0.0, -2.0]) + 0.5 * 2.0 * np.array([0.0, -1.0])
    np.testing.assert_allclose(_backward(layer, z, g).numpy()[0], expected, rtol=1e-6)
    # On a codeword (r = 0) the landing point is the codeword itself: nothing to snap to.
    on = torch.tensor([[0.5, 0.0]])
    np.testing.assert_array_equal(_backward(layer, on, g).numpy(), g.numpy())


def test_snapping_is_per_sample_and_batched():
    gen = torch.Generator().manual_seed(0)
    book = torch.randn(4, 16, 3, generator=gen)
    cb = Codebook(book, kind="product", dim=10)      # 10 dims padded to 12
    z, g = torch.randn(64, 10, generator=gen), torch.randn(64, 10, generator=gen)
    whole, _ = snap_gradient(z, g, cb, alpha=0.6, n_neighbors=5)
    one_by_one = torch.cat([snap_gradient(z[i:i + 1], g[i:i + 1], cb, alpha=0.6, n_neighbors=5)[0]
                            for i in range(len(z))])
    np.testing.assert_allclose(whole.numpy(), one_by_one.numpy(), rtol=1e-5, atol=1e-6)


def test_rotation_snaps_in_the_rotated_space():
    gen = torch.Generator().manual_seed(1)
    R = torch.linalg.qr(torch.randn(6, 6, generator=gen))[0]
    book = torch.randn(3, 8, 2, generator=gen)
    z, g = torch.randn(20, 6, generator=gen), torch.randn(20, 6, generator=gen)
    rotated, _ = snap_gradient(z, g, Codebook(book, kind="product", dim=6, rotation=R), alpha=0.8, n_neighbors=4)
    plain, _ = snap_gradient(z @ R, g @ R, Codebook(book, kind="product", dim=6), alpha=0.8, n_neighbors=4)
    np.testing.assert_allclose(rotated.numpy(), (plain @ R.T).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cls", [PQ, OPQ, RQ])
def test_codebook_reconstructs_like_the_quantizer(cls, digits):
    X, _ = digits
    q = cls(M=4, n_bits_per_code=5, n_iter=5, random_state=0).fit(X[:, :30])
    cb = Codebook.from_quantizer(q)
    got = cb.reconstruct(torch.from_numpy(X[:200, :30])).numpy()
    np.testing.assert_allclose(got, q.decode(q.encode(X[:200, :30])), atol=1e-4)


@pytest.mark.parametrize("cls,snap", [(PQ, "direction"), (OPQ, "direction"), (RQ, "direction"), (PQ, "landing"),
                                      (RQ, "landing")])
def test_snapped_gradient_is_a_descent_direction(cls, snap, digits):
    X, y = digits
    q = cls(M=4, n_bits_per_code=4, n_iter=5, random_state=0).fit(X[:, :16])
    z0 = torch.from_numpy(X[:128, :16].copy())
    labels = torch.from_numpy(y[:128])
    loss = ContrastiveLoss(margin=2.0)
    layer = GradientSnapping(alpha=0.9, n_neighbors=8, snap=snap).set_quantizer(q)
    z = z0.clone().requires_grad_(True)
    loss(layer(z), labels).backward()
    snapped = z.grad.clone()
    z = z0.clone().requires_grad_(True)
    loss(z, labels).backward()
    plain = z.grad
    assert layer.last_snapped_fraction > 0.2
    assert not torch.allclose(snapped, plain)
    # every sample's snapped gradient agrees with its true gradient ...
    rows = (snapped * plain).sum(1)[plain.norm(dim=1) > 0]
    assert (rows > 0).all()
    # ... so a small step against it lowers the similarity loss
    with torch.no_grad():
        before = loss(z0, labels)
        after = loss(z0 - 1e-3 * snapped / snapped.norm(), labels)
    assert after < before


def test_residual_neighbours_are_distinct_one_stage_changes(digits):
    X, _ = digits
    q = RQ(M=3, n_bits_per_code=4, n_iter=5, random_state=0).fit(X)
    cb = Codebook.from_quantizer(q)
    z = torch.from_numpy(X[:10])
    cands = cb.neighbours(cb.to_space(z), 6)[:, 0]
    assert cands.shape == (10, 6, 64)
    recon = cb.reconstruct(z)
    # q(z) appears once at most; no candidate is repeated
    for c, r in zip(cands, recon):
        assert (torch.isclose(c, r, atol=1e-5).all(1)).sum() <= 1
        assert len(torch.unique(c, dim=0)) == 6


def test_bad_parameters_are_input_errors():
    for kwargs in ({"alpha": 1.5}, {"alpha": -0.1}, {"n_neighbors": 0}, {"snap": "nearest"}, {"alpha": "a"}):
        with pytest.raises(InputError):
            GradientSnapping(**kwargs)
    layer = GradientSnapping()
    layer.codebook = _book(BOOK)
    with pytest.raises(InputError):
        layer(torch.zeros(2, 5, requires_grad=True))
    with pytest.raises(InputError):
        layer.set_quantizer(object())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_gpu_matches_cpu():
    layer = GradientSnapping(alpha=0.4, n_neighbors=3)
    layer.codebook = _book(BOOK)
    cpu = _backward(layer, Z, G)
    layer.codebook = Codebook(torch.tensor(BOOK, device="cuda"), kind="product", dim=4)
    gpu = _backward(layer, Z.cuda(), G.cuda())
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=1e-5)


@pytest.mark.parametrize("n_neighbors", [1, 7, 32])
def test_product_tables_pick_the_same_codeword_as_explicit_candidates(n_neighbors):
    gen = torch.Generator().manual_seed(2)
    cb = Codebook(torch.randn(4, 32, 3, generator=gen), kind="product", dim=12)
    z, g = torch.randn(100, 12, generator=gen), torch.randn(100, 12, generator=gen)
    fast, _ = snap_gradient(z, g, cb, alpha=0.7, n_neighbors=n_neighbors)
    y, gy = cb.to_space(z), cb.to_space(g)
    explicit, _ = snap_toward(y, gy, cb.neighbours(y, n_neighbors), 0.7)
    np.testing.assert_allclose(fast.numpy(), cb.from_space(explicit).numpy(), rtol=1e-4, atol=1e-5)
