"""evaluate_search on digits (exact L2 and Hamming rankings, with real ties), and the relevance classes."""
import json
from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.datasets import load_digits

from deepcodes.errors import InputError
from deepcodes.eval import ClassRelevance, NeighborRelevance, evaluate_search, relevance_for
from deepcodes.eval.metrics import (average_precision, pr_curve_by_radius, pr_curve_by_rank, precision_at_k,
                                    precision_within_radius, recall_at)

N_QUERIES = 120


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    # Pixel values k/16 are dyadic, so squared distances are exact and equal distances really tie.
    X, y = data.data / 16.0, data.target
    return SimpleNamespace(Q=X[:N_QUERIES], DB=X[N_QUERIES:], yq=y[:N_QUERIES], ydb=y[N_QUERIES:])


def stable_search(database, distance):
    def search(Q, k):
        d = distance(np.asarray(Q), database)
        ids = np.argsort(d, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(d, ids, axis=1), ids
    return search


def l2(Q, DB):
    return ((Q[:, None, :] - DB[None, :, :]) ** 2).sum(axis=-1)


def hamming(Q, DB):
    return (Q[:, None, :] != DB[None, :, :]).sum(axis=-1)


@pytest.fixture(scope="module")
def l2_case(digits):
    search = stable_search(digits.DB, l2)
    relevance = ClassRelevance(digits.ydb, digits.yq)
    dist, ids = search(digits.Q, len(digits.DB))
    assert (np.diff(dist, axis=1) == 0).any(), "the test needs ties in the ranking"
    return SimpleNamespace(search=search, relevance=relevance, dist=dist, ids=ids, n=len(digits.DB))


def test_matches_metrics_on_the_full_ranking(digits, l2_case):
    n = l2_case.n
    res = evaluate_search(l2_case.search, digits.Q, l2_case.relevance, n, ks=(1, 10, 100, 5000),
                          Rs=(1, 50, 1000), map_at=(10, 100, 10**6), chunk_size=32)
    rel = l2_case.relevance.mask(slice(None), l2_case.ids)
    n_rel = l2_case.relevance.counts(slice(None))
    assert res["n_queries"] == N_QUERIES and res["n_database"] == n
    assert res["tie_rule"] == "stable sort by (distance, database index)"
    assert res["map"] == pytest.approx(average_precision(rel, n_rel).mean(), abs=1e-12)
    assert set(res["map_at_k"]) == {"10", "100", str(n)}  # clipped to n_database
    for k, v in res["map_at_k"].items():
        assert v == pytest.approx(average_precision(rel, n_rel, int(k)).mean(), abs=1e-12)
    assert list(res["precision_at_k"]) == ["1", "10", "100", str(n)]
    np.testing.assert_allclose(list(res["precision_at_k"].values()),
                               precision_at_k(rel, (1, 10, 100, n)).mean(axis=0))
    np.testing.assert_allclose(list(res["recall_at_R"].values()), recall_at(rel, n_rel, (1, 50, 1000)).mean(axis=0))
    assert res["recall_at_R"]["1000"] < 1 and res["precision_at_k"]["1"] > 0.9
    curve = res["pr_curve"]
    assert curve["by"] == "rank" and 30 <= len(curve["cutoff"]) <= 50 and curve["cutoff"][-1] == n
    precision, recall = pr_curve_by_rank(rel, n_rel, curve["cutoff"])
    np.testing.assert_allclose(curve["precision"], precision)
    np.testing.assert_allclose(curve["recall"], recall)
    assert curve["recall"][-1] == pytest.approx(1.0)
    assert "one_recall_at_R" not in res and "precision_radius2" not in res
    assert json.loads(json.dumps(res, allow_nan=False)) == res


def test_chunk_size_does_not_matter(digits, l2_case):
    runs = [evaluate_search(l2_case.search, digits.Q, l2_case.relevance, l2_case.n, chunk_size=c, progress=c == 7)
            for c in (1, 7, 1000)]
    assert runs[0] == runs[1] == runs[2]


def test_rankings_are_put_in_tie_rule_order(digits, l2_case):
    """A search that returns the ranking shuffled, or ties in reverse id order, scores the same."""
    rng = np.random.default_rng(0)

    def shuffled(Q, k):
        dist, ids = l2_case.search(Q, k)
        perm = np.argsort(rng.random(dist.shape), axis=1)
        return np.take_along_axis(dist, perm, axis=1), np.take_along_axis(ids, perm, axis=1)

    def reversed_ties(Q, k):
        d = l2(np.asarray(Q), digits.DB)
        ids = np.lexsort((-np.arange(d.shape[1])[None, :].repeat(len(d), 0), d), axis=-1)[:, :k]
        return np.take_along_axis(d, ids, axis=1), ids

    want = evaluate_search(l2_case.search, digits.Q, l2_case.relevance, l2_case.n)
    for search in (shuffled, reversed_ties):
        assert evaluate_search(search, digits.Q, l2_case.relevance, l2_case.n, chunk_size=50) == want


def test_knn_relevance_of_the_exact_search_is_perfect(digits, l2_case):
    truth = l2_case.ids[:, :10]
    relevance = NeighborRelevance(truth, l2_case.n)
    res = evaluate_search(l2_case.search, digits.Q, relevance, l2_case.n, ks=(1, 10), Rs=(1, 10, 100),
                          true_neighbors=truth)
    assert res["map"] == 1.0 and res["precision_at_k"] == {"1": 1.0, "10": 1.0}
    assert res["one_recall_at_R"] == {"1": 1.0, "10": 1.0, "100": 1.0}
    assert res["R_recall_at_R"] == {"1": 1.0, "10": 1.0}  # R = 100 > K is left out
    assert res["recall_at_R"]["10"] == 1.0


def test_knn_relevance_of_an_approximate_search(digits, l2_case):
    truth = l2_case.ids[:, :10]
    coarse = stable_search(np.round(digits.DB * 2) / 2, l2)  # a lossy "code" of the database
    res = evaluate_search(coarse, digits.Q, NeighborRelevance(truth, l2_case.n), l2_case.n,
                          Rs=(1, 10, 100), true_neighbors=truth)
    _, ids = coarse(digits.Q, l2_case.n)
    assert 0 < res["one_recall_at_R"]["1"] < res["one_recall_at_R"]["100"] <= 1
    want = np.mean([len(set(a[:10]) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist())])
    assert res["R_recall_at_R"]["10"] == pytest.approx(want)
    assert 0 < res["map"] < 1


def test_hamming_ranking(digits):
    bits = 16
    W = np.random.default_rng(1).standard_normal((digits.DB.shape[1], bits))
    mean = digits.DB.mean(axis=0)
    codes_q, codes_db = (digits.Q - mean) @ W > 0, (digits.DB - mean) @ W > 0
    search = stable_search(codes_db, hamming)
    relevance = ClassRelevance(digits.ydb, digits.yq)
    n = len(digits.DB)
    res = evaluate_search(search, codes_q, relevance, n, hamming_bits=bits, chunk_size=25)
    dist, ids = search(codes_q, n)
    rel, n_rel = relevance.mask(slice(None), ids), relevance.counts(slice(None))
    precision, success = precision_within_radius(rel, dist, 2)
    assert res["precision_radius2"] == pytest.approx(precision.mean())
    assert res["radius2_success"] == pytest.approx(success)
    curve = res["pr_curve"]
    assert curve["by"] == "radius" and curve["radius"] == list(range(bits + 1))
    want_p, want_r = pr_curve_by_radius(rel, dist, n_rel, bits)
    np.testing.assert_allclose([np.nan if p is None else p for p in curve["precision"]], want_p)
    np.testing.assert_allclose(curve["recall"], want_r)
    assert curve["recall"][-1] == 1.0
    assert res["map"] == pytest.approx(average_precision(rel, n_rel).mean())
    json.dumps(res, allow_nan=False)


def test_bad_input(digits, l2_case):
    s, Q, rel, n = l2_case.search, digits.Q, l2_case.relevance, l2_case.n
    bad_calls = [
        lambda: evaluate_search(lambda Q, k: s(Q, 10), Q, rel, n),                   # not the full ranking
        lambda: evaluate_search(lambda Q, k: (s(Q, k)[0], s(Q, k)[1] + 1), Q, rel, n),  # ids out of range
        lambda: evaluate_search(lambda Q, k: (s(Q, k)[0], s(Q, k)[1] * 0), Q, rel, n),  # not a permutation
        lambda: evaluate_search(lambda Q, k: s(Q, k)[1], Q, rel, n),                 # not a pair
        lambda: evaluate_search(lambda Q, k: (s(Q, k)[0] * np.nan, s(Q, k)[1]), Q, rel, n),
        lambda: evaluate_search(s, Q[:10], rel, n),                                   # relevance for other queries
        lambda: evaluate_search(s, Q, rel, n - 1),
        lambda: evaluate_search(s, Q[:0], rel, n),
        lambda: evaluate_search("search", Q, rel, n),
        lambda: evaluate_search(s, Q, rel, n, ks=(0, 10)),
        lambda: evaluate_search(s, Q, rel, n, Rs=()),
        lambda: evaluate_search(s, Q, rel, n, chunk_size=0),
        lambda: evaluate_search(s, Q, rel, n, hamming_bits=0),
        lambda: evaluate_search(s, Q, rel, n, true_neighbors=l2_case.ids[:5, :3]),
        lambda: evaluate_search(s, Q, rel, n, true_neighbors=l2_case.ids[:, :3] + n),
    ]
    for call in bad_calls:
        with pytest.raises(InputError):
            call()


# ----------------------------------------------------------------------------- relevance

def test_class_relevance():
    relevance = ClassRelevance([0, 1, 1, 2, 1], [1, 3, 0])
    assert relevance.counts(slice(None)).tolist() == [3, 0, 1]  # class 3 is not in the database
    assert relevance.counts([2, 0]).tolist() == [1, 3]
    mask = relevance.mask([0, 2], [[1, 0, -1], [0, 3, 4]])
    assert mask.tolist() == [[True, False, False], [True, False, False]]
    assert relevance.mask(slice(1, 2), [[0, 1]]).tolist() == [[False, False]]
    for call in (lambda: relevance.mask([0], [[5]]), lambda: relevance.mask([3], [[0]]),
                 lambda: relevance.mask([0, 1], [[0]]), lambda: relevance.mask([0], [[0.5]]),
                 lambda: ClassRelevance([0.5, 1], [0]), lambda: ClassRelevance([[0, 1]], [0]),
                 lambda: ClassRelevance([], [0])):
        with pytest.raises(InputError):
            call()


def test_neighbor_relevance():
    relevance = NeighborRelevance([[2, 0], [1, 1]], n_database=4)
    assert relevance.counts(slice(None)).tolist() == [2, 1]  # a repeated neighbour counts once
    assert relevance.mask(slice(None), [[0, 1, 2, 3], [3, 2, 1, -1]]).tolist() == [
        [True, False, True, False], [False, False, True, False]]
    for call in (lambda: NeighborRelevance([[4]], 4), lambda: NeighborRelevance([[-1]], 4),
                 lambda: NeighborRelevance([1, 2], 4), lambda: NeighborRelevance([[1]], 0),
                 lambda: relevance.mask(slice(None), [[4], [0]])):
        with pytest.raises(InputError):
            call()


def test_relevance_for_duck_typed_protocols():
    database = np.zeros((5, 2))
    by_class = relevance_for(SimpleNamespace(relevance="class", database_labels=[0, 1, 1, 0, 2],
                                             query_labels=[1, 2], database=database))
    assert isinstance(by_class, ClassRelevance) and by_class.counts(slice(None)).tolist() == [2, 1]
    asked = []

    def ground_truth(k):
        asked.append(k)
        return np.array([[0, 1, 2], [4, 3, 2]])[:, :k]

    by_knn = relevance_for(SimpleNamespace(relevance="knn", n_neighbors=2, database=database,
                                           ground_truth=ground_truth))
    assert isinstance(by_knn, NeighborRelevance) and asked == [2]
    assert (by_knn.n_queries, by_knn.n_database) == (2, 5)
    with pytest.raises(InputError):
        relevance_for(SimpleNamespace(relevance="nearest"))


@pytest.fixture(scope="module")
def mnist_rankings(mnist_slice):
    """Real MNIST rankings with heavy ties: 16-bit random-hyperplane codes (Hamming distances 0..16
    over 5,000 items) and a coarse 2-level ADC-like L2 on rounded pixels; stable (distance, id) order."""
    X, y, Q, yq = mnist_slice
    W = np.random.default_rng(0).standard_normal((X.shape[1], 16)).astype(np.float32)
    mean = X.mean(axis=0)
    cq, cdb = (Q - mean) @ W > 0, (X - mean) @ W > 0
    ham = (cq[:, None, :] != cdb[None, :, :]).sum(-1).astype(np.int32)
    Xr, Qr = np.round(X * 2) / 2, np.round(Q * 2) / 2
    l2d = ((Qr ** 2).sum(1)[:, None] + (Xr ** 2).sum(1)[None, :] - 2 * Qr @ Xr.T).astype(np.float32)
    out = {}
    for name, d in (("hamming", ham), ("l2", l2d)):
        ids = np.argsort(d, axis=1, kind="stable")
        out[name] = (np.take_along_axis(d, ids, axis=1), ids)
    exact = ((Q ** 2).sum(1)[:, None] + (X ** 2).sum(1)[None, :] - 2 * Q @ X.T)
    truth = np.argsort(exact, axis=1, kind="stable")[:, :50]
    return SimpleNamespace(y=y, yq=yq, n=len(X), nq=len(Q), rankings=out, truth=truth)


@pytest.mark.parametrize("kind", ["hamming", "l2"])
@pytest.mark.parametrize("relevance_kind", ["class", "knn"])
def test_one_pass_kernels_equal_the_vectorised_metrics_bit_for_bit(mnist_rankings, kind, relevance_kind):
    """The evaluation's per-row kernels give exactly (==, not approximately) what the vectorised
    definitions give, on real data with heavy ties (16-bit Hamming: about 300 items per distance)."""
    from reference import evaluate_full_ranking

    m = mnist_rankings
    dist, ids = m.rankings[kind]
    assert (np.diff(dist, axis=1) == 0).mean() > 0.5 or kind == "l2"
    relevance = (ClassRelevance(m.y, m.yq) if relevance_kind == "class" else NeighborRelevance(m.truth, m.n))
    truth = m.truth if relevance_kind == "knn" else None
    bits = 16 if kind == "hamming" else None
    ks, Rs, map_at = (1, 10, 100, 1000), (1, 10, 100, 1000), (10, 1000)
    got = evaluate_search(lambda Q, k: (dist[Q], ids[Q]), np.arange(m.nq), relevance, m.n, ks=ks, Rs=Rs,
                          map_at=map_at, true_neighbors=truth, hamming_bits=bits, chunk_size=64)
    curve_at = np.asarray(got["pr_curve"]["cutoff"]) if bits is None else None
    want = evaluate_full_ranking(dist, ids, relevance, ks=ks, Rs=Rs, map_at=map_at, curve_at=curve_at,
                                 true_neighbors=truth, hamming_bits=bits)
    assert got["map"] == float(want["ap"].mean())
    assert list(got["map_at_k"].values()) == want["ap_at"].mean(axis=0).tolist()
    assert list(got["precision_at_k"].values()) == want["precision"].mean(axis=0).tolist()
    assert list(got["recall_at_R"].values()) == want["recall"].mean(axis=0).tolist()
    if truth is not None:
        assert list(got["one_recall_at_R"].values()) == want["one_recall"].mean(axis=0).tolist()
        assert list(got["R_recall_at_R"].values()) == want["r_recall"].mean(axis=0).tolist()
    if bits is None:
        assert got["pr_curve"]["precision"] == want["curve_p"].mean(axis=0).tolist()
        assert got["pr_curve"]["recall"] == want["curve_r"].mean(axis=0).tolist()
    else:
        hits, retrieved = want["hits"], want["retrieved"]
        precision, success = precision_within_radius(relevance.mask(slice(None), ids), dist, 2)
        assert got["precision_radius2"] == float(precision.mean()) and got["radius2_success"] == success
        want_p, want_r = pr_curve_by_radius(relevance.mask(slice(None), ids), dist,
                                            relevance.counts(slice(None)), bits)
        assert [np.nan if p is None else p for p in got["pr_curve"]["precision"]] == pytest.approx(
            want_p.tolist(), abs=0, rel=0, nan_ok=True)
        assert got["pr_curve"]["recall"] == want_r.tolist()
        assert hits.shape == retrieved.shape == (m.nq, 17)
    assert 0 < got["map"] < 1


def test_several_relevances_share_one_ranking(mnist_rankings):
    """evaluate_search_many searches each chunk once and gives each relevance what evaluate_search gives."""
    from deepcodes.eval import evaluate_search_many

    m = mnist_rankings
    dist, ids = m.rankings["hamming"]
    calls = []

    def search(Q, k):
        calls.append(len(Q))
        return dist[Q], ids[Q]

    rels = [ClassRelevance(m.y, m.yq), NeighborRelevance(m.truth, m.n)]
    both = evaluate_search_many(search, np.arange(m.nq), rels, m.n, true_neighbors=[None, m.truth],
                                hamming_bits=16, chunk_size=100)
    assert calls == [100, 100]
    assert both[0] == evaluate_search(search, np.arange(m.nq), rels[0], m.n, hamming_bits=16)
    assert both[1] == evaluate_search(search, np.arange(m.nq), rels[1], m.n, hamming_bits=16,
                                      true_neighbors=m.truth)
    with pytest.raises(InputError, match="entries"):
        evaluate_search_many(search, np.arange(m.nq), rels, m.n, true_neighbors=[None])
