"""One safe, versioned, checksummed file format for every coder and index.

A deepcodes file is a safetensors file: the arrays are its tensors and its string metadata holds one
JSON document under the key ``"deepcodes"`` and that document's SHA-256 under ``"deepcodes.sha256"``::

    {"format": "deepcodes", "format_version": 2, "class": "ITQ", "params": {...},
     "meta": {"protocol": "mnist-unsup", ...},
     "arrays": {"mean_": {"dtype": "F32", "shape": [784], "sha256": "..."}, ...}}

Guarantees:

* **Nothing executed.** Loading parses JSON and raw little-endian arrays only; nothing is ever
  unpickled, and only the module :data:`CLASS_MODULES` names for the file's class is imported.
* **Everything checked.** The document's checksum covers the class, parameters, meta and every
  array's dtype, shape and SHA-256; the safetensors header must agree with it and its arrays must
  tile the data exactly. Every array's bytes are hashed on load (``load(path)``, ``loads``); with
  ``load(path, mmap=True)`` the arrays stay on disk and are hashed only when asked
  (``verify=True``, :func:`verify`, ``deepcodes verify FILE``). Then each class's ``_from_state``
  checks every array's shape, dtype and range against the parameters before any kernel sees it.
  Any defect is a :class:`~deepcodes.errors.FormatError`.
* **Nothing lost.** A save writes a temporary file beside the target (named
  ``.NAME.deepcodes-HOST-PID-RANDOM.tmp``, HOST the first 8 hex digits of the SHA-256 of the host
  name), fsyncs it, renames it over the target and fsyncs the
  folder: a reader sees the old file or the new one, never a mix, and a failed or killed save
  leaves the previous file intact. Temporary files of killed saves are removed by the next save to
  the same path. A save keeps an existing file's permission bits and refuses a target that is not
  a regular file (a directory, FIFO, device or socket) or is a symbolic link (we never write
  through a link: the file it points to may be shared or read-only, e.g. a git-annex object).
* **Old files.** Format version 1 files (no checksums) still load, with a
  :class:`~deepcodes.errors.FormatWarning`; saving them again writes version 2.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import socket
import stat
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DeepcodesError, FormatError, FormatWarning, InputError
from .validation import first_line

FORMAT_NAME = "deepcodes"
FORMAT_VERSION = 2
_UNCHECKED_VERSION = 1  # read for compatibility: no checksums
_META_KEY = "deepcodes"
_SUM_KEY = "deepcodes.sha256"
_MAX_HEADER = 100 * 1024 * 1024
_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U64": np.uint64, "U32": np.uint32, "U16": np.uint16, "U8": np.uint8, "BOOL": np.bool_,
}
_CODES = {np.dtype(v): k for k, v in _DTYPES.items()}

_REGISTRY: dict[str, type] = {}

# The module that defines each class a file may name. Loading imports only that module, so an ITQ
# file loads without torch and a Hamming index without the inverted-file kernels. A new
# persistable class adds one line here besides its ``@register``.
CLASS_MODULES: dict[str, str] = {
    "LSH": "deepcodes.coders.lsh",
    "ITQ": "deepcodes.coders.itq",
    "PQ": "deepcodes.coders.pq",
    "OPQ": "deepcodes.coders.pq",
    "RQ": "deepcodes.coders.rq",
    "UHBDNN": "deepcodes.coders.bdnn",
    "SHBDNN": "deepcodes.coders.bdnn",
    "DeepHash": "deepcodes.coders.deephash",
    "GSLQuantizer": "deepcodes.coders.gsl",
    "DSH": "deepcodes.coders.dsh",
    "DNNH": "deepcodes.coders.dnnh",
    "SuBiC": "deepcodes.coders.subic",
    "PCA": "deepcodes.coders.fronts",
    "OPQRotation": "deepcodes.coders.fronts",
    "GSLEmbedding": "deepcodes.coders.fronts",
    "CodeLayer": "deepcodes.coders.fronts",
    "HammingIndex": "deepcodes.index.hamming",
    "MultiIndexHashing": "deepcodes.index.mih",
    "ADCIndex": "deepcodes.index.adc",
    "FastScanIndex": "deepcodes.index.fastscan",
    "IVFADCIndex": "deepcodes.index.ivfadc",
    "VLQIndex": "deepcodes.index.vlq",
    "VLQFastScanIndex": "deepcodes.index.vlq_fastscan",
}


def register(cls):
    """Class decorator: make ``cls`` loadable by :func:`load` under its class name.

    The class implements ``_get_state() -> (params: dict, arrays: dict[str, ndarray])`` and the
    classmethod ``_from_state(params, arrays) -> instance``, which must check every parameter and
    array it is given (a file may be hostile) and raise FormatError on any disagreement; its name
    is in :data:`CLASS_MODULES`.
    """
    if CLASS_MODULES.get(cls.__name__) != cls.__module__:
        raise TypeError(f"{cls.__module__}.{cls.__name__} must be listed in persist.CLASS_MODULES to be loadable")
    _REGISTRY[cls.__name__] = cls
    return cls


def class_named(name) -> type:
    """The registered class a file calls ``name`` (importing its module on first use)."""
    if not isinstance(name, str) or name not in CLASS_MODULES:
        raise FormatError(f"unknown class {name!r} (not a deepcodes coder or index)")
    if name not in _REGISTRY:
        import importlib

        importlib.import_module(CLASS_MODULES[name])
    return _REGISTRY[name]


# ---- writing -----------------------------------------------------------------------------------
def check_save_target(path: str | os.PathLike) -> os.stat_result | None:
    """Raise InputError unless ``path`` may be replaced by a save: absent, or a regular file that is
    not a symbolic link, in a folder (or a folder still to be created). Returns its ``lstat`` (None
    when absent). Cheap: call it before long work whose result goes to ``path``."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        raise InputError(f"cannot save to {path}: a parent of it is not a folder") from None
    if st is not None:
        if stat.S_ISLNK(st.st_mode):
            raise InputError(f"refusing to save to {path}: it is a symbolic link (to {os.path.realpath(path)}); "
                             "save to the target itself or remove the link")
        if stat.S_ISDIR(st.st_mode):
            raise InputError(f"cannot save to {path}: it is a folder; give a file name")
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"refusing to save to {path}: it is not a regular file (a FIFO, device or socket)")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"cannot save to {path}: {parent} is not a folder")
            break
    return st


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_ACTIVE_TEMPS: set[str] = set()


