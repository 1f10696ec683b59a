"""Input checks shared by every coder, index and metric.

They raise :class:`~deepcodes.errors.InputError` with a message naming the argument, so that bad
input never surfaces as a traceback from deep inside numpy, faiss or torch.
"""
from __future__ import annotations

import contextlib
import numbers

import numpy as np

from .errors import FormatError, InputError, NotFittedError


# Every kernel works in float32: a value is usable if it, and the squared norm of its row, stay
# finite in float32 arithmetic. A squared L2 distance between two rows is at most twice the sum of
# their squared norms, so rows are capped at a quarter of float32's largest value: any distance or
# inner product computed from them is finite (1e300 or 5e18 in 784 dimensions are refused).
FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_SQUARED_NORM = FLOAT32_MAX / 4


def as_array(X, name: str, what: str = "vectors") -> np.ndarray:
    """``np.asarray(X)`` with ragged nesting, strings, None and object arrays refused (InputError);
    ``what`` names the rows in the message."""
    if isinstance(X, (str, bytes)) or X is None:
        raise InputError(f"{name} must be a numeric 2-D array of {what}, got {type(X).__name__}")
    try:
        arr = np.asarray(X)
    except ValueError as exc:
        # numpy's message for nested lists of unequal lengths ("inhomogeneous shape")
        raise InputError(f"{name} is not a rectangular array (ragged rows?): {exc}") from None
    if arr.dtype == object:
        raise InputError(f"{name} must be numeric, got an object array (ragged rows or mixed types?)")
    return arr


def check_finite_float32(arr: np.ndarray, name: str) -> None:
    """Raise unless every value of ``arr`` is finite in float32 and the squared norm of every row
    (last axis) is at most :data:`MAX_SQUARED_NORM`, so that distances computed from it stay finite.

    Non-float32 arrays are cast block by block (no full copy)."""
    width = arr.shape[-1] if arr.ndim else 1
    rows = arr.reshape(-1, width)
    n_bad = n_big = 0
    worst = 0.0
    for s in range(0, rows.shape[0], 65536):
        with np.errstate(over="ignore", invalid="ignore"):
            block = rows[s:s + 65536].astype(np.float32, copy=False)
        finite = np.isfinite(block)
        if not finite.all():
            n_bad += int((~finite).any(axis=1).sum())
            continue
        if not block.size:
            continue
        peak = max(abs(float(block.max())), abs(float(block.min())))
        if peak * peak * width <= MAX_SQUARED_NORM:
            continue
        wide = block.astype(np.float64)
        norms = np.einsum("nd,nd->n", wide, wide)
        n_big += int((norms > MAX_SQUARED_NORM).sum())
        worst = max(worst, float(norms.max()))
    if n_bad:
        raise InputError(f"{name} contains NaN or inf (after conversion to float32) in {n_bad} row(s)")
    if n_big:
        raise InputError(f"{name} has {n_big} row(s) whose squared norm ({worst:.3g}) overflows float32 "
                         f"arithmetic (at most {MAX_SQUARED_NORM:.3g}); rescale the data")


def check_matrix(X, name: str = "X", *, dim: int | None = None, dtype=np.float32,
                 allow_empty: bool = False) -> np.ndarray:
    """Return ``X`` as a C-contiguous 2-D array of ``dtype`` (n, d), checked.

    Rejects ragged nesting, object, string, bool and complex dtypes, wrong rank, a wrong number of
    columns (when ``dim`` is given), zero rows (unless ``allow_empty``), and values that are not
    finite *after conversion to float32*, the working precision of every kernel, or whose row's
    squared norm overflows float32 arithmetic (see :func:`check_finite_float32`). With
    ``dtype=None`` the array keeps its own dtype but the float32 checks still apply.
    """
    arr = as_array(X, name, "vectors")
    if arr.dtype == np.bool_:
        raise InputError(f"{name} has dtype bool; pass vectors as numbers (e.g. X.astype(np.float32))")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{name} must be real-valued, got dtype {arr.dtype}")
    if not np.issubdtype(arr.dtype, np.number):
        raise InputError(f"{name} must be numeric, got dtype {arr.dtype}")
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
    if dtype is not None:
        with np.errstate(over="ignore", invalid="ignore"):
            arr = np.ascontiguousarray(arr, dtype=dtype)
    check_finite_float32(arr, name)
    return arr


