"""Input checks shared by every coder, index and metric.

They raise :class:`~deepcodes.errors.InputError` with a message naming the argument, so that bad
input never surfaces as a traceback from deep inside numpy, faiss or torch.
"""
from __future__ import annotations

import numbers

import numpy as np

from .errors import InputError, NotFittedError


def check_matrix(X, name: str = "X", *, dim: int | None = None, dtype=np.float32,
                 allow_empty: bool = False) -> np.ndarray:
    """Return ``X`` as a C-contiguous 2-D array of ``dtype`` (n, d), checked.

    Rejects non-numeric or complex dtypes, wrong rank, a wrong number of columns (when ``dim`` is
    given), NaN/inf and (unless ``allow_empty``) zero rows.
    """
    if isinstance(X, (str, bytes)) or X is None:
        raise InputError(f"{name} must be a numeric 2-D array, got {type(X).__name__}")
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{name} must be real-valued, got dtype {arr.dtype}")
    if arr.ndim == 1 and dim is not None and arr.shape[0] == dim:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (n, d), got shape {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise InputError(f"{name} is empty (0 rows)")
    if arr.shape[1] == 0:
        raise InputError(f"{name} has 0 columns")
    if dim is not None and arr.shape[1] != dim:
        raise InputError(f"{name} has dimension {arr.shape[1]}, expected {dim}")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(axis=1).sum())
        raise InputError(f"{name} contains NaN or inf in {bad} row(s)")
    if dtype is not None:
        arr = np.ascontiguousarray(arr, dtype=dtype)
    return arr


def check_codes(codes, name: str = "codes", *, code_size: int | None = None,
                dtype=np.uint8, allow_empty: bool = False) -> np.ndarray:
    """Return packed or sub-quantizer ``codes`` as a C-contiguous 2-D array of ``dtype``, checked."""
    arr = np.asarray(codes)
    if not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{name} must be an integer array of codes, got dtype {arr.dtype}")
    if arr.ndim == 1 and code_size is not None and arr.shape[0] == code_size:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise InputError(f"{name} must be 2-D (n, code_size), got shape {arr.shape}")
    if arr.shape[0] == 0 and not allow_empty:
        raise InputError(f"{name} is empty (0 rows)")
    if code_size is not None and arr.shape[1] != code_size:
        raise InputError(f"{name} has {arr.shape[1]} bytes/sub-codes per row, expected {code_size}")
    info = np.iinfo(dtype)
    if arr.size and (arr.min() < info.min or arr.max() > info.max):
        raise InputError(f"{name} has values outside [{info.min}, {info.max}]")
    return np.ascontiguousarray(arr, dtype=dtype)


def check_labels(y, n: int, name: str = "y", *, min_classes: int = 1) -> np.ndarray:
    """Return integer labels of length ``n`` as int64, checked."""
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"{name} has {arr.shape[0]} labels for {n} points")
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and (arr == np.round(arr)).all():
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if len(np.unique(arr)) < min_classes:
        raise InputError(f"{name} has {len(np.unique(arr))} class(es); at least {min_classes} are needed")
    return arr.astype(np.int64, copy=False)


def check_int(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """Return ``value`` as an int within [low, high], or raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be an integer, got {value!r}")
    value = int(value)
    if low is not None and value < low:
        raise InputError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise InputError(f"{name} must be <= {high}, got {value}")
    return value


def check_n_bits(n_bits, *, multiple: int = 8, max_bits: int | None = None, what: str = "n_bits") -> int:
    """Return a code length in bits that is a positive multiple of ``multiple`` (and <= ``max_bits``)."""
    n_bits = check_int(n_bits, what, low=1)
    if n_bits % multiple:
        raise InputError(f"{what}={n_bits} is not a multiple of {multiple}")
    if max_bits is not None and n_bits > max_bits:
        raise InputError(f"{what}={n_bits} exceeds the {max_bits} this method can make here")
    return n_bits


def check_k(k, n_database: int) -> int:
    """Return ``k`` for a search over ``n_database`` items: 1 <= k <= n_database."""
    k = check_int(k, "k", low=1)
    if n_database == 0:
        raise InputError("the index is empty: add vectors before searching")
    if k > n_database:
        raise InputError(f"k={k} is larger than the database ({n_database} items)")
    return k


def check_fitted(estimator, attribute: str) -> None:
    """Raise NotFittedError unless ``estimator`` has the learned ``attribute``."""
    if getattr(estimator, attribute, None) is None:
        raise NotFittedError(f"{type(estimator).__name__} is not fitted yet: call fit() first")


def rng_from(random_state) -> np.random.Generator:
    """A numpy Generator from an int seed, a Generator, or None (fresh entropy); never the global RNG."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral)):
        raise InputError(f"random_state must be an int, a numpy Generator or None, got {random_state!r}")
    return np.random.default_rng(random_state)


def seed_from(random_state) -> int:
    """An int seed for libraries (faiss, torch) that want one, drawn from ``random_state``."""
    return int(rng_from(random_state).integers(0, 2**31 - 1))
