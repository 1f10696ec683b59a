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
