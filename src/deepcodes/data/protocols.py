"""Named evaluation protocols: fixed train / database / query splits, preprocessing and relevance.

Every experiment names one of :data:`PROTOCOLS` and gets the same arrays from :func:`load_protocol`.
Within each part, rows keep their order in the source dataset (sorted by original index), and no
query row is ever in the training set or the database. The arrays are read-only because one
loaded protocol is shared by every caller in the process.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..validation import check_int
from . import datasets
from ..knn.arrays import read_only
from .groundtruth import cached_knn

__all__ = ["Protocol", "PROTOCOLS", "load_protocol"]

PROTOCOLS: dict[str, str] = {
    "mnist-unsup": "MNIST 60,000 train = database, 1,000 test queries; relevant = 1,000 exact Euclidean NN",
    "mnist-sup": "MNIST 60,000 train = database, 1,000 test queries; relevant = same class",
    "mnist-unsup-10k": "MNIST 60,000 train = database, all 10,000 test images as queries (the BDNN authors' "
                       "protocol); relevant = 1,000 exact Euclidean NN",
    "mnist-sup-10k": "MNIST 60,000 train = database, all 10,000 test images as queries (the BDNN authors' "
                     "protocol); relevant = same class",
    "cifar10-sup": "CIFAR-10 test split raw pixels: 5,000 train, 9,000 database, 1,000 queries; relevant = same class",
    "cifar10-unsup": "CIFAR-10 test split, 512-d GIST: 9,000 train = database, 1,000 queries (cifar10-sup's); "
                     "relevant = 100 exact Euclidean NN in GIST space",
    "cifar10-gist-sup": "CIFAR-10 test split, 512-d GIST, cifar10-sup's split: 5,000 train, 9,000 database, "
                        "1,000 queries; relevant = same class",
    "sift10k": "ANN_SIFT10K: 10,000 base = train = database, 100 queries; relevant = 100 exact Euclidean NN",
    "digits-sup": "UCI digits: 1,597 train = database, 200 queries; relevant = same class",
}

_CLASS_DEFAULT_K = 100


@dataclass(frozen=True, eq=False)
class Protocol:
    """An evaluation protocol: the data splits and the rule that says which database items are relevant.

    ``relevance`` is ``"class"`` (relevant = same label) or ``"knn"`` (relevant = the query's
    ``n_neighbors`` exact Euclidean nearest neighbours in the database, ties to the lower id).
    """

    name: str
    description: str                             # one paragraph: sizes, seeds, preprocessing, relevance
    train: np.ndarray                            # (n_train, d) float32, C-contiguous, read-only
    database: np.ndarray                         # (n_db, d) float32
    queries: np.ndarray                          # (n_q, d) float32
    relevance: str                               # "class" or "knn"
    n_neighbors: int | None                      # the k of "knn" relevance; None for "class"
    train_labels: np.ndarray | None = None       # (n_train,) int64
    database_labels: np.ndarray | None = None    # (n_db,) int64
    query_labels: np.ndarray | None = None       # (n_q,) int64
    _ground_truth: dict = field(default_factory=dict, init=False, repr=False)

    def ground_truth(self, k: int | None = None) -> np.ndarray:
        """Exact Euclidean k-NN ids (n_q, k) int64 of each query in the database, ordered by (distance, id).

        ``k`` defaults to ``n_neighbors`` for "knn" protocols and to 100 for "class" ones. Results
        are cached on disk (see :func:`~deepcodes.data.groundtruth.cached_knn`) and in memory.
        """
        if k is None:
            k = self.n_neighbors if self.relevance == "knn" else _CLASS_DEFAULT_K
        k = check_int(k, "k", low=1, high=self.database.shape[0])
        if k not in self._ground_truth:
            key = re.sub(r"[^A-Za-z0-9._-]", "_", self.name) or "protocol"
            _, ids = cached_knn(self.database, self.queries, k, key=key)
            ids.setflags(write=False)
            self._ground_truth[k] = ids
        return self._ground_truth[k]

    def summary(self) -> dict:
        """name, n_train, n_database, n_queries, dim, relevance, n_neighbors, description."""
        return {"name": self.name, "n_train": int(self.train.shape[0]), "n_database": int(self.database.shape[0]),
                "n_queries": int(self.queries.shape[0]), "dim": int(self.database.shape[1]),
                "relevance": self.relevance, "n_neighbors": self.n_neighbors, "description": self.description}


def _floats(X: np.ndarray, scale: float) -> np.ndarray:
    """Rows of X flattened to (n, d) float32, divided by ``scale``, read-only."""
    out = np.asarray(X, dtype=np.float32).reshape(X.shape[0], -1) / np.float32(scale)
    out.setflags(write=False)
    return out


def _labels(y: np.ndarray) -> np.ndarray:
    """Labels as a read-only int64 copy (n,)."""
    out = np.array(y, dtype=np.int64)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=1)
def _mnist_arrays():
    X_train, y_train, X_test, y_test = datasets.load_mnist()
    return _floats(X_train, 255), _labels(y_train), _floats(X_test, 255), _labels(y_test)


def _mnist_parts(all_queries: bool = False):
    """(train, train labels, queries, query labels): 1,000 seeded test images as queries, or all 10,000."""
    X, y, Q, yq = _mnist_arrays()
    if all_queries:
        return X, y, Q, yq
    q = np.sort(np.random.default_rng(0).choice(Q.shape[0], 1000, replace=False))
    return X, y, read_only(Q[q]), read_only(yq[q])


_MNIST_TEXT = ("MNIST, {n_db:,} training images (the reconstructed near-copy, within +-1 grey level of the "
               "official pixels) scaled to [0, 1] as float32 784-d vectors are both the training set and the "
               "database; the queries are {queries}, scaled the same way. ")
_MNIST_1K = ("1,000 of the 10,000 official test images, numpy.random.default_rng(0).choice(10000, 1000, "
             "replace=False), in ascending index order")
_MNIST_10K = "all 10,000 official test images in their order (the BDNN authors' protocol)"


def _mnist_unsup(all_queries: bool = False) -> Protocol:
    X, y, Q, yq = _mnist_parts(all_queries)
    text = _MNIST_TEXT.format(n_db=X.shape[0], queries=_MNIST_10K if all_queries else _MNIST_1K) + (
        "Relevant items for a query are its 1,000 exact Euclidean nearest neighbours in the database "
        "(ties to the lower index); the labels are kept for information only.")
    return Protocol("mnist-unsup-10k" if all_queries else "mnist-unsup", text, X, X, Q, "knn", 1000, y, y, yq)


def _mnist_sup(all_queries: bool = False) -> Protocol:
    X, y, Q, yq = _mnist_parts(all_queries)
    text = (_MNIST_TEXT.format(n_db=X.shape[0], queries=_MNIST_10K if all_queries else _MNIST_1K)
            + "Relevant items for a query are the database items of its class.")
    return Protocol("mnist-sup-10k" if all_queries else "mnist-sup", text, X, X, Q, "class", None, y, y, yq)


@functools.lru_cache(maxsize=1)
def _cifar10_split() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(query, database, train) row indices of the CIFAR-10 protocols, each ascending."""
    _, y = datasets.load_cifar10()
    rng = np.random.default_rng(0)
    q_idx, db_idx, tr_idx = [], [], []
    for c in range(10):
        perm = rng.permutation(np.flatnonzero(y == c))
        q_idx.append(perm[:100])
        db_idx.append(perm[100:])
        tr_idx.append(perm[100:600])
    return tuple(np.sort(np.concatenate(p)) for p in (q_idx, db_idx, tr_idx))


