"""Stateless exact k-NN primitives shared by data, coders and indexes (numba): (distance, id) heaps,
popcount and the exact Hamming scan, a stable float32 argsort, and exact Euclidean k-NN."""
from .exact import exact_knn
from .hamming import hamming_search, popcount64, to_words
from .heap import heap_admits, heap_drain, heap_offer, heap_push, sift_down
from .sort import stable_argsort_f32

__all__ = ["exact_knn", "hamming_search", "popcount64", "to_words", "heap_admits", "heap_drain", "heap_offer", "heap_push",
           "sift_down", "stable_argsort_f32"]