def _temp_head(path: Path) -> str:
    """What the names of our temporary files for ``path`` on this host start with (PID follows)."""
    return f".{path.name}.deepcodes-{_HOST}-"


def _remove_stale_temps(path: Path) -> None:
    """Remove temporary files that saves to ``path`` on this host left behind when their process
    died (killed mid-save). A live process's temporary file is never touched."""
    head = _temp_head(path)
    for tmp in glob.glob(glob.escape(str(path.parent / head)) + "*-*.tmp"):
        pid_text = Path(tmp).name[len(head):].split("-", 1)[0]
        if not pid_text.isdigit() or tmp in _ACTIVE_TEMPS:
            continue
        pid = int(pid_text)
        if pid != os.getpid():
            try:
                os.kill(pid, 0)
                continue            # that process still runs: its save may be in progress
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _new_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o644 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On any error the temporary file is removed and ``path`` keeps its previous content. The target
    must pass :func:`check_save_target`; an existing file's permission bits are kept (a new file gets
    0644 less the umask). Use it for writers that want a file name (h5py);
    :func:`atomic_write_bytes` covers byte streams.
    """
    path = Path(path)
    st = check_save_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_head(path)}{os.getpid()}-", suffix=".tmp", dir=path.parent)
    os.close(fd)
    _ACTIVE_TEMPS.add(tmp)
    try:
        os.chmod(tmp, stat.S_IMODE(st.st_mode) if st is not None else _new_file_mode())
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        check_save_target(path)     # the target may have changed while we wrote
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    finally:
        _ACTIVE_TEMPS.discard(tmp)
    try:
        dirfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """fsync the folder ``folder``, so that a rename or a new file in it survives a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of the file at ``path``, read in 4 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, chunks) -> None:
    """Write ``chunks`` (an iterable of bytes-like objects) to ``path`` atomically (temp, fsync, rename)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save one array as ``.npy`` atomically (no pickling)."""
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    atomic_write_bytes(path, [buf.getbuffer()])


