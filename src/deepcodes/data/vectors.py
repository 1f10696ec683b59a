"""Open anyone's vector file the same way, however large: :func:`open_vectors`.

Supported, chosen by suffix:

* ``.npy`` (memory-mapped, never unpickled);
* TEXMEX ``.fvecs`` / ``.bvecs`` / ``.ivecs`` (memory-mapped; a row header that changes mid-file is a
  :class:`~deepcodes.errors.FormatError`);
* ann-benchmarks ``.hdf5`` / ``.h5``: ``FILE.hdf5:name`` picks a dataset, otherwise the caller's
  default (``train`` for vectors to index, ``test`` for queries, ``neighbors`` for ground truth).
  Contiguous, uncompressed datasets (what ann-benchmarks and h5py write by default) are
  memory-mapped; chunked or compressed ones are read through h5py a slice at a time;
* delimited text (``.txt``, ``.tsv``, ``.csv``, ``.vec``, ``.gz`` of these): one row per line, an
  optional string key then the numbers, separated by whitespace, tabs or commas (GloVe's format;
  fastText/word2vec's ``n d`` first line is skipped). Keys are kept in :attr:`Vectors.keys`. The
  text is parsed once into float32 (in memory, or in an anonymous temporary file when it would pass
  256 MiB), never into Python objects per value;
* MNIST idx (``-ubyte``, ``.idx``, gzipped too), images flattened to rows.

Reading never copies a whole file: :meth:`Vectors.batches` streams float32 blocks and
:meth:`Vectors.sample` draws a seeded sample, so training and adding work on files larger than
memory. Row labels and ids (``.npy`` or one value a line in text) come from :func:`read_labels` and
:func:`read_ids`; ground-truth neighbour ids from :func:`read_neighbors`.
"""
from __future__ import annotations

import gzip
import io
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FormatError, InputError
from ..validation import check_int, rng_from
from .formats import read_bvecs, read_fvecs, read_idx, read_ivecs, read_npy

__all__ = ["Vectors", "open_vectors", "split_dataset", "read_ids", "read_labels", "read_neighbors",
           "VECTOR_FILE_TYPES"]

HDF5_SUFFIXES = (".hdf5", ".h5")
TEXT_SUFFIXES = (".txt", ".tsv", ".csv", ".vec", ".txt.gz", ".tsv.gz", ".csv.gz", ".vec.gz")
IDX_SUFFIXES = (".idx", ".idx.gz", "-ubyte", "-ubyte.gz")
VECTOR_FILE_TYPES = (".npy", ".fvecs", ".bvecs", ".ivecs", *HDF5_SUFFIXES, *TEXT_SUFFIXES, *IDX_SUFFIXES)

_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Parsed text larger than this goes to an anonymous temporary file instead of memory.
_TEXT_IN_MEMORY = 256 << 20
_TEXT_LINES = 1 << 14  # lines parsed per block


