import gzip

import h5py
import numpy as np
import pytest

from deepcodes.data import vectors as vectors_module
from deepcodes.data.file_protocol import protocol_from_files
from deepcodes.data.formats import write_ann_hdf5, write_bvecs, write_fvecs, write_ivecs
from deepcodes.data.vectors import open_vectors, read_ids, read_labels, read_neighbors, split_dataset
from deepcodes.errors import FormatError, InputError


@pytest.fixture
def X():
    return np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)


def _glove(path, X, keys, sep=" "):
    path.write_text("".join(sep.join([k, *(repr(float(v)) for v in row)]) + "\n" for k, row in zip(keys, X)))


# -------------------------------------------------------------------------------------- binary


def test_npy_is_memory_mapped_and_read_as_float32(tmp_path, X):
    np.save(tmp_path / "x.npy", X.astype(np.float64))
    with open_vectors(tmp_path / "x.npy") as v:
        assert isinstance(v.rows, np.memmap) and v.shape == (50, 6) and v.dtype == np.float64
        np.testing.assert_array_equal(v.read(), X)
        assert v.read().dtype == np.float32 and v.read().flags.c_contiguous


@pytest.mark.parametrize("writer, suffix, dtype", [(write_fvecs, ".fvecs", np.float32),
                                                    (write_bvecs, ".bvecs", np.uint8),
                                                    (write_ivecs, ".ivecs", np.int32)])
def test_texmex_files_are_memory_mapped(tmp_path, writer, suffix, dtype):
    Y = np.random.default_rng(1).integers(0, 200, size=(30, 5))
    writer(tmp_path / f"y{suffix}", Y)
    with open_vectors(tmp_path / f"y{suffix}") as v:
        assert isinstance(v.rows.base, np.memmap) or isinstance(v.rows, np.memmap)
        assert v.dtype == dtype
        np.testing.assert_array_equal(v.read(), Y.astype(np.float32))


def test_fvecs_whose_row_header_changes_mid_file_is_a_format_error(tmp_path, X):
    path = tmp_path / "bad.fvecs"
    write_fvecs(path, X)
    raw = bytearray(path.read_bytes())
    row = 4 + 4 * X.shape[1]
    raw[17 * row:17 * row + 4] = np.int32(5).tobytes()
    path.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="row 17 declares dimension 5"):
        open_vectors(path)
    path.write_bytes(bytes(raw[:-3]))
    with pytest.raises(FormatError, match="truncated"):
        open_vectors(path)


@pytest.mark.parametrize("value, message", [(np.nan, "NaN"), (np.inf, "inf"), (1e300, "float32")])
def test_non_finite_or_overflowing_values_are_refused_with_their_row(tmp_path, X, value, message):
    Y = X.astype(np.float64)
    Y[31, 2] = value
    np.save(tmp_path / "y.npy", Y)
    v = open_vectors(tmp_path / "y.npy")
    np.testing.assert_array_equal(v.read(0, 30), X[:30])
    with pytest.raises(InputError, match=f"{message}.*row 31"):
        list(v.batches(10))


