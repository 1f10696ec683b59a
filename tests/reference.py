"""Slow, obviously correct references the tests compare the fast kernels with."""
import numpy as np

from deepcodes.coders import unpack_bits


def brute_hamming(db, q, n_bits, k):
    """All Hamming distances, then a stable sort (ties by id): ``(dist (nq, k), ids (nq, k))``."""
    a = unpack_bits(db, n_bits).astype(np.int32)
    b = unpack_bits(q, n_bits).astype(np.int32)
    dist = (b[:, None, :] != a[None, :, :]).sum(-1)
    ids = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(dist, ids, 1), ids


def evaluate_full_ranking(dist, ids, relevance, *, ks, Rs, map_at, curve_at=None, true_neighbors=None,
                          hamming_bits=None):
    """The metrics of ``evaluate_search`` straight from the vectorised definitions in
    ``deepcodes.eval.metrics`` over a full (distance, id)-ordered ranking ``dist``, ``ids`` (nq, n):
    the evaluation as it was computed before its one-pass kernels. Per-query arrays, unaveraged."""
    from deepcodes.eval.metrics import (_one_recall_rows, _r_recall_rows, _radius_counts, average_precision,
                                        precision_at_k, recall_at)

    rows = slice(None)
    rel, n_rel = relevance.mask(rows, ids), relevance.counts(rows)
    out = {"ap": average_precision(rel, n_rel),
           "ap_at": np.stack([average_precision(rel, n_rel, k) for k in map_at], axis=1),
           "precision": precision_at_k(rel, ks), "recall": recall_at(rel, n_rel, Rs)}
    if true_neighbors is not None:
        out["one_recall"] = _one_recall_rows(ids, true_neighbors[:, 0], np.asarray(Rs))
        R_knn = np.asarray([R for R in Rs if R <= true_neighbors.shape[1]])
        out["r_recall"] = _r_recall_rows(ids, true_neighbors, R_knn)
    if hamming_bits is None:
        out["curve_p"] = precision_at_k(rel, curve_at)
        out["curve_r"] = recall_at(rel, n_rel, curve_at)
    else:
        out["hits"], out["retrieved"] = _radius_counts(rel, dist, max(hamming_bits, 2))
    return out
