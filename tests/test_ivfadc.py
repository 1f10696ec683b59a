import faiss
import numpy as np
import pytest

import deepcodes
from deepcodes import persist
from deepcodes.errors import InputError, NotFittedError
from deepcodes.index.ivfadc import IVFADCIndex

N_CENTROIDS, M = 32, 8


@pytest.fixture(scope="module")
def sift():
    from deepcodes.data import load_sift10k

    base, queries, gt = load_sift10k()
    return base, queries.astype(np.float32), gt


@pytest.fixture(scope="module")
def ivf(sift):
    base, _, _ = sift
    index = IVFADCIndex(128, N_CENTROIDS, M=M, n_iter=10, random_state=0)
    index.train(base.astype(np.float32))
    index.add(base, batch_size=4000)
    return index


def recall_at(ids, gt, k):
    return float(np.mean([len(set(i[:k]) & set(g[:k])) / k for i, g in zip(ids, gt)]))


def test_lists_hold_nearest_cell(ivf, sift):
    base, _, _ = sift
    X = base.astype(np.float64)
    C = ivf.centroids_.astype(np.float64)
    nearest = ((X[:, None] - C[None]) ** 2).sum(-1).argmin(1)
    lists = ivf.get_lists(np.arange(len(X)))
    np.testing.assert_array_equal(lists, nearest)


def test_adc_equals_distance_to_reconstruction(ivf, sift):
    _, Q, _ = sift
    d, i = ivf.search(Q[:20], 300, nprobe=3)
    for q in range(20):
        ref = ((Q[q].astype(np.float64) - ivf.reconstruct(i[q]).astype(np.float64)) ** 2).sum(-1)
        np.testing.assert_allclose(d[q], ref, rtol=1e-4, atol=0.5)


def test_matches_faiss_ivfpq_with_the_same_quantizers(ivf, sift):
    base, Q, _ = sift
    quantizer = faiss.IndexFlatL2(128)
    quantizer.add(ivf.centroids_)
    ref = faiss.IndexIVFPQ(quantizer, 128, N_CENTROIDS, M, 8)
    faiss.copy_array_to_vector(ivf.codebooks_.ravel(), ref.pq.centroids)
    ref.is_trained = True
    ref.precompute_table()
    ref.add(base.astype(np.float32))
    ref.nprobe = 4
    fd, fi = ref.search(Q, 10)
    d, i = ivf.search(Q, 10, nprobe=4)
    assert (i == fi).mean() > 0.97
    np.testing.assert_allclose(d, fd, rtol=1e-3, atol=1.0)


def test_complete_and_ordered_when_probing_everything(ivf, sift):
    _, Q, _ = sift
    n = ivf.ntotal
    d, i, scanned = ivf.search(Q[:3], n, nprobe=N_CENTROIDS, return_scanned=True)
    assert (scanned == n).all()
    for q in range(3):
        np.testing.assert_array_equal(np.sort(i[q]), np.arange(n))
        assert np.all((d[q, 1:] > d[q, :-1]) | ((d[q, 1:] == d[q, :-1]) & (i[q, 1:] > i[q, :-1])))


def test_recall_rises_with_nprobe(ivf, sift):
    _, Q, gt = sift
    recalls = [recall_at(ivf.search(Q, 10, nprobe=p)[1], gt, 10) for p in (1, 2, 4, 8)]
    assert all(b >= a - 0.005 for a, b in zip(recalls, recalls[1:])), recalls
    assert recalls[-1] > recalls[0] + 0.1 and recalls[-1] > 0.5, recalls


def test_code_size_not_multiple_of_dimension(sift):
    # 7 sub-quantizers over 128 dims: zero-padded to 133, which changes no distance
    base, Q, _ = sift
    index = IVFADCIndex(128, 16, M=7, n_iter=5, random_state=1).train(base[:3000].astype(np.float32))
    index.add(base[:3000])
    assert index.code_size == 7 and index.lists.codes.shape == (3000, 7)
    d, i = index.search(Q[:5], 20, nprobe=2)
    ref = ((Q[:5, None].astype(np.float64) - index.reconstruct(i.ravel()).reshape(5, 20, 128)) ** 2).sum(-1)
    np.testing.assert_allclose(d, ref, rtol=1e-4, atol=0.5)


def test_save_load_mmap(ivf, sift, tmp_path):
    _, Q, _ = sift
    path = tmp_path / "ivf.dc"
    ivf.save(path)
    loaded = deepcodes.load(path, mmap=True)
    assert isinstance(loaded, IVFADCIndex)
    assert persist.is_file_mapped(loaded.lists.codes) and not loaded.lists.codes.flags.writeable
    for a, b in zip(ivf.search(Q, 10, nprobe=3), loaded.search(Q, 10, nprobe=3)):
        np.testing.assert_array_equal(a, b)
    # a corrupted table shape is a FormatError, not a crash in a kernel
    arrays, doc = deepcodes.persist.read_arrays(path)
    arrays["codebooks"] = arrays["codebooks"][:, :128]
    deepcodes.persist.write_arrays(path, arrays, doc)
    with pytest.raises(deepcodes.FormatError, match="codebooks"):
        deepcodes.load(path)


def test_errors(ivf, sift):
    base, Q, _ = sift
    with pytest.raises(NotFittedError):
        IVFADCIndex(128, 8).search(Q, 1)
    with pytest.raises(InputError, match="M=200 sub-quantizers exceed"):
        IVFADCIndex(128, 8, M=200)
    with pytest.raises(InputError, match="dimension 3, expected 128"):
        ivf.search(Q[:, :3], 1)
    with pytest.raises(InputError, match="nprobe must be <= 32"):
        ivf.search(Q, 1, nprobe=64)
    with pytest.raises(InputError, match="larger than the database"):
        ivf.search(Q, 10**6)


def test_shared_first_level(ivf, sift):
    base, _, _ = sift
    X = base.astype(np.float32)
    again = IVFADCIndex(128, N_CENTROIDS, M=M, n_iter=10, random_state=0).train(X, centroids=ivf.centroids_)
    np.testing.assert_array_equal(again.centroids_, ivf.centroids_)
    np.testing.assert_array_equal(again.codebooks_, ivf.codebooks_)
    with pytest.raises(InputError, match="centroids has 31 rows, expected n_centroids=32"):
        IVFADCIndex(128, N_CENTROIDS).train(X, centroids=ivf.centroids_[:31])


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e4])
def test_centroid_distances_equal_the_numpy_expression_and_clip_at_zero(scale):
    from deepcodes.index.ivf_kernels import squared_distances_from_dots

    rng = np.random.default_rng(0)
    Q = (rng.standard_normal((37, 24)) * scale).astype(np.float32)
    C = (rng.standard_normal((50, 24)) * scale).astype(np.float32)
    C[:5] = Q[:5]  # exact matches, whose float32 expansion can come out negative
    q_norms, c_norms = np.einsum("qd,qd->q", Q, Q), np.einsum("cd,cd->c", C, C)
    expected = np.maximum((q_norms[:, None] - 2 * (Q @ C.T)) + c_norms[None], 0)
    got = squared_distances_from_dots(Q @ C.T, q_norms, c_norms)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    assert not np.signbit(got).any()  # clipped to +0, never -0
