import os

import numpy as np
import pytest

from deepcodes.data import datasets, groundtruth, protocols
from deepcodes.data.groundtruth import cache_dir, cached_knn, exact_knn
from deepcodes.data.protocols import PROTOCOLS, Protocol, load_protocol
from deepcodes.errors import InputError
from deepcodes.knn import exact as knn_exact

SIZES = {  # name: (n_train, n_database, n_queries, dim, relevance, n_neighbors)
    "mnist-unsup": (60000, 60000, 1000, 784, "knn", 1000),
    "mnist-sup": (60000, 60000, 1000, 784, "class", None),
    "mnist-unsup-10k": (60000, 60000, 10000, 784, "knn", 1000),
    "mnist-sup-10k": (60000, 60000, 10000, 784, "class", None),
    "cifar10-sup": (5000, 9000, 1000, 3072, "class", None),
    "sift10k": (10000, 10000, 100, 128, "knn", 100),
    "digits-sup": (1597, 1597, 200, 64, "class", None),
}
# Built on GIST features, slow to compute from scratch: their sizes are checked in tests/test_gist.py.
GIST_PROTOCOLS = {"cifar10-unsup", "cifar10-gist-sup"}


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("DEEPCODES_DATA", raising=False)
    monkeypatch.setenv("DEEPCODES_CACHE", str(tmp_path / "cache"))


def _needs_data():
    if not (datasets.data_dir() / "digits" / "digits.csv.gz").is_file():
        pytest.skip("bundled data not found")


def _rows(X):
    return {row.tobytes() for row in np.ascontiguousarray(X)}


def _brute(database, queries, k):
    """Reference top-k by float64 distances and a stable argsort (ties to the lower id)."""
    d2 = ((queries[:, None, :].astype(np.float64) - database[None].astype(np.float64)) ** 2).sum(-1)
    ids = np.argsort(d2, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d2, ids, 1), ids


# ------------------------------------------------------------------------------------ protocols


def test_registry_and_unknown_name():
    assert sorted(PROTOCOLS) == sorted(set(SIZES) | GIST_PROTOCOLS)
    with pytest.raises(InputError, match="valid protocols: .*mnist-unsup.*digits-sup"):
        load_protocol("mnist")


@pytest.mark.parametrize("name", sorted(SIZES))
def test_protocol_sizes_types_and_disjointness(name):
    _needs_data()
    p = load_protocol(name)
    assert load_protocol(name) is p, "memoised per process"
    n_train, n_db, n_q, dim, relevance, n_neighbors = SIZES[name]
    summary = p.summary()
    assert summary == {"name": name, "n_train": n_train, "n_database": n_db, "n_queries": n_q, "dim": dim,
                       "relevance": relevance, "n_neighbors": n_neighbors, "description": p.description}
    assert len(p.description) > 200 and "\n" not in p.description
    for X in (p.train, p.database, p.queries):
        assert X.dtype == np.float32 and X.flags.c_contiguous and not X.flags.writeable
        assert np.isfinite(X).all()
    query_rows = _rows(p.queries)
    assert len(query_rows) == n_q
    assert not query_rows & _rows(p.database), "a query is in the database"
    assert not query_rows & _rows(p.train), "a query is in the training set"
    assert _rows(p.train) <= _rows(p.database)
    if name != "sift10k":
        assert 0.0 <= p.database.min() and p.database.max() <= 1.0
        for X, y in ((p.train, p.train_labels), (p.database, p.database_labels), (p.queries, p.query_labels)):
            assert y.dtype == np.int64 and y.shape == (X.shape[0],) and not y.flags.writeable
            assert set(np.unique(y)) == set(range(10))
    else:
        assert p.train_labels is None and p.query_labels is None