def _byte_view(arr: np.ndarray) -> memoryview:
    return memoryview(arr.reshape(-1)).cast("B") if arr.nbytes else memoryview(b"")


def _chunks(arrays: dict[str, np.ndarray], document: dict[str, Any]):
    """The byte chunks of a safetensors file holding ``arrays`` and the JSON ``document``, whose
    ``"arrays"`` entry is set to each array's dtype, shape and SHA-256.

    Arrays are streamed from their own buffers (memory-mapped ones included) without a second copy,
    widest dtype first: the data starts 8-byte aligned, so every array is aligned to its item size.
    """
    ordered = []
    records = {}
    if not all(isinstance(name, str) for name in arrays):
        raise FormatError(f"array names must be strings, got {sorted(map(repr, arrays))}")
    widest_first = sorted(arrays, key=lambda n: (-np.asarray(arrays[n]).dtype.itemsize, n))
    for name in widest_first:
        arr = np.ascontiguousarray(arrays[name])
        if arr.dtype not in _CODES:
            raise FormatError(f"array {name!r} has dtype {arr.dtype}, which the file format cannot store")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        records[name] = {"dtype": _CODES[arr.dtype], "shape": [int(s) for s in arr.shape],
                         "sha256": hashlib.sha256(_byte_view(arr)).hexdigest()}
        ordered.append(arr)
    document = dict(document, arrays=records)
    text = json.dumps(document, sort_keys=True)
    header: dict[str, Any] = {"__metadata__": {_META_KEY: text, _SUM_KEY: _text_sum(text)}}
    offset = 0
    for name, arr in zip(records, ordered):
        header[name] = {"dtype": records[name]["dtype"], "shape": records[name]["shape"],
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    yield struct.pack("<Q", len(head))
    yield head
    for arr in ordered:
        if arr.nbytes:
            yield _byte_view(arr)


def _text_sum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], document: dict[str, Any]) -> None:
    """Write ``arrays`` and the JSON ``document`` (its ``"arrays"`` entry is filled in with their
    checksums) as a safetensors file, atomically."""
    chunks = _chunks(arrays, document)
    # Start the generator: dtype errors and checksums come before the target is touched.
    first = next(chunks)
    atomic_write_bytes(path, _prepend(first, chunks))


def _prepend(first, rest):
    yield first
    yield from rest


def pack_arrays(arrays: dict[str, np.ndarray], document: dict[str, Any]) -> bytes:
    """The bytes :func:`write_arrays` would write for ``arrays`` and ``document``."""
    return b"".join(bytes(c) for c in _chunks(arrays, document))


# ---- reading -----------------------------------------------------------------------------------
def _json(data, where: str, what: str):
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and integer literals too long to convert
        raise FormatError(f"{where}: unreadable {what} ({type(exc).__name__}: {str(exc)[:200]})") from None