_CIFAR_SPLIT_TEXT = (
    "One generator numpy.random.default_rng(0) permutes each class's row indices in turn, classes 0 to 9: "
    "the first 100 of each permutation are queries (1,000), the other 900 the database (9,000), and the "
    "first 500 of those 900 {train}; each part is in ascending index order. ")
_CIFAR_TEXT = "CIFAR-10 test split (10,000 images, 1,000 per class; rows in the bundled order: by class, then file name), "
_GIST_TEXT = ("512-d GIST descriptors (deepcodes.data.gist: grey levels, whitening and local contrast "
              "normalisation, 4 scales x 8 orientations of Gabor filters on the image padded to 64x64, "
              "magnitudes averaged on a 4x4 grid) as float32. ")


def _cifar10_sup() -> Protocol:
    X, y = datasets.load_cifar10()
    q_idx, db_idx, tr_idx = _cifar10_split()
    text = (_CIFAR_TEXT + "raw RGB pixels in HWC order flattened to 3,072-d float32 and scaled to [0, 1]. "
            + _CIFAR_SPLIT_TEXT.format(train="the training set (5,000, a subset of the database)")
            + "Relevant items for a query are the database items of its class.")
    return Protocol("cifar10-sup", text, _floats(X[tr_idx], 255), _floats(X[db_idx], 255),
                    _floats(X[q_idx], 255), "class", None,
                    _labels(y[tr_idx]), _labels(y[db_idx]), _labels(y[q_idx]))