def test_mnist_recipe():
    _needs_data()
    X_train, y_train, X_test, y_test = datasets.load_mnist()
    q = np.sort(np.random.default_rng(0).choice(10000, 1000, replace=False))
    unsup, sup = load_protocol("mnist-unsup"), load_protocol("mnist-sup")
    assert unsup.train is unsup.database and sup.database is unsup.database, "arrays shared, not copied"
    np.testing.assert_array_equal(unsup.queries, X_test[q].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(unsup.query_labels, y_test[q])
    np.testing.assert_array_equal(unsup.database[123], X_train[123].astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(sup.train_labels, y_train)


def test_cifar10_recipe_and_class_balance():
    _needs_data()
    p = load_protocol("cifar10-sup")
    for y, per_class in ((p.query_labels, 100), (p.database_labels, 900), (p.train_labels, 500)):
        assert np.bincount(y).tolist() == [per_class] * 10
    X, y = datasets.load_cifar10()
    rng = np.random.default_rng(0)
    perms = [rng.permutation(np.flatnonzero(y == c)) for c in range(10)]
    q = np.sort(np.concatenate([perm[:100] for perm in perms]))
    train = np.sort(np.concatenate([perm[100:600] for perm in perms]))
    np.testing.assert_array_equal(p.queries, X[q].reshape(1000, -1).astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(p.train, X[train].reshape(5000, -1).astype(np.float32) / np.float32(255))
    # HWC order: the first three features of a row are the RGB values of pixel (0, 0).
    np.testing.assert_array_equal(p.queries[0, :3] * 255, X[q[0], 0, 0])


def test_digits_recipe():
    _needs_data()
    p = load_protocol("digits-sup")
    assert p.train is p.database
    X, y = datasets.load_digits()
    perm = np.random.default_rng(0).permutation(1797)
    np.testing.assert_array_equal(p.queries, X[np.sort(perm[:200])] / np.float32(16))
    np.testing.assert_array_equal(p.database_labels, y[np.sort(perm[200:])])


@pytest.mark.parametrize("name", ["cifar10-sup", "sift10k", "digits-sup"])
def test_protocols_are_deterministic(name):
    _needs_data()
    first, again = load_protocol(name), protocols._BUILDERS[name]()
    assert again is not first
    for field in ("train", "database", "queries", "train_labels", "database_labels", "query_labels"):
        a, b = getattr(first, field), getattr(again, field)
        assert (a is None and b is None) or np.array_equal(a, b), field


def test_sift10k_ground_truth_equals_the_published_neighbours():
    _needs_data()
    p = load_protocol("sift10k")
    gt = p.ground_truth()
    assert gt.shape == (100, 100) and gt.dtype == np.int64
    np.testing.assert_array_equal(gt, datasets.load_sift10k()[2])
    assert p.ground_truth(100) is gt
    np.testing.assert_array_equal(p.ground_truth(10), gt[:, :10])


def test_class_protocol_ground_truth_defaults_to_100():
    _needs_data()
    p = load_protocol("digits-sup")
    gt = p.ground_truth()
    assert gt.shape == (200, 100)
    np.testing.assert_array_equal(gt, _brute(p.database, p.queries, 100)[1])
    with pytest.raises(InputError):
        p.ground_truth(1598)


def test_mnist_unsup_ground_truth_matches_labels():
    _needs_data()
    p = load_protocol("mnist-unsup")
    gt = p.ground_truth(5)
    assert gt.shape == (1000, 5)
    for i in (0, 999):
        d2 = np.concatenate([((block.astype(np.float64) - p.queries[i]) ** 2).sum(1)
                             for block in np.array_split(p.database, 12)])
        np.testing.assert_array_equal(gt[i], np.argsort(d2, kind="stable")[:5])
    assert (p.database_labels[gt[:, 0]] == p.query_labels).mean() > 0.95, "1-NN accuracy of MNIST"


def test_protocol_is_frozen():
    p = Protocol("a toy / test", "a toy", np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32),
                 np.ones((1, 2), np.float32), "knn", 1)
    with pytest.raises(AttributeError):
        p.name = "other"
    np.testing.assert_array_equal(p.ground_truth(), [[0]])


# ---------------------------------------------------------------------------------- ground truth


def test_exact_knn_with_many_ties_matches_stable_argsort():
    rng = np.random.default_rng(3)
    database = rng.integers(0, 3, size=(3000, 6)).astype(np.float32)
    queries = rng.integers(0, 3, size=(64, 6)).astype(np.float32)
    for k in (1, 20, 137):
        dist, ids = exact_knn(database, queries, k)
        ref_d, ref_i = _brute(database, queries, k)
        assert dist.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (64, k)
        np.testing.assert_array_equal(ids, ref_i)
        np.testing.assert_array_equal(dist, ref_d.astype(np.float32))


def test_exact_knn_float_data_and_edge_cases():
    rng = np.random.default_rng(4)
    database = rng.normal(size=(500, 12))
    queries = rng.normal(size=(30, 12))
    dist, ids = exact_knn(database, queries, 10)
    ref_d, ref_i = _brute(database, queries, 10)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(dist, ref_d, rtol=1e-6)
    np.testing.assert_array_equal(exact_knn(database, queries, 500)[1], _brute(database, queries, 500)[1])
    dup = np.vstack([database, database[:50]])  # exact duplicates: the lower id must come first
    _, ids = exact_knn(dup, database[:50], 2)
    np.testing.assert_array_equal(ids, np.c_[np.arange(50), np.arange(500, 550)])
    with pytest.raises(InputError, match="k=501"):
        exact_knn(database, queries, 501)
    with pytest.raises(InputError, match="dimension"):
        exact_knn(database, queries[:, :5], 3)
    with pytest.raises(InputError, match="NaN"):
        exact_knn(database, np.full((1, 12), np.nan), 3)


def test_exact_knn_in_small_blocks_gives_the_same_result(monkeypatch):
    rng = np.random.default_rng(5)
    database = rng.integers(0, 4, size=(700, 5)).astype(np.uint8)
    queries = rng.integers(0, 4, size=(45, 5)).astype(np.uint8)
    expected = exact_knn(database, queries, 30)
    monkeypatch.setattr(knn_exact, "_BLOCK", 400)
    monkeypatch.setattr(knn_exact, "_SEARCH_BLOCK", 7)
    blocked = exact_knn(database, queries, 30)
    np.testing.assert_array_equal(blocked[1], expected[1])
    np.testing.assert_array_equal(blocked[1], _brute(database, queries, 30)[1])


def test_cached_knn_is_reused_and_written_atomically(tmp_path, monkeypatch):
    assert cache_dir() == tmp_path / "cache"
    rng = np.random.default_rng(6)
    database, queries = rng.normal(size=(300, 8)), rng.normal(size=(20, 8))
    calls = []

    def counting(*args):
        calls.append(1)
        return exact_knn(*args)

    monkeypatch.setattr(groundtruth, "exact_knn", counting)
    folder = tmp_path / "cache" / "groundtruth"
    dist, ids = cached_knn(database, queries, 7, key="toy")
    files = sorted(os.listdir(folder))
    assert len(files) == 1 and files[0].startswith("toy-") and files[0].endswith("-k7.gt.safetensors")
    again = cached_knn(database, queries, 7, key="toy")
    assert len(calls) == 1, "the second call recomputed"
    np.testing.assert_array_equal(again[1], ids)
    np.testing.assert_array_equal(again[0], dist)

    cached_knn(database, queries, 8, key="toy")
    changed = database.copy()
    changed[150, 3] += 1e-3          # one value in the middle: the old 257-row sample missed such changes
    cached_knn(changed, queries, 7, key="toy")
    assert len(calls) == 3, "k and every value of the data are part of the cache key"

    entry = folder / files[0]
    entry.write_bytes(b"garbage")
    repaired = cached_knn(database, queries, 7, key="toy")
    assert len(calls) == 4
    np.testing.assert_array_equal(repaired[1], ids)
    assert not [f for f in os.listdir(folder) if f.endswith(".tmp")]

    with pytest.raises(InputError, match="cache key"):
        cached_knn(database, queries, 7, key="../escape")


def test_cached_knn_detects_wrong_content_of_the_right_shape(tmp_path, monkeypatch):
    from deepcodes import persist

    rng = np.random.default_rng(7)
    database, queries = rng.normal(size=(400, 6)), rng.normal(size=(30, 6))
    dist, ids = cached_knn(database, queries, 5, key="toy")
    (entry,) = (tmp_path / "cache" / "groundtruth").iterdir()
    arrays, document = persist.read_arrays(entry)
    fresh = {name: np.array(a) for name, a in arrays.items()}

    # (1) rows rolled by one in the file's bytes: the checksum no longer matches
    raw = bytearray(entry.read_bytes())
    block = ids.tobytes()
    at = bytes(raw).index(block)
    raw[at:at + len(block)] = np.roll(ids, 1, axis=0).tobytes()
    entry.write_bytes(bytes(raw))
    # (2) rolled rows written with valid checksums: the spot check recomputes four queries
    # (3) another data set's result under this name: the recorded data hash differs
    rolled = {"distances": np.roll(fresh["distances"], 1, axis=0), "ids": np.roll(fresh["ids"], 1, axis=0)}
    cases = [None, (rolled, document), (fresh, dict(document, data_sha256="0" * 64))]
    for case in cases:
        if case is not None:
            persist.write_arrays(entry, *case)
        calls = []
        monkeypatch.setattr(groundtruth, "exact_knn", lambda *a: calls.append(1) or exact_knn(*a))
        got = cached_knn(database, queries, 5, key="toy")
        assert calls == [1], "a wrong cache entry was served"
        np.testing.assert_array_equal(got[1], ids)
        np.testing.assert_array_equal(got[0], dist)


def test_cached_knn_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    database, queries = np.eye(10), np.eye(10)[:3]

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr("deepcodes.persist.os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        cached_knn(database, queries, 2, key="toy")
    assert os.listdir(tmp_path / "cache" / "groundtruth") == []