def check_codes(codes, name: str = "codes", *, code_size: int | None = None,
                dtype=np.uint8, allow_empty: bool = False) -> np.ndarray:
    """Return packed or sub-quantizer ``codes`` as a C-contiguous 2-D array of ``dtype``, checked:
    an integer (not bool) array (n, code_size) whose values fit ``dtype``."""
    arr = as_array(codes, name, "codes")
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.integer):
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
    if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
        raise InputError(f"{name} has values outside [{info.min}, {info.max}]")
    return np.ascontiguousarray(arr, dtype=dtype)


def check_labels(y, n: int, name: str = "y", *, min_classes: int = 1) -> np.ndarray:
    """Return integer labels of length ``n`` as int64, checked."""
    arr = as_array(y, name, "labels")
    if arr.ndim != 1:
        raise InputError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise InputError(f"{name} has {arr.shape[0]} labels for {n} points")
    if not np.issubdtype(arr.dtype, np.integer):
        if (np.issubdtype(arr.dtype, np.floating) and np.isfinite(arr).all() and (arr == np.round(arr)).all()
                and (not arr.size or np.abs(arr).max() < 2.0**53)):
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name} must hold integer class labels, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise InputError(f"{name} has labels beyond the int64 range")
    if len(np.unique(arr)) < min_classes:
        raise InputError(f"{name} has {len(np.unique(arr))} class(es); at least {min_classes} are needed")
    return arr.astype(np.int64, copy=False)


def check_int(value, name: str, *, low: int | None = None, high: int | None = None,
              allow_none: bool = False) -> int | None:
    """Return ``value`` as an int within [low, high] (or None when ``allow_none``), or raise."""
    if value is None and allow_none:
        return None
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


# ---- loaded state ------------------------------------------------------------------------------
@contextlib.contextmanager
def as_format_errors(what: str):
    """Turn the InputError of a parameter check into a FormatError naming ``what`` (a loaded file's
    parameters are the file's fault, not the caller's)."""
    try:
        yield
    except InputError as exc:
        raise FormatError(f"{what}: {exc}") from None


def check_state_array(arr, name: str, shape: tuple, dtype, *, finite: bool = True) -> np.ndarray:
    """Check one loaded array: an ndarray of exactly ``dtype`` and ``shape`` (``None`` entries match
    any size); float32 arrays must also pass :func:`check_finite_float32` unless ``finite=False``.
    Raises FormatError naming the array."""
    if not isinstance(arr, np.ndarray):
        raise FormatError(f"array {name!r} is missing or not an array")
    if arr.dtype != np.dtype(dtype):
        raise FormatError(f"array {name!r} has dtype {arr.dtype}, expected {np.dtype(dtype)}")
    if arr.ndim != len(shape) or any(e is not None and s != e for s, e in zip(arr.shape, shape)):
        want = tuple("any" if e is None else e for e in shape)
        raise FormatError(f"array {name!r} has shape {arr.shape}, expected {want} from the parameters")
    if finite and arr.dtype.kind == "f":
        try:
            check_finite_float32(arr, f"array {name!r}")
        except InputError as exc:
            raise FormatError(str(exc)) from None
    return arr


_JSON_SCALARS = (type(None), bool, int, float, str)


def check_state_keys(what: str, given, expected, kind: str) -> None:
    """Raise FormatError unless a loaded file's ``given`` parameters (or arrays) are exactly
    ``expected``, and (for parameters) each is a JSON scalar or a flat list of them."""
    unknown, missing = sorted(set(given) - set(expected)), sorted(set(expected) - set(given))
    if unknown or missing:
        raise FormatError(f"{what} {kind} do not match this version's: unknown {unknown}, missing {missing}")
    if kind == "parameters":
        for name, value in given.items():
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, _JSON_SCALARS) for v in items):
                raise FormatError(f"{what} parameter {name!r} holds a nested value {value!r:.80}")


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters (torch appends C++ stack
    frames to some): what a one-line error may quote of it."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
