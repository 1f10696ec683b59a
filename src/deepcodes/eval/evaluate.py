"""Evaluate a search function over the full ranking of the database (ALGORITHMS.md section 8)."""
from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from ..errors import InputError
from ..validation import check_int
from .metrics import _check_cutoffs, _check_dist, _radius_curve, _safe_ratio
from .ranked import one_recall_rows, r_recall_rows, radius_counts, rank_stats, unordered_rows

__all__ = ["evaluate_search", "evaluate_search_many", "TIE_RULE"]

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

    The metrics are those of :mod:`deepcodes.eval.metrics`, computed one query row at a time by
    the kernels of :mod:`deepcodes.eval.ranked` (bit-identical results).
    """
    return evaluate_search_many(search, queries, [relevance], n_database, ks=ks, Rs=Rs, map_at=map_at,
                                true_neighbors=[true_neighbors], hamming_bits=hamming_bits,
                                chunk_size=chunk_size, progress=progress)[0]


def evaluate_search_many(search: Callable, queries, relevances: Sequence, n_database: int, *,
                         ks=(1, 10, 100, 1000), Rs=(1, 10, 100, 1000), map_at=(1000,),
                         true_neighbors: Sequence | None = None, hamming_bits: int | None = None,
                         chunk_size: int = 100, progress: bool = False) -> list[dict]:
    """:func:`evaluate_search` for several relevance definitions over the same queries and
    database (e.g. MNIST's class and k-NN protocols): each chunk is searched once and scored
    against every relevance. ``true_neighbors``, if given, has one entry (array or None) per
    relevance. Returns one dict per relevance, each exactly what :func:`evaluate_search` gives."""
    if not callable(search):
        raise InputError(f"search must be callable, got {type(search).__name__}")
    n_database = check_int(n_database, "n_database", low=1)
    try:
        n_queries = len(queries)
    except TypeError:
        raise InputError(f"queries must be an array-like with a length, got {type(queries).__name__}") from None
    if n_queries == 0:
        raise InputError("queries is empty")
    relevances = list(relevances)
    if not relevances:
        raise InputError("relevances is empty")
    true_neighbors = [None] * len(relevances) if true_neighbors is None else list(true_neighbors)
    if len(true_neighbors) != len(relevances):
        raise InputError(f"true_neighbors has {len(true_neighbors)} entries for {len(relevances)} relevances")
    for relevance in relevances:
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
    scores = [_Scores(relevance, None if nn is None else _check_true_neighbors(nn, n_queries, n_database),
                      n_database, ks, Rs, map_at, hamming_bits)
              for relevance, nn in zip(relevances, true_neighbors)]
    with tqdm(total=n_queries, disable=not progress, desc="evaluate", unit="query") as bar:
        for start in range(0, n_queries, chunk_size):
            stop = min(start + chunk_size, n_queries)
            dist, ids = _ranking(search(queries[start:stop], n_database), stop - start, n_database)
            if hamming_bits is not None:
                dist = _check_dist(dist, ids.shape)
            for score in scores:
                score.add(slice(start, stop), dist, ids)
            bar.update(stop - start)
    results = [score.result() for score in scores]
    for result in results:
        log.info("evaluated %d queries over %d items: mAP %.4f", n_queries, n_database, result["map"])
    return results


class _Scores:
    """The per-query metrics of one relevance, gathered chunk by chunk."""

    def __init__(self, relevance, true_neighbors, n_database, ks, Rs, map_at, hamming_bits):
        self.relevance, self.true_neighbors = relevance, true_neighbors
        self.n_database, self.ks, self.Rs, self.map_at, self.hamming_bits = n_database, ks, Rs, map_at, hamming_bits
        self.R_knn = Rs[Rs <= true_neighbors.shape[1]] if true_neighbors is not None else Rs[:0]
        self.curve_at = np.unique(np.round(np.geomspace(1, n_database, _N_CURVE_POINTS)).astype(np.int64))
        self.max_radius = max(hamming_bits or 0, 2)
        # every rank cutoff at which hits are counted, once
        self.cutoffs = np.unique(np.concatenate([ks, Rs] + ([self.curve_at] if hamming_bits is None else [])))
        self.parts: dict[str, list[np.ndarray]] = {}

    def _keep(self, name: str, value: np.ndarray) -> None:
        self.parts.setdefault(name, []).append(value)

    def add(self, rows: slice, dist: np.ndarray, ids: np.ndarray) -> None:
        rel = self.relevance.mask(rows, ids)
        n_rel = self.relevance.counts(rows)
        ap, ap_at, hits, found = rank_stats(rel, n_rel, self.cutoffs, self.map_at)
        if (found != n_rel).any():
            i = int(np.flatnonzero(found != n_rel)[0])
            raise InputError(
                f"query {rows.start + i}: the ranking holds {found[i]} relevant items but relevance counts "
                f"{n_rel[i]}; the search must return every database item exactly once")
        at = lambda cut: np.ascontiguousarray(hits[:, np.searchsorted(self.cutoffs, cut)])  # noqa: E731
        self._keep("n_rel", n_rel)
        self._keep("ap", ap)
        self._keep("ap_at", ap_at)
        self._keep("precision", at(self.ks) / self.ks[None, :])
        self._keep("recall", _safe_ratio(at(self.Rs), n_rel[:, None]))
        if self.true_neighbors is not None:
            self._keep("one_recall", one_recall_rows(ids, self.true_neighbors[rows, 0], self.Rs))
            if len(self.R_knn):
                self._keep("r_recall", r_recall_rows(ids, self.true_neighbors[rows], self.R_knn, self.n_database))
        if self.hamming_bits is None:
            self._keep("curve_p", at(self.curve_at) / self.curve_at[None, :])
            self._keep("curve_r", _safe_ratio(at(self.curve_at), n_rel[:, None]))
        else:
            hits_r, retrieved = radius_counts(rel, dist, self.max_radius)
            self._keep("hits", hits_r)
            self._keep("retrieved", retrieved)

    def result(self) -> dict:
        # One memory layout whatever the chunking, so the means below add in the same order.
        got = {name: np.ascontiguousarray(np.concatenate(chunks)) for name, chunks in self.parts.items()}
        ks, Rs, map_at = self.ks, self.Rs, self.map_at
        result: dict = {
            "n_queries": int(got["n_rel"].shape[0]),
            "n_database": self.n_database,
            "tie_rule": TIE_RULE,
            "map": float(got["ap"].mean()),
            "map_at_k": _by_cutoff(map_at, got["ap_at"].mean(axis=0)),
            "precision_at_k": _by_cutoff(ks, got["precision"].mean(axis=0)),
            "recall_at_R": _by_cutoff(Rs, got["recall"].mean(axis=0)),
        }
        if self.true_neighbors is not None:
            result["one_recall_at_R"] = _by_cutoff(Rs, got["one_recall"].mean(axis=0))
            result["R_recall_at_R"] = _by_cutoff(self.R_knn, got["r_recall"].mean(axis=0)) if len(self.R_knn) else {}
        if self.hamming_bits is None:
            result["pr_curve"] = {"by": "rank", "cutoff": self.curve_at.tolist(),
                                  "precision": _floats(got["curve_p"].mean(axis=0)),
                                  "recall": _floats(got["curve_r"].mean(axis=0))}
        else:
            hits, retrieved = got["hits"], got["retrieved"]
            result["precision_radius2"] = float(_safe_ratio(hits[:, 2], retrieved[:, 2]).mean())
            result["radius2_success"] = float((retrieved[:, 2] > 0).mean())
            upto = self.hamming_bits + 1
            precision, recall = _radius_curve(hits[:, :upto], retrieved[:, :upto], got["n_rel"])
            result["pr_curve"] = {"by": "radius", "radius": list(range(upto)),
                                  "precision": _floats(precision), "recall": _floats(recall)}
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
    if (not np.issubdtype(dist.dtype, np.number) or np.issubdtype(dist.dtype, np.complexfloating)
            or dist.dtype.itemsize > 8):
        raise InputError(f"search returned distances of dtype {dist.dtype}, expected real numbers of at most 64 bits")
    if np.issubdtype(dist.dtype, np.floating) and not np.isfinite(dist).all():
        raise InputError("search returned NaN or inf distances")
    ids = ids.astype(np.int64, copy=False)
    if dist.dtype == np.float16:
        dist = dist.astype(np.float32)  # exact; the ranking kernels take 32- and 64-bit numbers
    unordered = unordered_rows(dist, ids)
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