@dataclass(eq=False)
class Vectors:
    """A matrix of vectors (n, d) in a file, read lazily.

    Attributes
    ----------
    name : what error messages and metadata call it, e.g. ``"glove.txt"`` or ``"sift.hdf5:train"``.
    path : the file.
    rows : the stored rows, indexable by slices and sorted integer arrays (a memmap, an in-memory
        array or an h5py dataset), in the file's dtype.
    keys : (n,) str array of the rows' keys (text files with keys), else None.
    """

    name: str
    path: Path
    rows: object = field(repr=False)
    keys: np.ndarray | None = field(default=None, repr=False)
    _closer: object = field(default=None, repr=False)

    def __repr__(self) -> str:
        keyed = ", keyed" if self.keys is not None else ""
        return f"Vectors({self.name!r}, shape={self.shape}, dtype={self.dtype}{keyed})"

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(int(s) for s in self.rows.shape)

    @property
    def n(self) -> int:
        return self.shape[0]

    @property
    def d(self) -> int:
        return self.shape[1]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.rows.dtype)

    def __len__(self) -> int:
        return self.n

    def read(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Rows ``start:stop`` as a C-contiguous float32 array (n, d), checked finite and within float32."""
        return self._float32(self.rows[start:stop], start)

    def take(self, rows) -> np.ndarray:
        """The given rows (an increasing int array) as float32 (len(rows), d)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows[0] < 0 or rows[-1] >= self.n or (np.diff(rows) <= 0).any()):
            raise InputError(f"rows of {self.name} must be increasing and within [0, {self.n})")
        return self._float32(self.rows[rows], None)

    def batches(self, batch_size: int = 65536, *, progress: bool = False, desc: str | None = None):
        """Yield ``(start, block)``: consecutive float32 blocks of at most ``batch_size`` rows."""
        batch_size = check_int(batch_size, "batch_size", low=1)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=self.n, desc=desc or self.name, unit="vec", unit_scale=True)
        try:
            for start in range(0, self.n, batch_size):
                block = self.read(start, start + batch_size)
                yield start, block
                if bar is not None:
                    bar.update(block.shape[0])
        finally:
            if bar is not None:
                bar.close()

    def sample(self, max_rows: int | None, random_state=0) -> tuple[np.ndarray, np.ndarray]:
        """At most ``max_rows`` rows drawn without replacement by ``default_rng(random_state)``, in
        file order: ``(float32 (m, d), row numbers (m,) int64)``. All rows when ``max_rows`` is None
        or at least n."""
        if max_rows is None or max_rows >= self.n:
            return self.read(), np.arange(self.n, dtype=np.int64)
        max_rows = check_int(max_rows, "max_train", low=1)
        rows = np.sort(rng_from(random_state).choice(self.n, max_rows, replace=False))
        return self.take(rows), rows

    def _float32(self, block, start: int | None) -> np.ndarray:
        block = np.asarray(block)
        if np.issubdtype(block.dtype, np.floating):
            ok = _within_float32(block)
            if not ok.all():
                where = "" if start is None else f" (row {start + int(np.flatnonzero(~ok.all(axis=1))[0])})"
                raise InputError(f"{self.name} holds NaN, inf or values beyond float32's range{where}")
        return np.ascontiguousarray(block, dtype=np.float32)

    def close(self) -> None:
        """Release the file (h5py handles); the arrays already returned stay valid."""
        if self._closer is not None:
            self._closer.close()
            self._closer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _within_float32(values: np.ndarray) -> np.ndarray:
    """True where a value is finite and representable as float32 (NaN compares False)."""
    return np.abs(values) <= _FLOAT32_MAX


def split_dataset(spec) -> tuple[Path, str | None]:
    """``"FILE.hdf5:name"`` -> (Path("FILE.hdf5"), "name"); any other path -> (path, None)."""
    text = str(spec)
    path = Path(text)
    if not path.exists() and ":" in text:
        head, _, tail = text.rpartition(":")
        if head.lower().endswith(HDF5_SUFFIXES) and tail:
            return Path(head), tail
    return path, None


def open_vectors(path, *, default_dataset: str = "train", keys: bool | None = None) -> Vectors:
    """Open the vectors (n, d) in ``path`` for lazy reading (see the module docstring for formats).

    ``default_dataset`` is the HDF5 dataset read when ``path`` names none (``FILE.hdf5:name``).
    ``keys`` (text files): True if every row starts with a key, False if none does, None to decide
    from the first row (a key is a first field that is not a number). Every defect raises
    :class:`~deepcodes.errors.FormatError` naming the file.
    """
    path, dataset = split_dataset(path)
    name = path.name.lower()
    if not path.is_file():
        raise FormatError(f"no such file: {path}")
    if name.endswith(".fvecs"):
        return _checked(Vectors(path.name, path, read_fvecs(path)))
    if name.endswith(".bvecs"):
        return _checked(Vectors(path.name, path, read_bvecs(path)))
    if name.endswith(".ivecs"):
        return _checked(Vectors(path.name, path, read_ivecs(path)))
    if name.endswith(".npy"):
        return _checked(Vectors(path.name, path, read_npy(path, mmap=True)))
    if name.endswith(HDF5_SUFFIXES):
        return _checked(_open_hdf5(path, dataset or default_dataset))
    if name.endswith(TEXT_SUFFIXES):
        return _checked(_read_text(path, keys))
    if name.endswith(IDX_SUFFIXES):
        arr = read_idx(path)
        return _checked(Vectors(path.name, path, arr.reshape(arr.shape[0], -1) if arr.ndim > 2 else arr))
    raise FormatError(f"{path}: unknown vector file type; supported: {', '.join(VECTOR_FILE_TYPES)} "
                      f"(and FILE.hdf5:dataset)")


