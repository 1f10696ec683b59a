"""Readers and writers for the vector file formats of similarity-search benchmarks.

* TEXMEX ``.fvecs`` / ``.ivecs`` / ``.bvecs``: each row is a little-endian int32 ``d`` followed by
  ``d`` values (float32, int32 or uint8). Read memory-mapped by default.
* MNIST ``idx`` (``*-ubyte``, optionally gzipped): magic ``00 00 <type> <ndim>``, ``ndim`` big-endian
  uint32 sizes, then big-endian data. Read memory-mapped when not gzipped.
* ``.npy`` / ``.npz``, always with ``allow_pickle=False``.
* ann-benchmarks HDF5: datasets ``train``, ``test``, ``neighbors``, ``distances`` and the attribute
  ``distance``.

Any of these files is opened for lazy, batched reading by :func:`deepcodes.data.open_vectors`.
Every defect in a file (missing, truncated, foreign, inconsistent) raises
:class:`~deepcodes.errors.FormatError` naming the file; bad arrays given to a writer raise
:class:`~deepcodes.errors.InputError`. Every writer is atomic (temporary file, fsync, rename).
"""
from __future__ import annotations

import gzip
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError
from ..persist import atomic_path, atomic_write_bytes

__all__ = [
    "read_fvecs", "read_ivecs", "read_bvecs", "write_fvecs", "write_ivecs", "write_bvecs",
    "read_idx", "write_idx", "read_npy", "read_npz", "read_ann_hdf5", "write_ann_hdf5",
    "ANN_DISTANCES",
]

# Rows per chunk when streaming a TEXMEX file out, so a writer never holds a second full copy.
_WRITE_ROWS = 1 << 16
# A TEXMEX dimension above this is taken as a sign of a foreign file rather than real data.
_MAX_DIM = 1 << 24

_IDX_TYPES = {
    0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_IDX_CODES = {dt.newbyteorder("="): code for code, dt in _IDX_TYPES.items()}

ANN_DISTANCES = ("euclidean", "angular", "hamming", "jaccard")
_ANN_KEYS = ("train", "test", "neighbors", "distances")


def _existing(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"no such file: {path}")
    return path


# --------------------------------------------------------------------------------------- TEXMEX


def _read_vecs(path, dtype, mmap: bool) -> np.ndarray:
    path = _existing(path)
    dtype = np.dtype(dtype).newbyteorder("<")
    size = path.stat().st_size
    if size < 4:
        raise FormatError(f"{path} is empty or truncated ({size} bytes): not a {_vecs_name(dtype)} file")
    d = int(np.fromfile(path, dtype="<i4", count=1)[0])
    if d <= 0 or d > _MAX_DIM:
        raise FormatError(f"{path}: first row declares dimension {d}; not a {_vecs_name(dtype)} file")
    row = np.dtype([("d", "<i4"), ("v", dtype, (d,))])
    if size % row.itemsize:
        raise FormatError(f"{path}: size {size} bytes is not a multiple of the row size {row.itemsize} "
                          f"(4 + {d} x {dtype.itemsize}); truncated or not a {_vecs_name(dtype)} file")
    rows = np.memmap(path, dtype=row, mode="r") if mmap else np.fromfile(path, dtype=row)
    dims = rows["d"]
    bad = np.flatnonzero(dims != d)
    if bad.size:
        raise FormatError(f"{path}: row {int(bad[0])} declares dimension {int(dims[bad[0]])}, the first "
                          f"row {d}; corrupt or not a {_vecs_name(dtype)} file")
    if mmap:
        return rows["v"]
    return np.ascontiguousarray(rows["v"]).astype(dtype.newbyteorder("="), copy=False)


def _vecs_name(dtype: np.dtype) -> str:
    return {"f": ".fvecs", "i": ".ivecs", "u": ".bvecs"}[dtype.kind]


def read_fvecs(path, mmap: bool = True) -> np.ndarray:
    """Read a TEXMEX ``.fvecs`` file: float32 (n, d); a read-only strided memmap view when ``mmap``."""
    return _read_vecs(path, np.float32, mmap)


def read_ivecs(path, mmap: bool = True) -> np.ndarray:
    """Read a TEXMEX ``.ivecs`` file: int32 (n, d); a read-only strided memmap view when ``mmap``."""
    return _read_vecs(path, np.int32, mmap)


def read_bvecs(path, mmap: bool = True) -> np.ndarray:
    """Read a TEXMEX ``.bvecs`` file: uint8 (n, d); a read-only strided memmap view when ``mmap``."""
    return _read_vecs(path, np.uint8, mmap)


def _as_matrix(X, dtype: np.dtype, name: str = "X") -> np.ndarray:
    """``X`` as a 2-D array of ``dtype``; integer targets need integral values within range."""
    arr = np.asarray(X)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) \
            or np.issubdtype(arr.dtype, np.complexfloating):
        raise InputError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty 2-D array (n, d), got shape {arr.shape}")
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if np.issubdtype(arr.dtype, np.floating):
            if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
                raise InputError(f"{name} must hold integer values to be written as {np.dtype(dtype)}")
        if arr.min() < info.min or arr.max() > info.max:
            raise InputError(f"{name} has values outside [{info.min}, {info.max}], the range of {np.dtype(dtype)}")
    elif np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or inf")
    return arr


