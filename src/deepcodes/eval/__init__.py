"""Evaluation: relevance, retrieval metrics, full-ranking evaluation of a search, and reports.

Conventions: a search returns ``(distances (nq, k), ids (nq, k) int64)`` sorted ascending by
(distance, database id), ties broken by id; ``rel`` (nq, r) bool is ranked relevance and
``n_relevant`` (nq,) counts each query's relevant items in the whole database.
"""
from .evaluate import TIE_RULE, evaluate_search, evaluate_search_many
from .metrics import (average_precision, one_recall_at, pr_curve_by_radius, pr_curve_by_rank,
                      precision_at_k, precision_within_radius, r_recall_at, recall_at)
from .relevance import ClassRelevance, NeighborRelevance, relevance_for
from .report import markdown_table, plot_map_vs_bits, plot_pr_curves, plot_recall_qps, write_json

__all__ = [
    "evaluate_search", "evaluate_search_many", "TIE_RULE",
    "average_precision", "precision_at_k", "recall_at", "one_recall_at", "r_recall_at",
    "precision_within_radius", "pr_curve_by_rank", "pr_curve_by_radius",
    "ClassRelevance", "NeighborRelevance", "relevance_for",
    "markdown_table", "write_json", "plot_map_vs_bits", "plot_pr_curves", "plot_recall_qps",
]
