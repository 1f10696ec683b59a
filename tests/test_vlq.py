import os

import numpy as np
import pytest

import deepcodes
from deepcodes import persist
from deepcodes.errors import DeepcodesError, FormatError, InputError, NotFittedError
from deepcodes.index.vlq import VLQIndex, nearest_other_centroids

N_CENTROIDS, N_NEIGHBORS, M = 32, 8, 8


@pytest.fixture(scope="module")
def sift():
    from deepcodes.data import load_sift10k

    base, queries, gt = load_sift10k()
    return base, queries.astype(np.float32), gt


@pytest.fixture(scope="module")
def vlq(sift):
    base, _, _ = sift
    index = VLQIndex(128, N_CENTROIDS, n_neighbors=N_NEIGHBORS, M=M, n_iter=10, random_state=0)
    index.train(base.astype(np.float32))
    index.add(base, batch_size=3000)
    return index


def recall_at(ids, gt, k):
    return float(np.mean([len(set(i[:k]) & set(g[:k])) / k for i, g in zip(ids, gt)]))


def test_nearest_other_centroids_match_brute_force(vlq):
    C = vlq.centroids_.astype(np.float64)
    d = ((C[:, None] - C[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    ref = np.argsort(d, axis=1, kind="stable")[:, :N_NEIGHBORS]
    np.testing.assert_array_equal(vlq.neighbors_, ref)
    nbr, sq = nearest_other_centroids(vlq.centroids_, N_NEIGHBORS)
    np.testing.assert_allclose(sq, np.take_along_axis(d, ref, 1), rtol=1e-6)


def test_line_assignment_matches_brute_force(vlq, sift):
    base, _, _ = sift
    X = base[:3000].astype(np.float64)
    C = vlq.centroids_.astype(np.float64)
    lists, lam, dist = vlq.assign_lines(X.astype(np.float32))
    A = ((X[:, None] - C[None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(lists // N_NEIGHBORS, A)
    cA = C[A]
    cB = C[vlq.neighbors_[A]]                                    # (n, n_nb, d)
    seg = cB - cA[:, None]
    # projection of x on every line through c_A and c_B, and the true squared distance to it
    lam_ref = np.einsum("nkd,nkd->nk", (X - cA)[:, None], seg) / np.einsum("nkd,nkd->nk", seg, seg)
    foot = cA[:, None] + lam_ref[..., None] * seg
    d_ref = ((X[:, None] - foot) ** 2).sum(-1)
    inside = (lam_ref >= 0) & (lam_ref <= 1)
    d_pick = np.where(inside, d_ref, np.inf)
    edge_ref = np.where(inside.any(1), d_pick.argmin(1), d_ref.argmin(1))
    rows = np.arange(len(X))
    # a near-tie between two lines may flip in float32; the chosen line must then be as near
    chosen = lists % N_NEIGHBORS
    agree = chosen == edge_ref
    assert agree.mean() > 0.995
    np.testing.assert_allclose(d_ref[rows, chosen][~agree], d_ref[rows, edge_ref][~agree], rtol=1e-4)
    np.testing.assert_allclose(lam[agree], lam_ref[rows, edge_ref][agree], atol=1e-4)
    np.testing.assert_allclose(dist, d_ref[rows, chosen], rtol=1e-4, atol=1e-2)
    # most vectors of real data find a line with lambda in [0, 1]
    assert ((lam >= 0) & (lam <= 1)).mean() > 0.8


def test_lambda_codebook_is_one_byte_and_nearest(vlq, sift):
    base, _, _ = sift
    cb = vlq.lambda_codebook_
    assert cb.shape == (256,) and (np.diff(cb) >= 0).all()
    X = base[:500].astype(np.float32)
    lists, lam_code = vlq._assign(X)
    _, lam, _ = vlq.assign_lines(X)
    gap = np.abs(lam[:, None] - cb[None])
    # the chosen codeword is a nearest one (a value on a midpoint may round either way)
    np.testing.assert_allclose(gap[np.arange(len(lam)), lam_code], gap.min(1), atol=1e-6)


def test_segment_distances_match_brute_force(vlq, sift):
    _, Q, _ = sift
    nprobe = 3
    n_seg = nprobe * N_NEIGHBORS
    seg_d, seg_l = vlq.segments(Q, nprobe=nprobe, w=n_seg)
    Q64 = Q.astype(np.float64)
    C = vlq.centroids_.astype(np.float64)
    dqc = ((Q64[:, None] - C[None]) ** 2).sum(-1)
    probes = np.argsort(dqc, axis=1, kind="stable")[:, :nprobe]
    for q in range(len(Q)):
        assert set(seg_l[q] // N_NEIGHBORS) == set(probes[q])
        A = seg_l[q] // N_NEIGHBORS
        cA, cB = C[A], C[vlq.neighbors_[A, seg_l[q] % N_NEIGHBORS]]
        seg = cB - cA
        # brute force: distance to the half-line from c_A through c_B (lambda clipped below at 0)
        t = np.maximum(np.einsum("sd,sd->s", Q64[q] - cA, seg) / np.einsum("sd,sd->s", seg, seg), 0)
        ref = ((Q64[q] - cA - t[:, None] * seg) ** 2).sum(-1)
        np.testing.assert_allclose(seg_d[q], ref, rtol=1e-4, atol=1.0)
        # ascending by (distance, list id)
        assert np.all((np.diff(seg_d[q]) > 0) | ((np.diff(seg_d[q]) == 0) & (np.diff(seg_l[q]) > 0)))
    # w < all keeps the nearest ones
    d_w, l_w = vlq.segments(Q, nprobe=nprobe, w=5)
    np.testing.assert_array_equal(l_w, seg_l[:, :5])


def test_adc_expansion_equals_distance_to_reconstruction(vlq, sift):
    _, Q, _ = sift
    d, i = vlq.search(Q[:20], 200, nprobe=4, w=16)
    assert (i >= 0).all()
    for q in range(20):
        rec = vlq.reconstruct(i[q]).astype(np.float64)
        ref = ((Q[q].astype(np.float64) - rec) ** 2).sum(-1)
        np.testing.assert_allclose(d[q], ref, rtol=1e-4, atol=0.5)


def test_line_terms_follow_their_definition_and_every_change(sift):
    base, Q, _ = sift
    index = VLQIndex(128, N_CENTROIDS, n_neighbors=N_NEIGHBORS, M=M, n_iter=5, random_state=1)
    index.train(base[:3000].astype(np.float32))
    index.add(base[:2000])
    g = index.line_terms()
    # 2 <c_B - c_A, r̂> with r̂ the decoded residual: the reconstruction minus its point on the line
    lists = index.lists.row_lists()
    A, B = lists // N_NEIGHBORS, index.neighbors_[lists // N_NEIGHBORS, lists % N_NEIGHBORS]
    C = index.centroids_.astype(np.float64)
    rows = np.arange(index.ntotal)
    rec = index.reconstruct(index.lists.ids[rows]).astype(np.float64)
    lam = index.lambda_codebook_[index.lists.codes[:, M]].astype(np.float64)[:, None]
    r_hat = rec - (C[A] + lam * (C[B] - C[A]))
    np.testing.assert_allclose(g, 2 * np.einsum("nd,nd->n", C[B] - C[A], r_hat), rtol=1e-3, atol=0.5)
    assert index.memory_bytes()["line_terms"] == 4 * index.ntotal
    assert index.line_terms() is g  # cached while the lists do not change
    index.add(base[2000:2100])
    assert index.line_terms().shape == (2100,)
    index.remove(np.arange(50))
    assert index.line_terms().shape == (2050,)
    d, i = index.search(Q[:5], 3, nprobe=N_CENTROIDS, w=N_CENTROIDS * N_NEIGHBORS)
    stored = index.reconstruct(index.lists.ids).astype(np.float64)
    every = ((Q[:5, None].astype(np.float64) - stored[None]) ** 2).sum(-1)
    np.testing.assert_allclose(d[:, 0], every.min(1), rtol=1e-4, atol=0.5)
    for q in range(5):  # exhaustive probing after the changes: the exact ADC distances of what is stored
        ref = ((Q[q].astype(np.float64) - index.reconstruct(i[q]).astype(np.float64)) ** 2).sum(-1)
        np.testing.assert_allclose(d[q], ref, rtol=1e-4, atol=0.5)
        assert (i[q] >= 50).all()


def test_results_ordered_by_distance_then_id_and_complete(vlq, sift):
    _, Q, _ = sift
    n = vlq.ntotal
    d, i = vlq.search(Q[:3], n, nprobe=N_CENTROIDS, w=N_CENTROIDS * N_NEIGHBORS)
    for q in range(3):
        # probing everything returns every stored vector exactly once
        np.testing.assert_array_equal(np.sort(i[q]), np.arange(n))
        dd, ii = d[q], i[q]
        assert np.all((dd[1:] > dd[:-1]) | ((dd[1:] == dd[:-1]) & (ii[1:] > ii[:-1])))


def test_recall_rises_with_nprobe(vlq, sift):
    _, Q, gt = sift
    recalls = []
    for nprobe in (1, 2, 4, 8):
        _, i = vlq.search(Q, 10, nprobe=nprobe, w=nprobe * N_NEIGHBORS)
        recalls.append(recall_at(i, gt, 10))
    assert all(b >= a - 0.005 for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[-1] > recalls[0] + 0.1, recalls
    assert recalls[-1] > 0.5, recalls
    # more segments per centroid scanned never hurts much either
    r_w = [recall_at(vlq.search(Q, 10, nprobe=4, w=w)[1], gt, 10) for w in (2, 8, 32)]
    assert r_w[0] < r_w[1] <= r_w[2] + 0.005, r_w


def test_few_candidates_pad_with_minus_one(vlq, sift):
    _, Q, _ = sift
    d, i, scanned = vlq.search(Q[:5], 1000, nprobe=1, w=1, return_scanned=True)
    for q in range(5):
        found = int(scanned[q])
        assert found < 1000
        assert (i[q, :found] >= 0).all() and (i[q, found:] == -1).all()
        assert np.isinf(d[q, found:]).all()


def test_batched_add_equals_single_add(sift):
    base, Q, _ = sift
    # Both copies share one trained state: a second training could differ in the last bit of a
    # centroid (OpenMP/BLAS reductions depend on the thread count), which is not what this tests.
    trained = VLQIndex(128, N_CENTROIDS, n_neighbors=N_NEIGHBORS, M=M, n_iter=10, random_state=0)
    trained.train(base.astype(np.float32))
    whole, batched = (VLQIndex.from_bytes(trained.to_bytes()) for _ in range(2))
    whole.add(base, batch_size=len(base))
    batched.add(base[:7000])
    batched.add(base[7000:], batch_size=1234)
    np.testing.assert_array_equal(batched.lists.offsets, whole.lists.offsets)
    np.testing.assert_array_equal(batched.lists.ids, whole.lists.ids)
    # The residuals' sub-codes come from BLAS matrix products, whose rounding depends on the batch's
    # shape: a point within rounding of two codewords may take either (seen: 1 of 90,000 sub-codes).
    differ = batched.lists.codes != whole.lists.codes
    assert differ.mean() < 1e-4, f"{int(differ.sum())} sub-codes depend on the batching"


def test_save_load_mmap_round_trip(vlq, sift, tmp_path):
    _, Q, _ = sift
    path = tmp_path / "vlq.dc"
    vlq.save(path)
    loaded = deepcodes.load(path, mmap=True)
    assert isinstance(loaded, VLQIndex) and loaded.ntotal == vlq.ntotal
    assert persist.is_file_mapped(loaded.lists.codes)  # mapped from the file, not read into memory
    d0, i0 = vlq.search(Q, 10, nprobe=4, w=12)
    d1, i1 = loaded.search(Q, 10, nprobe=4, w=12)
    np.testing.assert_array_equal(i0, i1)
    np.testing.assert_array_equal(d0, d1)
    # a mapped index still accepts new vectors (they are merged into fresh arrays)
    loaded.add(Q[:3])
    assert loaded.ntotal == vlq.ntotal + 3
    _, i2 = loaded.search(Q[:3], 1, nprobe=4, w=32)
    np.testing.assert_array_equal(i2[:, 0], vlq.ntotal + np.arange(3))


def test_truncated_and_failed_saves(vlq, tmp_path, monkeypatch):
    path = tmp_path / "vlq.dc"
    vlq.save(path)
    size = path.stat().st_size
    good = path.read_bytes()
    cut = tmp_path / "cut.dc"
    cut.write_bytes(good[: size - 100])
    with pytest.raises(FormatError, match="truncated"):
        deepcodes.load(cut, mmap=True)
    # a save that fails while writing leaves the previous file intact
    def broken_fsync(fd):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        vlq.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert deepcodes.load(path).ntotal == vlq.ntotal


def test_errors(vlq, sift):
    base, Q, _ = sift
    fresh = VLQIndex(128, N_CENTROIDS, n_neighbors=N_NEIGHBORS)
    with pytest.raises(NotFittedError, match="train"):
        fresh.search(Q, 1)
    with pytest.raises(NotFittedError, match="train"):
        fresh.add(base)
    with pytest.raises(InputError, match="dimension 64, expected 128"):
        fresh.train(base[:, :64])
    with pytest.raises(InputError, match="at least 256 training vectors"):
        fresh.train(base[:100])
    with pytest.raises(InputError, match="n_neighbors=32 must be smaller"):
        VLQIndex(128, 32, n_neighbors=32)
    # list ids are 32-bit in the segment selection's keys
    with pytest.raises(InputError, match="fewer than 2\\^32 segment lists"):
        VLQIndex(128, 2**26, n_neighbors=64)
    with pytest.raises(InputError, match="n_bits_per_code"):
        VLQIndex(128, 32, n_neighbors=8, n_bits_per_code=9)
    with pytest.raises(InputError, match="dimension 127, expected 128"):
        vlq.search(Q[:, :127], 1)
    with pytest.raises(InputError, match="dimension 127, expected 128"):
        vlq.add(base[:5, :127])
    with pytest.raises(InputError, match="k must be >= 1"):
        vlq.search(Q, 0)
    with pytest.raises(InputError, match="larger than the database"):
        vlq.search(Q, vlq.ntotal + 1)
    with pytest.raises(InputError, match="nprobe must be <= 32"):
        vlq.search(Q, 1, nprobe=33)
    with pytest.raises(InputError, match="nprobe must be >= 1"):
        vlq.search(Q, 1, nprobe=0)
    with pytest.raises(InputError, match="w=17 is larger than the 16 segments probed"):
        vlq.search(Q, 1, nprobe=2, w=17)
    with pytest.raises(InputError, match="w must be >= 1"):
        vlq.search(Q, 1, nprobe=2, w=0)
    bad = base[:10].astype(np.float32)
    bad[7, 3] = np.nan
    n = vlq.ntotal
    with pytest.raises(InputError, match="NaN"):
        vlq.add(np.concatenate([base[:20].astype(np.float32), bad]), batch_size=20)
    assert vlq.ntotal == n  # nothing of a rejected add is kept
    with pytest.raises(InputError, match=f"id {n} is not in the index"):
        vlq.reconstruct([n])
    assert issubclass(NotFittedError, DeepcodesError)
