"""export_faiss / write_faiss: faiss holds our codes and ids and returns our neighbours."""
import faiss
import numpy as np
import pytest

from deepcodes.coders import ITQ, OPQ, PQ, RQ
from deepcodes.coders.fronts import PCA, CodeLayer, OPQRotation
from deepcodes.errors import InputError
from deepcodes.index import ADCIndex, HammingIndex, IVFADCIndex, MultiIndexHashing, VLQIndex
from deepcodes.interop.faiss_export import export_faiss, write_faiss


@pytest.fixture(scope="module")
def sift():
    from deepcodes.data import load_sift10k

    base, queries, _ = load_sift10k()
    return base[:4000].astype(np.float32), queries[:50].astype(np.float32)


def _ids(n, seed=0):
    return np.random.default_rng(seed).choice(10**12, n, replace=False).astype(np.int64)


def assert_same_neighbours(ours, theirs, exact_distances: bool):
    (d, i), (fd, fi) = ours, theirs
    if exact_distances:
        np.testing.assert_array_equal(d, fd)
    else:
        np.testing.assert_allclose(d, fd, rtol=1e-4, atol=1e-2)
    # where the ids differ, faiss reordered (near-)tied distances or chose among those tied at the k-th
    for q, j in zip(*np.nonzero(i != fi)):
        at_kth = fd[q, j] == d[q, -1] if exact_distances else np.isclose(fd[q, j], d[q, -1], rtol=1e-4, atol=1e-2)
        assert fi[q, j] in i[q] or at_kth
    assert (i == fi).mean() > 0.95


@pytest.mark.parametrize("cls", [HammingIndex, MultiIndexHashing])
def test_binary_codes_export_to_an_id_map_over_a_flat_binary_index(cls, sift, tmp_path):
    base, Q = sift
    index = cls(coder=ITQ(64, random_state=0).fit(base))
    index.add(base, _ids(len(base)))
    index.remove(index.ids[::7])
    exported = export_faiss(index)
    assert isinstance(exported, faiss.IndexBinaryIDMap) and exported.ntotal == index.ntotal
    qc = index.coder.encode(Q)
    fd, fi = exported.search(qc, 10)
    assert_same_neighbours(index.search(Q, 10), (fd, fi), exact_distances=True)
    write_faiss(index, tmp_path / "b.faiss")
    back = faiss.read_index_binary(str(tmp_path / "b.faiss"))
    np.testing.assert_array_equal(back.search(qc, 10)[1], fi)


@pytest.mark.parametrize("make", [lambda: PQ(M=16, n_iter=8, random_state=0),
                                  lambda: PQ(M=12, n_bits_per_code=4, n_iter=8, random_state=0),
                                  lambda: OPQ(M=8, n_iter=8, n_outer=2, random_state=0)])
def test_pq_and_opq_export_to_an_id_map_over_index_pq(make, sift, tmp_path):
    base, Q = sift
    index = ADCIndex(make().fit(base))
    index.add(base, _ids(len(base), 1))
    index.remove(index.ids[:100])
    exported = export_faiss(index)
    assert isinstance(exported, faiss.IndexIDMap) and exported.ntotal == index.ntotal
    assert_same_neighbours(index.search(Q, 20), exported.search(Q, 20), exact_distances=False)
    write_faiss(index, tmp_path / "pq.faiss")
    back = faiss.read_index(str(tmp_path / "pq.faiss"))
    np.testing.assert_array_equal(back.search(Q, 20)[1], exported.search(Q, 20)[1])


@pytest.mark.parametrize("front, M", [(None, 16), (None, 12), (PCA(32), 8), (OPQRotation(M=8, n_iter=5, n_outer=2), 8)])
def test_ivfadc_exports_to_index_ivfpq_with_our_lists(front, M, sift, tmp_path):
    base, Q = sift
    index = IVFADCIndex(128, 32, M=M, n_iter=8, random_state=0, front=front).train(base)
    index.add(base, _ids(len(base), 2))
    index.remove(index.ids[::5])
    exported = export_faiss(index)
    assert exported.ntotal == index.ntotal
    ivf = faiss.downcast_index(faiss.extract_index_ivf(exported))
    assert isinstance(ivf, faiss.IndexIVFPQ) and ivf.by_residual
    for nprobe in (1, 4):
        ivf.nprobe = nprobe
        assert_same_neighbours(index.search(Q, 20, nprobe=nprobe), exported.search(Q, 20), exact_distances=False)
    write_faiss(index, tmp_path / "ivf.faiss")
    back = faiss.read_index(str(tmp_path / "ivf.faiss"))
    faiss.extract_index_ivf(back).nprobe = 4
    np.testing.assert_array_equal(back.search(Q, 20)[1], exported.search(Q, 20)[1])


def test_what_faiss_lacks_is_refused(sift, tmp_path):
    base, _ = sift
    vlq = VLQIndex(128, 16, n_neighbors=4, M=8, n_iter=5, random_state=0).train(base)
    rq = ADCIndex(RQ(M=4, n_iter=5, random_state=0).fit(base))
    learned_front = IVFADCIndex(128, 16, M=8, n_iter=5, random_state=0,
                                front=CodeLayer(ITQ(32, random_state=0))).train(base)
    for index, message in ((vlq, "no equivalent of VLQIndex"), (rq, "RQ"), (learned_front, "cannot run the front")):
        with pytest.raises(InputError, match=message):
            export_faiss(index)
        with pytest.raises(InputError):
            write_faiss(index, tmp_path / "x.faiss")
    assert not (tmp_path / "x.faiss").exists()
