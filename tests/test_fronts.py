"""Fronts (coders/fronts.py) and the inverted indexes that hold one."""
import subprocess
import sys

import numpy as np
import pytest

import deepcodes
from deepcodes import persist
from deepcodes.coders import ITQ, OPQ
from deepcodes.coders.fronts import PCA, CodeLayer, OPQRotation
from deepcodes.errors import InputError, NotFittedError
from deepcodes.index import IVFADCIndex, VLQIndex


def test_pca_projects_on_the_top_principal_directions(digits):
    X, _ = digits
    front = PCA(8).fit(X)
    Z = front.transform(X)
    assert Z.shape == (len(X), 8) and Z.dtype == np.float32
    np.testing.assert_allclose(Z.mean(0), 0, atol=1e-4)
    var = Z.var(0)
    assert (np.diff(var) <= 1e-6).all()  # largest first
    eig = np.sort(np.linalg.eigvalsh(np.cov(X.T.astype(np.float64), bias=True)))[::-1][:8]
    np.testing.assert_allclose(var, eig, rtol=1e-3)
    assert PCA(8).output_dim(64) == 8
    with pytest.raises(InputError, match="exceeds the input dimension"):
        PCA(100).fit(X)
    with pytest.raises(NotFittedError):
        PCA(8).transform(X)


def test_opq_rotation_is_the_fitted_opqs(digits):
    X, _ = digits
    params = dict(M=6, n_iter=4, n_outer=2, random_state=0)
    front = OPQRotation(**params).fit(X)
    opq = OPQ(**params).fit(X)
    R = front.rotation_
    np.testing.assert_allclose(R.T @ R, np.eye(R.shape[0]), atol=1e-4)
    assert front.transform(X).shape == (len(X), 66) == (len(X), front.output_dim(64))
    np.testing.assert_allclose(front.transform(X[:5]), np.pad(X[:5], ((0, 0), (0, 2))) @ opq.rotation_, atol=1e-5)


def test_code_layer_is_the_real_valued_projection(digits):
    X, _ = digits
    itq = ITQ(16, random_state=0).fit(X)
    front = CodeLayer(itq)
    np.testing.assert_array_equal(front.transform(X[:5]), itq.project(X[:5]))
    data = persist.dumps(front)
    np.testing.assert_array_equal(persist.loads(data).transform(X[:5]), itq.project(X[:5]))
    with pytest.raises(InputError, match="binary coder"):
        CodeLayer(PCA(4))
    with pytest.raises(NotFittedError):
        CodeLayer(ITQ(16)).transform(X)


@pytest.mark.parametrize("cls", [IVFADCIndex, VLQIndex])
def test_an_inverted_index_lives_in_its_fronts_space(cls, digits, tmp_path):
    X, _ = digits
    extra = {"n_neighbors": 4} if cls is VLQIndex else {}
    index = cls(64, 16, M=4, n_bits_per_code=4, n_iter=4, random_state=0, front=PCA(12), **extra)
    assert index.list_dim == 12 and index.d == 64 and getattr(index.front, "n_features_in_", None) is None
    index.train(X).add(X)
    assert index.front.n_features_in_ == 64 and index.centroids_.shape == (16, 12)
    d, i = index.search(X[:10], 5, nprobe=16)
    Z = index.front.transform(X[:10]).astype(np.float64)
    rec = index.reconstruct(i.ravel()).reshape(10, 5, 12)
    assert rec.shape[-1] == 12  # reconstructions are in the front's space
    np.testing.assert_allclose(d, ((Z[:, None] - rec) ** 2).sum(-1), rtol=1e-4, atol=1e-3)
    path = tmp_path / "ivf.dcx"
    index.save(path)
    code = ("import sys, deepcodes; ix = deepcodes.load(sys.argv[1]); "
            "print(type(ix.front).__name__, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["PCA", "False"]
    np.testing.assert_array_equal(deepcodes.load(path).search(X[:10], 5, nprobe=16)[1], i)


def test_a_front_must_match_and_transform(digits):
    X, _ = digits
    with pytest.raises(InputError, match="takes 64-dimensional input, the index d=32"):
        IVFADCIndex(32, 8, M=4, front=PCA(8).fit(X))
    with pytest.raises(InputError, match="must have transform"):
        IVFADCIndex(64, 8, M=4, front=object())
    with pytest.raises(InputError, match="exceed the dimension 4 of the front's output"):
        IVFADCIndex(64, 8, M=8, front=PCA(4))