def _parse(buf, size: int, where: str, *, verify: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and document of the safetensors bytes ``buf`` of ``size`` bytes: a bytearray (the
    arrays are writable views of it, copied where a foreign file leaves one unaligned) or a
    read-only mmap (read-only views). With ``verify`` every array's bytes are checked against
    their SHA-256."""
    if size < 8:
        raise FormatError(f"{where} is not a deepcodes file (too short: {size} bytes)")
    (n_head,) = struct.unpack("<Q", bytes(buf[:8]))
    if n_head > _MAX_HEADER or 8 + n_head > size:
        raise FormatError(f"{where} is not a deepcodes file (bad header length; truncated or foreign)")
    try:
        header = json.loads(bytes(buf[8:8 + n_head]))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{where} is not a deepcodes file (unreadable header: {str(exc)[:200]})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{where} is not a deepcodes file (header is not an object)")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not isinstance(meta.get(_META_KEY), str):
        raise FormatError(f"{where} is a safetensors file but not one written by deepcodes (no '{_META_KEY}' metadata)")
    text = meta[_META_KEY]
    document = _json(text, where, "deepcodes metadata")
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: metadata does not describe a deepcodes object")
    version = document.get("format_version")
    if type(version) is not int or version not in (_UNCHECKED_VERSION, FORMAT_VERSION):
        raise FormatError(f"{where}: format version {version!r} is not supported "
                          f"(this deepcodes reads versions {_UNCHECKED_VERSION} and {FORMAT_VERSION})")
    if version == FORMAT_VERSION:
        if meta.get(_SUM_KEY) != _text_sum(text):
            raise FormatError(f"{where}: the metadata does not match its checksum (the file is corrupt or was edited)")
        records = document.get("arrays")
        if not isinstance(records, dict) or not all(isinstance(r, dict) for r in records.values()):
            raise FormatError(f"{where}: corrupt array table in the metadata")
        if set(records) != set(header):
            raise FormatError(f"{where}: the arrays in the file ({sorted(header)}) are not the ones its metadata "
                              f"lists ({sorted(records)})")
    else:
        warnings.warn(f"{where} is in format version 1, which has no checksums: its content cannot be "
                      "verified (save it again to add them)", FormatWarning, stacklevel=4)
        names = document.get("arrays", [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise FormatError(f"{where}: corrupt array list in the metadata")
        missing = set(names) - set(header)
        if missing:
            raise FormatError(f"{where}: arrays missing from the file: {sorted(missing)}")
        records = None
    base = 8 + n_head
    layout = []
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(info["shape"])
            start, end = info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{where}: corrupt entry for array {name!r}") from None
        if not all(type(v) is int for v in (*shape, start, end)) or any(s < 0 for s in shape):
            raise FormatError(f"{where}: corrupt shape or offsets for array {name!r}")
        if records is not None:
            record = records[name]
            if record.get("dtype") != info["dtype"] or record.get("shape") != list(shape):
                raise FormatError(f"{where}: array {name!r} has dtype/shape {info['dtype']} {list(shape)} in the "
                                  f"header but {record.get('dtype')} {record.get('shape')} in the metadata")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - start != nbytes:
            raise FormatError(f"{where}: array {name!r} is truncated or inconsistent with its header")
        layout.append((start, end, name, dtype, shape))
    # The arrays must tile the data exactly: no overlap, no gap, nothing after them.
    position = 0
    for start, end, name, _, _ in sorted(layout):
        if start != position:
            raise FormatError(f"{where}: array {name!r} overlaps another or leaves a gap (corrupt offsets)")
        position = end
    if base + position != size:
        raise FormatError(f"{where}: the file is {'truncated' if base + position > size else 'longer than its arrays'} "
                          f"({size} bytes, the header describes {base + position})")
    arrays: dict[str, np.ndarray] = {}
    view = memoryview(buf)
    for start, end, name, dtype, shape in layout:
        if verify and records is not None:
            if hashlib.sha256(view[base + start:base + end]).hexdigest() != records[name].get("sha256"):
                raise FormatError(f"{where}: array {name!r} does not match its checksum (the file is corrupt)")
        arr = np.frombuffer(buf, dtype=dtype, count=(end - start) // dtype.itemsize, offset=base + start).reshape(shape)
        arrays[name] = arr.copy() if isinstance(buf, bytearray) and not arr.flags.aligned else arr
    return arrays, document


def _open_regular(path: Path):
    """A binary file object for the regular file ``path`` (a FIFO or device is refused without blocking)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError):
        raise FormatError(f"no such model/index file: {path}") from None
    except IsADirectoryError:
        raise FormatError(f"{path} is a folder, not a model/index file") from None
    except PermissionError:
        raise FormatError(f"cannot read {path}: permission denied") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a FIFO, device or socket)"
        raise FormatError(f"{path} is {kind}, not a model/index file")
    return os.fdopen(fd, "rb")


def read_arrays(path: str | os.PathLike, *, mmap: bool = False,
                verify: bool | None = None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a deepcodes/safetensors file: ``(arrays, document)``. Raises FormatError on any defect.

    Header and data come through one open file descriptor, so a writer replacing the file at the
    same time (by rename) cannot give one version's header with the other's data. With ``mmap=True``
    the arrays are read-only views of a memory map of that descriptor. ``verify`` (default: not
    ``mmap``) hashes every array and compares it with its recorded SHA-256.
    """
    import mmap as mmap_module

    path = Path(path)
    verify = (not mmap) if verify is None else bool(verify)
    with _open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if mmap and size:
            buf = mmap_module.mmap(f.fileno(), 0, access=mmap_module.ACCESS_READ)
            return _parse(buf, size, str(path), verify=verify)
        # One writable buffer that the arrays view: no second copy, and they stay writable.
        data = bytearray(size)
        filled = 0
        while filled < size:
            n = f.readinto(memoryview(data)[filled:])
            if not n:
                break
            filled += n
    return _parse(data, filled, str(path), verify=verify)


def unpack_arrays(data) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """:func:`read_arrays` for the bytes of a file (every checksum verified); the arrays are
    writable and own a copy of ``data``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"expected the bytes of a deepcodes file, got {type(data).__name__}")
    data = bytearray(data)
    return _parse(data, len(data), "<bytes>", verify=True)


