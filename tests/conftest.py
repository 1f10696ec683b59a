import faiss
import numpy as np
import pytest
from threadpoolctl import threadpool_limits

# pytest -n 2 already runs one worker per core: more OpenMP/BLAS threads per worker only spin and
# contend (faiss k-means slowed 5x in the suite). Numba kernels keep their threads, so the parallel
# code paths are still exercised.
faiss.omp_set_num_threads(1)
threadpool_limits(1)

# Two xdist workers that first call the same uncompiled numba kernel both compile it (numba's disk
# cache has no lock between processes): on a clean checkout that cost 10-45 s of compilation per
# kernel, twice. The tests of the indexes whose search kernels take longest to compile (VLQ, VLQ fast
# scan, multi-index hashing) therefore run on one worker each, the first compile serving the rest.
_KERNEL_GROUPS = {"vlq-kernels": ("VLQ", "vlq"), "mih-kernels": ("MultiIndexHashing", "mih", "MIH")}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        group = next((g for g, words in _KERNEL_GROUPS.items() if any(w in item.nodeid for w in words)), None)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def digits():
    """UCI digits from the bundled data: (X float32 in [0,1] (1797, 64), y int64)."""
    from deepcodes.data.datasets import load_digits

    X, y = load_digits()
    return X.astype(np.float32) / 16.0, y.astype(np.int64)


@pytest.fixture(scope="session")
def mnist_slice():
    """5,000 MNIST training images in [0,1] and their labels, plus 200 test images as queries."""
    from deepcodes.data.datasets import load_mnist

    X_train, y_train, X_test, y_test = load_mnist()
    return (X_train[:5000].astype(np.float32) / 255.0, y_train[:5000].astype(np.int64),
            X_test[:200].astype(np.float32) / 255.0, y_test[:200].astype(np.int64))