def test_unknown_empty_and_non_numeric_files(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(FormatError, match="unknown vector file type"):
        open_vectors(tmp_path / "x.parquet")
    with pytest.raises(FormatError, match="no such file"):
        open_vectors(tmp_path / "absent.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 4), np.float32))
    with pytest.raises(FormatError, match="empty"):
        open_vectors(tmp_path / "empty.npy")
    np.save(tmp_path / "str.npy", np.array([["a", "b"]]))
    with pytest.raises(FormatError, match="not real numbers"):
        open_vectors(tmp_path / "str.npy")
    (tmp_path / "junk.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(FormatError, match="not a readable .npy"):
        open_vectors(tmp_path / "junk.npy")
    with pytest.raises(FormatError, match="no such file"):
        open_vectors(f"{tmp_path / 'junk.npy'}:train")


# ---------------------------------------------------------------------------------------- HDF5


def test_hdf5_defaults_named_datasets_and_missing_dataset(tmp_path, X):
    path = tmp_path / "ann.hdf5"
    gt = np.tile(np.arange(10), (5, 1))
    write_ann_hdf5(path, X, X[:5], gt, np.zeros((5, 10)))
    with open_vectors(path) as v:
        assert v.name == "ann.hdf5:train" and isinstance(v.rows, np.memmap)
        np.testing.assert_array_equal(v.read(), X)
    with open_vectors(path, default_dataset="test") as v:
        np.testing.assert_array_equal(v.read(), X[:5])
    with open_vectors(f"{path}:test") as v:
        assert v.name == "ann.hdf5:test" and v.n == 5
    np.testing.assert_array_equal(read_neighbors(path, 5), gt)
    with pytest.raises(FormatError, match="no dataset 'learn'; it holds: distances, neighbors, test, train"):
        open_vectors(f"{path}:learn")
    with pytest.raises(FormatError, match="no dataset 'neighbors'"):
        with h5py.File(tmp_path / "only.h5", "w") as f:
            f.create_dataset("train", data=X)
        read_neighbors(tmp_path / "only.h5")
    assert split_dataset(f"{path}:test") == (path, "test")


def test_hdf5_chunked_compressed_dataset_is_read_through_h5py(tmp_path, X):
    path = tmp_path / "z.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("train", data=X, chunks=(8, 6), compression="gzip")
    v = open_vectors(path)
    assert not isinstance(v.rows, np.ndarray)
    np.testing.assert_array_equal(np.concatenate([b for _, b in v.batches(7)]), X)
    sample, rows = v.sample(9, random_state=3)
    np.testing.assert_array_equal(sample, X[rows])
    v.close()


def test_corrupt_hdf5_is_a_format_error(tmp_path, X):
    path = tmp_path / "ann.hdf5"
    write_ann_hdf5(path, X, X[:5], np.zeros((5, 3)), np.zeros((5, 3)))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(FormatError, match="not a readable HDF5"):
        open_vectors(path)


# ---------------------------------------------------------------------------------------- text


def test_glove_text_keeps_keys_even_numeric_ones(tmp_path, X):
    keys = [f"w{i}" for i in range(50)]
    keys[7] = "2010"
    keys[9] = ". . ."  # GloVe 840B has keys with spaces
    _glove(tmp_path / "glove.txt", X, keys)
    with open_vectors(tmp_path / "glove.txt") as v:
        assert v.keys.tolist() == keys and v.shape == (50, 6)
        np.testing.assert_allclose(v.read(), X, rtol=1e-6)


@pytest.mark.parametrize("name, sep", [("v.csv", ","), ("v.tsv", "\t"), ("v.txt", " ")])
def test_delimited_text_without_keys(tmp_path, X, name, sep):
    (tmp_path / name).write_text("\n".join(sep.join(repr(float(x)) for x in row) for row in X) + "\n\n")
    with open_vectors(tmp_path / name) as v:
        assert v.keys is None
        np.testing.assert_allclose(v.read(), X, rtol=1e-6)


def test_gzipped_text_with_word2vec_header(tmp_path, X):
    body = "50 6\n" + "".join("k%d %s\n" % (i, " ".join(map(repr, map(float, row)))) for i, row in enumerate(X))
    with gzip.open(tmp_path / "w.vec.gz", "wt") as f:
        f.write(body)
    with open_vectors(tmp_path / "w.vec.gz") as v:
        assert v.shape == (50, 6) and v.keys[0] == "k0"
        np.testing.assert_allclose(v.read(), X, rtol=1e-6)


def test_large_text_is_parsed_into_a_temporary_file(tmp_path, X, monkeypatch):
    monkeypatch.setattr(vectors_module, "_TEXT_IN_MEMORY", 100)
    monkeypatch.setattr(vectors_module, "_TEXT_LINES", 7)
    _glove(tmp_path / "g.txt", X, [f"w{i}" for i in range(50)])
    with open_vectors(tmp_path / "g.txt") as v:
        assert isinstance(v.rows, np.memmap)
        np.testing.assert_allclose(v.read(), X, rtol=1e-6)


@pytest.mark.parametrize("text, message", [
    ("a 1 2 3\nb 1 2\n", "line 2 has 3 fields, the first row 4"),
    ("1 2 3\n1 x 3\n", "line 2: 'x' is not a number"),
    ("a 1 2\nb nan 2\n", "line 2 holds NaN"),
    ("a 1 2\nb 1e39 2\n", "float32"),
    ("\n\n", "empty"),
    ("word\n", "no numbers"),
])
def test_corrupt_text(tmp_path, text, message):
    (tmp_path / "t.txt").write_text(text)
    with pytest.raises(FormatError, match=message):
        open_vectors(tmp_path / "t.txt")


def test_text_that_is_not_utf8(tmp_path):
    (tmp_path / "t.txt").write_bytes(b"\xff\xfe 1 2\n")
    with pytest.raises(FormatError, match="not UTF-8"):
        open_vectors(tmp_path / "t.txt")


# ----------------------------------------------------------------------------- batches, sample


def test_batches_and_seeded_sample(tmp_path, X):
    np.save(tmp_path / "x.npy", X)
    v = open_vectors(tmp_path / "x.npy")
    blocks = list(v.batches(16, progress=True))
    assert [s for s, _ in blocks] == [0, 16, 32, 48]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), X)
    a, rows = v.sample(20, random_state=5)
    b, rows_again = v.sample(20, random_state=5)
    assert rows.tolist() == sorted(set(rows.tolist())) and len(rows) == 20
    np.testing.assert_array_equal(rows, rows_again)
    np.testing.assert_array_equal(a, X[rows])
    everything, all_rows = v.sample(None)
    np.testing.assert_array_equal(everything, X)
    assert v.sample(500)[0].shape == (50, 6)
    with pytest.raises(InputError, match="max_train"):
        v.sample(0)


# ------------------------------------------------------------------------------- ids, labels


def test_ids_from_npy_and_text(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([5, 3, 9], dtype=np.uint32))
    assert read_ids(tmp_path / "ids.npy", 3).tolist() == [5, 3, 9]
    (tmp_path / "ids.txt").write_text("7\n1\n\n4\n")
    ids = read_ids(tmp_path / "ids.txt", 3)
    assert ids.dtype == np.int64 and ids.tolist() == [7, 1, 4]
    np.save(tmp_path / "f.npy", np.array([1.0, 2.0]))
    assert read_ids(tmp_path / "f.npy").tolist() == [1, 2]


@pytest.mark.parametrize("content, n, message", [
    ("1\n2\nthree\n", 3, "must be integers, got 'three'"),
    ("1\n2\n1\n", 3, "id 1 appears more than once"),
    ("1\n-4\n", 2, "id -4 .* negative"),
    ("1\n2\n", 3, "2 ids for 3 vectors"),
    ("1.5\n2\n", 2, "must be integers"),
])
def test_bad_ids(tmp_path, content, n, message):
    (tmp_path / "ids.txt").write_text(content)
    with pytest.raises(InputError, match=message):
        read_ids(tmp_path / "ids.txt", n)


def test_bad_float_ids_npy(tmp_path):
    np.save(tmp_path / "ids.npy", np.array([1.0, 2.5]))
    with pytest.raises(InputError, match="integers"):
        read_ids(tmp_path / "ids.npy")


def test_labels_integer_and_named(tmp_path):
    (tmp_path / "y.txt").write_text("3\n1\n3\n")
    y, classes = read_labels(tmp_path / "y.txt", 3)
    assert y.tolist() == [3, 1, 3] and classes is None
    (tmp_path / "names.txt").write_text("dog\ncat\ndog\n")
    y, classes = read_labels(tmp_path / "names.txt", 3)
    assert y.tolist() == [1, 0, 1] and classes.tolist() == ["cat", "dog"]
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    with pytest.raises(InputError, match="2 labels for 3 training vectors"):
        read_labels(tmp_path / "y.npy", 3)


def test_neighbors_files(tmp_path):
    gt = np.arange(12).reshape(3, 4)
    write_ivecs(tmp_path / "gt.ivecs", gt)
    assert read_neighbors(tmp_path / "gt.ivecs", 3).tolist() == gt.tolist()
    with pytest.raises(InputError, match="ground truth for 3 queries, the queries file has 2"):
        read_neighbors(tmp_path / "gt.ivecs", 2)
    write_fvecs(tmp_path / "gt.fvecs", gt)
    with pytest.raises(FormatError, match="integer ids"):
        read_neighbors(tmp_path / "gt.fvecs")


# ------------------------------------------------------------------------------ file protocol


def test_protocol_from_an_hdf5_file_uses_its_test_set_and_neighbors(tmp_path, X):
    gt = np.argsort(((X[:5, None] - X[None]) ** 2).sum(-1), axis=1, kind="stable")[:, :10]
    write_ann_hdf5(tmp_path / "a.hdf5", X, X[:5], gt, np.zeros((5, 10)))
    p = protocol_from_files(tmp_path / "a.hdf5")
    assert p.relevance == "knn" and p.n_neighbors == 10 and p.queries.shape == (5, 6)
    np.testing.assert_array_equal(p.ground_truth(), gt)
    np.testing.assert_array_equal(p.ground_truth(3), gt[:, :3])
    with pytest.raises(InputError, match="10 neighbours a query"):
        p.ground_truth(11)


def test_protocol_from_files_checks_dimensions_and_labels(tmp_path, X, monkeypatch):
    monkeypatch.setenv("DEEPCODES_CACHE", str(tmp_path / "cache"))
    np.save(tmp_path / "db.npy", X)
    np.save(tmp_path / "q.npy", X[:4, :5])
    with pytest.raises(InputError, match="dimension 5, the data db.npy 6"):
        protocol_from_files(tmp_path / "db.npy", tmp_path / "q.npy")
    np.save(tmp_path / "q.npy", X[:4])
    with pytest.raises(InputError, match="needs --queries"):
        protocol_from_files(tmp_path / "db.npy")
    p = protocol_from_files(tmp_path / "db.npy", tmp_path / "q.npy")
    assert p.n_neighbors == 50 and p.ground_truth()[:, 0].tolist() == [0, 1, 2, 3]
    (tmp_path / "y.txt").write_text("a\nb\n" * 25)
    (tmp_path / "yq.txt").write_text("b\na\nz\na\n")
    p = protocol_from_files(tmp_path / "db.npy", tmp_path / "q.npy", labels=tmp_path / "y.txt",
                            query_labels=tmp_path / "yq.txt")
    assert p.relevance == "class" and p.query_labels.tolist() == [1, 0, 2, 0]
    with pytest.raises(InputError, match="both --labels"):
        protocol_from_files(tmp_path / "db.npy", tmp_path / "q.npy", labels=tmp_path / "y.txt")


def test_sift10k_hdf5_builder_writes_an_ann_benchmarks_file(tmp_path):
    from deepcodes.data import load_sift10k, read_ann_hdf5
    from deepcodes.data.sift10k_hdf5 import build

    info = build(tmp_path, progress=False)
    data = read_ann_hdf5(info["path"])
    base, queries, neighbors = load_sift10k()
    np.testing.assert_array_equal(data["train"], base.astype(np.float32))
    np.testing.assert_array_equal(data["test"], queries.astype(np.float32))
    np.testing.assert_array_equal(data["neighbors"], neighbors)
    d0 = np.sqrt(((queries[0].astype(np.float64) - base[neighbors[0, 0]]) ** 2).sum())
    assert data["distance"] == "euclidean" and abs(data["distances"][0, 0] - d0) < 1e-3
