"""Data: vector file formats, the bundled datasets, exact ground truth and the evaluation protocols."""
from .datasets import (DATASETS, data_dir, dataset_file, dataset_status, load_cifar10, load_digits, load_mnist,
                       load_sift10k, verify)
from .formats import (read_ann_hdf5, read_bvecs, read_fvecs, read_idx, read_ivecs, read_npy, read_npz,
                      write_ann_hdf5, write_bvecs, write_fvecs, write_idx, write_ivecs)
from .groundtruth import cache_dir, cached_knn, exact_knn
from .protocols import PROTOCOLS, Protocol, load_protocol
from .vectors import Vectors, open_vectors, read_ids, read_labels, read_neighbors

__all__ = [
    "DATASETS", "data_dir", "dataset_file", "dataset_status", "verify",
    "load_mnist", "load_cifar10", "load_sift10k", "load_digits",
    "read_fvecs", "read_ivecs", "read_bvecs", "write_fvecs", "write_ivecs", "write_bvecs",
    "read_idx", "write_idx", "read_npy", "read_npz", "read_ann_hdf5", "write_ann_hdf5",
    "Vectors", "open_vectors", "read_ids", "read_labels", "read_neighbors",
    "exact_knn", "cached_knn", "cache_dir",
    "PROTOCOLS", "Protocol", "load_protocol",
]
