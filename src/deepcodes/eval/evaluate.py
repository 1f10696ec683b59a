"""Evaluate a search function over the full ranking of the database (ALGORITHMS.md section 8)."""
from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
from tqdm import tqdm

from ..errors import InputError
from ..validation import check_int
from .metrics import (_check_cutoffs, _check_dist, _one_recall_rows, _r_recall_rows, _radius_counts,
                      _radius_curve, _safe_ratio, average_precision, precision_at_k, recall_at)

__all__ = ["evaluate_search", "TIE_RULE"]

log = logging.getLogger(__name__)

TIE_RULE = "stable sort by (distance, database index)"
_N_CURVE_POINTS = 50


def evaluate_search(search: Callable, queries, relevance, n_database: int, *,
                    ks=(1, 10, 100, 1000), Rs=(1, 10, 100, 1000), map_at=(1000,),
                    true_neighbors=None, hamming_bits: int | None = None,
                    chunk_size: int = 100, progress: bool = False) -> dict:
    """Rank the whole database for every query and return the metrics as a JSON-able dict.

    ``search(Q_chunk, k) -> (dist (m, k), ids (m, k) int)`` is called with ``k = n_database`` on
    chunks of at most ``chunk_size`` queries (``queries[start:stop]``), so memory is
    O(chunk_size * n_database). Rows not already ordered by (distance, database id) are re-sorted
    that way, so the reported tie rule holds whatever the search does. ``relevance`` is a
    :mod:`deepcodes.eval.relevance` object for these queries and this database.

    Cutoffs in ``ks``, ``Rs`` and ``map_at`` are clipped to ``n_database`` (and de-duplicated);
    int keys become strings. The dict holds:

    - ``map``: mean AP over the full ranking; ``map_at_k``: {k: mAP@k} (DH/DPSH denominator, see
      :func:`~deepcodes.eval.metrics.average_precision`);
    - ``precision_at_k`` {k: v}, ``recall_at_R`` {R: v}: means over queries;
    - with ``true_neighbors`` (n_queries, K) exact neighbour ids: ``one_recall_at_R`` {R: v} and
      ``R_recall_at_R`` {R: v} for the R <= K;
    - with ``hamming_bits`` (dist are Hamming distances): ``precision_radius2`` (0 for queries with
      nothing within radius 2), ``radius2_success`` and ``pr_curve`` {"by": "radius", "radius",
      "precision", "recall"} at radii 0..hamming_bits (precision null where no query retrieves);
      otherwise ``pr_curve`` {"by": "rank", "cutoff", "precision", "recall"} at ~50 log-spaced ranks;
    - ``n_queries``, ``n_database``, ``tie_rule``.
    """
    if not callable(search):
        raise InputError(f"search must be callable, got {type(search).__name__}")
    n_database = check_int(n_database, "n_database", low=1)
    try:
        n_queries = len(queries)
    except TypeError:
        raise InputError(f"queries must be an array-like with a length, got {type(queries).__name__}") from None
    if n_queries == 0:
        raise InputError("queries is empty")
    if getattr(relevance, "n_queries", None) != n_queries or getattr(relevance, "n_database", None) != n_database:
        raise InputError(
            f"relevance is for {getattr(relevance, 'n_queries', '?')} queries x "
            f"{getattr(relevance, 'n_database', '?')} database items, but got {n_queries} x {n_database}")
    ks = _cutoffs(ks, n_database, "ks")
    Rs = _cutoffs(Rs, n_database, "Rs")
    map_at = _cutoffs(map_at, n_database, "map_at")
    chunk_size = check_int(chunk_size, "chunk_size", low=1)
    if hamming_bits is not None:
        hamming_bits = check_int(hamming_bits, "hamming_bits", low=1)
    if true_neighbors is not None:
        true_neighbors = _check_true_neighbors(true_neighbors, n_queries, n_database)
        R_knn = Rs[Rs <= true_neighbors.shape[1]]
    curve_at = np.unique(np.round(np.geomspace(1, n_database, _N_CURVE_POINTS)).astype(np.int64))
    max_radius = max(hamming_bits or 0, 2)

    parts: dict[str, list[np.ndarray]] = {}

    def keep(name: str, value: np.ndarray) -> None:
        parts.setdefault(name, []).append(value)

    with tqdm(total=n_queries, disable=not progress, desc="evaluate", unit="query") as bar:
        for start in range(0, n_queries, chunk_size):
            stop = min(start + chunk_size, n_queries)
            dist, ids = _ranking(search(queries[start:stop], n_database), stop - start, n_database)
            rows = slice(start, stop)
            rel = relevance.mask(rows, ids)
            n_rel = relevance.counts(rows)
            found = rel.sum(axis=1)
            if (found != n_rel).any():
                i = int(np.flatnonzero(found != n_rel)[0])
                raise InputError(
                    f"query {start + i}: the ranking holds {found[i]} relevant items but relevance counts "
                    f"{n_rel[i]}; the search must return every database item exactly once")
            keep("n_rel", n_rel)
            keep("ap", average_precision(rel, n_rel))
            keep("ap_at", np.stack([average_precision(rel, n_rel, k) for k in map_at], axis=1))
            keep("precision", precision_at_k(rel, ks))
            keep("recall", recall_at(rel, n_rel, Rs))
            if true_neighbors is not None:
                keep("one_recall", _one_recall_rows(ids, true_neighbors[rows, 0], Rs))
                if len(R_knn):
                    keep("r_recall", _r_recall_rows(ids, true_neighbors[rows], R_knn))
            if hamming_bits is None:
                keep("curve_p", precision_at_k(rel, curve_at))
                keep("curve_r", recall_at(rel, n_rel, curve_at))
            else:
                hits, retrieved = _radius_counts(rel, _check_dist(dist, rel.shape), max_radius)
                keep("hits", hits)
                keep("retrieved", retrieved)
            bar.update(stop - start)

    # One memory layout whatever the chunking, so the means below add in the same order.
    got = {name: np.ascontiguousarray(np.concatenate(chunks)) for name, chunks in parts.items()}
    result: dict = {
        "n_queries": n_queries,
        "n_database": n_database,
        "tie_rule": TIE_RULE,
        "map": float(got["ap"].mean()),
        "map_at_k": _by_cutoff(map_at, got["ap_at"].mean(axis=0)),
        "precision_at_k": _by_cutoff(ks, got["precision"].mean(axis=0)),
        "recall_at_R": _by_cutoff(Rs, got["recall"].mean(axis=0)),
    }
    if true_neighbors is not None:
        result["one_recall_at_R"] = _by_cutoff(Rs, got["one_recall"].mean(axis=0))
        result["R_recall_at_R"] = _by_cutoff(R_knn, got["r_recall"].mean(axis=0)) if len(R_knn) else {}
    if hamming_bits is None:
        result["pr_curve"] = {"by": "rank", "cutoff": curve_at.tolist(),
                              "precision": _floats(got["curve_p"].mean(axis=0)),
                              "recall": _floats(got["curve_r"].mean(axis=0))}
    else:
        hits, retrieved = got["hits"], got["retrieved"]
        result["precision_radius2"] = float(_safe_ratio(hits[:, 2], retrieved[:, 2]).mean())
        result["radius2_success"] = float((retrieved[:, 2] > 0).mean())
        upto = hamming_bits + 1
        precision, recall = _radius_curve(hits[:, :upto], retrieved[:, :upto], got["n_rel"])
        result["pr_curve"] = {"by": "radius", "radius": list(range(upto)),
                              "precision": _floats(precision), "recall": _floats(recall)}
    log.info("evaluated %d queries over %d items: mAP %.4f", n_queries, n_database, result["map"])
    return result


