"""One safe, versioned file format for every coder and index.

A deepcodes file is a safetensors file: the arrays are its tensors and its string metadata holds one
JSON document under the key ``"deepcodes"``::

    {"format": "deepcodes", "format_version": 1, "class": "ITQ", "params": {...},
     "meta": {"protocol": "mnist-unsup", ...}, "arrays": ["mean_", ...]}

Loading parses the JSON and the tensor header only; nothing is ever unpickled. Writes go to a
temporary file in the target folder, are fsynced, then renamed over the target, so a failed write
leaves the previous file intact. ``load(path, mmap=True)`` maps the tensors read-only from the file
instead of reading them, which keeps large code arrays on disk.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError

FORMAT_NAME = "deepcodes"
FORMAT_VERSION = 1
_META_KEY = "deepcodes"
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
    "PCA": "deepcodes.coders.fronts",
    "OPQRotation": "deepcodes.coders.fronts",
    "GSLEmbedding": "deepcodes.coders.fronts",
    "CodeLayer": "deepcodes.coders.fronts",
    "HammingIndex": "deepcodes.index.hamming",
    "MultiIndexHashing": "deepcodes.index.mih",
    "ADCIndex": "deepcodes.index.adc",
    "IVFADCIndex": "deepcodes.index.ivfadc",
    "VLQIndex": "deepcodes.index.vlq",
}


def register(cls):
    """Class decorator: make ``cls`` loadable by :func:`load` under its class name.

    The class implements ``_get_state() -> (params: dict, arrays: dict[str, ndarray])`` and the
    classmethod ``_from_state(params, arrays) -> instance``, and its name is in :data:`CLASS_MODULES`.
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On any error the temporary file is removed and ``path`` keeps its previous content. Use it for
    writers that want a file name (h5py); :func:`atomic_write_bytes` covers byte streams.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # mkstemp creates 0600; give the file the usual 0644 (less the umask) like open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o644 & ~umask)
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dirfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


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


def _chunks(arrays: dict[str, np.ndarray], document: dict[str, Any]):
    """The byte chunks of a safetensors file holding ``arrays`` and the JSON ``document``.

    Arrays are streamed from their own buffers (memory-mapped ones included) without a second copy.
    """
    header: dict[str, Any] = {"__metadata__": {_META_KEY: json.dumps(document, sort_keys=True)}}
    offset = 0
    ordered = []
    for name in sorted(arrays):
        arr = np.ascontiguousarray(arrays[name])
        if arr.dtype not in _CODES:
            raise FormatError(f"array {name!r} has dtype {arr.dtype}, which the file format cannot store")
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        header[name] = {"dtype": _CODES[arr.dtype], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
        ordered.append(arr)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    yield struct.pack("<Q", len(head))
    yield head
    for arr in ordered:
        if arr.nbytes:
            yield memoryview(arr.reshape(-1)).cast("B")


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], document: dict[str, Any]) -> None:
    """Write ``arrays`` and the JSON ``document`` as a safetensors file, atomically."""
    chunks = _chunks(arrays, document)  # a generator: dtype errors surface before the file is touched
    atomic_write_bytes(path, chunks)


