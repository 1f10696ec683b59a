"""Retrieval metrics on ranked relevance.

Shapes: ``rel`` is a bool matrix (nq, r) whose entry [i, j] says whether the j-th ranked item of
query i is relevant (rank 1 is column 0); ``n_relevant`` (nq,) counts each query's relevant items in
the whole database; ``dist`` (nq, r) holds the distances of the ranked items; ``ids`` (nq, r) their
database ids. Cutoffs (``k``, ``R``) are 1-based ranks: "the top k" is columns 0..k-1.

Every function is vectorised over queries and items and raises
:class:`~deepcodes.errors.InputError` on inconsistent shapes or out-of-range cutoffs.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..validation import check_int

__all__ = [
    "average_precision", "precision_at_k", "recall_at", "one_recall_at", "r_recall_at",
    "precision_within_radius", "pr_curve_by_rank", "pr_curve_by_radius",
]


# ----------------------------------------------------------------------------- input checks

def _check_rel(rel) -> np.ndarray:
    arr = np.asarray(rel)
    if arr.ndim != 2:
        raise InputError(f"rel must be a 2-D (n_queries, n_ranked) array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"rel is empty (shape {arr.shape})")
    if arr.dtype != np.bool_:
        if not np.issubdtype(arr.dtype, np.number) or not np.isin(arr, (0, 1)).all():
            raise InputError(f"rel must be boolean (or 0/1), got dtype {arr.dtype}")
        arr = arr.astype(np.bool_)
    return arr


def _check_n_relevant(n_relevant, rel: np.ndarray) -> np.ndarray:
    arr = np.asarray(n_relevant)
    nq = rel.shape[0]
    if arr.shape != (nq,):
        raise InputError(f"n_relevant must have shape ({nq},) to match rel, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not (np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and (arr == np.round(arr)).all()):
            raise InputError(f"n_relevant must hold integer counts, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    # A row with more relevant items ranked than exist means rel and n_relevant disagree.
    if (arr < rel.sum(axis=1)).any():
        raise InputError("n_relevant is smaller than the number of relevant items ranked in rel")
    return arr


def _check_dist(dist, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(dist)
    if arr.shape != shape:
        raise InputError(f"dist must have shape {shape} to match rel, got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"dist must be real-valued, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError("dist contains NaN or inf")
    if (arr < 0).any():
        raise InputError("dist contains negative distances")
    return arr


def _check_cutoffs(cutoffs, high: int | None, name: str) -> np.ndarray:
    """int64 ranks from an int or a sequence of ints, each in [1, high]."""
    values = list(np.asarray(cutoffs, dtype=object).reshape(-1))
    if not values:
        raise InputError(f"{name} is empty")
    return np.array([check_int(v, name, low=1, high=high) for v in values], dtype=np.int64)


def _check_ids(ids, name: str = "ids") -> np.ndarray:
    arr = np.asarray(ids)
    if arr.ndim != 2 or 0 in arr.shape:
        raise InputError(f"{name} must be a non-empty 2-D (n_queries, n) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------- building blocks

def _hits_at(rel: np.ndarray, cutoffs: np.ndarray) -> np.ndarray:
    """Number of relevant items in the top k for each k of ``cutoffs``: int64 (nq, len(cutoffs))."""
    uniq = np.unique(cutoffs)
    # Segment sums between consecutive cutoffs, then a running total: O(nq * r) time, O(nq * len) memory.
    starts = np.concatenate(([0], uniq[:-1]))
    seg = np.add.reduceat(rel[:, :uniq[-1]], starts, axis=1, dtype=np.int64)
    return np.ascontiguousarray(np.cumsum(seg, axis=1)[:, np.searchsorted(uniq, cutoffs)])


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den == 0."""
    out = np.zeros(np.broadcast(num, den).shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _one_recall_rows(ids: np.ndarray, true_nn: np.ndarray, Rs: np.ndarray) -> np.ndarray:
    """bool (nq, len(Rs)): is ``true_nn[i]`` among the top R of ``ids[i]``."""
    match = ids == true_nn[:, None]
    found = match.any(axis=1)
    pos = np.argmax(match, axis=1)
    return found[:, None] & (pos[:, None] < Rs[None, :])


def _r_recall_rows(ids: np.ndarray, true_knn: np.ndarray, Rs: np.ndarray) -> np.ndarray:
    """float64 (nq, len(Rs)): |top-R of ids ∩ top-R of true_knn| / R per query."""
    nq = ids.shape[0]
    # Offset every row into its own id range so one global isin does all rows at once; ids < 0
    # (padding) are shifted to 0 and can never match, as ground-truth ids are >= 0.
    span = int(max(ids.max(), true_knn.max())) + 2
    offset = np.arange(nq, dtype=np.int64)[:, None] * span
    out = np.empty((nq, len(Rs)), dtype=np.float64)
    for j, R in enumerate(Rs):
        got = np.maximum(ids[:, :R], -1) + 1 + offset
        want = true_knn[:, :R] + 1 + offset
        out[:, j] = np.isin(got, want).sum(axis=1) / R
    return out


def _radius_counts(rel: np.ndarray, dist: np.ndarray, max_radius: int) -> tuple[np.ndarray, np.ndarray]:
    """(hits, retrieved), int64 (nq, max_radius + 1): relevant / all items with dist <= t, t = 0..max_radius."""
    nq = rel.shape[0]
    width = max_radius + 2  # the last bin collects everything beyond max_radius
    # ceil(d) <= t  <=>  d <= t for integer t, so non-integer distances are binned correctly too.
    bins = np.minimum(np.ceil(dist), max_radius + 1).astype(np.int64)
    flat = (bins + np.arange(nq, dtype=np.int64)[:, None] * width).ravel()
    retrieved = np.bincount(flat, minlength=nq * width).reshape(nq, width)
    hits = np.bincount(flat[rel.ravel()], minlength=nq * width).reshape(nq, width)
    return np.cumsum(hits[:, :-1], axis=1), np.cumsum(retrieved[:, :-1], axis=1)


def _radius_curve(hits: np.ndarray, retrieved: np.ndarray, n_relevant: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision (over queries that retrieve something; NaN if none do) and recall per radius."""
    has = retrieved > 0
    n_has = has.sum(axis=0)
    prec_sum = _safe_ratio(hits, retrieved).sum(axis=0)
    precision = np.full(hits.shape[1], np.nan)
    np.divide(prec_sum, n_has, out=precision, where=n_has > 0)
    recall = _safe_ratio(hits, n_relevant[:, None]).mean(axis=0)
    return precision, recall


# ----------------------------------------------------------------------------- public metrics

def average_precision(rel, n_relevant, k: int | None = None) -> np.ndarray:
    """Average precision of each query, float64 (nq,).

    With ``k=None`` (mAP over the ranking)::

        AP = (1 / n_relevant) * sum over relevant ranks i of precision@i

    where precision@i = (#relevant in the top i) / i. When ``rel`` covers the whole database this
    is the usual mAP; when it covers only a prefix, relevant items beyond it count as never found.

    With ``k`` (mAP@k, the convention of the DH / DPSH evaluation code)::

        AP@k = (1 / R_k) * sum over relevant ranks i <= k of precision@i,   R_k = #relevant in the top k

    so the denominator is the number of relevant items *retrieved* in the top k, not
    ``n_relevant`` nor ``min(n_relevant, k)``; ``n_relevant`` is then only checked.

    A query with no relevant item (``n_relevant == 0``, or none in the top k) scores 0.
    """
    rel = _check_rel(rel)
    n_relevant = _check_n_relevant(n_relevant, rel)
    if k is not None:
        k = check_int(k, "k", low=1, high=rel.shape[1])
        rel = rel[:, :k]
    rows, cols = np.nonzero(rel)  # row-major: each row's hits come in rank order
    nq = rel.shape[0]
    per_row = np.bincount(rows, minlength=nq)
    first = np.cumsum(per_row) - per_row
    nth_hit = np.arange(len(rows)) - first[rows] + 1  # #relevant in the top (cols + 1)
    sums = np.bincount(rows, weights=nth_hit / (cols + 1), minlength=nq)
    denominator = per_row if k is not None else n_relevant
    return _safe_ratio(sums, denominator)


def precision_at_k(rel, ks) -> np.ndarray:
    """precision@k = (#relevant in the top k) / k, float64 (nq, len(ks)); each k in [1, r]."""
    rel = _check_rel(rel)
    ks = _check_cutoffs(ks, rel.shape[1], "ks")
    return _hits_at(rel, ks) / ks[None, :]


def recall_at(rel, n_relevant, Rs) -> np.ndarray:
    """recall@R = (#relevant in the top R) / n_relevant, float64 (nq, len(Rs)); 0 where n_relevant == 0."""
    rel = _check_rel(rel)
    n_relevant = _check_n_relevant(n_relevant, rel)
    Rs = _check_cutoffs(Rs, rel.shape[1], "Rs")
    return _safe_ratio(_hits_at(rel, Rs), n_relevant[:, None])


def one_recall_at(ids, true_nn, Rs) -> np.ndarray:
    """1-recall@R: fraction of queries whose true nearest neighbour ``true_nn`` (nq,) is in the top R.

    ``ids`` (nq, r) are the ranked database ids; returns float64 (len(Rs),), each R in [1, r].
    """
    ids = _check_ids(ids)
    true_nn = np.asarray(true_nn)
    if true_nn.shape != (ids.shape[0],) or not np.issubdtype(true_nn.dtype, np.integer):
        raise InputError(f"true_nn must be integer ids of shape ({ids.shape[0]},), got {true_nn.dtype} {true_nn.shape}")
    if (true_nn < 0).any():
        raise InputError("true_nn contains negative ids")
    Rs = _check_cutoffs(Rs, ids.shape[1], "Rs")
    return _one_recall_rows(ids, true_nn.astype(np.int64), Rs).mean(axis=0)


def r_recall_at(ids, true_knn, Rs) -> np.ndarray:
    """R-recall@R: mean over queries of |top-R of ids ∩ top-R of true_knn| / R, float64 (len(Rs),).

    ``ids`` (nq, r) are the ranked database ids (distinct per row), ``true_knn`` (nq, K) the exact
    neighbours in order; each R in [1, min(r, K)].
    """
    ids = _check_ids(ids)
    true_knn = _check_ids(true_knn, "true_knn")
    if true_knn.shape[0] != ids.shape[0]:
        raise InputError(f"true_knn has {true_knn.shape[0]} rows for {ids.shape[0]} queries")
    if (true_knn < 0).any():
        raise InputError("true_knn contains negative ids")
    Rs = _check_cutoffs(Rs, min(ids.shape[1], true_knn.shape[1]), "Rs")
    return _r_recall_rows(ids, true_knn, Rs).mean(axis=0)


def precision_within_radius(rel, dist, radius: int = 2) -> tuple[np.ndarray, float]:
    """Precision among the items with distance <= ``radius``: ``(precision (nq,), success)``.

    precision_i = (#relevant with dist <= radius) / (#items with dist <= radius), and a query with
    no item inside the radius scores 0 (the convention of Gong & Lazebnik's ITQ and of the BDNN
    paper). ``success`` is the fraction of queries with at least one item inside the radius.
    ``rel`` must cover every item within the radius (e.g. the full ranking); ``dist`` (nq, r) need
    not be sorted.
    """
    rel = _check_rel(rel)
    dist = _check_dist(dist, rel.shape)
    radius = check_int(radius, "radius", low=0)
    hits, retrieved = _radius_counts(rel, dist, radius)
    hits, retrieved = hits[:, radius], retrieved[:, radius]
    return _safe_ratio(hits, retrieved), float((retrieved > 0).mean())


def pr_curve_by_rank(rel, n_relevant, cutoffs) -> tuple[np.ndarray, np.ndarray]:
    """Precision-recall curve over rank cutoffs: (mean precision@k, mean recall@k), each (len(cutoffs),).

    Means are over all queries, with :func:`precision_at_k` and :func:`recall_at`.
    """
    return precision_at_k(rel, cutoffs).mean(axis=0), recall_at(rel, n_relevant, cutoffs).mean(axis=0)


def pr_curve_by_radius(rel, dist, n_relevant, max_radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Precision-recall curve over Hamming radii t = 0..max_radius: (precision, recall), each (max_radius + 1,).

    At radius t a query retrieves the items with dist <= t. Precision at t is the mean, over the
    queries that retrieve at least one item, of (#relevant retrieved) / (#retrieved); queries that
    retrieve nothing are left out of that mean (NaN if no query retrieves anything). Recall at t
    is the mean over all queries of (#relevant retrieved) / n_relevant (0 where n_relevant == 0).
    ``rel`` must cover every item within ``max_radius``.
    """
    rel = _check_rel(rel)
    dist = _check_dist(dist, rel.shape)
    n_relevant = _check_n_relevant(n_relevant, rel)
    max_radius = check_int(max_radius, "max_radius", low=0)
    hits, retrieved = _radius_counts(rel, dist, max_radius)
    return _radius_curve(hits, retrieved, n_relevant)
