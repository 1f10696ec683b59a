"""Exact Euclidean ground truth (:func:`deepcodes.knn.exact_knn`) with an on-disk cache."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..knn.exact import exact_knn
from ..persist import atomic_save_npy
from ..validation import check_k, check_matrix

__all__ = ["exact_knn", "cached_knn", "cache_dir"]

log = logging.getLogger(__name__)

_KEY_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def cache_dir() -> Path:
    """The cache folder: ``$DEEPCODES_CACHE`` if set, else ``~/.cache/deepcodes``."""
    env = os.environ.get("DEEPCODES_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "deepcodes"


def _fingerprint(database: np.ndarray, queries: np.ndarray, k: int) -> str:
    """A short hash of the shapes, dtypes, k and up to 257 evenly spaced rows of each array."""
    h = hashlib.sha256(f"{database.shape}{database.dtype}{queries.shape}{queries.dtype}k={k}".encode())
    for arr in (database, queries):
        rows = np.unique(np.linspace(0, arr.shape[0] - 1, num=min(arr.shape[0], 257)).astype(np.int64))
        h.update(np.ascontiguousarray(arr[rows]).tobytes())
    return h.hexdigest()[:16]


def cached_knn(database, queries, k: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`exact_knn`, cached on disk under ``cache_dir()/groundtruth`` by ``key`` and a data fingerprint.

    ``key`` (letters, digits, ``._-``) names the data, e.g. a protocol; the file names also carry a
    hash of the shapes, k and a sample of the rows, so changed data is not served a stale result.
    Returns ``(distances float32 (nq, k), ids int64 (nq, k))``; an unreadable or inconsistent cache
    entry is recomputed and overwritten (atomically).
    """
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise InputError(f"cache key must be a non-empty string of letters, digits, '.', '_' or '-', got {key!r}")
    database = check_matrix(database, "database", dtype=None)
    queries = check_matrix(queries, "queries", dim=database.shape[1], dtype=None)
    k = check_k(k, database.shape[0])
    stem = cache_dir() / "groundtruth" / f"{key}-{_fingerprint(database, queries, k)}-k{k}"
    dist_path, ids_path = stem.with_name(stem.name + ".dist.npy"), stem.with_name(stem.name + ".ids.npy")
    shape = (queries.shape[0], k)
    try:
        dist = np.load(dist_path, allow_pickle=False)
        ids = np.load(ids_path, allow_pickle=False)
        if (dist.shape == shape and ids.shape == shape and dist.dtype == np.float32 and ids.dtype == np.int64
                and ids.min() >= 0 and ids.max() < database.shape[0]):
            log.debug("ground truth from cache %s", stem)
            return dist, ids
        log.warning("ignoring inconsistent ground-truth cache %s", stem)
    except FileNotFoundError:
        pass
    except (ValueError, OSError, EOFError) as exc:
        log.warning("ignoring unreadable ground-truth cache %s (%s)", stem, exc)
    dist, ids = exact_knn(database, queries, k)
    atomic_save_npy(dist_path, dist)
    atomic_save_npy(ids_path, ids)
    return dist, ids