def _checked(vectors: Vectors) -> Vectors:
    rows = vectors.rows
    dtype = np.dtype(rows.dtype)
    if len(rows.shape) != 2:
        vectors.close()
        raise FormatError(f"{vectors.name} holds an array of shape {tuple(rows.shape)}, not vectors (n, d)")
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        vectors.close()
        raise FormatError(f"{vectors.name} holds {dtype} values, not real numbers")
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        vectors.close()
        raise FormatError(f"{vectors.name} is empty (shape {tuple(rows.shape)})")
    return vectors


# ------------------------------------------------------------------------------------------ HDF5


def _hdf5_dataset(f, path: Path, dataset: str):
    """Dataset ``dataset`` of the open HDF5 file ``f``; a FormatError listing what it holds if absent."""
    import h5py

    if dataset not in f or not isinstance(f[dataset], h5py.Dataset):
        held = sorted(k for k in f if isinstance(f[k], h5py.Dataset))
        raise FormatError(f"{path} has no dataset {dataset!r}; it holds: {', '.join(held) or 'none'} "
                          f"(pick one with {path.name}:NAME)")
    return f[dataset]


def _open_hdf5(path: Path, dataset: str) -> Vectors:
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from None
    try:
        ds = _hdf5_dataset(f, path, dataset)
        name = f"{path.name}:{dataset}"
        offset = ds.id.get_offset()
        if ds.chunks is None and ds.compression is None and offset is not None and len(ds.shape) == 2 \
                and ds.dtype.kind in "uif":
            # Contiguous storage: map the bytes directly, no handle kept open.
            rows = np.memmap(path, dtype=ds.dtype, mode="r", offset=offset, shape=ds.shape)
            f.close()
            return Vectors(name, path, rows)
        return Vectors(name, path, ds, _closer=f)
    except BaseException:
        f.close()
        raise


# ------------------------------------------------------------------------------------------ text


def _open_text(path: Path):
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def _text_lines(path: Path):
    """Yield (line number, stripped line) of the non-blank lines."""
    try:
        with _open_text(path) as f:
            for number, line in enumerate(f, 1):
                line = line.strip()
                if line:
                    yield number, line
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:
        raise FormatError(f"{path}: unreadable ({exc})") from None


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


