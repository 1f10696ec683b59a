"""An evaluation protocol made of the caller's own files (``deepcodes evaluate --data ...``)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..validation import check_int
from .protocols import Protocol
from .vectors import HDF5_SUFFIXES, open_vectors, read_labels, read_neighbors, split_dataset

__all__ = ["FileProtocol", "protocol_from_files"]

DEFAULT_NEIGHBORS = 100


@dataclass(frozen=True, eq=False)
class FileProtocol(Protocol):
    """A :class:`~deepcodes.data.Protocol` whose ground truth may come from a file.

    ``neighbors`` (n_queries, K) int64: the exact neighbour rows of each query in the database
    (e.g. an ann-benchmarks ``neighbors`` dataset); when None it is computed exactly on demand.
    """

    neighbors: np.ndarray | None = None

    def ground_truth(self, k: int | None = None) -> np.ndarray:
        if self.neighbors is None:
            return super().ground_truth(k)
        if k is None:
            k = self.n_neighbors if self.relevance == "knn" else self.neighbors.shape[1]
        k = check_int(k, "k", low=1)
        if k > self.neighbors.shape[1]:
            raise InputError(f"the ground truth holds {self.neighbors.shape[1]} neighbours a query, {k} were asked for")
        return self.neighbors[:, :k]


def protocol_from_files(data, queries=None, *, gt=None, labels=None, query_labels=None) -> FileProtocol:
    """The protocol "rank ``data`` for each of ``queries``" from files (any :func:`open_vectors` type).

    For an HDF5 ``data`` file, ``queries`` defaults to its ``test`` set and ``gt`` to its
    ``neighbors`` when present. Relevance is by class when both ``labels`` (of the data rows) and
    ``query_labels`` are given, otherwise by the exact nearest neighbours: those of ``gt``, or
    the exact top-100 computed here. The database doubles as the training set.
    """
    data_path, _ = split_dataset(data)
    is_hdf5 = data_path.name.lower().endswith(HDF5_SUFFIXES)
    if queries is None:
        if not is_hdf5:
            raise InputError("evaluating on --data needs --queries (an HDF5 file supplies its own 'test' set)")
        queries = data_path
    if (labels is None) != (query_labels is None):
        raise InputError("class relevance needs both --labels (of the data) and --query-labels")
    with open_vectors(data) as db, open_vectors(queries, default_dataset="test") as q:
        if q.d != db.d:
            raise InputError(f"the queries {q.name} have dimension {q.d}, the data {db.name} {db.d}")
        database, query_rows, name, qname = db.read(), q.read(), db.name, q.name
    n_db, nq = database.shape[0], query_rows.shape[0]
    if gt is None and is_hdf5 and labels is None and _hdf5_has(data_path, "neighbors"):
        gt = data_path
    description = f"database {name} ({n_db} x {database.shape[1]}), queries {qname} ({nq})"
    if labels is not None:
        y_db, classes = read_labels(labels, n_db)
        y_q, q_classes = read_labels(query_labels, nq)
        if (classes is None) != (q_classes is None):
            raise InputError("--labels and --query-labels must both be integers or both be names")
        if classes is not None:
            # Name labels: map the queries' names onto the data's classes (unknown names: no relevant item).
            lookup = {c: i for i, c in enumerate(classes)}
            y_q = np.array([lookup.get(c, len(classes)) for c in q_classes[y_q]], dtype=np.int64)
        return FileProtocol(name, description + "; relevant = same class", database, database, query_rows,
                            "class", None, y_db, y_db, y_q)
    neighbors = None
    if gt is not None:
        neighbors = read_neighbors(gt, nq)
        if neighbors.max() >= n_db:
            raise InputError(f"the ground truth names row {int(neighbors.max())}, the data has {n_db} rows")
        k = neighbors.shape[1]
    else:
        k = min(DEFAULT_NEIGHBORS, n_db)
    return FileProtocol(name, description + f"; relevant = the {k} exact nearest neighbours", database, database,
                        query_rows, "knn", k, neighbors=neighbors)


def _hdf5_has(path, dataset: str) -> bool:
    import h5py

    with h5py.File(path, "r") as f:
        return dataset in f