def _write_vecs(path, X, dtype) -> None:
    dtype = np.dtype(dtype).newbyteorder("<")
    X = _as_matrix(X, dtype)
    n, d = X.shape
    row = np.dtype([("d", "<i4"), ("v", dtype, (d,))])

    def chunks():
        for start in range(0, n, _WRITE_ROWS):
            block = X[start:start + _WRITE_ROWS]
            out = np.empty(block.shape[0], dtype=row)
            out["d"] = d
            out["v"] = block
            yield memoryview(out).cast("B")

    atomic_write_bytes(path, chunks())


def write_fvecs(path, X) -> None:
    """Write ``X`` (n, d) as a TEXMEX ``.fvecs`` file (float32), atomically."""
    _write_vecs(path, X, np.float32)


def write_ivecs(path, X) -> None:
    """Write ``X`` (n, d) integers as a TEXMEX ``.ivecs`` file (int32), atomically."""
    _write_vecs(path, X, np.int32)


def write_bvecs(path, X) -> None:
    """Write ``X`` (n, d) integers in [0, 255] as a TEXMEX ``.bvecs`` file (uint8), atomically."""
    _write_vecs(path, X, np.uint8)


# ------------------------------------------------------------------------------------------ idx


def _idx_header(path: Path, head: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """Parse an idx header: (big-endian dtype, shape, header length)."""
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _IDX_TYPES or head[3] == 0:
        raise FormatError(f"{path} is not an idx file (bad magic {head[:4].hex() or 'empty'})")
    ndim = head[3]
    n_head = 4 + 4 * ndim
    if len(head) < n_head:
        raise FormatError(f"{path}: idx header truncated ({len(head)} of {n_head} bytes)")
    shape = tuple(int(s) for s in np.frombuffer(head, dtype=">u4", count=ndim, offset=4))
    return _IDX_TYPES[head[2]], shape, n_head


def read_idx(path, mmap: bool = True) -> np.ndarray:
    """Read an MNIST-style idx file (``.gz`` too) as an array of its stored shape and type.

    Uncompressed files are memory-mapped read-only when ``mmap`` (multi-byte types then keep the
    file's big-endian byte order); otherwise, and for gzip files, the data is read into memory in
    native byte order.
    """
    path = _existing(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        try:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        except (OSError, EOFError, zlib.error) as exc:
            raise FormatError(f"{path}: corrupt or truncated gzip data ({exc})") from None
        dtype, shape, n_head = _idx_header(path, raw[:4 + 4 * 255])
        _check_idx_size(path, len(raw) - n_head, dtype, shape)
        arr = np.frombuffer(raw, dtype=dtype, offset=n_head).reshape(shape)
        return arr.astype(dtype.newbyteorder("="))
    with open(path, "rb") as f:
        dtype, shape, n_head = _idx_header(path, f.read(4 + 4 * 255))
    _check_idx_size(path, path.stat().st_size - n_head, dtype, shape)
    if mmap and 0 not in shape:
        return np.memmap(path, dtype=dtype, mode="r", offset=n_head, shape=shape)
    return np.fromfile(path, dtype=dtype, offset=n_head).reshape(shape).astype(dtype.newbyteorder("="))


def _check_idx_size(path: Path, n_data: int, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if n_data != expected:
        what = "truncated" if n_data < expected else "has trailing bytes"
        raise FormatError(f"{path}: idx data is {n_data} bytes, shape {shape} of {dtype} needs "
                          f"{expected}; the file {what}")


def write_idx(path, arr) -> None:
    """Write ``arr`` as an idx file, gzip-compressed if ``path`` ends in ``.gz``, atomically.

    Supported dtypes: uint8, int8, int16, int32, float32, float64; 1 to 255 dimensions.
    """
    arr = np.asarray(arr)
    native = arr.dtype.newbyteorder("=")
    if native not in _IDX_CODES:
        raise InputError(f"idx files cannot store dtype {arr.dtype}; use one of "
                         f"{sorted(str(d) for d in _IDX_CODES)}")
    if not 1 <= arr.ndim <= 255 or max(arr.shape) >= 2**32:
        raise InputError(f"idx files hold 1 to 255 dimensions each below 2**32, got shape {arr.shape}")
    code = _IDX_CODES[native]
    head = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    data = np.ascontiguousarray(arr, dtype=_IDX_TYPES[code])
    body = memoryview(data.reshape(-1)).cast("B") if data.size else b""
    if str(path).endswith(".gz"):
        # mtime=0 keeps the output byte-identical for identical arrays.
        atomic_write_bytes(path, [gzip.compress(head + bytes(body), compresslevel=6, mtime=0)])
    else:
        atomic_write_bytes(path, [head, body])


# ------------------------------------------------------------------------------------ npy / npz


def read_npy(path, mmap: bool = False) -> np.ndarray:
    """Read one ``.npy`` array without unpickling; read-only memmap when ``mmap``."""
    path = _existing(path)
    try:
        arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{path}: not a readable .npy file without pickling ({exc})") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise FormatError(f"{path} is an .npz archive, not a single .npy array")
    return arr


def read_npz(path) -> dict[str, np.ndarray]:
    """Read every array of an ``.npz`` archive into memory without unpickling: {name: array}."""
    path = _existing(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise FormatError(f"{path}: not a readable .npz archive without pickling ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise FormatError(f"{path} is a single .npy array, not an .npz archive")
    try:
        with archive:
            return {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise FormatError(f"{path}: not a readable .npz archive without pickling ({exc})") from None


# --------------------------------------------------------------------------- ann-benchmarks HDF5


def read_ann_hdf5(path) -> dict:
    """Read an ann-benchmarks HDF5 file into memory.

    Returns {"train": (n, d), "test": (nq, d), "neighbors": (nq, k), "distances": (nq, k),
    "distance": str}: the arrays in their stored dtypes (float32, float32, int32, float32 in
    ann-benchmarks files) and the file's metric attribute ("euclidean" when absent).
    """
    import h5py

    path = _existing(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [key for key in _ANN_KEYS if key not in f]
            if missing:
                raise FormatError(f"{path}: not an ann-benchmarks file, missing dataset(s) {missing}")
            out = {key: np.asarray(f[key][()]) for key in _ANN_KEYS}
            distance = f.attrs.get("distance", "euclidean")
    except OSError as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from None
    out["distance"] = distance.decode() if isinstance(distance, bytes) else str(distance)
    for key in _ANN_KEYS:
        if out[key].ndim != 2 or not np.issubdtype(out[key].dtype, np.number):
            raise FormatError(f"{path}: dataset {key!r} has shape {out[key].shape} and dtype "
                              f"{out[key].dtype}; expected a numeric 2-D array")
    if out["train"].shape[1] != out["test"].shape[1]:
        raise FormatError(f"{path}: train has dimension {out['train'].shape[1]}, test {out['test'].shape[1]}")
    if out["neighbors"].shape != out["distances"].shape or out["neighbors"].shape[0] != out["test"].shape[0]:
        raise FormatError(f"{path}: neighbors {out['neighbors'].shape} and distances "
                          f"{out['distances'].shape} do not match the {out['test'].shape[0]} test vectors")
    return out


def write_ann_hdf5(path, train, test, neighbors, distances, distance: str = "euclidean") -> None:
    """Write an ann-benchmarks HDF5 file atomically.

    train (n, d) and test (nq, d) are stored as float32, neighbors (nq, k) as int32 and distances
    (nq, k) as float32, with the attribute ``distance`` (one of ``ANN_DISTANCES``).
    """
    import h5py

    if distance not in ANN_DISTANCES:
        raise InputError(f"distance must be one of {ANN_DISTANCES}, got {distance!r}")
    train = _as_matrix(train, np.float32, "train").astype(np.float32, copy=False)
    test = _as_matrix(test, np.float32, "test").astype(np.float32, copy=False)
    neighbors = _as_matrix(neighbors, np.int32, "neighbors").astype(np.int32, copy=False)
    distances = _as_matrix(distances, np.float32, "distances").astype(np.float32, copy=False)
    if train.shape[1] != test.shape[1]:
        raise InputError(f"train has dimension {train.shape[1]}, test {test.shape[1]}")
    if neighbors.shape != distances.shape or neighbors.shape[0] != test.shape[0]:
        raise InputError(f"neighbors {neighbors.shape} and distances {distances.shape} must both be "
                         f"({test.shape[0]}, k)")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["distance"] = distance
        f.attrs["point_type"] = "float"
        for key, arr in zip(_ANN_KEYS, (train, test, neighbors, distances)):
            f.create_dataset(key, data=arr)
