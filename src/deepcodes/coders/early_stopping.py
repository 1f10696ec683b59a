"""Model selection for the learned coders on a split of the *training* set, never on the queries.

:class:`ValidationSplit` holds out some training points as validation queries and samples a
validation database from the rest; the coder trains on the remaining points. ``score_*`` give the
mAP of a candidate model over the full ranking of that database, with the evaluation protocol's
tie rule (stable sort by (distance, database index)). Relevance is the same class when labels are
given, else the query's exact Euclidean neighbours in the validation database.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..eval import evaluate_search
from ..eval.relevance import ClassRelevance, NeighborRelevance
from ..knn import exact_knn, hamming_search, to_words
from ..validation import check_int

# The smallest training set (after the split) a model is fitted on, and the smallest validation split.
MIN_TRAIN = 50
MIN_VALIDATION = 10


def validation_count(size, n: int, what: str = "the coder") -> int:
    """How many of ``n`` training points to hold out: ``size`` is an int, a fraction in (0, 1), 0 (no
    validation) or None (min(1000, 10% of the points)). At least ``MIN_TRAIN`` points must remain."""
    if size is None:
        count = min(1000, n // 10)
    elif isinstance(size, float) and 0 < size < 1:
        count = int(round(size * n))
    else:
        count = check_int(size, "validation_size", low=0)
    if count and count < MIN_VALIDATION:
        raise InputError(f"the validation split has {count} points; it needs at least {MIN_VALIDATION} "
                         "(or validation_size=0 to train without early stopping)")
    if n - count < MIN_TRAIN:
        raise InputError(f"{what} needs at least {MIN_TRAIN} training points besides the "
                         f"{count} validation points, got {n} points in all")
    return count


class ValidationSplit:
    """A seeded split of a training set ``X`` (n, d) (labels ``y`` (n,) optional) for early stopping.

    Parameters
    ----------
    X, y : the training set (raw inputs, as the coder's ``encode`` takes them) and its labels or None.
    size : validation queries held out (see :func:`validation_count`); 0 gives an empty split.
    database_size : at most this many of the remaining points form the validation database (they
        still train).
    n_neighbors : k of the k-NN relevance when there are no labels.
    rng : numpy Generator drawing the split.

    Attributes
    ----------
    train_idx : (n_train,) int64, the points to train on (sorted).
    query_idx, database_idx : (n_val,), (n_db,) int64 (sorted); empty when ``size`` is 0.
    queries, database : the validation rows of ``X``; ``relevance``: their relevance object.
    """

    def __init__(self, X: np.ndarray, y=None, *, size=None, database_size: int = 10000, n_neighbors: int = 100,
                 rng: np.random.Generator, what: str = "the coder"):
        n = X.shape[0]
        n_val = validation_count(size, n, what)
        perm = rng.permutation(n)
        self.query_idx, self.train_idx = np.sort(perm[:n_val]), np.sort(perm[n_val:])
        self.database_idx = np.empty(0, dtype=np.int64)
        self.relevance = None
        if not n_val:
            return
        n_db = check_int(database_size, "validation_database", low=MIN_VALIDATION)
        db_idx = self.train_idx
        if len(db_idx) > n_db:
            db_idx = np.sort(rng.choice(self.train_idx, n_db, replace=False))
        self.database_idx = db_idx
        self.queries, self.database = X[self.query_idx], X[db_idx]
        if y is not None:
            self.relevance = ClassRelevance(y[db_idx], y[self.query_idx])
        else:
            k = min(check_int(n_neighbors, "validation_neighbors", low=1), len(db_idx))
            self.relevance = NeighborRelevance(exact_knn(self.database, self.queries, k)[1], len(db_idx))

    def __bool__(self) -> bool:
        return self.relevance is not None

    def _map(self, search, queries) -> float:
        result = evaluate_search(search, queries, self.relevance, len(self.database_idx),
                                 ks=(1,), Rs=(1,), map_at=(1,), hamming_bits=None)
        return float(result["map"])

    def score_binary(self, encode, n_bits: int) -> float:
        """mAP of ``encode`` (rows -> packed codes (n, n_bits/8) uint8) ranked by Hamming distance."""
        words = to_words(encode(self.database))
        return self._map(lambda Q, k: hamming_search(Q, words, k, n_bits), encode(self.queries))

    def score_euclidean(self, queries: np.ndarray, database: np.ndarray) -> float:
        """mAP of ranking ``database`` (n_db, p) rows by squared Euclidean distance to ``queries``
        (n_val, p): e.g. embedded queries against the reconstructions of the database codes, which
        is the ADC ranking of a PQ or RQ code."""
        Zdb = np.asarray(database, dtype=np.float64)
        db_norm = np.einsum("nd,nd->n", Zdb, Zdb)

        def search(Q, k):
            Q = np.asarray(Q, dtype=np.float64)
            d = np.maximum(np.einsum("qd,qd->q", Q, Q)[:, None] - 2 * Q @ Zdb.T + db_norm[None], 0)
            order = np.argsort(d, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(d, order, axis=1), order

        return self._map(search, queries)