def is_file_mapped(arr: np.ndarray) -> bool:
    """Whether ``arr`` is a view of a memory-mapped file (as ``load(..., mmap=True)`` gives)."""
    import mmap as mmap_module

    base = arr
    while base is not None:
        if isinstance(base, (mmap_module.mmap, np.memmap)):
            return True
        base = getattr(base, "base", None) if isinstance(base, np.ndarray) else getattr(base, "obj", None)
    return False


# ---- objects -----------------------------------------------------------------------------------
def _document(obj, meta: dict[str, Any] | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    cls = type(obj)
    if _REGISTRY.get(cls.__name__) is not cls:
        raise FormatError(f"{cls.__name__} cannot be saved: it is not a registered deepcodes class")
    params, arrays = obj._get_state()
    document = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "class": cls.__name__,
        "params": params, "meta": dict(meta or getattr(obj, "meta_", None) or {}),
    }
    return arrays, document


def _build(arrays: dict[str, np.ndarray], document: dict[str, Any], where: str):
    try:
        cls = class_named(document.get("class"))
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from None
    params = document.get("params", {})
    meta = document.get("meta", {})
    if not isinstance(params, dict) or not isinstance(meta, dict):
        raise FormatError(f"{where}: corrupt {cls.__name__} file (params and meta must be JSON objects)")
    try:
        obj = cls._from_state(params, arrays)
    except DeepcodesError as exc:
        raise FormatError(f"{where}: corrupt {cls.__name__} state: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
        # A class whose _from_state does not yet check all of its state (see register) fails here:
        # a hostile file's wrong-typed JSON (a number where an object belongs) ends up as one of these.
        raise FormatError(f"{where}: corrupt {cls.__name__} state ({type(exc).__name__}: {first_line(exc)})") from None
    obj.meta_ = meta
    return obj


def save(obj, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
    """Save a registered coder or index (see :func:`register`) to ``path`` atomically."""
    write_arrays(path, *_document(obj, meta))


def dumps(obj, meta: dict[str, Any] | None = None) -> bytes:
    """The bytes :func:`save` would write for ``obj``."""
    return pack_arrays(*_document(obj, meta))


def load(path: str | os.PathLike, *, mmap: bool = False, verify: bool | None = None):
    """Load a coder or index saved with :func:`save`.

    ``mmap=True`` maps the arrays read-only from the file instead of reading them. Every array is
    checked against its SHA-256 unless ``mmap=True`` (pass ``verify=True`` to hash the mapped
    arrays too, or call :func:`verify`); parameters, shapes, dtypes and ranges are always checked.
    """
    arrays, document = read_arrays(path, mmap=mmap, verify=verify)
    return _build(arrays, document, str(path))


def loads(data) -> object:
    """Load a coder or index from the bytes :func:`dumps` (or a saved file) holds, fully verified."""
    return _build(*unpack_arrays(data), "<bytes>")


def verify(path: str | os.PathLike) -> dict[str, Any]:
    """Check the file at ``path`` completely: the metadata's checksum, every array's SHA-256 and the
    object's state (as a load does). Returns a summary ``{"path", "class", "format_version",
    "arrays", "bytes", "verified": True}``; raises FormatError on any defect, and for a format
    version 1 file, which has no checksums to verify."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FormatWarning)
        arrays, document = read_arrays(path, mmap=True, verify=True)
    if document["format_version"] != FORMAT_VERSION:
        raise FormatError(f"{path} is in format version {document['format_version']}, which has no checksums: "
                          "it cannot be verified (load it and save it again to add them)")
    obj = _build(arrays, document, str(path))
    return {"path": str(path), "class": type(obj).__name__, "format_version": FORMAT_VERSION,
            "arrays": len(arrays), "bytes": path.stat().st_size, "verified": True}
