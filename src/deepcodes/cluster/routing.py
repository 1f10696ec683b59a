"""Which shard holds an id, and how per-shard top-k lists merge into the one-index answer."""
from __future__ import annotations

import numpy as np

_M1, _M2, _GOLDEN = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def shard_of(ids, n_shards: int) -> np.ndarray:
    """Shard (n,) int64 of each id: splitmix64 of the id, modulo ``n_shards``.

    A mixing hash rather than ``id % n`` so that ids with a common stride (0, 10, 20, ...) still
    spread evenly; fixed forever, because the shards on disk were filled by it.
    """
    with np.errstate(over="ignore"):
        z = np.asarray(ids, dtype=np.int64).astype(np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        z = z ^ (z >> np.uint64(31))
    return (z % np.uint64(n_shards)).astype(np.int64)


def _padding(dtype: np.dtype):
    return np.inf if np.issubdtype(dtype, np.floating) else np.iinfo(dtype).max


def merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best of per-shard results ``[(distances (nq, k_i), ids (nq, k_i)), ...]`` by (distance, id).

    Each shard's list is its own top-k_i in (distance, id) order, so the first k of the union in
    that order are exactly what one index holding every item returns. Missing results (id -1)
    sort after every real one; where fewer than k exist, they stay (distance +inf, id -1).
    """
    dtype = np.result_type(*[d.dtype for d, _ in parts])
    nq = parts[0][0].shape[0]
    dist = np.concatenate([d.astype(dtype, copy=False) for d, _ in parts], axis=1)
    ids = np.concatenate([i for _, i in parts], axis=1)
    missing = ids < 0
    dist = np.where(missing, _padding(dtype), dist)
    id_key = np.where(missing, np.iinfo(np.int64).max, ids)
    if dist.shape[1] < k:
        pad = k - dist.shape[1]
        dist = np.concatenate([dist, np.full((nq, pad), _padding(dtype), dtype)], axis=1)
        id_key = np.concatenate([id_key, np.full((nq, pad), np.iinfo(np.int64).max)], axis=1)
    order = np.lexsort((id_key, dist), axis=-1)[:, :k]
    dist = np.take_along_axis(dist, order, axis=1)
    out_ids = np.take_along_axis(id_key, order, axis=1)
    absent = out_ids == np.iinfo(np.int64).max
    out_ids[absent] = -1
    if np.issubdtype(dtype, np.floating):
        dist[absent] = np.inf
    return dist, out_ids
