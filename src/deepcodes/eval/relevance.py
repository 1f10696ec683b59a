"""Which database items are relevant to a query: same class, or among its exact k nearest neighbours.

A relevance object answers two questions for a block of query rows:

- ``mask(rows, ids) -> bool (len(rows), r)``: is each ranked database id relevant to its query;
- ``counts(rows) -> int64 (len(rows),)``: how many relevant items each query has in the whole database.

``rows`` is a slice or an int array of query indices; ``ids`` (len(rows), r) are database ids in
[0, n_database) (negative ids, i.e. padding, are never relevant).
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..validation import check_int, check_labels
from .ranked import class_mask, neighbor_mask

__all__ = ["ClassRelevance", "NeighborRelevance", "relevance_for"]


class _Relevance:
    n_queries: int
    n_database: int

    def _rows(self, rows) -> np.ndarray:
        if isinstance(rows, slice):
            return np.arange(self.n_queries)[rows]
        arr = np.asarray(rows)
        if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
            raise InputError(f"rows must be a slice or a 1-D integer array, got {arr.dtype} {arr.shape}")
        arr = arr.astype(np.int64)
        if arr.size and (arr.min() < 0 or arr.max() >= self.n_queries):
            raise InputError(f"rows must lie in [0, {self.n_queries}), got [{arr.min()}, {arr.max()}]")
        return arr

    def _ids(self, ids, n_rows: int) -> np.ndarray:
        """``ids`` as int64 (n_rows, r), checked to be < n_database (negative ids are padding)."""
        arr = np.asarray(ids)
        if arr.ndim != 2 or arr.shape[0] != n_rows:
            raise InputError(f"ids must have shape ({n_rows}, r) for {n_rows} query rows, got {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"ids must hold integer database ids, got dtype {arr.dtype}")
        if arr.size and arr.max() >= self.n_database:
            raise InputError(f"ids must be < n_database={self.n_database}, got {arr.max()}")
        return arr.astype(np.int64, copy=False)

    def counts(self, rows) -> np.ndarray:
        """Number of relevant database items of each query in ``rows``: int64 (len(rows),)."""
        return self._counts[self._rows(rows)]


class ClassRelevance(_Relevance):
    """Relevant = same class label.

    ``database_labels`` (n_database,) and ``query_labels`` (n_queries,) are integer class labels.
    """

    def __init__(self, database_labels, query_labels):
        self.database_labels = check_labels(database_labels, _length(database_labels), "database_labels")
        self.query_labels = check_labels(query_labels, _length(query_labels), "query_labels")
        self.n_database = len(self.database_labels)
        self.n_queries = len(self.query_labels)
        classes, sizes = np.unique(self.database_labels, return_counts=True)
        pos = np.minimum(np.searchsorted(classes, self.query_labels), len(classes) - 1)
        # A query whose class is absent from the database has no relevant item.
        self._counts = np.where(classes[pos] == self.query_labels, sizes[pos], 0).astype(np.int64)

    def mask(self, rows, ids) -> np.ndarray:
        """bool (len(rows), r): does ``ids[i, j]`` share the class of query ``rows[i]``."""
        rows = self._rows(rows)
        return class_mask(self.database_labels, self.query_labels[rows], self._ids(ids, len(rows)))


class NeighborRelevance(_Relevance):
    """Relevant = among the query's K exact nearest neighbours.

    ``neighbors`` (n_queries, K) are database ids in [0, n_database); repeated ids in a row count once.
    """

    def __init__(self, neighbors, n_database: int):
        self.n_database = check_int(n_database, "n_database", low=1)
        arr = np.asarray(neighbors)
        if arr.ndim != 2 or 0 in arr.shape:
            raise InputError(f"neighbors must be a non-empty 2-D (n_queries, K) array, got shape {arr.shape}")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"neighbors must hold integer database ids, got dtype {arr.dtype}")
        if arr.min() < 0 or arr.max() >= self.n_database:
            raise InputError(f"neighbors must lie in [0, {self.n_database}), got [{arr.min()}, {arr.max()}]")
        self.neighbors = arr.astype(np.int64)
        self.n_queries = arr.shape[0]
        ordered = np.sort(self.neighbors, axis=1)
        self._counts = 1 + (np.diff(ordered, axis=1) != 0).sum(axis=1).astype(np.int64)

    def mask(self, rows, ids) -> np.ndarray:
        """bool (len(rows), r): is ``ids[i, j]`` one of the K nearest neighbours of query ``rows[i]``."""
        rows = self._rows(rows)
        return neighbor_mask(self.neighbors[rows], self._ids(ids, len(rows)), self.n_database)


def relevance_for(protocol) -> ClassRelevance | NeighborRelevance:
    """The relevance of an evaluation protocol (duck-typed, e.g. ``deepcodes.data``'s Protocol).

    ``protocol.relevance == "class"`` uses ``database_labels`` and ``query_labels``; ``"knn"`` uses
    ``ground_truth(n_neighbors)`` (n_queries, n_neighbors) and ``len(database)``.
    """
    kind = getattr(protocol, "relevance", None)
    if kind == "class":
        return ClassRelevance(protocol.database_labels, protocol.query_labels)
    if kind == "knn":
        k = check_int(protocol.n_neighbors, "n_neighbors", low=1)
        return NeighborRelevance(protocol.ground_truth(k), len(protocol.database))
    raise InputError(f"protocol.relevance must be 'class' or 'knn', got {kind!r}")


def _length(y) -> int:
    shape = np.shape(y)
    return shape[0] if shape else 0
