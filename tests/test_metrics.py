"""Metrics: hand-computed cases, and hypothesis checks against slow loop-based references."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from deepcodes.errors import InputError
from deepcodes.eval.metrics import (average_precision, one_recall_at, pr_curve_by_radius, pr_curve_by_rank,
                                    precision_at_k, precision_within_radius, r_recall_at, recall_at)

FAST = settings(max_examples=60, deadline=None)


# ----------------------------------------------------------------------------- slow references

def ref_ap(row, n_rel, k=None):
    if k is not None:
        row = row[:k]
    hits, total = 0, 0.0
    for i, is_rel in enumerate(row, start=1):
        if is_rel:
            hits += 1
            total += hits / i
    denominator = hits if k is not None else n_rel
    return total / denominator if denominator else 0.0


def ref_precision(row, k):
    return sum(bool(x) for x in row[:k]) / k


def ref_recall(row, n_rel, R):
    return sum(bool(x) for x in row[:R]) / n_rel if n_rel else 0.0


def ref_within(row, dist_row, radius):
    inside = [bool(x) for x, d in zip(row, dist_row) if d <= radius]
    return (sum(inside) / len(inside) if inside else 0.0), bool(inside)


def ref_pr_radius(rel, dist, n_rel, max_radius):
    precision, recall = [], []
    for t in range(max_radius + 1):
        ps, rs = [], []
        for row, drow, n in zip(rel, dist, n_rel):
            got = [bool(x) for x, d in zip(row, drow) if d <= t]
            if got:
                ps.append(sum(got) / len(got))
            rs.append(sum(got) / n if n else 0.0)
        precision.append(sum(ps) / len(ps) if ps else math.nan)
        recall.append(sum(rs) / len(rs))
    return precision, recall


# ----------------------------------------------------------------------------- strategies

@st.composite
def ranked(draw, integer_dist=True):
    """(rel (nq, r) bool, n_relevant (nq,), dist (nq, r) sorted with ties)."""
    nq = draw(st.integers(1, 5))
    r = draw(st.integers(1, 12))
    rel = draw(arrays(np.bool_, (nq, r)))
    extra = draw(arrays(np.int64, nq, elements=st.integers(0, 3)))
    dist = np.sort(draw(arrays(np.int64, (nq, r), elements=st.integers(0, 6))), axis=1)
    if not integer_dist:
        dist = dist / 2.0
    return rel, rel.sum(axis=1) + extra, dist


@st.composite
def cutoffs(draw, r):
    return draw(st.lists(st.integers(1, r), min_size=1, max_size=5))


@st.composite
def rankings(draw):
    """(ids (nq, r), true_knn (nq, K)): permutations of a small database, with ties in nothing but order."""
    nq = draw(st.integers(1, 4))
    n = draw(st.integers(1, 10))
    r = draw(st.integers(1, n))
    K = draw(st.integers(1, n))
    ids = np.array([draw(st.permutations(range(n)))[:r] for _ in range(nq)], dtype=np.int64)
    knn = np.array([draw(st.permutations(range(n)))[:K] for _ in range(nq)], dtype=np.int64)
    return ids, knn


# ----------------------------------------------------------------------------- hand cases

def test_ap_hand_cases():
    rel = np.array([[1, 0, 1, 0]], dtype=bool)
    assert average_precision(rel, [2]) == pytest.approx([(1 + 2 / 3) / 2])
    # A relevant item never ranked counts as never found.
    assert average_precision(rel, [3]) == pytest.approx([(1 + 2 / 3) / 3])
    # mAP@k divides by the relevant items retrieved in the top k.
    assert average_precision([[0, 1, 0, 1, 1]], [3], k=3) == pytest.approx([0.5])
    assert average_precision([[0, 1, 0, 1, 1]], [3], k=5) == pytest.approx([(1 / 2 + 2 / 4 + 3 / 5) / 3])
    assert average_precision([[0, 0], [0, 1]], [0, 1], k=1).tolist() == [0.0, 0.0]
    assert average_precision([[0, 0, 0]], [0]).tolist() == [0.0]
    assert average_precision([[1, 1, 1]], [3]).tolist() == [1.0]


def test_precision_recall_hand_cases():
    rel = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=bool)
    np.testing.assert_allclose(precision_at_k(rel, (1, 2, 4)), [[1, 0.5, 0.5], [0, 0, 0.25]])
    np.testing.assert_allclose(recall_at(rel, [4, 1], (4, 1, 3)), [[0.5, 0.25, 0.5], [1, 0, 0]])
    np.testing.assert_allclose(recall_at([[0, 0]], [0], (2,)), [[0.0]])
    precision, recall = pr_curve_by_rank(rel, [4, 1], (1, 4))
    np.testing.assert_allclose(precision, [0.5, 0.375])
    np.testing.assert_allclose(recall, [0.125, 0.75])


def test_radius_hand_cases():
    rel = np.array([[1, 0, 0, 1], [1, 1, 0, 0]], dtype=bool)
    dist = np.array([[0, 1, 2, 3], [3, 3, 4, 5]])
    precision, success = precision_within_radius(rel, dist, radius=2)
    np.testing.assert_allclose(precision, [1 / 3, 0.0])  # nothing within radius 2 scores 0
    assert success == 0.5
    precision, recall = pr_curve_by_radius(rel, dist, [2, 2], max_radius=3)
    # Radii 0-2: only query 0 retrieves anything, so it alone makes the precision.
    np.testing.assert_allclose(precision, [1, 0.5, 1 / 3, (0.5 + 1) / 2])
    np.testing.assert_allclose(recall, [0.25, 0.25, 0.25, 1.0])
    assert np.isnan(pr_curve_by_radius([[1]], [[3]], [1], 1)[0]).all()


def test_ann_recall_hand_cases():
    ids = np.array([[3, 1, 2], [0, 1, 2]])
    np.testing.assert_allclose(one_recall_at(ids, [1, 2], (1, 2, 3)), [0, 0.5, 1])
    np.testing.assert_allclose(r_recall_at(ids, [[1, 3], [2, 0]], (1, 2)), [0, (1 + 0.5) / 2])


# ----------------------------------------------------------------------------- properties

@FAST
@given(data=st.data(), case=ranked())
def test_average_precision_matches_reference(data, case):
    rel, n_rel, _ = case
    k = data.draw(st.integers(1, rel.shape[1]))
    np.testing.assert_allclose(average_precision(rel, n_rel), [ref_ap(r, n) for r, n in zip(rel, n_rel)])
    np.testing.assert_allclose(average_precision(rel, n_rel, k=k), [ref_ap(r, n, k) for r, n in zip(rel, n_rel)])


@FAST
@given(data=st.data(), case=ranked())
def test_precision_recall_match_reference(data, case):
    rel, n_rel, _ = case
    ks = data.draw(cutoffs(rel.shape[1]))
    np.testing.assert_allclose(precision_at_k(rel, ks), [[ref_precision(r, k) for k in ks] for r in rel])
    want = [[ref_recall(r, n, k) for k in ks] for r, n in zip(rel, n_rel)]
    np.testing.assert_allclose(recall_at(rel, n_rel, ks), want)
    precision, recall = pr_curve_by_rank(rel, n_rel, ks)
    np.testing.assert_allclose(precision, precision_at_k(rel, ks).mean(axis=0))
    np.testing.assert_allclose(recall, recall_at(rel, n_rel, ks).mean(axis=0))


@FAST
@given(radius=st.integers(0, 7), integer_dist=st.booleans(), data=st.data())
def test_radius_metrics_match_reference(radius, integer_dist, data):
    rel, n_rel, dist = data.draw(ranked(integer_dist=integer_dist))
    precision, success = precision_within_radius(rel, dist, radius)
    expected = [ref_within(r, d, radius) for r, d in zip(rel, dist)]
    np.testing.assert_allclose(precision, [p for p, _ in expected])
    assert success == pytest.approx(np.mean([s for _, s in expected]))
    got_p, got_r = pr_curve_by_radius(rel, dist, n_rel, radius)
    want_p, want_r = ref_pr_radius(rel, dist, n_rel, radius)
    np.testing.assert_allclose(got_p, want_p)  # NaN positions must agree too
    np.testing.assert_allclose(got_r, want_r)


@FAST
@given(data=st.data(), case=rankings())
def test_ann_recalls_match_reference(data, case):
    ids, knn = case
    Rs = data.draw(cutoffs(ids.shape[1]))
    want = [np.mean([nn in row[:R] for row, nn in zip(ids.tolist(), knn[:, 0])]) for R in Rs]
    np.testing.assert_allclose(one_recall_at(ids, knn[:, 0], Rs), want)
    Rs = data.draw(cutoffs(min(ids.shape[1], knn.shape[1])))
    want = [np.mean([len(set(a[:R]) & set(b[:R])) / R for a, b in zip(ids.tolist(), knn.tolist())]) for R in Rs]
    np.testing.assert_allclose(r_recall_at(ids, knn, Rs), want)


def test_padding_ids_never_match():
    ids = np.array([[-1, 0, 1]])
    np.testing.assert_allclose(r_recall_at(ids, [[0, 1, 2]], (3,)), [2 / 3])
    np.testing.assert_allclose(one_recall_at(ids, [0], (1, 2)), [0, 1])


# ----------------------------------------------------------------------------- bad input

REL = np.array([[1, 0, 1], [0, 1, 0]], dtype=bool)
DIST = np.array([[0, 1, 2], [1, 1, 3]])
IDS = np.array([[0, 1, 2], [2, 1, 0]])


@pytest.mark.parametrize("call", [
    lambda: average_precision(REL[0], [2]),                      # 1-D rel
    lambda: average_precision(np.zeros((2, 0), bool), [0, 0]),   # empty
    lambda: average_precision([[0, 2, 1]], [2]),                 # not 0/1
    lambda: average_precision(REL, [2]),                         # n_relevant shape
    lambda: average_precision(REL, [1, 1]),                      # fewer relevant than ranked
    lambda: average_precision(REL, [2, 1], k=4),                 # k larger than r
    lambda: average_precision(REL, [2, 1], k=0),
    lambda: average_precision(REL, [2.5, 1]),
    lambda: precision_at_k(REL, (1, 4)),
    lambda: precision_at_k(REL, ()),
    lambda: precision_at_k(REL, ("a",)),
    lambda: recall_at(REL, [2, 1], (0,)),
    lambda: one_recall_at(IDS, [0], (1,)),                       # true_nn shape
    lambda: one_recall_at(IDS, [0, -1], (1,)),
    lambda: one_recall_at(IDS, [0, 1], (4,)),
    lambda: one_recall_at(IDS.astype(float), [0, 1], (1,)),
    lambda: r_recall_at(IDS, [[0, 1]], (1,)),                    # rows mismatch
    lambda: r_recall_at(IDS, [[0, 1], [1, 2]], (3,)),            # R larger than K
    lambda: precision_within_radius(REL, DIST[:, :2]),
    lambda: precision_within_radius(REL, -DIST),
    lambda: precision_within_radius(REL, DIST.astype(float) * np.nan),
    lambda: precision_within_radius(REL, DIST, radius=-1),
    lambda: pr_curve_by_radius(REL, DIST, [2, 1], max_radius=1.5),
    lambda: pr_curve_by_rank(REL, [2, 1], (5,)),
])
def test_bad_input_raises(call):
    with pytest.raises(InputError):
        call()