class _TextLayout:
    """How the rows of a text file split: delimiter, key column, dimension, header line."""

    def __init__(self, path: Path, first: list[tuple[int, str]], keys: bool | None):
        self.path = path
        line = first[0][1]
        self.sep = "," if "," in line else ("\t" if "\t" in line else None)
        fields = self.split(line)
        self.header = (len(fields) == 2 and all(f.isdigit() for f in fields) and len(first) > 1
                       and len(self.split(first[1][1])) > 2)
        if self.header:
            line = first[1][1]
            fields = self.split(line)
        self.keys = (not _is_number(fields[0])) if keys is None else bool(keys)
        self.d = len(fields) - int(self.keys)
        if self.d < 1:
            raise FormatError(f"{path}: line {first[1 if self.header else 0][0]} has no numbers")

    def split(self, line: str) -> list[str]:
        return [f.strip() for f in line.split(self.sep)] if self.sep else line.split()

    def parse(self, block: list[tuple[int, str]]) -> tuple[np.ndarray, list[str] | None]:
        """Parse a block of lines to float32 (len(block), d) and their keys."""
        numbers, keys = [], [] if self.keys else None
        width = self.d + int(self.keys)
        for number, line in block:
            fields = self.split(line)
            if self.keys and self.sep is None and len(fields) > width:
                # A key with spaces in it (GloVe 840B has a few): the numbers are the last d fields.
                fields = [" ".join(fields[:len(fields) - self.d]), *fields[len(fields) - self.d:]]
            if len(fields) != width:
                raise FormatError(f"{self.path}: line {number} has {len(fields)} fields, the first row "
                                  f"{width}; every row must be {'a key and ' if self.keys else ''}{self.d} numbers")
            if self.keys:
                keys.append(fields[0])
                fields = fields[1:]
            numbers.extend(fields)
        try:
            values = np.array(numbers, dtype=np.float64)
        except ValueError:
            for row, (number, _) in enumerate(block):
                bad = next((f for f in numbers[row * self.d:(row + 1) * self.d] if not _is_number(f)), None)
                if bad is not None:
                    raise FormatError(f"{self.path}: line {number}: {bad!r} is not a number") from None
            raise
        return values.reshape(len(block), self.d), keys


def _read_text(path: Path, keys: bool | None) -> Vectors:
    lines = _text_lines(path)
    first = []
    for item in lines:
        first.append(item)
        if len(first) == 2:
            break
    if not first:
        raise FormatError(f"{path} is empty: no rows")
    layout = _TextLayout(path, first, keys)
    # Count rows first (one cheap pass) so the float32 matrix is allocated once.
    n = sum(1 for _ in _text_lines(path)) - int(layout.header)
    nbytes = n * layout.d * 4
    if nbytes > _TEXT_IN_MEMORY:
        store = tempfile.TemporaryFile(prefix="deepcodes-text-")
        out = np.memmap(store, dtype=np.float32, mode="w+", shape=(n, layout.d))
    else:
        store, out = None, np.empty((n, layout.d), dtype=np.float32)
    all_keys = [] if layout.keys else None
    row = 0
    block = []
    lines = _text_lines(path)
    if layout.header:
        next(lines)
    for item in lines:
        block.append(item)
        if len(block) == _TEXT_LINES:
            row = _store_block(layout, block, out, row, all_keys, path)
            block = []
    if block:
        row = _store_block(layout, block, out, row, all_keys, path)
    key_array = None
    if all_keys is not None:
        key_array = np.array(all_keys, dtype=str)
    return Vectors(path.name, path, out, keys=key_array, _closer=store)


def _store_block(layout, block, out, row, all_keys, path) -> int:
    values, keys = layout.parse(block)
    ok = _within_float32(values)
    if not ok.all():
        bad = block[int(np.flatnonzero(~ok.all(axis=1))[0])][0]
        raise FormatError(f"{path}: line {bad} holds NaN, inf or a value beyond float32's range")
    out[row:row + len(block)] = values
    if all_keys is not None:
        all_keys.extend(keys)
    return row + len(block)


# ------------------------------------------------------------------------------ ids, labels, gt


def _read_column(spec, what: str, default_dataset: str) -> tuple[np.ndarray, str]:
    """A 1-D array from ``.npy``, HDF5 or one value a line of text: (values, display name)."""
    path, dataset = split_dataset(spec)
    name = path.name.lower()
    if not path.is_file():
        raise FormatError(f"no such file: {path}")
    if name.endswith(".npy"):
        arr = np.asarray(read_npy(path))
    elif name.endswith(HDF5_SUFFIXES):
        import h5py

        try:
            with h5py.File(path, "r") as f:
                arr = np.asarray(_hdf5_dataset(f, path, dataset or default_dataset)[()])
        except OSError as exc:
            raise FormatError(f"{path}: not a readable HDF5 file ({exc})") from None
    elif name.endswith(".ivecs"):
        arr = np.asarray(read_ivecs(path, mmap=False))
    else:
        values = [line for _, line in _text_lines(path)]
        if not values:
            raise FormatError(f"{path} is empty: no {what}")
        arr = np.array(values, dtype=str)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise FormatError(f"{path}: {what} must be one value a row, got an array of shape {arr.shape}")
    if arr.shape[0] == 0:
        raise FormatError(f"{path} is empty: no {what}")
    return arr, path.name