@functools.lru_cache(maxsize=1)
def _cifar10_gist() -> np.ndarray:
    from .gist import cifar10_gist

    X, _ = datasets.load_cifar10()
    return _floats(cifar10_gist(X), 1)


def _cifar10_gist_sup() -> Protocol:
    _, y = datasets.load_cifar10()
    G = _cifar10_gist()
    q_idx, db_idx, tr_idx = _cifar10_split()
    text = (_CIFAR_TEXT + _GIST_TEXT
            + _CIFAR_SPLIT_TEXT.format(train="the training set (5,000, a subset of the database)")
            + "The same split as cifar10-sup. Relevant items for a query are the database items of its class.")
    return Protocol("cifar10-gist-sup", text, _floats(G[tr_idx], 1), _floats(G[db_idx], 1), _floats(G[q_idx], 1),
                    "class", None, _labels(y[tr_idx]), _labels(y[db_idx]), _labels(y[q_idx]))


def _cifar10_unsup() -> Protocol:
    _, y = datasets.load_cifar10()
    G = _cifar10_gist()
    q_idx, db_idx, _ = _cifar10_split()
    Xd = _floats(G[db_idx], 1)
    text = (_CIFAR_TEXT + _GIST_TEXT
            + _CIFAR_SPLIT_TEXT.format(train="(unused here)")
            + "The 9,000 database images are also the training set; the queries are cifar10-sup's 1,000. "
            "Relevant items for a query are its 100 exact Euclidean nearest neighbours in GIST space among the "
            "database (ties to the lower index): about 1.1% of the database, the proportion of sift10k "
            "(100 of 10,000) and near mnist-unsup's (1,000 of 60,000), and well inside one class (900 "
            "images), so relevance stays local; k = 1,000 would take in more than a class's worth of "
            "images. The labels are kept for information only.")
    yd = _labels(y[db_idx])
    return Protocol("cifar10-unsup", text, Xd, Xd, _floats(G[q_idx], 1), "knn", 100, yd, yd, _labels(y[q_idx]))


def _sift10k() -> Protocol:
    base, queries, _ = datasets.load_sift10k()
    X = _floats(base, 1)
    text = ("ANN_SIFT10K (siftsmall): the 10,000 base SIFT descriptors as unscaled float32 128-d vectors "
            "(integers 0-180) are both the training set and the database; the queries are the 100 official "
            "query vectors. There is no separate learning set. Relevant items for a query are its 100 exact "
            "Euclidean nearest neighbours in the database (ties to the lower index).")
    return Protocol("sift10k", text, X, X, _floats(queries, 1), "knn", 100)


def _digits_sup() -> Protocol:
    X, y = datasets.load_digits()
    perm = np.random.default_rng(0).permutation(X.shape[0])
    q_idx, db_idx = np.sort(perm[:200]), np.sort(perm[200:])
    text = ("UCI optical digits (scikit-learn load_digits, 1,797 8x8 images), pixel counts 0-16 divided by "
            "16 as float32 64-d vectors. numpy.random.default_rng(0).permutation(1797): the first 200 are "
            "the queries, the other 1,597 are both the training set and the database; each part is in "
            "ascending index order. Relevant items for a query are the database items of its class.")
    Xd, yd = _floats(X[db_idx], 16), _labels(y[db_idx])
    return Protocol("digits-sup", text, Xd, Xd, _floats(X[q_idx], 16), "class", None, yd, yd, _labels(y[q_idx]))


_BUILDERS = {
    "mnist-unsup": _mnist_unsup, "mnist-sup": _mnist_sup,
    "mnist-unsup-10k": functools.partial(_mnist_unsup, True), "mnist-sup-10k": functools.partial(_mnist_sup, True),
    "cifar10-sup": _cifar10_sup,
    "cifar10-unsup": _cifar10_unsup, "cifar10-gist-sup": _cifar10_gist_sup,
    "sift10k": _sift10k, "digits-sup": _digits_sup,
}


@functools.lru_cache(maxsize=None)
def _load(name: str) -> Protocol:
    return _BUILDERS[name]()


def load_protocol(name: str) -> Protocol:
    """The protocol called ``name`` (one of :data:`PROTOCOLS`), built once per process."""
    if not isinstance(name, str) or name not in _BUILDERS:
        raise InputError(f"unknown protocol {name!r}; valid protocols: {', '.join(PROTOCOLS)}")
    return _load(name)
