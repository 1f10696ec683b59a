"""k-means and nearest-centroid assignment, both by faiss (we never write our own k-means)."""
from __future__ import annotations

import faiss
import numpy as np

from ..errors import InputError


def kmeans(X: np.ndarray, k: int, *, n_iter: int = 25, seed: int = 0,
           init: np.ndarray | None = None, max_points_per_centroid: int = 256) -> np.ndarray:
    """Centroids (k, d) float32 of ``X`` (n, d) by faiss k-means (optionally warm-started from ``init``)."""
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.shape[0] < k:
        raise InputError(f"k-means needs at least as many training points as centroids: {X.shape[0]} < {k}")
    km = faiss.Kmeans(X.shape[1], k, niter=n_iter, seed=seed, verbose=False,
                      max_points_per_centroid=max_points_per_centroid, spherical=False)
    km.cp.min_points_per_centroid = 1
    if init is not None:
        km.train(X, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
    else:
        km.train(X)
    return np.ascontiguousarray(km.centroids, dtype=np.float32)


def assign(X: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row: ``(labels (n,) int64, squared distances (n,) float32)``."""
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    dist, labels = index.search(np.ascontiguousarray(X, dtype=np.float32), 1)
    if labels.size and labels.min() < 0:
        # faiss labels -1 a row whose every distance overflows float32: never let that be a list id
        raise InputError(f"{int((labels < 0).sum())} row(s) have no nearest centroid: their distances overflow "
                         "float32 (rescale the data)")
    return labels[:, 0], dist[:, 0]
