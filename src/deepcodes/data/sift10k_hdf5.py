"""SIFT10K as an ann-benchmarks HDF5 file (``deepcodes data sift10k-hdf5``): the bundled set in the
format people download from ann-benchmarks, for trying the index commands on a real file.

``sift10k.hdf5`` holds ``train`` (10000, 128) and ``test`` (100, 128) float32 (the bundled uint8
SIFT values), ``neighbors`` (100, 100) int32, the exact Euclidean top-100 of each test vector
(ties to the lower id; they equal the set's published neighbours), ``distances`` (100, 100)
float32, their Euclidean (not squared) distances, and the attribute ``distance = "euclidean"``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FormatError
from .datasets import load_sift10k
from .formats import write_ann_hdf5
from .groundtruth import cache_dir, exact_knn

__all__ = ["build", "FILE_NAME"]

FILE_NAME = "sift10k.hdf5"
K = 100


def build(out_dir: Path | None = None, progress: bool = True) -> dict:
    """Write ``out_dir/sift10k.hdf5`` (default: the cache folder) atomically and describe it."""
    path = Path(out_dir if out_dir is not None else cache_dir()) / FILE_NAME
    base, queries, published = load_sift10k()
    train, test = base.astype(np.float32), queries.astype(np.float32)
    squared, ids = exact_knn(train, test, K)
    if not np.array_equal(ids, published[:, :K]):
        raise FormatError("the exact top-100 of the bundled SIFT10K differs from its published neighbours")
    write_ann_hdf5(path, train, test, ids.astype(np.int32), np.sqrt(squared), distance="euclidean")
    return {"path": str(path), "train": list(train.shape), "test": list(test.shape),
            "neighbors": list(ids.shape), "distance": "euclidean"}