def _integers(arr: np.ndarray, where: str, what: str) -> np.ndarray:
    if arr.dtype.kind in "US":
        try:
            return np.array([int(v) for v in arr], dtype=np.int64)
        except (ValueError, OverflowError):
            bad = next(v for v in arr if not _is_int(v))
            raise InputError(f"{where}: {what} must be integers, got {str(bad)!r}") from None
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise InputError(f"{where}: {what} beyond the int64 range")
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        whole = np.isfinite(arr) & (arr == np.round(arr))
        if not whole.all():
            raise InputError(f"{where}: {what} must be integers, got {arr[~whole][0].item()!r}")
        return arr.astype(np.int64)
    raise InputError(f"{where}: {what} must be integers, got dtype {arr.dtype}")


def _is_int(text) -> bool:
    try:
        int(text)
    except (ValueError, OverflowError):
        return False
    return True


def read_ids(spec, n: int | None = None) -> np.ndarray:
    """Caller ids (n,) int64 from ``.npy`` or text (one integer a line), checked: integers, >= 0,
    no duplicate, and ``n`` of them when ``n`` is given (the rows they name)."""
    arr, where = _read_column(spec, "ids", "ids")
    ids = _integers(arr, where, "ids")
    if n is not None and ids.shape[0] != n:
        raise InputError(f"{where} holds {ids.shape[0]} ids for {n} vectors")
    negative = np.flatnonzero(ids < 0)
    if negative.size:
        raise InputError(f"{where}: id {int(ids[negative[0]])} (row {int(negative[0])}) is negative; ids must be >= 0")
    order = np.argsort(ids, kind="stable")
    dup = np.flatnonzero(ids[order][1:] == ids[order][:-1])
    if dup.size:
        raise InputError(f"{where}: id {int(ids[order][dup[0]])} appears more than once")
    return ids


def read_labels(spec, n: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Class labels from ``.npy`` or text (one label a line): ``(labels (n,) int64, classes)``.

    Integer labels are returned as they are (``classes`` None); any other labels (names such as
    ``cat``) become their index in ``classes``, the sorted distinct names.
    """
    arr, where = _read_column(spec, "labels", "labels")
    if n is not None and arr.shape[0] != n:
        raise InputError(f"{where} holds {arr.shape[0]} labels for {n} training vectors")
    if arr.dtype.kind in "US":
        if all(_is_int(v) for v in arr):
            return np.array([int(v) for v in arr], dtype=np.int64), None
        classes, labels = np.unique(arr, return_inverse=True)
        return labels.astype(np.int64), classes
    return _integers(arr, where, "labels"), None


def read_neighbors(spec, n_queries: int | None = None) -> np.ndarray:
    """Ground-truth neighbour ids (nq, k) int64 from ``.ivecs``, ``.npy`` or HDF5 (``neighbors`` by
    default), checked against ``n_queries``."""
    path, _ = split_dataset(spec)
    if path.name.lower().endswith((".fvecs", ".bvecs")) or path.name.lower().endswith(TEXT_SUFFIXES):
        raise FormatError(f"{path}: ground truth must be integer ids in .ivecs, .npy or HDF5")
    with open_vectors(spec, default_dataset="neighbors") as v:
        arr = np.asarray(v.rows[:])
        name = v.name
    gt = _integers(arr.reshape(-1), name, "neighbour ids").reshape(arr.shape)
    if n_queries is not None and gt.shape[0] != n_queries:
        raise InputError(f"{name} holds ground truth for {gt.shape[0]} queries, the queries file has {n_queries}")
    if gt.size and gt.min() < -1:
        raise InputError(f"{name}: neighbour id {int(gt.min())} is negative")
    return gt
