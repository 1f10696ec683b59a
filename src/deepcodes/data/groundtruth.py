"""Exact Euclidean ground truth (:func:`deepcodes.knn.exact_knn`) with an on-disk cache."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError
from ..knn.exact import exact_knn
from ..persist import FORMAT_NAME, FORMAT_VERSION, read_arrays, write_arrays
from ..validation import check_k, check_matrix

__all__ = ["exact_knn", "cached_knn", "cache_dir", "data_digest"]

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def cache_dir() -> Path:
    """The cache folder: ``$DEEPCODES_CACHE`` if set, else ``~/.cache/deepcodes``."""
    env = os.environ.get("DEEPCODES_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepcodes"


def data_digest(*arrays: np.ndarray, extra: str = "") -> str:
    """SHA-256 (hex) of the shapes, dtypes and full contents of ``arrays`` (read in blocks of rows,
    never copied whole), and of ``extra``."""
    h = hashlib.sha256(extra.encode())
    for arr in arrays:
        h.update(f"|{arr.shape}{arr.dtype.str}|".encode())
        rows = max(1, (16 << 20) // max(1, arr[:1].nbytes))
        for s in range(0, arr.shape[0], rows):
            h.update(memoryview(np.ascontiguousarray(arr[s:s + rows])).cast("B"))
    return h.hexdigest()


def _sq_distances(database: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Exact squared L2 distances (n,) float64 from ``query`` to every row, in blocks of rows."""
    q = query.astype(np.float64)
    out = np.empty(database.shape[0], dtype=np.float64)
    for s in range(0, database.shape[0], 65536):
        diff = database[s:s + 65536].astype(np.float64) - q
        out[s:s + 65536] = np.einsum("nd,nd->n", diff, diff)
    return out


def _spot_check(dist: np.ndarray, ids: np.ndarray, database: np.ndarray, queries: np.ndarray) -> str | None:
    """Why the cached result ``(dist, ids)`` cannot be the k-NN of ``queries``, or None if it passes:
    shapes, dtypes, id range, sorted unique rows, and for four queries spread over the set the exact
    distances to the cached ids and the exact k-th distance over the whole database."""
    nq, k = queries.shape[0], dist.shape[1] if dist.ndim == 2 else -1
    if dist.shape != (nq, k) or ids.shape != (nq, k) or dist.dtype != np.float32 or ids.dtype != np.int64:
        return "wrong shapes or dtypes"
    if ids.size and (ids.min() < 0 or ids.max() >= database.shape[0]):
        return "ids out of range"
    if not np.isfinite(dist).all() or (np.diff(dist, axis=1) < 0).any():
        return "distances are not finite and sorted"
    for q in np.unique(np.linspace(0, nq - 1, num=min(nq, 4)).astype(np.int64)):
        if len(np.unique(ids[q])) != k:
            return f"repeated ids for query {q}"
        exact = _sq_distances(database, queries[q])
        tol = 1e-5 * (1.0 + float(np.abs(exact).max()))
        kth = np.partition(exact, k - 1)[k - 1]
        if np.abs(exact[ids[q]] - dist[q]).max() > tol or abs(float(dist[q, -1]) - kth) > tol:
            return f"query {q}'s cached neighbours are not its exact nearest neighbours"
    return None


def cached_knn(database, queries, k: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_knn`, cached on disk under ``cache_dir()/groundtruth``.

    ``key`` (letters, digits, ``._-``) names the data, e.g. a protocol. The entry is one checksummed
    deepcodes file named by ``key``, ``k`` and the SHA-256 of the *full* database and queries, which
    it also records: changed data is never served a stale result. An entry is used only if its
    checksums verify, it records the same data hash and k, and it passes a spot check (four
    queries' neighbours recomputed exactly); otherwise it is recomputed and rewritten atomically.
    Returns ``(distances float32 (nq, k), ids int64 (nq, k))``.
    """
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InputError(f"cache key must be a non-empty string of letters, digits, '.', '_' or '-', got {key!r}")
    database = check_matrix(database, "database", dtype=None)
    queries = check_matrix(queries, "queries", dim=database.shape[1], dtype=None)
    k = check_k(k, database.shape[0])
    digest = data_digest(database, queries, extra=f"k={k}")
    path = cache_dir() / "groundtruth" / f"{key}-{digest[:16]}-k{k}.gt.safetensors"
    if path.exists():
        try:
            arrays, document = read_arrays(path)
            dist, ids = arrays.get("distances"), arrays.get("ids")
            problem = ("it was computed from other data" if document.get("data_sha256") != digest
                       else "it is incomplete" if dist is None or ids is None
                       else _spot_check(dist, ids, database, queries))
            if problem is None:
                log.debug("ground truth from cache %s", path)
                return dist, ids
            log.warning("recomputing the ground-truth cache %s: %s", path, problem)
        except FormatError as exc:
            log.warning("recomputing the unreadable ground-truth cache %s (%s)", path, exc)
    dist, ids = exact_knn(database, queries, k)
    write_arrays(path, {"distances": dist, "ids": ids},
                 {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "kind": "groundtruth",
                  "key": key, "k": k, "data_sha256": digest})
    return dist, ids