def _parse(buf, size: int, where: str, *, copy: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays and document of the safetensors bytes ``buf`` (a bytes-like object or an mmap of
    ``size`` bytes). With ``copy=False`` the arrays are read-only views of ``buf``."""
    if size < 8:
        raise FormatError(f"{where} is not a deepcodes file (too short: {size} bytes)")
    (n_head,) = struct.unpack("<Q", bytes(buf[:8]))
    if n_head > _MAX_HEADER or 8 + n_head > size:
        raise FormatError(f"{where} is not a deepcodes file (bad header length; truncated or foreign)")
    try:
        header = json.loads(bytes(buf[8:8 + n_head]))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{where} is not a deepcodes file (unreadable header: {exc})") from None
    if not isinstance(header, dict):
        raise FormatError(f"{where} is not a deepcodes file (header is not an object)")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or _META_KEY not in meta:
        raise FormatError(f"{where} is a safetensors file but not one written by deepcodes (no '{_META_KEY}' metadata)")
    try:
        document = json.loads(meta[_META_KEY])
    except (TypeError, json.JSONDecodeError) as exc:
        raise FormatError(f"{where}: corrupt deepcodes metadata ({exc})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT_NAME:
        raise FormatError(f"{where}: metadata does not describe a deepcodes object")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise FormatError(f"{where}: format version {version!r} is not supported (this deepcodes reads version {FORMAT_VERSION})")
    base = 8 + n_head
    arrays: dict[str, np.ndarray] = {}
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            start, end = (int(v) for v in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{where}: corrupt entry for array {name!r}") from None
        if any(s < 0 for s in shape):
            raise FormatError(f"{where}: array {name!r} has a negative dimension")
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - start != nbytes or start < 0 or base + end > size:
            raise FormatError(f"{where}: array {name!r} is truncated or inconsistent with its header")
        view = np.frombuffer(buf, dtype=dtype, count=nbytes // dtype.itemsize, offset=base + start).reshape(shape)
        arrays[name] = view.copy() if copy else view
    missing = set(document.get("arrays", [])) - set(arrays)
    if missing:
        raise FormatError(f"{where}: arrays missing from the file: {sorted(missing)}")
    return arrays, document


def read_arrays(path: str | os.PathLike, *, mmap: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a deepcodes/safetensors file: ``(arrays, document)``. Raises FormatError on any defect.

    Header and data come through one open file descriptor, so a writer replacing the file at the
    same time (by rename) cannot give one version's header with the other's data. With ``mmap=True``
    the arrays are read-only views of a private memory map of that descriptor.
    """
    import mmap as mmap_module

    path = Path(path)
    try:
        f = open(path, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise FormatError(f"no such model/index file: {path}") from None
    except PermissionError:
        raise FormatError(f"cannot read {path}: permission denied") from None
    with f:
        st = os.fstat(f.fileno())
        import stat

        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{path} is not a regular file")
        size = st.st_size
        if mmap and size:
            buf = mmap_module.mmap(f.fileno(), 0, access=mmap_module.ACCESS_READ)
            return _parse(buf, size, str(path), copy=False)
        data = f.read()
    return _parse(data, len(data), str(path), copy=True)


def is_file_mapped(arr: np.ndarray) -> bool:
    """Whether ``arr`` is a view of a memory-mapped file (as ``load(..., mmap=True)`` gives)."""
    import mmap as mmap_module

    base = arr
    while base is not None:
        if isinstance(base, (mmap_module.mmap, np.memmap)):
            return True
        base = getattr(base, "base", None) if isinstance(base, np.ndarray) else getattr(base, "obj", None)
    return False


def _document(obj, meta: dict[str, Any] | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    cls = type(obj)
    if _REGISTRY.get(cls.__name__) is not cls:
        raise FormatError(f"{cls.__name__} cannot be saved: it is not a registered deepcodes class")
    params, arrays = obj._get_state()
    document = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "class": cls.__name__,
        "params": params, "meta": dict(meta or getattr(obj, "meta_", None) or {}),
        "arrays": sorted(arrays),
    }
    return arrays, document


def _build(arrays: dict[str, np.ndarray], document: dict[str, Any], where: str):
    try:
        cls = class_named(document.get("class"))
    except FormatError as exc:
        raise FormatError(f"{where}: {exc}") from None
    params = document.get("params", {})
    if not isinstance(params, dict):
        raise FormatError(f"{where}: corrupt {cls.__name__} state (params is not an object)")
    try:
        obj = cls._from_state(params, arrays)
    except FormatError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(f"{where}: corrupt {cls.__name__} state ({type(exc).__name__}: {exc})") from None
    meta = document.get("meta", {})
    obj.meta_ = meta if isinstance(meta, dict) else {}
    return obj


def save(obj, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> None:
    """Save a registered coder or index (see :func:`register`) to ``path`` atomically."""
    write_arrays(path, *_document(obj, meta))


def dumps(obj, meta: dict[str, Any] | None = None) -> bytes:
    """The bytes :func:`save` would write for ``obj``."""
    return b"".join(bytes(c) for c in _chunks(*_document(obj, meta)))


def load(path: str | os.PathLike, *, mmap: bool = False):
    """Load a coder or index saved with :func:`save`. ``mmap=True`` maps large arrays read-only."""
    arrays, document = read_arrays(path, mmap=mmap)
    return _build(arrays, document, str(path))


def loads(data) -> object:
    """Load a coder or index from the bytes :func:`dumps` (or a saved file) holds."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise FormatError(f"loads takes bytes, got {type(data).__name__}")
    data = bytes(data)
    return _build(*_parse(data, len(data), "<bytes>", copy=True), "<bytes>")