def _ranking(out, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Check one chunk's search output and return it ordered by (distance, id)."""
    try:
        dist, ids = out
    except (TypeError, ValueError):
        raise InputError("search must return a pair (distances, ids)") from None
    dist, ids = np.asarray(dist), np.asarray(ids)
    if dist.shape != (m, n) or ids.shape != (m, n):
        raise InputError(f"search returned shapes {dist.shape} and {ids.shape}, expected ({m}, {n}) "
                         "(the full ranking of the database)")
    if not np.issubdtype(ids.dtype, np.integer):
        raise InputError(f"search returned ids of dtype {ids.dtype}, expected integers")
    if ids.min() < 0 or ids.max() >= n:
        raise InputError(f"search returned ids outside [0, {n})")
    if not np.issubdtype(dist.dtype, np.number) or np.issubdtype(dist.dtype, np.complexfloating):
        raise InputError(f"search returned distances of dtype {dist.dtype}")
    if np.issubdtype(dist.dtype, np.floating) and not np.isfinite(dist).all():
        raise InputError("search returned NaN or inf distances")
    ids = ids.astype(np.int64, copy=False)
    step = np.diff(dist, axis=1)
    unordered = ((step < 0) | ((step == 0) & (np.diff(ids, axis=1) <= 0))).any(axis=1)
    if unordered.any():
        log.debug("re-sorting %d of %d rankings by (distance, id)", int(unordered.sum()), m)
        dist, ids = dist.copy(), ids.copy()
        order = np.lexsort((ids[unordered], dist[unordered]), axis=-1)
        dist[unordered] = np.take_along_axis(dist[unordered], order, axis=1)
        ids[unordered] = np.take_along_axis(ids[unordered], order, axis=1)
    return dist, ids


def _cutoffs(values, n_database: int, name: str) -> np.ndarray:
    """Sorted unique ranks from ``values`` (each >= 1), clipped to ``n_database``."""
    return np.unique(np.minimum(_check_cutoffs(values, None, name), n_database))


def _check_true_neighbors(true_neighbors, n_queries: int, n_database: int) -> np.ndarray:
    arr = np.asarray(true_neighbors)
    if arr.ndim != 2 or arr.shape[0] != n_queries or arr.shape[1] == 0:
        raise InputError(f"true_neighbors must have shape ({n_queries}, K), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"true_neighbors must hold integer ids, got dtype {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_database:
        raise InputError(f"true_neighbors must lie in [0, {n_database})")
    return arr.astype(np.int64, copy=False)


def _by_cutoff(cutoffs: np.ndarray, values: np.ndarray) -> dict[str, float]:
    return {str(int(c)): float(v) for c, v in zip(cutoffs, values)}


def _floats(values: np.ndarray) -> list[float | None]:
    """Floats for JSON, with NaN (undefined) as None."""
    return [None if math.isnan(v) else float(v) for v in values]
